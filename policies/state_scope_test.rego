# Tests for P-ABAC-STATE-001 (state_scope.rego).
package esq.policies.state_scope_test

import data.esq.policies.state_scope

base := {
	"action": "issue_ticket",
	"user": {"name": "journalist", "roles": ["foia_requester"], "attributes": {"state": "CA"}, "clearance": "PUBLIC"},
	"dataset": {
		"id": "burial_2024", "sensitivity": "PHI", "owner": "NCA", "steward": "privacy@nca.example",
		"subject_key": "id", "retention_years": 10, "retention_field": "burial_date", "min_group_size": 11,
		"fields": [
			{"name": "id", "pii": true, "sensitivity": "PHI"},
			{"name": "ssn", "pii": true, "sensitivity": "PHI"},
			{"name": "state", "pii": false, "sensitivity": "INTERNAL"},
		],
	},
	"request": {"fields": ["state", "id"], "aggregate": "count", "purpose": "FOIA aggregation", "ttl_seconds": 300, "where": {}},
	"now": "2026-11-25T18:00:00Z",
	"environment": "production",
}

with_where(w) := object.union(base, {"request": {"where": w}})

test_allows_with_row_filter_on_users_state if {
	d := state_scope.decision with input as base
	d.allow == true
	d.policy_id == "P-ABAC-STATE-001"
	d.reasons == []
	d.alternatives == []
	d.obligations == {"row_filter": {"state": "CA"}}
}

test_allows_where_on_own_state_or_other_columns if {
	state_scope.decision.allow == true with input as with_where({"state": "CA"})
	state_scope.decision.allow == true with input as with_where({"state": ["CA"]})
	d := state_scope.decision with input as with_where({"burial_year": 2024})
	d.allow == true
	d.obligations.row_filter == {"state": "CA"}
}

test_denies_where_on_another_state if {
	d := state_scope.decision with input as with_where({"state": "TX"})
	d.allow == false
	d.policy_id == "P-ABAC-STATE-001"
	d.reasons == [`you may only see rows of state "CA", but the request filters on state "TX"`]
	d.alternatives == [
		`drop "state" from "where": rows are limited to your state anyway`,
		`use "where": {"state": "CA"}`,
	]
	d.obligations == {"row_filter": {"state": "CA"}}
}

test_denies_where_list_naming_another_state if {
	d := state_scope.decision with input as with_where({"state": ["CA", "TX"]})
	d.allow == false
	d.reasons == [`you may only see rows of state "CA", but the request filters on state ["CA","TX"]`]
	state_scope.decision.allow == false with input as with_where({"state": []})
	state_scope.decision.allow == false with input as with_where({"state": null})
}

test_not_applicable_without_state_attribute if {
	state_scope.applies == false with input as object.union(object.remove(base, ["user"]), {"user": object.remove(base.user, ["attributes"])})
	state_scope.applies == false with input as object.union(base, {"user": {"attributes": {"state": ""}}})
	state_scope.applies == false with input as object.union(base, {"user": {"attributes": {"state": 6}}})
	not state_scope.decision with input as object.union(base, {"user": {"attributes": {"state": ""}}})
}

test_not_applicable_without_state_field if {
	inp := object.union(base, {"dataset": {"fields": [{"name": "id", "pii": true, "sensitivity": "PHI"}]}})
	state_scope.applies == false with input as inp
	state_scope.applies == true with input as base
}
