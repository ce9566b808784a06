//! Issuing a ticket: validate the request against the catalog, ask the
//! policies, apply their obligations (which only narrow), store the ticket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::id::TicketId;
use super::scope::{Aggregate, Scope};
use super::store::{StoreError, Ticket, TicketStore};
use super::waiver::Waiver;
use crate::auth::Principal;
use crate::catalog::{Catalog, Dataset};
use crate::policy::input::{DatasetInput, ExceptionInput, RequestInput};
use crate::policy::{FilterValue, PolicySet, TicketPolicyInput, Verdict};
use crate::privacy::Privacy;

/// A ticket request as users send it (HTTP body, CLI flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    pub dataset: String,
    #[serde(default)]
    pub purpose: String,
    pub fields: Vec<String>,
    #[serde(default)]
    pub aggregate: Option<String>,
    /// `"5m"`, `"1h"`; the configured default when absent.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Equality filters the requester narrows their own rows with.
    #[serde(default, rename = "where")]
    pub where_: BTreeMap<String, serde_json::Value>,
    /// Differentially private answers, asked for by the requester (policies
    /// may only narrow it, or impose it when absent). Needs `aggregate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
    /// An approved exception waiver (`X-…`) of the requester's to issue
    /// the ticket under (DESIGN 3.9): policy denials are waived within its
    /// scope. Only [`crate::exceptions::tickets::issue`] can check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// A request esq will not evaluate: names the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadRequest {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    #[error("denied by policy: {}", .0.reasons.join("; "))]
    Denied(Box<Verdict>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no secure random source: {0}")]
    Random(String),
}

/// A freshly issued ticket: the only time the id is ever shown.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedTicket {
    pub ticket: String,
    /// The lifetime in humantime form, e.g. `"5m"`.
    pub expires: String,
    pub expires_at: String,
    pub scope: Scope,
    /// What the requester should know about how the grant differs from
    /// the request (e.g. a lifetime the policies shortened); empty when it
    /// is as asked.
    pub notes: Vec<String>,
}

/// Ticket issuance limits from the config.
#[derive(Debug, Clone)]
pub struct IssuePolicy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub min_group_size: u32,
    pub environment: String,
}

pub struct TicketIssuer {
    pub catalog: Arc<Catalog>,
    pub policies: Arc<PolicySet>,
    pub store: Arc<dyn TicketStore>,
    pub limits: IssuePolicy,
}

const MAX_PURPOSE_LEN: usize = 500;

impl TicketIssuer {
    /// Issues a ticket the policies allow. A request naming an exception
    /// waiver is refused here: only [`TicketIssuer::issue_under`], given
    /// the checked waiver, issues under one.
    pub async fn issue(
        &self,
        user: &Principal,
        request: &TicketRequest,
        now: DateTime<Utc>,
    ) -> Result<IssuedTicket, IssueError> {
        self.issue_under(user, request, now, None).await
    }

    /// [`TicketIssuer::issue`], under `waiver` when given (an approved
    /// exception of the user's, already loaded): the request must lie
    /// within it, the policies' denials are waived (their failures are
    /// not), the ticket ends when the waiver does at the latest, and its
    /// scope names the waiver.
    pub async fn issue_under(
        &self,
        user: &Principal,
        request: &TicketRequest,
        now: DateTime<Utc>,
        waiver: Option<&Waiver>,
    ) -> Result<IssuedTicket, IssueError> {
        let checked = self.check_request(request)?;
        let asked_ttl = checked.ttl;
        match (request.exception.as_deref(), waiver) {
            (None, None) => {}
            (Some(named), Some(waiver)) if named.trim() == waiver.id => {}
            (Some(_), None) => {
                return Err(BadRequest {
                    field: "exception".into(),
                    message: "tickets under an exception waiver are issued by esq serve (POST /api/esq/ticket) or esq ticket issue with [maintenance] configured".into(),
                }
                .into())
            }
            _ => {
                return Err(BadRequest {
                    field: "exception".into(),
                    message: "the request names another exception than the one checked".into(),
                }
                .into())
            }
        }
        if let Some(waiver) = waiver {
            if let Some(why) = waiver.outside(
                &user.name,
                &checked.dataset.id,
                &checked.fields,
                checked.aggregate,
                now,
            ) {
                return Err(IssueError::Denied(Box::new(Verdict::deny(
                    &waiver.id,
                    format!("the request is outside its exception: {why}"),
                    vec![
                        "ask within the exception's dataset, fields and aggregate, or without \"exception\" (the policies decide then)".into(),
                        "request a new exception (POST /api/esq/exception) for what you need".into(),
                    ],
                ))));
            }
        }
        let input = TicketPolicyInput {
            action: "issue_ticket",
            user: user.clone(),
            dataset: DatasetInput::from_dataset(&checked.dataset),
            request: RequestInput {
                fields: checked.fields.clone(),
                aggregate: checked.aggregate.map(|a| a.as_str().to_string()),
                purpose: checked.purpose.clone(),
                ttl_seconds: checked.ttl.as_secs(),
                where_: checked.where_.clone(),
                privacy: checked.privacy,
            },
            now: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            environment: self.limits.environment.clone(),
            exception: waiver.map(|w| ExceptionInput {
                id: w.id.clone(),
                fields: w.fields.clone(),
                aggregate: w.aggregate.map(|a| a.as_str().to_string()),
                expires_at: w.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        };
        let verdict = match waiver {
            None => self.policies.evaluate(&input),
            Some(waiver) => {
                let (mut verdict, waived) = self.policies.evaluate_waiving(&input);
                if !waived.is_empty() {
                    tracing::info!(
                        exception = waiver.id,
                        ?waived,
                        "policy denials waived by an exception"
                    );
                }
                verdict.policy_ids.insert(0, waiver.id.clone());
                verdict
            }
        };
        if !verdict.allow {
            return Err(IssueError::Denied(Box::new(verdict)));
        }
        let mut scope = self.scope_for(user, checked, &verdict, now)?;
        if let Some(waiver) = waiver {
            if scope.expires_at > waiver.expires_at {
                scope.expires_at = waiver.expires_at;
            }
            scope.exception = Some(waiver.id.clone());
        }
        let id = TicketId::generate().map_err(|err| IssueError::Random(err.to_string()))?;
        let ticket = Ticket {
            scope: scope.clone(),
        };
        self.store.put(&id, &ticket).await?;
        let lifetime = (scope.expires_at - scope.issued_at)
            .to_std()
            .unwrap_or_default();
        let notes = ttl_note(asked_ttl, lifetime, request.ttl.is_none(), waiver, &scope)
            .into_iter()
            .collect();
        Ok(IssuedTicket {
            ticket: id.as_str().to_string(),
            expires: humantime::format_duration(lifetime).to_string(),
            expires_at: scope.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            scope,
            notes,
        })
    }

    /// Checks a request against the catalog and the lifetime limits
    /// without asking the policies (a standing request, when the bundle
    /// loads).
    pub fn check(&self, request: &TicketRequest) -> Result<(), BadRequest> {
        self.check_request(request).map(|_| ())
    }

    fn check_request(&self, request: &TicketRequest) -> Result<CheckedRequest, BadRequest> {
        let bad = |field: &str, message: String| BadRequest {
            field: field.to_string(),
            message,
        };
        let dataset = self
            .catalog
            .dataset(request.dataset.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = self.catalog.datasets().map(|d| d.id.as_str()).collect();
                bad(
                    "dataset",
                    format!(
                        "unknown dataset {:?}; known datasets: {}",
                        request.dataset,
                        known.join(", ")
                    ),
                )
            })?;
        if request.fields.is_empty() {
            return Err(bad("fields", "name at least one field".into()));
        }
        let mut fields = Vec::new();
        for name in &request.fields {
            if dataset.field(name).is_none() {
                return Err(bad(
                    "fields",
                    format!(
                        "{name:?} is not a field of {}; its fields are: {}",
                        dataset.id,
                        field_names(dataset)
                    ),
                ));
            }
        }
        // Catalog order, without duplicates.
        for field in &dataset.fields {
            if request.fields.contains(&field.name) {
                fields.push(field.name.clone());
            }
        }
        let aggregate = match request.aggregate.as_deref() {
            None => None,
            Some(text) => Some(Aggregate::parse(text).ok_or_else(|| {
                bad(
                    "aggregate",
                    format!(
                        "{text:?} is not supported; supported: {}",
                        Aggregate::SUPPORTED.join(", ")
                    ),
                )
            })?),
        };
        let purpose = request.purpose.trim().to_string();
        if purpose.is_empty() {
            return Err(bad(
                "purpose",
                "state why you need the data (it is recorded and policies decide on it)".into(),
            ));
        }
        if purpose.chars().count() > MAX_PURPOSE_LEN {
            return Err(bad(
                "purpose",
                format!("at most {MAX_PURPOSE_LEN} characters"),
            ));
        }
        let ttl = match request.ttl.as_deref() {
            None => self.limits.default_ttl,
            Some(text) => humantime::parse_duration(text.trim()).map_err(|err| {
                bad(
                    "ttl",
                    format!("{text:?} is not a duration like \"5m\" ({err})"),
                )
            })?,
        };
        if ttl.is_zero() {
            return Err(bad("ttl", "must be positive".into()));
        }
        if ttl > self.limits.max_ttl {
            return Err(bad(
                "ttl",
                format!(
                    "{} exceeds the maximum of {}",
                    humantime::format_duration(ttl),
                    humantime::format_duration(self.limits.max_ttl)
                ),
            ));
        }
        let where_ = check_where(dataset, &request.where_)?;
        if let Some(privacy) = &request.privacy {
            privacy
                .validate()
                .map_err(|err| bad(&format!("privacy.{}", err.field), err.message))?;
            if aggregate.is_none() {
                return Err(bad(
                    "privacy",
                    "private answers are counts: add \"aggregate\": \"count\"".into(),
                ));
            }
            if dataset.privacy_unit().is_none() {
                return Err(bad(
                    "privacy",
                    format!(
                        "{} names no privacy_unit (nor subject_key) in its catalog file, so no contribution can be bounded",
                        dataset.id
                    ),
                ));
            }
        }
        Ok(CheckedRequest {
            dataset: dataset.clone(),
            fields,
            aggregate,
            purpose,
            ttl,
            where_,
            privacy: request.privacy,
        })
    }

    /// Applies the verdict's obligations to the checked request.
    fn scope_for(
        &self,
        user: &Principal,
        request: CheckedRequest,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<Scope, IssueError> {
        let o = &verdict.obligations;
        let deny = |reason: String| {
            IssueError::Denied(Box::new(Verdict {
                allow: false,
                denied_by: verdict.policy_ids.clone(),
                policy_ids: verdict.policy_ids.clone(),
                reasons: vec![reason],
                alternatives: vec![],
                obligations: Default::default(),
            }))
        };
        let mut ttl = request.ttl;
        if let Some(max) = o.max_ttl_seconds {
            ttl = ttl.min(Duration::from_secs(max));
        }
        if ttl.is_zero() {
            return Err(deny("the policies allow a ticket lifetime of zero".into()));
        }
        let aggregate = match (request.aggregate, o.aggregate.as_deref()) {
            (requested, None) => requested,
            (requested, Some(text)) => {
                let required = Aggregate::parse(text).ok_or_else(|| {
                    deny(format!(
                        "a policy requires aggregate {text:?}, which esq does not support"
                    ))
                })?;
                if requested.is_some_and(|r| r != required) {
                    return Err(deny(format!(
                        "a policy requires aggregate {text:?} but the request asks for another"
                    )));
                }
                Some(required)
            }
        };
        let mut fields = request.fields;
        if let Some(allowed) = &o.fields {
            fields.retain(|f| allowed.contains(f));
            if fields.is_empty() {
                return Err(deny(
                    "the policies leave none of the requested fields".into(),
                ));
            }
        }
        let mut row_filters = request.where_;
        for (field, value) in &o.row_filter {
            if request.dataset.field(field).is_none() {
                return Err(deny(format!(
                    "a policy filters on {field:?}, which is not a field of {}",
                    request.dataset.id
                )));
            }
            match row_filters.get(field) {
                Some(existing) if existing != value => {
                    return Err(deny(format!(
                        "your request asks for {field} = {existing} but policy restricts you to {field} = {value}"
                    )));
                }
                _ => {
                    row_filters.insert(field.clone(), value.clone());
                }
            }
        }
        let retention_cutoff = match &o.retention_cutoff {
            None => None,
            Some(text) => Some(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                deny(format!(
                    "a policy set retention_cutoff {text:?}, which is not a YYYY-MM-DD date"
                ))
            })?),
        };
        let privacy = Privacy::combine(request.privacy, o.privacy);
        if let Some(privacy) = &privacy {
            privacy.validate().map_err(|err| {
                deny(format!(
                    "the policies' privacy obligation is invalid: {err}"
                ))
            })?;
            if aggregate.is_none() {
                return Err(deny(
                    "a policy requires differential privacy, which applies to count answers: request \"aggregate\": \"count\"".into(),
                ));
            }
            if request.dataset.privacy_unit().is_none() {
                return Err(deny(format!(
                    "a policy requires differential privacy, but {} names no privacy_unit (nor subject_key)",
                    request.dataset.id
                )));
            }
        }
        let min_group_size = self
            .limits
            .min_group_size
            .max(request.dataset.min_group_size.unwrap_or(0))
            .max(o.min_group_size.unwrap_or(0));
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| deny("ticket lifetime out of range".into()))?;
        let mut scope = Scope {
            id: String::new(),
            dataset: request.dataset.id.clone(),
            fields,
            aggregate,
            min_group_size,
            row_filters,
            retention_cutoff,
            privacy,
            purpose: request.purpose,
            user: user.name.clone(),
            policy_ids: verdict.policy_ids.clone(),
            issued_at: now,
            expires_at: now + ttl,
            exception: None,
        };
        scope.id = scope.compute_id();
        Ok(scope)
    }
}

/// The note that says a ticket lasts less than asked, and why: the
/// policies' `max_ttl_seconds`, or the exception it was issued under.
fn ttl_note(
    asked: Duration,
    granted: Duration,
    defaulted: bool,
    waiver: Option<&Waiver>,
    scope: &Scope,
) -> Option<String> {
    // Whole seconds: the lifetime is kept to the second.
    if granted.as_secs() >= asked.as_secs() {
        return None;
    }
    let asked_text = humantime::format_duration(asked);
    let granted_text = humantime::format_duration(Duration::from_secs(granted.as_secs()));
    let asked_text = if defaulted {
        format!("{asked_text} (the default)")
    } else {
        asked_text.to_string()
    };
    let why = match waiver {
        Some(waiver) if scope.expires_at >= waiver.expires_at => format!(
            "exception {} ends at {}",
            waiver.id,
            waiver.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        _ => format!("the policies allow at most {granted_text} for this request"),
    };
    Some(format!(
        "ttl shortened by policy: asked {asked_text}, granted {granted_text} ({why})"
    ))
}

struct CheckedRequest {
    dataset: Arc<Dataset>,
    fields: Vec<String>,
    aggregate: Option<Aggregate>,
    purpose: String,
    ttl: Duration,
    where_: BTreeMap<String, FilterValue>,
    privacy: Option<Privacy>,
}

fn field_names(dataset: &Dataset) -> String {
    dataset
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `where` may narrow rows by equality on non-PII fields only: an equality
/// test on a PII field (`ssn = '…'`) would reveal whether a person is in the
/// data, whatever the answer's aggregation.
fn check_where(
    dataset: &Dataset,
    filters: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, FilterValue>, BadRequest> {
    let mut out = BTreeMap::new();
    for (name, value) in filters {
        let bad = |message: String| BadRequest {
            field: format!("where.{name}"),
            message,
        };
        let field = dataset
            .field(name)
            .ok_or_else(|| bad(format!("not a field of {}", dataset.id)))?;
        if field.pii {
            return Err(bad(
                "PII fields cannot be used as filters (that would reveal whether a person is in the data)".into(),
            ));
        }
        let value = match value {
            serde_json::Value::String(s) => FilterValue::Text(s.clone()),
            serde_json::Value::Bool(b) => FilterValue::Bool(*b),
            serde_json::Value::Number(n) => FilterValue::Integer(
                n.as_i64()
                    .ok_or_else(|| bad("numbers must be integers".into()))?,
            ),
            _ => return Err(bad("must be a string, integer or boolean".into())),
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(lifetime: Duration) -> Scope {
        let now = Utc::now();
        Scope {
            id: String::new(),
            dataset: "d".into(),
            fields: vec!["f".into()],
            aggregate: None,
            min_group_size: 11,
            row_filters: BTreeMap::new(),
            retention_cutoff: None,
            privacy: None,
            purpose: "p".into(),
            user: "u".into(),
            policy_ids: vec![],
            issued_at: now,
            expires_at: now + chrono::Duration::from_std(lifetime).unwrap_or_default(),
            exception: None,
        }
    }

    #[test]
    fn a_shortened_lifetime_is_noted_and_an_unchanged_one_is_not() {
        let (hour, quarter) = (Duration::from_secs(3600), Duration::from_secs(900));
        let note = ttl_note(hour, quarter, false, None, &scope(quarter));
        assert_eq!(
            note.as_deref(),
            Some("ttl shortened by policy: asked 1h, granted 15m (the policies allow at most 15m for this request)")
        );
        let defaulted = ttl_note(hour, quarter, true, None, &scope(quarter));
        assert!(defaulted.is_some_and(|n| n.contains("asked 1h (the default)")));
        assert_eq!(
            ttl_note(quarter, quarter, false, None, &scope(quarter)),
            None
        );
    }
}
