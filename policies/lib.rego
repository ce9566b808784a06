# esq policy helpers.
#
# This package lives OUTSIDE `esq.policies` on purpose: esq treats every
# package under `data.esq.policies.*` as a policy and asks it for `applies`
# and `decision`. Helpers go here and are imported by the policies.
#
# Every helper is total: a missing or mistyped input value yields a
# fail-closed default instead of an evaluation error (regorus turns builtin
# type errors into hard errors, which would make a decision undefined).
package esq.lib

# Classification order from the seeds (Lacuna tiers / HMS-ESQ sensitivity):
# PUBLIC < INTERNAL < PII < PHI.
sensitivity_rank := {"PUBLIC": 0, "INTERNAL": 1, "PII": 2, "PHI": 3}

# Rank of a field's sensitivity; an unknown label counts as PHI (fail closed).
field_rank(s) := r if {
	r := sensitivity_rank[s]
} else := 3

# Rank of a user's clearance; an unknown clearance counts as PUBLIC (fail closed).
clearance_rank(c) := r if {
	r := sensitivity_rank[c]
} else := 0

as_object(x) := x if is_object(x) else := {}

as_array(x) := x if is_array(x) else := []

as_string(x) := x if is_string(x) else := ""

user := as_object(object.get(input, "user", {}))

dataset := as_object(object.get(input, "dataset", {}))

request := as_object(object.get(input, "request", {}))

roles := {r | some r in as_array(object.get(user, "roles", [])); is_string(r)}

clearance := c if {
	c := user.clearance
	sensitivity_rank[c]
} else := "PUBLIC"

attributes := as_object(object.get(user, "attributes", {}))

dataset_id := as_string(object.get(dataset, "id", ""))

dataset_sensitivity := as_string(object.get(dataset, "sensitivity", ""))

steward := s if {
	s := dataset.steward
	is_string(s)
	s != ""
} else := "the data steward"

catalog_fields := [f | some f in as_array(object.get(dataset, "fields", [])); is_object(f)]

# Catalog entry for a field name; a name the catalog does not know is treated
# as a PHI pii field (fail closed).
field(name) := f if {
	some f in catalog_fields
	f.name == name
} else := {"name": name, "pii": true, "sensitivity": "PHI"}

has_field(name) if {
	some f in catalog_fields
	f.name == name
}

is_pii(name) if object.get(field(name), "pii", true) != false

# Sensitivity label of a field. esq fills it in; should it be missing, the
# same rule esq uses applies (pii: the dataset's label if PII/PHI, else PII;
# not pii: INTERNAL). A label outside the known four counts as PHI.
sensitivity(name) := s if {
	s := field(name).sensitivity
	sensitivity_rank[s]
} else := "PHI" if {
	"sensitivity" in object.keys(field(name))
} else := dataset_sensitivity if {
	is_pii(name)
	dataset_sensitivity in {"PII", "PHI"}
} else := "PII" if {
	is_pii(name)
} else := "INTERNAL"

# Requested field names, in request order.
requested_fields := [f | some f in as_array(object.get(request, "fields", [])); is_string(f)]

# The requested aggregate ("count", ...) or null for row-level data.
aggregate := a if {
	a := request.aggregate
	is_string(a)
} else := null

purpose := lower(p) if {
	p := request.purpose
	is_string(p)
} else := ""

where := as_object(object.get(request, "where", {}))

# ["a", "b"] rendering of a list or set of values for reasons/alternatives.
list_str(xs) := sprintf("[%s]", [concat(", ", [json.marshal(x) | some x in xs])])
