//! The privacy parameters of a ticket (DESIGN 3.7): what one answer may
//! spend, what a (user, dataset) may spend per period, how long a period
//! is, and how many groups one privacy unit may count in. They come from a
//! policy obligation, from the request itself, or both; combined, the
//! narrowest wins, so a policy can only tighten what a requester asked for.
//!
//! Epsilons are JSON numbers for people; the ledger counts integer
//! micro-epsilon ([`Privacy::per_query_micro`]) so that sums over many
//! answers never drift.

use serde::{Deserialize, Serialize};

/// One epsilon in the ledger's unit.
pub const MICRO: f64 = 1_000_000.0;

/// Bounds on the parameters: outside them a value is a mistake, not a choice.
pub const MIN_EPSILON: f64 = 0.001;
pub const MAX_EPSILON_PER_QUERY: f64 = 10.0;
pub const MAX_EPSILON_BUDGET: f64 = 100.0;
pub const MIN_PERIOD_SECONDS: u64 = 60;
/// One year: a budget that renews less often than that never renews.
pub const MAX_PERIOD_SECONDS: u64 = 366 * 86_400;
pub const MAX_GROUPS_PER_UNIT: u32 = 100;

/// `{"epsilon_per_query": 0.5, "epsilon_budget": 4.0,
///   "budget_period_seconds": 86400, "max_groups_per_unit": 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// What one released answer costs (and its noise scale's epsilon).
    pub epsilon_per_query: f64,
    /// What one user may spend on one dataset per period.
    pub epsilon_budget: f64,
    /// The period's length: the answers of any span this long may spend at
    /// most the budget (a sliding window over the user's spends on the
    /// dataset, whatever ticket made them).
    pub budget_period_seconds: u64,
    /// The contribution bound L0: a privacy unit (a person) is counted in
    /// at most this many groups of one answer, and at most once in each.
    /// The noise scale grows with it (`L0 / epsilon_per_query`). Default 1:
    /// each person counts once per answer, the right bound for data with
    /// one row per person (the burial register).
    #[serde(default = "default_bound")]
    pub max_groups_per_unit: u32,
}

fn default_bound() -> u32 {
    1
}

/// A parameter out of range: names the field and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy.{field}: {message}")]
pub struct InvalidPrivacy {
    pub field: &'static str,
    pub message: String,
}

impl Privacy {
    /// Checks every parameter; the message names the field.
    pub fn validate(&self) -> Result<(), InvalidPrivacy> {
        let bad = |field, message: String| Err(InvalidPrivacy { field, message });
        let epsilon = |field, value: f64, max: f64| {
            if !value.is_finite() || value < MIN_EPSILON || value > max {
                bad(
                    field,
                    format!("{value} is not an epsilon between {MIN_EPSILON} and {max}"),
                )
            } else {
                Ok(())
            }
        };
        epsilon(
            "epsilon_per_query",
            self.epsilon_per_query,
            MAX_EPSILON_PER_QUERY,
        )?;
        epsilon("epsilon_budget", self.epsilon_budget, MAX_EPSILON_BUDGET)?;
        if self.budget_micro() < self.per_query_micro() {
            return bad(
                "epsilon_budget",
                format!(
                    "{} is below epsilon_per_query ({}): no answer could ever be paid for",
                    self.epsilon_budget, self.epsilon_per_query
                ),
            );
        }
        if !(MIN_PERIOD_SECONDS..=MAX_PERIOD_SECONDS).contains(&self.budget_period_seconds) {
            return bad(
                "budget_period_seconds",
                format!(
                    "{} is not between {MIN_PERIOD_SECONDS} (a minute) and {MAX_PERIOD_SECONDS} (a year)",
                    self.budget_period_seconds
                ),
            );
        }
        if !(1..=MAX_GROUPS_PER_UNIT).contains(&self.max_groups_per_unit) {
            return bad(
                "max_groups_per_unit",
                format!(
                    "{} is not between 1 and {MAX_GROUPS_PER_UNIT}",
                    self.max_groups_per_unit
                ),
            );
        }
        Ok(())
    }

    /// The narrower of two parameter sets: smaller epsilons, the longer
    /// period, the smaller contribution bound. (A longer period with the
    /// same budget spends more slowly; a smaller bound adds less noise but
    /// counts fewer of each person's rows: both are the stricter reading.)
    pub fn narrowest(self, other: Privacy) -> Privacy {
        Privacy {
            epsilon_per_query: self.epsilon_per_query.min(other.epsilon_per_query),
            epsilon_budget: self.epsilon_budget.min(other.epsilon_budget),
            budget_period_seconds: self.budget_period_seconds.max(other.budget_period_seconds),
            max_groups_per_unit: self.max_groups_per_unit.min(other.max_groups_per_unit),
        }
    }

    /// Combines optional parameter sets (request, policies) to the narrowest.
    pub fn combine(a: Option<Privacy>, b: Option<Privacy>) -> Option<Privacy> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.narrowest(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn per_query_micro(&self) -> u64 {
        to_micro(self.epsilon_per_query)
    }

    pub fn budget_micro(&self) -> u64 {
        to_micro(self.epsilon_budget)
    }
}

/// Epsilon to micro-epsilon, rounded (values are validated finite and
/// positive; anything else maps to 0, which charges and allows nothing).
pub fn to_micro(epsilon: f64) -> u64 {
    if epsilon.is_finite() && epsilon > 0.0 {
        (epsilon * MICRO).round() as u64
    } else {
        0
    }
}

/// Micro-epsilon back to epsilon, for people.
pub fn from_micro(micro: u64) -> f64 {
    micro as f64 / MICRO
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy(per_query: f64, budget: f64, period: u64, bound: u32) -> Privacy {
        Privacy {
            epsilon_per_query: per_query,
            epsilon_budget: budget,
            budget_period_seconds: period,
            max_groups_per_unit: bound,
        }
    }

    #[test]
    fn sane_parameters_pass_and_bad_ones_name_their_field() {
        assert_eq!(privacy(0.5, 4.0, 86_400, 1).validate(), Ok(()));
        let field = |p: Privacy| p.validate().err().map(|e| e.field);
        assert_eq!(
            field(privacy(0.0, 4.0, 86_400, 1)),
            Some("epsilon_per_query")
        );
        assert_eq!(
            field(privacy(-1.0, 4.0, 86_400, 1)),
            Some("epsilon_per_query")
        );
        assert_eq!(
            field(privacy(f64::NAN, 4.0, 86_400, 1)),
            Some("epsilon_per_query")
        );
        assert_eq!(
            field(privacy(f64::INFINITY, 4.0, 86_400, 1)),
            Some("epsilon_per_query")
        );
        assert_eq!(field(privacy(0.5, 0.25, 86_400, 1)), Some("epsilon_budget"));
        assert_eq!(field(privacy(0.5, 1e9, 86_400, 1)), Some("epsilon_budget"));
        assert_eq!(
            field(privacy(0.5, 4.0, 59, 1)),
            Some("budget_period_seconds")
        );
        assert_eq!(
            field(privacy(0.5, 4.0, 86_400, 0)),
            Some("max_groups_per_unit")
        );
        assert_eq!(
            field(privacy(0.5, 4.0, 86_400, 101)),
            Some("max_groups_per_unit")
        );
    }

    #[test]
    fn the_narrowest_takes_each_stricter_value() {
        let a = privacy(0.5, 4.0, 86_400, 3);
        let b = privacy(0.25, 8.0, 3_600, 1);
        assert_eq!(a.narrowest(b), privacy(0.25, 4.0, 86_400, 1));
        assert_eq!(Privacy::combine(None, Some(b)), Some(b));
        assert_eq!(Privacy::combine(Some(a), None), Some(a));
        assert_eq!(Privacy::combine(None, None), None);
    }

    #[test]
    fn the_bound_defaults_to_one_and_unknown_keys_are_refused() {
        let p: Privacy = serde_json::from_str(
            r#"{"epsilon_per_query": 0.5, "epsilon_budget": 4, "budget_period_seconds": 86400}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.max_groups_per_unit, 1);
        assert!(serde_json::from_str::<Privacy>(
            r#"{"epsilon_per_query": 0.5, "epsilon_budget": 4, "budget_period_seconds": 86400, "delta": 0}"#
        )
        .is_err());
    }

    #[test]
    fn micro_epsilon_sums_do_not_drift() {
        let tenth = privacy(0.1, 1.0, 86_400, 1);
        let spent: u64 = (0..10).map(|_| tenth.per_query_micro()).sum();
        assert_eq!(spent, tenth.budget_micro());
        assert_eq!(from_micro(spent), 1.0);
    }
}
