//! A scope: the resolved, enforceable content of a ticket after policy
//! evaluation. The guard checks every statement against it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::FilterValue;
use crate::privacy::Privacy;

/// The aggregate functions a ticket can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Count,
}

impl Aggregate {
    pub const SUPPORTED: &'static [&'static str] = &["count"];

    pub fn parse(text: &str) -> Option<Aggregate> {
        match text.trim().to_ascii_lowercase().as_str() {
            "count" => Some(Aggregate::Count),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Identifies the enforceable content (not the ticket): tickets with the
    /// same scope share guard cache entries.
    pub id: String,
    pub dataset: String,
    /// Fields the ticket may read, in catalog order.
    pub fields: Vec<String>,
    /// When set, answers must be aggregated with this function.
    pub aggregate: Option<Aggregate>,
    /// Minimum group size of aggregate answers.
    pub min_group_size: u32,
    /// Equality filters every answer is restricted to (request + policies).
    pub row_filters: BTreeMap<String, FilterValue>,
    /// Rows whose retention field is before this date are hidden.
    pub retention_cutoff: Option<NaiveDate>,
    /// When set, count answers are differentially private: noisy, with
    /// each person's contribution bounded, paid from a budget (DESIGN 3.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
    pub purpose: String,
    pub user: String,
    /// The policies that allowed this scope (and, under an exception
    /// waiver, the exception's id first).
    pub policy_ids: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The exception waiver (`X-…`) the ticket was issued under: every
    /// audit record of the ticket names it. Not enforceable content (the
    /// guard enforces the fields, aggregate and filters above), so not in
    /// the scope's id; absent in scopes stored before exceptions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// The parts of a scope that the guard enforces, hashed into its id.
#[derive(Serialize)]
struct Enforceable<'a> {
    dataset: &'a str,
    fields: &'a [String],
    aggregate: Option<Aggregate>,
    min_group_size: u32,
    row_filters: &'a BTreeMap<String, FilterValue>,
    retention_cutoff: Option<NaiveDate>,
    /// Absent for k-only scopes, so their ids stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy: Option<Privacy>,
}

impl Scope {
    /// Computes the id from the enforceable content.
    pub fn compute_id(&self) -> String {
        let enforceable = Enforceable {
            dataset: &self.dataset,
            fields: &self.fields,
            aggregate: self.aggregate,
            min_group_size: self.min_group_size,
            row_filters: &self.row_filters,
            retention_cutoff: self.retention_cutoff,
            privacy: self.privacy,
        };
        let json = serde_json::to_vec(&enforceable).unwrap_or_default();
        format!("S-{}", &hex::encode(Sha256::digest(json))[..16])
    }

    pub fn allows_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f == name)
    }
}
