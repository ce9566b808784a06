# Tests for P-RET-001 (retention.rego).
package esq.policies.retention_test

import data.esq.policies.retention

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

with_dataset(patch) := object.union(base, {"dataset": patch})

# object.union merges deeply, so removing a key needs object.remove.
without_dataset_key(k) := object.union(object.remove(base, ["dataset"]), {"dataset": object.remove(base.dataset, [k])})

cutoff(inp) := d.obligations.retention_cutoff if {
	d := retention.decision with input as inp
}

test_allows_with_cutoff_ten_years_back if {
	d := retention.decision with input as base
	d.allow == true
	d.policy_id == "P-RET-001"
	d.reasons == []
	d.alternatives == []
	d.obligations == {"retention_cutoff": "2016-11-25", "max_ttl_seconds": 3600}
}

test_cutoff_from_leap_day if {
	leap := object.union(base, {"now": "2028-02-29T10:00:00Z"})
	cutoff(leap) == "2018-03-01"
	cutoff(object.union(leap, {"dataset": {"retention_years": 4}})) == "2024-02-29"
	cutoff(object.union(leap, {"dataset": {"retention_years": 100}})) == "1928-02-29"
	cutoff(object.union(leap, {"dataset": {"retention_years": 1}})) == "2027-03-01"
}

test_cutoff_uses_the_utc_date_of_now if {
	cutoff(object.union(base, {"now": "2026-11-25T23:30:00-05:00"})) == "2016-11-26"
	cutoff(object.union(base, {"now": "2026-01-05T00:00:00.123Z", "dataset": {"retention_years": 7}})) == "2019-01-05"
}

test_denies_without_retention_field if {
	d := retention.decision with input as without_dataset_key("retention_field")
	d.allow == false
	d.policy_id == "P-RET-001"
	d.reasons == [`dataset "burial_2024" declares retention_years but no retention_field, so esq cannot hide expired rows`]
	d.alternatives == ["add retention_field to catalog/burial_2024.yaml"]
	d.obligations == {}
	retention.decision.allow == false with input as with_dataset({"retention_field": null})
	retention.decision.allow == false with input as with_dataset({"retention_field": ""})
}

test_denies_when_retention_has_run_out if {
	d := retention.decision with input as with_dataset({"retention_years": 0})
	d.allow == false
	d.reasons == [`retention period of dataset "burial_2024" (0 years) has run out: its rows must already be purged`]
	d.alternatives == [`ask privacy@nca.example to purge "burial_2024" or correct its retention schedule in catalog/burial_2024.yaml`]
	retention.decision.allow == false with input as with_dataset({"retention_years": -3})
}

test_denies_fractional_years if {
	d := retention.decision with input as with_dataset({"retention_years": 7.5})
	d.allow == false
	d.alternatives == ["set retention_years to a whole number of years in catalog/burial_2024.yaml"]
}

test_denies_unparseable_now if {
	d := retention.decision with input as object.union(base, {"now": "yesterday"})
	d.allow == false
	d.reasons == [`request time yesterday is not an RFC 3339 timestamp, so the retention cutoff cannot be computed`]
	retention.decision.allow == false with input as object.remove(base, ["now"])
}

test_not_applicable_without_numeric_retention_years if {
	retention.applies == false with input as without_dataset_key("retention_years")
	retention.applies == false with input as with_dataset({"retention_years": null})
	retention.applies == false with input as with_dataset({"retention_years": "10"})
	not retention.decision with input as without_dataset_key("retention_years")
}
