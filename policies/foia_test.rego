# Tests for P-FOIA-001 (foia.rego).
package esq.policies.foia_test

import data.esq.policies.foia

# Seed 01's journalist: count burials by state.
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

with_request(patch) := object.union(base, {"request": patch})

with_dataset(patch) := object.union(base, {"dataset": patch})

# object.union merges deeply, so removing a key needs object.remove.
without_dataset_key(k) := object.union(object.remove(base, ["dataset"]), {"dataset": object.remove(base.dataset, [k])})

test_allows_count_by_state if {
	d := foia.decision with input as base
	d.allow == true
	d.policy_id == "P-FOIA-001"
	d.reasons == []
	d.alternatives == []
	d.obligations == {
		"aggregate": "count", "min_group_size": 11, "max_ttl_seconds": 3600,
		"privacy": {"epsilon_per_query": 0.5, "epsilon_budget": 4.0, "budget_period_seconds": 86400, "max_groups_per_unit": 1},
	}
}

# Issue 14: FOIA answers are differentially private whether or not the
# request asks for it.
test_imposes_privacy_on_foia_requesters if {
	d := foia.decision with input as base
	d.allow == true
	d.obligations.privacy.epsilon_per_query == 0.5
	d.obligations.privacy.epsilon_budget == 4.0
	d.obligations.privacy.budget_period_seconds == 86400
	d.obligations.privacy.max_groups_per_unit == 1
}

# A request may ask for privacy itself: stricter values are honoured.
test_a_stricter_requested_privacy_is_honoured if {
	asked := {"epsilon_per_query": 0.1, "epsilon_budget": 1, "budget_period_seconds": 604800, "max_groups_per_unit": 1}
	d := foia.decision with input as with_request({"privacy": asked})
	d.allow == true
	d.obligations.privacy == asked
}

# Looser values are narrowed to the policy's, field by field.
test_a_looser_requested_privacy_is_narrowed if {
	asked := {"epsilon_per_query": 0.25, "epsilon_budget": 50, "budget_period_seconds": 3600, "max_groups_per_unit": 5}
	d := foia.decision with input as with_request({"privacy": asked})
	d.obligations.privacy == {"epsilon_per_query": 0.25, "epsilon_budget": 4.0, "budget_period_seconds": 86400, "max_groups_per_unit": 1}
}

test_a_malformed_requested_privacy_falls_back_to_the_policy if {
	d := foia.decision with input as with_request({"privacy": {"epsilon_per_query": "lots", "epsilon_budget": -1}})
	d.obligations.privacy.epsilon_per_query == 0.5
	d.obligations.privacy.epsilon_budget == 4.0
	nothing := foia.decision with input as with_request({"privacy": "please"})
	nothing.obligations.privacy.epsilon_per_query == 0.5
}

test_min_group_size_is_at_least_11_or_the_dataset_value if {
	big := foia.decision with input as with_dataset({"min_group_size": 25})
	big.obligations.min_group_size == 25
	small := foia.decision with input as with_dataset({"min_group_size": 5})
	small.obligations.min_group_size == 11
	absent := foia.decision with input as without_dataset_key("min_group_size")
	absent.obligations.min_group_size == 11
	nil := foia.decision with input as with_dataset({"min_group_size": null})
	nil.obligations.min_group_size == 11
}

test_denies_row_level_request if {
	d := foia.decision with input as with_request({"aggregate": null})
	d.allow == false
	d.policy_id == "P-FOIA-001"
	count(d.reasons) == 1
	contains(d.reasons[0], "aggregate answers only")
	d.alternatives == [`request fields ["state", "id"] with "aggregate": "count"`]
	d.obligations == {}
}

test_a_denied_count_keeps_privacy_for_a_waiver if {
	d := foia.decision with input as with_request({"fields": ["state", "dob"]})
	d.allow == false
	d.obligations.min_group_size == 11
	d.obligations.privacy.epsilon_per_query == 0.5
	not d.obligations.aggregate
}

test_denies_aggregate_other_than_count if {
	d := foia.decision with input as with_request({"aggregate": "sum"})
	d.allow == false
	d.reasons == [`aggregate "sum" is not offered to FOIA requesters; only "count" is`]
	`request fields ["state", "id"] with "aggregate": "count"` in d.alternatives
}

test_denies_pii_fields_other_than_subject_key if {
	d := foia.decision with input as with_request({"fields": ["state", "id", "ssn"]})
	d.allow == false
	d.reasons == [`fields ["ssn"] are PII and never leave the vault under FOIA`]
	d.alternatives == [
		`drop field "ssn": FOIA answers may count subjects by "id" but never show PII`,
		`request fields ["state", "id"] with "aggregate": "count"`,
	]
}

test_field_unknown_to_the_catalog_counts_as_pii if {
	d := foia.decision with input as with_request({"fields": ["state", "name"]})
	d.allow == false
	d.reasons == [`fields ["name"] are PII and never leave the vault under FOIA`]
}

test_subject_key_without_catalog_key_is_pii if {
	d := foia.decision with input as without_dataset_key("subject_key")
	d.allow == false
	`drop field "id": FOIA answers never show PII` in d.alternatives
	`request fields ["state"] with "aggregate": "count"` in d.alternatives
}

test_only_pii_requested_suggests_public_fields if {
	d := foia.decision with input as with_request({"fields": ["ssn"], "aggregate": null})
	d.allow == false
	count(d.reasons) == 2
	`request a count by non-PII fields, e.g. fields ["state"] with "aggregate": "count"` in d.alternatives
}

test_not_applicable_without_foia_role if {
	inp := object.union(base, {"user": {"roles": ["analyst"]}})
	foia.applies == false with input as inp
	not foia.decision with input as inp
}

test_not_applicable_to_non_personal_dataset if {
	inp := with_dataset({"sensitivity": "INTERNAL"})
	foia.applies == false with input as inp
	foia.applies == true with input as with_dataset({"sensitivity": "PII"})
}
