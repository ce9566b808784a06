# P-ABAC-STATE-001 — users scoped to a state see only that state's rows.
#
# Seed 01 (HMS-DTA/ESQ): answers are broken down "by state" (the FOIA
# walk-through returns {"state": "CA", "count": ...}); seed 04 (Lacuna)
# domain/attribute-based ownership. A user whose attributes carry a state
# is attribute-scoped: esq adds a row filter on the dataset's `state` field.
#
# Rules: applies when input.user.attributes.state is a non-empty string and
# the dataset has a field named "state". Allowed with obligation
# row_filter {"state": <user's state>}; denied when request.where.state is
# present and names another state (a list must name only the user's state).
# The row filter is stated on a denial too, for a waiver to keep.
package esq.policies.state_scope

import data.esq.lib

policy_id := "P-ABAC-STATE-001"

default applies := false

applies if {
	user_state != ""
	lib.has_field("state")
}

user_state := lib.as_string(object.get(lib.attributes, "state", ""))

# A where.state the user may ask for: their own state, alone or in a list.
where_state_ok(v) if v == user_state

where_state_ok(v) if {
	is_array(v)
	count(v) > 0
	every x in v {
		x == user_state
	}
}

reasons contains msg if {
	"state" in object.keys(lib.where)
	v := lib.where.state
	not where_state_ok(v)
	msg := sprintf("you may only see rows of state %q, but the request filters on state %v", [user_state, json.marshal(v)])
}

alternatives contains "drop \"state\" from \"where\": rows are limited to your state anyway" if count(reasons) > 0

alternatives contains msg if {
	count(reasons) > 0
	msg := sprintf("use \"where\": {\"state\": %q}", [user_state])
}

allow := count(reasons) == 0

# Also on a denial: an exception waiving it still sees only the user's
# state (a waiver lifts a denial, never an obligation).
obligations := {"row_filter": {"state": user_state}}

decision := {
	"allow": allow,
	"policy_id": policy_id,
	"reasons": sort(reasons),
	"alternatives": sort(alternatives),
	"obligations": obligations,
} if applies
