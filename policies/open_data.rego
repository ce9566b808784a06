# P-OPEN-001 — PUBLIC and INTERNAL datasets: fields up to the user's
# clearance, never pii.
#
# Seed 04 (Lacuna) classification tiers and "users see policy violations
# before they happen, with actionable guidance"; seed 01 (HMS-DTA/ESQ):
# catalog fields carry `pii` flags and a sensitivity.
#
# Rules: applies when the dataset sensitivity is PUBLIC or INTERNAL.
# Allowed when every requested field's sensitivity is at most the user's
# clearance (PUBLIC < INTERNAL < PII < PHI; unknown field labels count as
# PHI, an unknown clearance as PUBLIC) and no requested field is pii.
# Obligations on allow: max_ttl_seconds 3600.
package esq.policies.open_data

import data.esq.lib

policy_id := "P-OPEN-001"

default applies := false

applies if lib.dataset_sensitivity in {"PUBLIC", "INTERNAL"}

above_clearance := [f |
	some f in lib.requested_fields
	lib.field_rank(lib.sensitivity(f)) > lib.clearance_rank(lib.clearance)
]

pii_fields := [f | some f in lib.requested_fields; lib.is_pii(f)]

permitted_fields := [f |
	some f in lib.requested_fields
	not f in above_clearance
	not f in pii_fields
]

reasons contains msg if {
	count(above_clearance) > 0
	msg := sprintf("fields %s are classified above your clearance %q", [lib.list_str(above_clearance), lib.clearance])
}

reasons contains msg if {
	count(pii_fields) > 0
	msg := sprintf("fields %s are PII and are not released from %s datasets", [lib.list_str(pii_fields), lib.dataset_sensitivity])
}

denied if count(reasons) > 0

alternatives contains msg if {
	denied
	count(permitted_fields) > 0
	msg := sprintf("request only fields %s", [lib.list_str(permitted_fields)])
}

alternatives contains msg if {
	some f in pii_fields
	msg := sprintf("drop field %q: it is PII", [f])
}

alternatives contains msg if {
	count(above_clearance) > 0
	needed := max({lib.field_rank(lib.sensitivity(f)) | some f in above_clearance})
	some label, rank in lib.sensitivity_rank
	rank == needed
	msg := sprintf("ask %s for %s clearance to see %s", [lib.steward, label, lib.list_str(above_clearance)])
}

allow := count(reasons) == 0

obligations := {"max_ttl_seconds": 3600} if allow else := {}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
