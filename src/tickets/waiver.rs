//! An exception waiver as ticket issuance sees it (DESIGN 3.9): a data
//! steward approved, for one requester and until a time, a scope wider than
//! the policies give. Within that scope the policies' denials are waived;
//! outside it the waiver is no help, so a request naming it is refused.
//!
//! Loading and checking the stored exception (approved, the requester's
//! own) is [`crate::exceptions`]' job; this is the pure scope check, kept
//! next to the ticket code it guards.

use chrono::{DateTime, Utc};

use super::scope::Aggregate;

/// What an approved exception allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver {
    /// `X-…`.
    pub id: String,
    /// The user who asked for it: the only one who may use it.
    pub requester: String,
    pub dataset: String,
    /// The fields it covers (catalog names).
    pub fields: Vec<String>,
    /// `Some(count)`: it covers count answers only; `None`: row level too.
    pub aggregate: Option<Aggregate>,
    /// Tickets under it end by then at the latest.
    pub expires_at: DateTime<Utc>,
}

impl Waiver {
    /// Why a request by `user` for `fields` of `dataset` with `aggregate`
    /// is not within this waiver at `now` (`None`: it is). The message
    /// names only catalog fields the request already named.
    pub fn outside(
        &self,
        user: &str,
        dataset: &str,
        fields: &[String],
        aggregate: Option<Aggregate>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        if user != self.requester {
            return Some(format!("exception {} was granted to another user", self.id));
        }
        if now >= self.expires_at {
            return Some(format!("exception {} has expired", self.id));
        }
        if dataset != self.dataset {
            return Some(format!(
                "exception {} covers dataset {}, not the one requested",
                self.id, self.dataset
            ));
        }
        let uncovered: Vec<&str> = fields
            .iter()
            .filter(|f| !self.fields.contains(f))
            .map(String::as_str)
            .collect();
        if !uncovered.is_empty() {
            return Some(format!(
                "exception {} does not cover field(s) {}; it covers {}",
                self.id,
                uncovered.join(", "),
                self.fields.join(", ")
            ));
        }
        match (self.aggregate, aggregate) {
            (Some(granted), asked) if asked != Some(granted) => Some(format!(
                "exception {} covers \"aggregate\": \"{}\" answers only",
                self.id,
                granted.as_str()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiver(aggregate: Option<Aggregate>) -> Waiver {
        Waiver {
            id: "X-test".into(),
            requester: "journalist".into(),
            dataset: "burial_2024".into(),
            fields: vec!["state".into(), "county".into(), "branch".into()],
            aggregate,
            expires_at: at(3_600),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_subset_of_the_fields_with_a_compatible_aggregate_is_within() {
        let row_level = waiver(None);
        let now = at(0);
        for (asked, aggregate) in [
            (&["state"][..], None),
            (&["state", "county", "branch"][..], None),
            (&["branch", "state"][..], Some(Aggregate::Count)),
        ] {
            assert_eq!(
                row_level.outside("journalist", "burial_2024", &fields(asked), aggregate, now),
                None,
                "{asked:?} {aggregate:?}"
            );
        }
        let counts = waiver(Some(Aggregate::Count));
        assert_eq!(
            counts.outside(
                "journalist",
                "burial_2024",
                &fields(&["state"]),
                Some(Aggregate::Count),
                now
            ),
            None
        );
    }

    #[test]
    fn anything_wider_another_user_another_dataset_or_later_is_outside() {
        let now = at(0);
        let row_level = waiver(None);
        let outside = |w: &Waiver, user: &str, dataset: &str, asked: &[&str], agg, now| {
            w.outside(user, dataset, &fields(asked), agg, now)
                .unwrap_or_else(|| panic!("{user} {dataset} {asked:?} {agg:?} must be outside"))
        };
        let why = outside(
            &row_level,
            "journalist",
            "burial_2024",
            &["state", "ssn"],
            None,
            now,
        );
        assert!(why.contains("field(s) ssn;"), "{why}");
        let why = outside(
            &row_level,
            "clinician",
            "burial_2024",
            &["state"],
            None,
            now,
        );
        assert!(why.contains("another user"), "{why}");
        let why = outside(
            &row_level,
            "journalist",
            "staff_notes",
            &["state"],
            None,
            now,
        );
        assert!(why.contains("dataset"), "{why}");
        let why = outside(
            &row_level,
            "journalist",
            "burial_2024",
            &["state"],
            None,
            at(3_600),
        );
        assert!(why.contains("expired"), "{why}");
        let counts = waiver(Some(Aggregate::Count));
        let why = outside(&counts, "journalist", "burial_2024", &["state"], None, now);
        assert!(why.contains("count"), "{why}");
    }
}
