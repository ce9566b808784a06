//! The input document policies see for a ticket request (DESIGN.md 3.5).

use std::collections::BTreeMap;

use serde::Serialize;

use super::decision::FilterValue;
use crate::auth::Principal;
use crate::catalog::Dataset;
use crate::privacy::Privacy;
use crate::sensitivity::Sensitivity;

#[derive(Debug, Clone, Serialize)]
pub struct TicketPolicyInput {
    pub action: &'static str,
    pub user: Principal,
    pub dataset: DatasetInput,
    pub request: RequestInput,
    /// RFC 3339, UTC.
    pub now: String,
    pub environment: String,
    /// The exception waiver the request is made under (absent otherwise):
    /// a policy may look at it, but its denial is waived within the
    /// waiver's scope (DESIGN 3.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionInput>,
}

/// An approved exception waiver, as ticket policies see it.
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionInput {
    pub id: String,
    pub fields: Vec<String>,
    /// `"count"`, or `null` for row-level.
    pub aggregate: Option<String>,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetInput {
    pub id: String,
    pub table: String,
    pub sensitivity: Sensitivity,
    pub owner: String,
    pub steward: String,
    pub subject_key: Option<String>,
    /// The field private answers bound (the catalog's, else subject_key).
    pub privacy_unit: Option<String>,
    pub retention_years: Option<u32>,
    pub retention_field: Option<String>,
    pub min_group_size: Option<u32>,
    pub fields: Vec<FieldInput>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldInput {
    pub name: String,
    pub pii: bool,
    /// Always set: the field's effective sensitivity.
    pub sensitivity: Sensitivity,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestInput {
    pub fields: Vec<String>,
    pub aggregate: Option<String>,
    pub purpose: String,
    pub ttl_seconds: u64,
    #[serde(rename = "where")]
    pub where_: BTreeMap<String, FilterValue>,
    /// The request's own privacy parameters (`null`: none asked for).
    pub privacy: Option<Privacy>,
}

impl DatasetInput {
    pub fn from_dataset(dataset: &Dataset) -> DatasetInput {
        DatasetInput {
            id: dataset.id.clone(),
            table: dataset.table.to_string(),
            sensitivity: dataset.sensitivity,
            owner: dataset.owner.clone(),
            steward: dataset.steward.clone(),
            subject_key: dataset.subject_key.clone(),
            privacy_unit: dataset.privacy_unit().map(str::to_string),
            retention_years: dataset.retention_years,
            retention_field: dataset.retention_field.clone(),
            min_group_size: dataset.min_group_size,
            fields: dataset
                .fields
                .iter()
                .map(|f| FieldInput {
                    name: f.name.clone(),
                    pii: f.pii,
                    sensitivity: dataset.field_sensitivity(f),
                })
                .collect(),
        }
    }
}
