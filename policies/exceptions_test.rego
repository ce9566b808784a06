# Tests for P-EXCEPTION-001 (exceptions.rego).
package esq.exceptions_test

import data.esq.exceptions

# A journalist's row-level listing of burials by county and branch (no
# PII), approved by a data steward for a week.
base := {
	"action": "approve_exception",
	"approver": {"name": "steward", "roles": ["data_steward"], "attributes": {}, "clearance": "INTERNAL"},
	"requester": {"name": "journalist", "roles": ["foia_requester"], "attributes": {}, "clearance": "PUBLIC"},
	"exception": {
		"id": "X-AAAAAAAAAAAAAAAA", "dataset": "burial_2024",
		"fields": ["state", "county", "branch"], "aggregate": null,
		"duration_seconds": 604800, "purpose": "county listing", "justification": "story",
		"approver": null,
	},
	"dataset": {
		"id": "burial_2024", "sensitivity": "PHI", "owner": "NCA", "steward": "privacy@nca.example",
		"fields": [
			{"name": "id", "pii": true, "sensitivity": "PHI"},
			{"name": "dob", "pii": true, "sensitivity": "PHI"},
			{"name": "state", "pii": false, "sensitivity": "INTERNAL"},
			{"name": "county", "pii": false, "sensitivity": "INTERNAL"},
			{"name": "branch", "pii": false, "sensitivity": "INTERNAL"},
		],
	},
	"now": "2026-11-25T18:00:00Z",
}

with_exception(patch) := object.union(base, {"exception": patch})

refused_because(d, text) if {
	d.allow == false
	some r in d.reasons
	contains(r, text)
}

test_a_steward_approves_a_row_level_exception_without_pii if {
	d := exceptions.decision with input as base
	d.allow == true
	d.reasons == []
	d.policy_id == "P-EXCEPTION-001"
}

test_a_steward_denies if {
	d := exceptions.decision with input as object.union(base, {"action": "deny_exception"})
	d.allow == true
}

test_nobody_decides_their_own_exception if {
	own := {"name": "journalist", "roles": ["data_steward"], "attributes": {}, "clearance": "PHI"}
	approve := exceptions.decision with input as object.union(base, {"approver": own})
	refused_because(approve, "their own exception")
	deny := exceptions.decision with input as object.union(base, {"approver": own, "action": "deny_exception"})
	refused_because(deny, "their own exception")
}

test_only_data_stewards_decide if {
	analyst := {"name": "ca_official", "roles": ["foia_requester", "esq_admin"], "attributes": {}, "clearance": "PHI"}
	d := exceptions.decision with input as object.union(base, {"approver": analyst})
	refused_because(d, "data_steward")
}

test_missing_roles_or_names_refuse if {
	d := exceptions.decision with input as object.remove(base, ["approver"])
	d.allow == false
	e := exceptions.decision with input as object.remove(base, ["requester"])
	refused_because(e, "must be named")
}

test_at_most_thirty_days if {
	thirty := exceptions.decision with input as with_exception({"duration_seconds": 2592000})
	thirty.allow == true
	longer := exceptions.decision with input as with_exception({"duration_seconds": 2592001})
	refused_because(longer, "30 days")
	none := exceptions.decision with input as with_exception({"duration_seconds": 0})
	refused_because(none, "positive")
	text := exceptions.decision with input as with_exception({"duration_seconds": "7d"})
	refused_because(text, "positive")
}

test_a_long_exception_may_still_be_denied if {
	d := exceptions.decision with input as object.union(with_exception({"duration_seconds": 9999999}), {"action": "deny_exception"})
	d.allow == true
}

test_row_level_pii_needs_clearance_for_the_dataset if {
	pii := with_exception({"fields": ["state", "dob"]})
	d := exceptions.decision with input as pii
	refused_because(d, "clearance")
	refused_because(d, "\"dob\"")
	cleared := object.union(pii, {"requester": {"name": "journalist", "roles": [], "clearance": "PHI"}})
	c := exceptions.decision with input as cleared
	c.allow == true
	below := object.union(pii, {"requester": {"name": "journalist", "roles": [], "clearance": "PII"}})
	b := exceptions.decision with input as below
	b.allow == false
}

test_counts_on_pii_are_approvable_at_any_clearance if {
	d := exceptions.decision with input as with_exception({"fields": ["state", "dob"], "aggregate": "count"})
	d.allow == true
}

test_unknown_fields_and_aggregates_refuse if {
	unknown := exceptions.decision with input as with_exception({"fields": ["state", "salary"]})
	refused_because(unknown, "salary")
	none := exceptions.decision with input as with_exception({"fields": []})
	refused_because(none, "no field")
	sum := exceptions.decision with input as with_exception({"aggregate": "sum"})
	refused_because(sum, "sum")
}

test_an_unknown_field_counts_as_pii if {
	# A field the catalog does not know is PHI PII (lib.field): row level
	# by a PUBLIC requester is refused for clearance as well.
	d := exceptions.decision with input as with_exception({"fields": ["salary"]})
	refused_because(d, "clearance")
}

test_other_actions_refuse if {
	d := exceptions.decision with input as object.union(base, {"action": "issue_ticket"})
	refused_because(d, "approve_exception and deny_exception")
}

test_a_mistyped_clearance_is_public if {
	odd := object.union(with_exception({"fields": ["dob"]}), {"requester": {"name": "journalist", "clearance": "TOP"}})
	d := exceptions.decision with input as odd
	refused_because(d, "PUBLIC")
}

# A PHI label on a field that is not PII (a cause of death) needs the
# clearance too (red-team N3).
test_row_level_phi_on_a_non_pii_field_needs_clearance if {
	labelled := object.union(base, {"dataset": object.union(base.dataset, {"fields": array.concat(
		base.dataset.fields,
		[{"name": "cause_of_death", "pii": false, "sensitivity": "PHI"}],
	)})})
	phi := object.union(labelled, {"exception": object.union(base.exception, {"fields": ["state", "cause_of_death"]})})
	d := exceptions.decision with input as phi
	refused_because(d, "clearance")
	counts := object.union(phi, {"exception": object.union(phi.exception, {"aggregate": "count"})})
	c := exceptions.decision with input as counts
	c.allow == true
}
