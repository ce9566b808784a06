# Tests for P-OPEN-001 (open_data.rego).
package esq.policies.open_data_test

import data.esq.policies.open_data

base := {
	"action": "issue_ticket",
	"user": {"name": "analyst", "roles": ["analyst"], "attributes": {}, "clearance": "INTERNAL"},
	"dataset": {
		"id": "park_visits", "sensitivity": "INTERNAL", "owner": "NPS", "steward": "data@nps.example",
		"fields": [
			{"name": "park", "pii": false, "sensitivity": "PUBLIC"},
			{"name": "visits", "pii": false, "sensitivity": "INTERNAL"},
			{"name": "audit_note", "pii": false, "sensitivity": "PII"},
			{"name": "contact_email", "pii": true, "sensitivity": "PII"},
		],
	},
	"request": {"fields": ["park", "visits"], "aggregate": null, "purpose": "dashboard", "ttl_seconds": 600, "where": {}},
	"now": "2026-11-25T18:00:00Z",
	"environment": "production",
}

with_request(patch) := object.union(base, {"request": patch})

with_clearance(c) := object.union(base, {"user": {"clearance": c}})

test_allows_fields_within_clearance if {
	d := open_data.decision with input as base
	d.allow == true
	d.policy_id == "P-OPEN-001"
	d.reasons == []
	d.alternatives == []
	d.obligations == {"max_ttl_seconds": 3600}
}

test_denies_field_above_clearance if {
	d := open_data.decision with input as with_clearance("PUBLIC")
	d.allow == false
	d.policy_id == "P-OPEN-001"
	d.reasons == [`fields ["visits"] are classified above your clearance "PUBLIC"`]
	d.alternatives == [
		`ask data@nps.example for INTERNAL clearance to see ["visits"]`,
		`request only fields ["park"]`,
	]
	d.obligations == {}
}

test_clearance_ask_names_the_highest_label_needed if {
	d := open_data.decision with input as object.union(with_clearance("PUBLIC"), {"request": {"fields": ["park", "visits", "audit_note"]}})
	`ask data@nps.example for PII clearance to see ["visits", "audit_note"]` in d.alternatives
}

test_denies_pii_field_whatever_the_clearance if {
	d := open_data.decision with input as object.union(with_clearance("PHI"), {"request": {"fields": ["park", "contact_email"]}})
	d.allow == false
	d.reasons == [`fields ["contact_email"] are PII and are not released from INTERNAL datasets`]
	d.alternatives == [
		`drop field "contact_email": it is PII`,
		`request only fields ["park"]`,
	]
}

test_unknown_field_and_clearance_fail_closed if {
	d := open_data.decision with input as with_request({"fields": ["park", "secret"]})
	d.allow == false
	count(d.reasons) == 2
	`request only fields ["park"]` in d.alternatives
	open_data.decision.allow == false with input as with_clearance("TOP_SECRET")
	open_data.decision.allow == true with input as object.union(with_clearance("TOP_SECRET"), {"request": {"fields": ["park"]}})
	odd_label := object.union(with_clearance("PII"), {"dataset": {"fields": [{"name": "park", "pii": false, "sensitivity": "SECRET"}]}})
	open_data.decision.allow == false with input as object.union(odd_label, {"request": {"fields": ["park"]}})
}

test_missing_field_label_defaults_like_esq if {
	unlabeled := object.union(with_clearance("INTERNAL"), {"dataset": {"fields": [{"name": "park", "pii": false}]}})
	open_data.decision.allow == true with input as object.union(unlabeled, {"request": {"fields": ["park"]}})
	open_data.decision.allow == false with input as object.union(unlabeled, {"user": {"clearance": "PUBLIC"}, "request": {"fields": ["park"]}})
}

test_not_applicable_to_personal_data if {
	open_data.applies == false with input as object.union(base, {"dataset": {"sensitivity": "PHI"}})
	open_data.applies == false with input as object.union(base, {"dataset": {"sensitivity": "PII"}})
	open_data.applies == true with input as object.union(base, {"dataset": {"sensitivity": "PUBLIC"}})
	not open_data.decision with input as object.union(base, {"dataset": {"sensitivity": "PII"}})
}
