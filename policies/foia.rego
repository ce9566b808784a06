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
# max(11, dataset.min_group_size), max_ttl_seconds 3600, and differential
# privacy (issue 14, DESIGN 3.7):
#
#   privacy: epsilon_per_query 0.5, epsilon_budget 4.0 per 86400 s (a day),
#            max_groups_per_unit 1
#
# Why privacy at all: k = 11 alone does not protect small cells. A state
# total minus the branches shown, or count(DISTINCT branch), recovers a
# suppressed cell of 3 exactly. With noise, every answer is uncertain and
# differencing yields a noisy difference, never the cell.
#
# Why these numbers:
#   - 0.5 per query: each released count gets discrete Laplace noise of
#     scale 1/0.5 = 2 (standard deviation about 2.8). A state's burials by
#     branch (hundreds to thousands) come back within a few units, which is
#     what a journalist's story needs; a cell of 3 cannot be told from 0 or
#     8, and a group shows only above a noisy threshold (32 at this
#     epsilon, never below k), so its existence stays private too.
#   - 4.0 per day: 8 fresh answers a day (repeats of a statement are free:
#     the same answer comes back). Enough for a day's work on one story; the
#     privacy loss any one person suffers from a day of answers is bounded
#     by e^4 in odds. For comparison: the US Census Bureau's 2020
#     redistricting data spent about 17 in total, Google's COVID-19 mobility
#     reports 0.66 per day. The period is a day so the budget renews on the
#     calendar a requester plans with; budgets over many days add up, which
#     is why the per-day amount is kept well below the Census total.
#   - max_groups_per_unit 1: the burial register has one row per person, so
#     a person is in one group of any answer; a larger bound would only add
#     noise.
# A request may ask for privacy itself (stricter values are honoured as
# they are); looser values are narrowed to the ones above.
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

# The FOIA privacy parameters (see the header for why).
foia_privacy := {
	"epsilon_per_query": 0.5,
	"epsilon_budget": 4.0,
	"budget_period_seconds": 86400,
	"max_groups_per_unit": 1,
}

# The request's own privacy object ({} when absent or not an object).
requested_privacy := lib.as_object(object.get(lib.request, "privacy", {}))

# The narrower of the request's value and the policy's: smaller epsilons
# and bound, longer period. A missing or non-numeric value is the policy's.
requested_number(key) := r if {
	r := requested_privacy[key]
	is_number(r)
	r > 0
}

smaller(key) := min([requested_number(key), foia_privacy[key]]) if {
	requested_number(key)
} else := foia_privacy[key]

longer(key) := max([requested_number(key), foia_privacy[key]]) if {
	requested_number(key)
} else := foia_privacy[key]

privacy := {
	"epsilon_per_query": smaller("epsilon_per_query"),
	"epsilon_budget": smaller("epsilon_budget"),
	"budget_period_seconds": longer("budget_period_seconds"),
	"max_groups_per_unit": smaller("max_groups_per_unit"),
}

# On a denial, what still holds if a data steward's exception waives it
# (DESIGN 3.9: a waiver lifts a denial, never an obligation): counts stay
# differentially private and k-suppressed.
obligations := {
	"aggregate": "count",
	"min_group_size": min_group_size,
	"max_ttl_seconds": 3600,
	"privacy": privacy,
} if allow else := {
	"min_group_size": min_group_size,
	"privacy": privacy,
} if lib.aggregate == "count" else := {}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
