# P-FOIA-001 — FOIA requesters get aggregate counts only.
#
# Seed 01 (HMS-DTA/ESQ data governance), §3 "FOIA Query Done Right": a
# journalist asks "how many veterans were buried, by state, in 2024" with
# fields ["state", "id"] and "aggregate": "count"; the answer is counts by
# state, and "Names, SSNs, DOBs never leave the vault". Alternatives follow
# seed 04 (Lacuna): tell the requester exactly what to ask for instead.
#
# Rules:
#   - applies to users with role "foia_requester" on PII or PHI datasets;
#   - row-level requests (aggregate null) and aggregates other than "count"
#     are denied;
#   - the only pii field that may be requested is the dataset's subject_key
#     (so subjects can be counted); any other pii field is denied.
# Obligations on allow: aggregate "count", min_group_size
# max(11, dataset.min_group_size), max_ttl_seconds 3600.
package esq.policies.foia

import data.esq.lib

policy_id := "P-FOIA-001"

default applies := false

applies if {
	"foia_requester" in lib.roles
	lib.dataset_sensitivity in {"PII", "PHI"}
}

# Field used to count subjects, e.g. "id"; null when the catalog names none.
subject_key := k if {
	k := lib.dataset.subject_key
	is_string(k)
	k != ""
} else := null

# Requested pii fields other than the subject key, in request order.
forbidden_fields := [f | some f in lib.requested_fields; lib.is_pii(f); f != subject_key]

# The request minus the forbidden fields, in request order.
allowed_fields := [f | some f in lib.requested_fields; not f in forbidden_fields]

# Non-pii catalog fields, to suggest when nothing requested is allowed.
public_fields := [f.name | some f in lib.catalog_fields; not lib.is_pii(f.name)]

min_group_size := max([11, ceil(n)]) if {
	n := lib.dataset.min_group_size
	is_number(n)
} else := 11

reasons contains "FOIA requesters receive aggregate answers only, but the request asks for row-level data (\"aggregate\": null)" if {
	lib.aggregate == null
}

reasons contains msg if {
	lib.aggregate != null
	lib.aggregate != "count"
	msg := sprintf("aggregate %q is not offered to FOIA requesters; only \"count\" is", [lib.aggregate])
}

reasons contains msg if {
	count(forbidden_fields) > 0
	msg := sprintf("fields %s are PII and never leave the vault under FOIA", [lib.list_str(forbidden_fields)])
}

denied if count(reasons) > 0

alternatives contains msg if {
	denied
	count(allowed_fields) > 0
	msg := sprintf("request fields %s with \"aggregate\": \"count\"", [lib.list_str(allowed_fields)])
}

alternatives contains msg if {
	denied
	count(allowed_fields) == 0
	count(public_fields) > 0
	msg := sprintf("request a count by non-PII fields, e.g. fields %s with \"aggregate\": \"count\"", [lib.list_str(public_fields)])
}

alternatives contains msg if {
	some f in forbidden_fields
	subject_key != null
	msg := sprintf("drop field %q: FOIA answers may count subjects by %q but never show PII", [f, subject_key])
}

alternatives contains msg if {
	some f in forbidden_fields
	subject_key == null
	msg := sprintf("drop field %q: FOIA answers never show PII", [f])
}

allow := count(reasons) == 0

obligations := {
	"aggregate": "count",
	"min_group_size": min_group_size,
	"max_ttl_seconds": 3600,
} if allow else := {}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
