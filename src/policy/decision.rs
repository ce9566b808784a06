//! What one policy package returns, and how the answers of all applicable
//! packages combine. Only an explicit `allow: true` from every applicable
//! package allows; obligations only ever narrow and combine to the narrowest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::privacy::Privacy;

/// A scalar that a row filter compares a field with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl std::fmt::Display for FilterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterValue::Text(s) => write!(f, "{s:?}"),
            FilterValue::Integer(i) => write!(f, "{i}"),
            FilterValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Conditions a policy attaches to its `allow`. Unknown keys make the
/// decision unreadable, which denies: esq never ignores an obligation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Obligations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_group_size: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_filter: BTreeMap<String, FilterValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// Rows whose retention field is before this date (YYYY-MM-DD) are hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_cutoff: Option<String>,
    /// The ticket may carry at most these fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Answers carry differential-privacy noise and spend a budget
    /// (DESIGN 3.7); combined with the request's own to the narrowest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
}

/// The `decision` object of one package, as the contract defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageDecision {
    pub allow: bool,
    #[serde(default)]
    pub policy_id: String,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub alternatives: Vec<String>,
    #[serde(default)]
    pub obligations: Obligations,
}

/// The combined verdict over every applicable package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub allow: bool,
    /// Policy ids of the packages that applied (allowing and denying).
    pub policy_ids: Vec<String>,
    /// The ids of the packages that denied (empty on allow).
    pub denied_by: Vec<String>,
    pub reasons: Vec<String>,
    pub alternatives: Vec<String>,
    pub obligations: Obligations,
}

impl Verdict {
    pub fn deny(policy_id: &str, reason: impl Into<String>, alternatives: Vec<String>) -> Verdict {
        Verdict {
            allow: false,
            policy_ids: vec![policy_id.to_string()],
            denied_by: vec![policy_id.to_string()],
            reasons: vec![reason.into()],
            alternatives,
            obligations: Obligations::default(),
        }
    }
}

/// Combines the decisions of all applicable packages. `decisions` empty means
/// no package applied: default deny.
pub fn combine(decisions: &[PackageDecision]) -> Verdict {
    if decisions.is_empty() {
        return Verdict::deny(
            "esq-default-deny",
            "no policy applies to this request, so it is denied by default",
            vec!["ask the dataset's steward which policy covers your role and purpose".into()],
        );
    }
    let policy_ids: Vec<String> = decisions.iter().map(|d| d.policy_id.clone()).collect();
    let denying: Vec<&PackageDecision> = decisions.iter().filter(|d| !d.allow).collect();
    if !denying.is_empty() {
        return Verdict {
            allow: false,
            policy_ids,
            denied_by: denying.iter().map(|d| d.policy_id.clone()).collect(),
            reasons: collect_unique(denying.iter().flat_map(|d| d.reasons.iter()), || {
                "denied by policy (no reason given)".to_string()
            }),
            alternatives: collect_unique(
                denying.iter().flat_map(|d| d.alternatives.iter()),
                String::new,
            ),
            obligations: Obligations::default(),
        };
    }
    match narrowest(decisions) {
        Ok(obligations) => Verdict {
            allow: true,
            policy_ids,
            denied_by: Vec::new(),
            reasons: Vec::new(),
            alternatives: Vec::new(),
            obligations,
        },
        Err(reason) => Verdict {
            allow: false,
            denied_by: policy_ids.clone(),
            policy_ids,
            reasons: vec![reason],
            alternatives: vec![
                "ask the dataset's steward: the applicable policies contradict each other".into(),
            ],
            obligations: Obligations::default(),
        },
    }
}

fn collect_unique<'a>(
    items: impl Iterator<Item = &'a String>,
    fallback: impl Fn() -> String,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !item.trim().is_empty() && !out.contains(item) {
            out.push(item.clone());
        }
    }
    let fallback = fallback();
    if out.is_empty() && !fallback.is_empty() {
        out.push(fallback);
    }
    out
}

/// The narrowest obligations that satisfy every decision, or why none exist.
fn narrowest(decisions: &[PackageDecision]) -> Result<Obligations, String> {
    let mut out = Obligations::default();
    for decision in decisions {
        let o = &decision.obligations;
        out.max_ttl_seconds = min_some(out.max_ttl_seconds, o.max_ttl_seconds);
        out.min_group_size = out.min_group_size.max(o.min_group_size);
        out.retention_cutoff = out.retention_cutoff.clone().max(o.retention_cutoff.clone());
        for (field, value) in &o.row_filter {
            match out.row_filter.get(field) {
                Some(existing) if existing != value => {
                    return Err(format!(
                        "policies require both {field} = {existing} and {field} = {value}: no row can satisfy both"
                    ));
                }
                _ => {
                    out.row_filter.insert(field.clone(), value.clone());
                }
            }
        }
        match (&out.aggregate, &o.aggregate) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "policies require both aggregate {a:?} and aggregate {b:?}"
                ));
            }
            (None, Some(b)) => out.aggregate = Some(b.clone()),
            _ => {}
        }
        out.privacy = Privacy::combine(out.privacy, o.privacy);
        if let Some(allowed) = &o.fields {
            out.fields = Some(match out.fields.take() {
                None => allowed.clone(),
                Some(current) => current
                    .into_iter()
                    .filter(|f| allowed.contains(f))
                    .collect(),
            });
        }
    }
    Ok(out)
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(id: &str, obligations: Obligations) -> PackageDecision {
        PackageDecision {
            allow: true,
            policy_id: id.into(),
            reasons: vec![],
            alternatives: vec![],
            obligations,
        }
    }

    #[test]
    fn no_applicable_policy_denies() {
        let verdict = combine(&[]);
        assert!(!verdict.allow);
        assert_eq!(verdict.denied_by, vec!["esq-default-deny"]);
    }

    #[test]
    fn one_denial_denies_and_reasons_of_all_denials_are_shown() {
        let deny = |id: &str, reason: &str, alt: &str| PackageDecision {
            allow: false,
            policy_id: id.into(),
            reasons: vec![reason.into()],
            alternatives: vec![alt.into()],
            obligations: Obligations::default(),
        };
        let verdict = combine(&[
            allow("A", Obligations::default()),
            deny("B", "no ssn", "drop ssn"),
            deny("C", "aggregate only", "use count"),
        ]);
        assert!(!verdict.allow);
        assert_eq!(verdict.denied_by, vec!["B", "C"]);
        assert_eq!(verdict.reasons, vec!["no ssn", "aggregate only"]);
        assert_eq!(verdict.alternatives, vec!["drop ssn", "use count"]);
    }

    #[test]
    fn obligations_combine_to_the_narrowest() {
        let a = Obligations {
            max_ttl_seconds: Some(3600),
            min_group_size: Some(11),
            row_filter: BTreeMap::from([("state".into(), FilterValue::Text("CA".into()))]),
            retention_cutoff: Some("2016-11-25".into()),
            fields: Some(vec!["state".into(), "id".into()]),
            ..Obligations::default()
        };
        let b = Obligations {
            max_ttl_seconds: Some(900),
            min_group_size: Some(20),
            aggregate: Some("count".into()),
            retention_cutoff: Some("2019-01-01".into()),
            fields: Some(vec!["state".into()]),
            ..Obligations::default()
        };
        let verdict = combine(&[allow("A", a), allow("B", b)]);
        assert!(verdict.allow);
        let o = verdict.obligations;
        assert_eq!(o.max_ttl_seconds, Some(900));
        assert_eq!(o.min_group_size, Some(20));
        assert_eq!(o.aggregate.as_deref(), Some("count"));
        assert_eq!(o.retention_cutoff.as_deref(), Some("2019-01-01"));
        assert_eq!(o.fields, Some(vec!["state".to_string()]));
        assert_eq!(o.row_filter.len(), 1);
    }

    #[test]
    fn privacy_obligations_combine_to_the_narrowest() {
        let privacy = |per_query: f64, budget: f64, period: u64| Obligations {
            privacy: Some(Privacy {
                epsilon_per_query: per_query,
                epsilon_budget: budget,
                budget_period_seconds: period,
                max_groups_per_unit: 2,
            }),
            ..Obligations::default()
        };
        let verdict = combine(&[
            allow("A", privacy(0.5, 4.0, 3_600)),
            allow("B", Obligations::default()),
            allow("C", privacy(1.0, 2.0, 86_400)),
        ]);
        assert!(verdict.allow);
        let p = verdict.obligations.privacy.expect("privacy");
        assert_eq!(
            (
                p.epsilon_per_query,
                p.epsilon_budget,
                p.budget_period_seconds
            ),
            (0.5, 2.0, 86_400)
        );
        let json = r#"{"allow": true, "policy_id": "X", "obligations": {"privacy": {"epsilon_per_query": 0.5, "epsilon_budget": 4, "budget_period_seconds": 86400, "noise": "none"}}}"#;
        assert!(serde_json::from_str::<PackageDecision>(json).is_err());
    }

    #[test]
    fn contradictory_row_filters_deny() {
        let filter = |s: &str| Obligations {
            row_filter: BTreeMap::from([("state".into(), FilterValue::Text(s.into()))]),
            ..Obligations::default()
        };
        let verdict = combine(&[allow("A", filter("CA")), allow("B", filter("NY"))]);
        assert!(!verdict.allow);
        assert!(verdict.reasons[0].contains("no row can satisfy both"));
    }

    #[test]
    fn unknown_obligations_do_not_parse() {
        let json = r#"{"allow": true, "policy_id": "X", "obligations": {"watermark": true}}"#;
        assert!(serde_json::from_str::<PackageDecision>(json).is_err());
    }
}
