//! Asking for an exception: any authenticated user names a dataset, the
//! fields and aggregate they need, why (purpose and justification), for how
//! long, and optionally the data steward who should decide. The request is
//! checked against the catalog and the configured stewards, stored as
//! pending and audited; a bad one is refused naming the field of the body,
//! without quoting what was sent.

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::store::{self, Exception, New};
use super::{Caller, ExceptionError, MAX_DURATION, MAX_TEXT, STEWARD_ROLE};
use crate::app::App;
use crate::tickets::Aggregate;

/// The most characters of a purpose (as for tickets).
const MAX_PURPOSE: usize = 500;

/// `POST /api/esq/exception`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRequest {
    #[serde(default)]
    pub dataset: String,
    #[serde(default)]
    pub fields: Vec<String>,
    /// `"count"`, or absent/`null` for row-level answers.
    #[serde(default)]
    pub aggregate: Option<String>,
    #[serde(default)]
    pub purpose: String,
    /// Why the policies should not apply to this need.
    #[serde(default)]
    pub justification: String,
    /// How long the exception lasts once approved, e.g. `"7d"` (at most 30
    /// days).
    #[serde(default)]
    pub duration: String,
    /// The data steward who should decide (any steward when absent).
    #[serde(default)]
    pub approver: Option<String>,
}

/// A request that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub dataset: String,
    /// Catalog order, no duplicates.
    pub fields: Vec<String>,
    pub aggregate: Option<&'static str>,
    pub purpose: String,
    pub justification: String,
    pub duration: Duration,
    pub approver: Option<String>,
}

/// Stores `request` as a pending exception of the caller's; audits the
/// outcome, refusals included.
pub async fn request(
    app: &App,
    caller: Caller<'_>,
    request: &ExceptionRequest,
) -> Result<Exception, ExceptionError> {
    let result = run(app, caller, request).await;
    match &result {
        Ok(exception) => {
            app.exception_metrics.requests.inc();
            tracing::info!(
                exception = exception.id,
                requester = exception.requester,
                "exception requested"
            );
        }
        Err(err) => {
            if !matches!(err, ExceptionError::BadInput { .. }) {
                tracing::warn!(%err, "an exception request failed");
            }
            let dataset = app
                .bundle()
                .catalog
                .dataset(request.dataset.trim())
                .map(|d| d.id.clone());
            super::audit_refused(app, caller, None, dataset.as_deref(), "request", err).await;
        }
    }
    result
}

async fn run(
    app: &App,
    caller: Caller<'_>,
    request: &ExceptionRequest,
) -> Result<Exception, ExceptionError> {
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    let checked = check(app, &caller.user.name, request)?;
    let id = super::id::generate().map_err(|err| ExceptionError::Random(err.to_string()))?;
    let mut maintenance = super::connect(&app.config).await?;
    let transaction = maintenance
        .client
        .transaction()
        .await
        .map_err(|e| ExceptionError::database("starting a transaction", e))?;
    let stored = store::insert(
        &transaction,
        &New {
            id: &id,
            requester: &caller.user.name,
            dataset: &checked.dataset,
            fields: &checked.fields,
            aggregate: checked.aggregate,
            purpose: &checked.purpose,
            justification: &checked.justification,
            duration_seconds: i64::try_from(checked.duration.as_secs()).unwrap_or(i64::MAX),
            approver: checked.approver.as_deref(),
            now: Utc::now(),
        },
    )
    .await?;
    // On record before it is committed: nothing is pending unaudited.
    let detail = json!({
        "state": stored.state,
        "fields": stored.fields,
        "aggregate": stored.aggregate,
        "duration_seconds": stored.duration_seconds,
        "approver": stored.approver,
    });
    super::record_and_commit(
        app,
        caller,
        &stored,
        "requested",
        detail,
        transaction,
        "committing the exception",
    )
    .await?;
    super::refresh_open(app, &maintenance.client).await;
    Ok(stored)
}

/// Checks a request of `requester`'s against the catalog and the stewards.
pub fn check(
    app: &App,
    requester: &str,
    request: &ExceptionRequest,
) -> Result<Checked, ExceptionError> {
    let bad = |field: &'static str, message: String| ExceptionError::bad(field, message);
    let bundle = app.bundle();
    let dataset = bundle
        .catalog
        .dataset(request.dataset.trim())
        .ok_or_else(|| {
            let known: Vec<&str> = bundle.catalog.datasets().map(|d| d.id.as_str()).collect();
            bad(
                "dataset",
                format!(
                    "not a dataset esq governs; its datasets are: {}",
                    known.join(", ")
                ),
            )
        })?;
    if request.fields.is_empty() {
        return Err(bad("fields", "name at least one field".into()));
    }
    if request
        .fields
        .iter()
        .any(|f| dataset.field(f.trim()).is_none())
    {
        let names: Vec<&str> = dataset.fields.iter().map(|f| f.name.as_str()).collect();
        return Err(bad(
            "fields",
            format!(
                "not all are fields of {}; its fields are: {}",
                dataset.id,
                names.join(", ")
            ),
        ));
    }
    let fields: Vec<String> = dataset
        .fields
        .iter()
        .filter(|f| request.fields.iter().any(|r| r.trim() == f.name))
        .map(|f| f.name.clone())
        .collect();
    let aggregate = match request.aggregate.as_deref() {
        None => None,
        Some(text) => Some(
            Aggregate::parse(text)
                .ok_or_else(|| {
                    bad(
                        "aggregate",
                        format!(
                            "supported: {}, or null for row-level answers",
                            Aggregate::SUPPORTED.join(", ")
                        ),
                    )
                })?
                .as_str(),
        ),
    };
    let purpose = text(
        "purpose",
        &request.purpose,
        MAX_PURPOSE,
        "state what the data is for",
    )?;
    let justification = text(
        "justification",
        &request.justification,
        MAX_TEXT,
        "say why the policies should not apply to this need",
    )?;
    let duration = duration(&request.duration)?;
    let approver = match request.approver.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => {
            let steward = bundle
                .users
                .principal(name)
                .is_some_and(|p| p.has_role(STEWARD_ROLE));
            if !steward {
                return Err(bad(
                    "approver",
                    format!("not a configured user with role {STEWARD_ROLE}; leave it out to let any data steward decide"),
                ));
            }
            if name == requester {
                return Err(bad(
                    "approver",
                    "nobody decides their own exception: name another data steward".into(),
                ));
            }
            Some(name.to_string())
        }
    };
    Ok(Checked {
        dataset: dataset.id.clone(),
        fields,
        aggregate,
        purpose,
        justification,
        duration,
        approver,
    })
}

/// A required free text, trimmed, of at most `max` characters.
pub(crate) fn text(
    field: &'static str,
    value: &str,
    max: usize,
    missing: &str,
) -> Result<String, ExceptionError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ExceptionError::bad(field, format!("required: {missing}")));
    }
    if value.chars().count() > max {
        return Err(ExceptionError::bad(
            field,
            format!("at most {max} characters"),
        ));
    }
    // NUL cannot be stored; controls and text-direction or invisible
    // characters would make the record read differently from what it holds.
    let allowed = |c: char| c == '\n' || c == '\t' || !c.is_control();
    if !value
        .chars()
        .all(|c| allowed(c) && !crate::lifecycle::forget::misleads(c))
    {
        return Err(ExceptionError::bad(
            field,
            "control, text-direction and invisible characters are not allowed",
        ));
    }
    Ok(value.to_string())
}

/// A duration like `"7d"`: at least a second, at most [`MAX_DURATION`].
fn duration(text: &str) -> Result<Duration, ExceptionError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ExceptionError::bad(
            "duration",
            "required: how long the exception lasts once approved, e.g. \"7d\" (at most 30 days)",
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|_| {
        ExceptionError::bad("duration", "not a duration like \"7d\", \"12h\" or \"30m\"")
    })?;
    if duration.as_secs() == 0 {
        return Err(ExceptionError::bad("duration", "at least one second"));
    }
    if duration > MAX_DURATION {
        return Err(ExceptionError::bad("duration", "at most 30 days"));
    }
    Ok(Duration::from_secs(duration.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_and_whole_seconds() {
        assert_eq!(duration("7d").ok(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(duration(" 90s ").ok(), Some(Duration::from_secs(90)));
        assert_eq!(duration("1500ms").ok(), Some(Duration::from_secs(1)));
        assert_eq!(duration("30days").ok(), Some(MAX_DURATION));
        for bad in ["", "0s", "500ms", "31d", "forever", "-1d"] {
            let Err(ExceptionError::BadInput { field, message }) = duration(bad) else {
                panic!("{bad:?} must be refused");
            };
            assert_eq!(field, "duration");
            assert!(!message.contains("forever"), "{message}");
        }
    }

    #[test]
    fn free_texts_are_required_and_bounded() {
        assert_eq!(
            text("purpose", " why ", 10, "x").ok().as_deref(),
            Some("why")
        );
        assert!(text("purpose", "  ", 10, "x").is_err());
        assert!(text("purpose", &"a".repeat(11), 10, "x").is_err());
    }
}
