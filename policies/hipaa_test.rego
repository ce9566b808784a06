# Tests for P-HIPAA-001 (hipaa.rego).
package esq.policies.hipaa_test

import data.esq.policies.hipaa

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

# A clinician asking for row-level PHI for treatment.
clinician := object.union(base, {
	"user": {"name": "dr_lee", "roles": ["clinician"], "clearance": "PHI"},
	"request": {"aggregate": null, "purpose": "Treatment of a patient in my care"},
})

row_level := object.union(base, {"request": {"aggregate": null}})

test_allows_aggregate_over_phi_with_small_cell_suppression if {
	d := hipaa.decision with input as base
	d.allow == true
	d.policy_id == "P-HIPAA-001"
	d.reasons == []
	d.alternatives == []
	d.obligations == {"aggregate": "count", "min_group_size": 11, "max_ttl_seconds": 3600}
}

test_allows_row_level_non_phi_fields if {
	inp := object.union(row_level, {"request": {"fields": ["state"]}})
	d := hipaa.decision with input as inp
	d.allow == true
	d.obligations == {"max_ttl_seconds": 3600}
}

test_allows_row_level_phi_for_treatment if {
	d := hipaa.decision with input as clinician
	d.allow == true
	d.reasons == []
	d.obligations == {"max_ttl_seconds": 900}
}

test_allows_payment_and_operations_purposes if {
	ops := object.union(clinician, {"user": {"roles": ["hospital_operations"]}, "request": {"purpose": "Hospital OPERATIONS review"}})
	hipaa.decision.allow == true with input as ops
	pay := object.union(clinician, {"user": {"roles": ["care_team"]}, "request": {"purpose": "payment of claims"}})
	hipaa.decision.allow == true with input as pay
}

test_denies_row_level_phi_without_tpo_role_purpose_or_clearance if {
	d := hipaa.decision with input as row_level
	d.allow == false
	d.policy_id == "P-HIPAA-001"
	d.reasons == [
		`clearance "PUBLIC" is below PHI, which row-level PHI requires`,
		`fields ["id"] are PHI; row-level PHI is only released to roles ["care_team", "clinician", "hospital_operations"]`,
		`purpose "foia aggregation" is not a treatment, payment or operations purpose, which row-level PHI requires`,
	]
	`request an aggregate instead: add "aggregate": "count" (groups smaller than 11 are suppressed)` in d.alternatives
	`request only non-PHI fields: ["state"]` in d.alternatives
	`if you have a treatment or operations need, ask privacy@nca.example for a care_team role` in d.alternatives
	d.obligations == {}
}

test_denies_clinician_without_tpo_purpose if {
	d := hipaa.decision with input as object.union(clinician, {"request": {"purpose": "research"}})
	d.allow == false
	d.reasons == [`purpose "research" is not a treatment, payment or operations purpose, which row-level PHI requires`]
	`state a treatment or operations purpose, e.g. "purpose": "treatment of the patient in my care"` in d.alternatives
}

test_denies_clinician_below_phi_clearance if {
	d := hipaa.decision with input as object.union(clinician, {"user": {"clearance": "PII"}})
	d.allow == false
	d.reasons == [`clearance "PII" is below PHI, which row-level PHI requires`]
	"ask privacy@nca.example for PHI clearance" in d.alternatives
}

test_missing_purpose_is_not_tpo if {
	inp := object.union(object.remove(clinician, ["request"]), {"request": object.remove(clinician.request, ["purpose"])})
	d := hipaa.decision with input as inp
	d.allow == false
	d.reasons == [`purpose "" is not a treatment, payment or operations purpose, which row-level PHI requires`]
}

test_applies_to_phi_field_of_non_phi_dataset if {
	inp := object.union(row_level, {"dataset": {"sensitivity": "PII"}})
	hipaa.applies == true with input as inp
	hipaa.decision.allow == false with input as inp
}

test_not_applicable_without_phi if {
	inp := object.union(base, {"dataset": {"sensitivity": "INTERNAL"}, "request": {"fields": ["state"]}})
	hipaa.applies == false with input as inp
	not hipaa.decision with input as inp
}

test_denies_users_without_an_entitled_role if {
	inp := object.union(base, {"user": {"roles": ["esq_admin"]}})
	d := hipaa.decision with input as inp
	d.allow == false
	d.policy_id == "P-HIPAA-001"
	some r in d.reasons
	contains(r, "entitled roles")
	some a in d.alternatives
	contains(a, "which role")
	every a2 in d.alternatives {
		not contains(a2, "aggregate instead")
	}
}

test_denies_row_level_non_phi_fields_without_an_entitled_role if {
	inp := object.union(row_level, {"user": {"roles": []}, "request": {"fields": ["state"]}})
	d := hipaa.decision with input as inp
	d.allow == false
}
