# P-EXCEPTION-001 — who may approve or deny an exception waiver.
#
# Issue 18 / DESIGN 3.9, "governance that makes yes safe": an analyst whose
# legitimate need the ticket policies do not cover asks a data steward for
# a time-boxed exception instead of working around esq. This package is
# NOT a ticket policy: it lives outside `esq.policies`, so ticket requests
# never evaluate it. esq asks it when a steward decides a pending
# exception, with this input:
#
#   {"action": "approve_exception" | "deny_exception",
#    "approver":  {"name", "roles", "attributes", "clearance"},   # the steward
#    "requester": {"name", "roles", "attributes", "clearance"},   # as configured now
#    "exception": {"id", "dataset", "fields", "aggregate", "duration_seconds",
#                  "purpose", "justification", "approver"},
#    "dataset":   {"id", "sensitivity", "fields": [{"name", "pii", "sensitivity"}], …},
#    "now": "<RFC 3339>"}
#
# and expects {"allow": true|false, "reasons": [...], "policy_id": "..."}.
# Only an explicit allow: true lets the decision through; anything else
# (undefined, an error, a time-out) refuses it. esq checks the role and
# self-decision in Rust too (belt and braces).
#
# Rules:
#   - both actions: the approver holds role data_steward and is not the
#     requester (nobody waives policy for themselves);
#   - approve only:
#     - the duration is positive and at most 30 days (a waiver is a bridge
#       to a policy change, not a standing grant);
#     - the exception names fields, all in the dataset's catalog entry, and
#       an aggregate that is null (row level) or "count";
#     - a row-level exception (aggregate null) needs the requester's
#       clearance to cover the sensitivity of every field it names (PII,
#       and PHI labels on fields that are not PII): a steward can waive a
#       rule, not clear a person (counts with small-group suppression stay
#       approvable at any clearance).
package esq.exceptions

import data.esq.lib

policy_id := "P-EXCEPTION-001"

steward_role := "data_steward"

max_duration_seconds := 2592000 # 30 days

action := lib.as_string(object.get(input, "action", ""))

approver := lib.as_object(object.get(input, "approver", {}))

requester := lib.as_object(object.get(input, "requester", {}))

exception := lib.as_object(object.get(input, "exception", {}))

approver_name := lib.as_string(object.get(approver, "name", ""))

requester_name := lib.as_string(object.get(requester, "name", ""))

approver_roles := {r | some r in lib.as_array(object.get(approver, "roles", [])); is_string(r)}

# An unknown or missing clearance is PUBLIC (fail closed).
requester_clearance := c if {
	c := requester.clearance
	lib.sensitivity_rank[c]
} else := "PUBLIC"

fields := [f | some f in lib.as_array(object.get(exception, "fields", [])); is_string(f)]

aggregate := a if {
	a := exception.aggregate
	is_string(a)
} else := null

duration_seconds := d if {
	d := exception.duration_seconds
	is_number(d)
} else := 0

# Fields whose sensitivity (PII, or a PHI label on a field that is not PII,
# such as a cause of death) is above the requester's clearance.
above_clearance := [f |
	some f in fields
	rank := lib.field_rank(lib.sensitivity(f))
	rank >= lib.sensitivity_rank.PII
	rank > lib.clearance_rank(requester_clearance)
]

approving if action == "approve_exception"

reasons contains "only approve_exception and deny_exception are decided by this policy" if {
	not action in {"approve_exception", "deny_exception"}
}

reasons contains msg if {
	not steward_role in approver_roles
	msg := sprintf("deciding exceptions needs role %q", [steward_role])
}

reasons contains "nobody decides their own exception: another data steward must" if {
	approver_name == requester_name
}

reasons contains "the approver and the requester must be named" if {
	"" in {approver_name, requester_name}
}

reasons contains "the duration must be positive" if {
	approving
	duration_seconds <= 0
}

reasons contains msg if {
	approving
	duration_seconds > max_duration_seconds
	msg := sprintf("a duration of %v seconds exceeds the maximum of %v (30 days)", [duration_seconds, max_duration_seconds])
}

reasons contains "the exception names no field" if {
	approving
	count(fields) == 0
}

reasons contains msg if {
	approving
	some f in fields
	not lib.has_field(f)
	msg := sprintf("field %q is not in the dataset's catalog entry", [f])
}

reasons contains msg if {
	approving
	aggregate != null
	aggregate != "count"
	msg := sprintf("aggregate %q is not supported; only \"count\" or null (row level)", [aggregate])
}

reasons contains msg if {
	approving
	aggregate == null
	count(above_clearance) > 0
	msg := sprintf("row-level fields %s are classified above the requester's clearance %s: approve counts (\"aggregate\": \"count\") instead, or have the requester cleared", [lib.list_str(above_clearance), requester_clearance])
}

allow := count(reasons) == 0

decision := {
	"allow": allow,
	"reasons": sort(reasons),
	"policy_id": policy_id,
}
