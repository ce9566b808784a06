# P-HIPAA-001 — PHI only for treatment, payment or operations (TPO).
#
# Seed 01 (HMS-DTA/ESQ data governance), §8: "ESQ enforces HIPAA
# automatically because `sensitivity: PHI`"; PHI fields are released
# row-level only to roles with a treatment/operations purpose. Aggregate
# answers are safe with small-cell suppression (min group size 11, the
# usual CMS cell-size rule). Alternatives follow seed 04 (Lacuna).
#
# Rules: applies when the dataset is PHI or any requested field is PHI.
# Nobody without an entitled role gets anything from PHI data (these roles
# are the grants; everything below only narrows them). Then allowed when (a) no requested field is PHI, or (b) the request is an
# aggregate, or (c) row-level PHI for a user who has a TPO role (clinician,
# care_team, hospital_operations), states a treatment/payment/operations
# purpose and holds clearance PHI.
# Obligations: (a) max_ttl_seconds 3600; (b) the aggregate, min_group_size
# max(11, dataset.min_group_size), max_ttl_seconds 3600; (c) max_ttl_seconds
# 900 — row-level PHI tickets are kept short (15 minutes) on purpose, so a
# leaked ticket exposes identifiable health data for as little time as possible.
package esq.policies.hipaa

import data.esq.lib

policy_id := "P-HIPAA-001"

tpo_roles := {"clinician", "care_team", "hospital_operations"}

tpo_purposes := {"treatment", "payment", "operations"}

# Roles that may use PHI datasets at all (then within the cases below).
entitled_roles := {"foia_requester", "researcher", "state_official"} | tpo_roles

has_entitled_role if {
	some r in lib.roles
	r in entitled_roles
}

default applies := false

applies if lib.dataset_sensitivity == "PHI"

applies if count(phi_fields) > 0

# Requested PHI fields, in request order.
phi_fields := [f | some f in lib.requested_fields; lib.sensitivity(f) == "PHI"]

non_phi_fields := [f | some f in lib.requested_fields; lib.sensitivity(f) != "PHI"]

has_tpo_role if {
	some r in lib.roles
	r in tpo_roles
}

has_tpo_purpose if {
	some p in tpo_purposes
	contains(lib.purpose, p)
}

has_phi_clearance if lib.clearance == "PHI"

min_group_size := max([11, ceil(n)]) if {
	n := lib.dataset.min_group_size
	is_number(n)
} else := 11

# Which of the allowed cases the request falls in (first that holds).
case := "no_phi" if {
	count(phi_fields) == 0
} else := "aggregate" if {
	lib.aggregate != null
} else := "tpo" if {
	has_tpo_role
	has_tpo_purpose
	has_phi_clearance
} else := "denied"

row_level_phi if {
	count(phi_fields) > 0
	lib.aggregate == null
}

reasons contains msg if {
	not has_entitled_role
	msg := sprintf("none of your roles may use PHI datasets; entitled roles are %s", [lib.list_str(sort(entitled_roles))])
}

reasons contains msg if {
	row_level_phi
	not has_tpo_role
	msg := sprintf("fields %s are PHI; row-level PHI is only released to roles %s", [lib.list_str(phi_fields), lib.list_str(sort(tpo_roles))])
}

reasons contains msg if {
	row_level_phi
	not has_tpo_purpose
	msg := sprintf("purpose %q is not a treatment, payment or operations purpose, which row-level PHI requires", [lib.purpose])
}

reasons contains msg if {
	row_level_phi
	not has_phi_clearance
	msg := sprintf("clearance %q is below PHI, which row-level PHI requires", [lib.clearance])
}

denied if count(reasons) > 0

alternatives contains msg if {
	not has_entitled_role
	msg := sprintf("ask %s which role your purpose needs", [lib.steward])
}

alternatives contains msg if {
	denied
	has_entitled_role
	msg := sprintf("request an aggregate instead: add \"aggregate\": \"count\" (groups smaller than %v are suppressed)", [min_group_size])
}

alternatives contains msg if {
	denied
	count(non_phi_fields) > 0
	msg := sprintf("request only non-PHI fields: %s", [lib.list_str(non_phi_fields)])
}

alternatives contains "state a treatment or operations purpose, e.g. \"purpose\": \"treatment of the patient in my care\"" if {
	denied
	has_tpo_role
	not has_tpo_purpose
}

alternatives contains msg if {
	denied
	not has_tpo_role
	msg := sprintf("if you have a treatment or operations need, ask %s for a care_team role", [lib.steward])
}

alternatives contains msg if {
	denied
	not has_phi_clearance
	has_tpo_role
	msg := sprintf("ask %s for PHI clearance", [lib.steward])
}

allow := count(reasons) == 0

obligations := {"max_ttl_seconds": 3600} if {
	case == "no_phi"
} else := {
	"aggregate": lib.aggregate,
	"min_group_size": min_group_size,
	"max_ttl_seconds": 3600,
} if {
	case == "aggregate"
} else := {"max_ttl_seconds": 900} if {
	case == "tpo"
} else := {}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
