# P-RET-001 — rows past the dataset's retention schedule are never served.
#
# Seed 01 (HMS-DTA/ESQ data governance): a Retention Schedule is the
# "recycle this box after 7 years" rule, and catalog entries carry
# `retentionYears` (§8); "retention ... [is] automatic". esq enforces it at
# query time: the guard hides rows whose retention_field is older than
# `now` minus retention_years.
#
# Rules: applies when the dataset declares a numeric retention_years.
# Denied (fail closed) when retention_years <= 0 (the data must already be
# purged), when it is not a whole number, when no retention_field is
# declared (esq could not hide expired rows), or when `now` is not an
# RFC 3339 timestamp.
# Obligations on allow: retention_cutoff "YYYY-MM-DD" (UTC date of `now`
# minus retention_years years; 29 February maps to 1 March in a non-leap
# year, which hides one day more rather than one day less) and
# max_ttl_seconds 3600 (a ticket must not outlive the day's cutoff by much).
package esq.policies.retention

import data.esq.lib

policy_id := "P-RET-001"

default applies := false

applies if is_number(years)

# retention_years when it is a number (every rule below must stay free of
# type errors whatever the input: regorus may evaluate rules eagerly).
years := n if {
	n := lib.dataset.retention_years
	is_number(n)
}

retention_field := f if {
	f := lib.dataset.retention_field
	is_string(f)
	f != ""
} else := null

catalog_file := sprintf("catalog/%s.yaml", [lib.dataset_id])

whole_years if round(years) == years

# Shape check first: regorus raises a hard error (not undefined) when
# time.parse_rfc3339_ns gets a malformed string.
rfc3339 := `^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$`

now_ok if {
	is_string(input.now)
	regex.match(rfc3339, input.now)
}

is_leap(y) if {
	y % 4 == 0
	y % 100 != 0
}

is_leap(y) if y % 400 == 0

# UTC [year, month, day] of `now`.
now_date := time.date(time.parse_rfc3339_ns(input.now)) if now_ok

# Cutoff arithmetic needs whole years.
cutoff_computable if {
	whole_years
	now_ok
}

# [year, month, day] of the cutoff. Computed by hand rather than with
# time.add_date, which in regorus is undefined for 29 February minus N years
# when the target year is not a leap year.
cutoff_date := [y, 3, 1] if {
	cutoff_computable
	now_date[1] == 2
	now_date[2] == 29
	y := now_date[0] - years
	not is_leap(y)
} else := [now_date[0] - years, now_date[1], now_date[2]] if {
	cutoff_computable
}

retention_cutoff := "0001-01-01" if {
	cutoff_date[0] < 1
} else := sprintf("%04d-%02d-%02d", cutoff_date)

reasons contains msg if {
	years <= 0
	msg := sprintf("retention period of dataset %q (%v years) has run out: its rows must already be purged", [lib.dataset_id, years])
}

reasons contains msg if {
	years > 0
	not whole_years
	msg := sprintf("retention_years %v of dataset %q is not a whole number of years, so esq cannot compute the cutoff", [years, lib.dataset_id])
}

reasons contains msg if {
	retention_field == null
	msg := sprintf("dataset %q declares retention_years but no retention_field, so esq cannot hide expired rows", [lib.dataset_id])
}

reasons contains msg if {
	not now_ok
	msg := sprintf("request time %v is not an RFC 3339 timestamp, so the retention cutoff cannot be computed", [object.get(input, "now", null)])
}

alternatives contains msg if {
	years <= 0
	msg := sprintf("ask %s to purge %q or correct its retention schedule in %s", [lib.steward, lib.dataset_id, catalog_file])
}

alternatives contains msg if {
	years > 0
	not whole_years
	msg := sprintf("set retention_years to a whole number of years in %s", [catalog_file])
}

alternatives contains msg if {
	retention_field == null
	msg := sprintf("add retention_field to %s", [catalog_file])
}

allow := count(reasons) == 0

obligations := {
	"retention_cutoff": retention_cutoff,
	"max_ttl_seconds": 3600,
} if allow else := {}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
