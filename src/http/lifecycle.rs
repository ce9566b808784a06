//! Right-to-delete on the HTTP door (DESIGN 3.8), for users with role
//! `privacy_officer` only: `POST /api/esq/forget` forgets a subject and
//! answers with the signed receipt (`201`, or `200` with
//! `"status":"already_forgotten"`), and `GET /api/esq/subject` answers a
//! data subject access request: the subject's hash, tombstone, receipts
//! and the exports that held it.
//!
//! Every request by an authenticated user is audited, refusals included.
//! What reaches the client is the outcome and, for bad input, which field
//! is wrong; the database's messages, the maintenance role and addresses
//! stay in the operator's log (see [`crate::lifecycle::forget::ForgetError`]).

use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Dependency};
use super::handler::{send_json, Failure, Handler};
use crate::audit::{fingerprint, record_durably, AuditEvent, AuditKind};
use crate::auth::Principal;
use crate::lifecycle::forget::{self, audit_other, Caller, ForgetError, Request};
use crate::metrics::{Door, Outcome};

/// The role that may forget subjects and look them up.
pub const PRIVACY_ROLE: &str = "privacy_officer";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    #[serde(default)]
    dataset: String,
    /// A string, or a number for numeric keys.
    #[serde(default)]
    subject: Value,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    requested_by: String,
}

/// `POST /api/esq/forget`.
pub async fn forget(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let officer = privacy_officer(handler, session, "forget").await?;
    let caller = caller(handler, &officer);
    let body: ForgetBody = match handler.json_body(session).await {
        Ok(body) => body,
        Err(err) => {
            refused(handler, caller, None, "forget", "bad_input").await;
            return Err(err.into());
        }
    };
    let subject = match body.subject {
        Value::String(text) => text,
        Value::Number(number) => number.to_string(),
        _ => {
            refused(handler, caller, None, "forget", "bad_input").await;
            return Err(ApiError::bad_request(
                Some("subject"),
                "required: the subject's key, as a string (or a number)",
            )
            .into());
        }
    };
    let request = Request {
        dataset: body.dataset,
        subject,
        reason: body.reason,
        requested_by: body.requested_by,
    };
    let done = forget::forget(handler.app(), caller, &request)
        .await
        .map_err(api_error)?;
    let status = if done.already() { 200 } else { 201 };
    let body = serde_json::to_value(&done.receipt)
        .map_err(|err| ApiError::Internal(format!("receipt response: {err}")))?;
    send_json(session, status, &body, &[]).await?;
    Ok(())
}

/// `GET /api/esq/subject?dataset=D&subject=KEY`.
pub async fn subject(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let officer = privacy_officer(handler, session, "subject_lookup").await?;
    let caller = caller(handler, &officer);
    let (dataset, subject) = match params(session.req_header().uri.query()) {
        Ok(found) => found,
        Err(err) => {
            refused(handler, caller, None, "subject_lookup", "bad_input").await;
            return Err(err.into());
        }
    };
    let found = match crate::lifecycle::lookup::lookup(handler.app(), &dataset, &subject).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(dataset, %err, "a subject lookup failed");
            refused(handler, caller, None, "subject_lookup", err.category()).await;
            return Err(api_error(err).into());
        }
    };
    // The answer goes out only once the lookup is on record.
    let event = AuditEvent {
        roles: caller.roles,
        client: caller.client,
        dataset: Some(&found.dataset),
        fingerprint: fingerprint(&format!("subject_lookup {}", found.dataset)),
        detail: Some(json!({
            "action": "subject_lookup",
            "subject_hash": found.subject_hash,
            "tombstone": found.tombstone.is_some(),
        })),
        ..AuditEvent::event(AuditKind::SubjectLookup, Door::http, caller.user)
    };
    record_durably(&*handler.app().audit, &event)
        .await
        .map_err(ApiError::audit)?;
    let body = serde_json::to_value(&found)
        .map_err(|err| ApiError::Internal(format!("subject response: {err}")))?;
    send_json(session, 200, &body, &[]).await?;
    Ok(())
}

/// The caller, who must be a privacy officer; a refusal is audited.
async fn privacy_officer(
    handler: &Handler,
    session: &ServerSession,
    action: &str,
) -> Result<Principal, ApiError> {
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    if !user.has_role(PRIVACY_ROLE) {
        refused(handler, caller(handler, &user), None, action, "forbidden").await;
        return Err(ApiError::Forbidden(
            "right-to-delete and subject lookups are for privacy officers only".into(),
        ));
    }
    Ok(user)
}

fn caller<'a>(handler: &Handler, user: &'a Principal) -> Caller<'a> {
    Caller {
        user: &user.name,
        roles: &user.roles,
        door: Door::http,
        client: Some(handler.peer),
    }
}

async fn refused(
    handler: &Handler,
    caller: Caller<'_>,
    dataset: Option<&str>,
    action: &str,
    error: &str,
) {
    let detail = json!({"action": action, "error": error});
    audit_other(handler.app(), caller, dataset, Outcome::deny, detail).await;
}

/// How a client sees a failed forget or lookup (the operator's log has
/// the whole error: [`forget::forget`] logs it).
fn api_error(err: ForgetError) -> ApiError {
    match err {
        ForgetError::BadInput { field, message } => ApiError::bad_request(Some(field), message),
        ForgetError::Maintenance(_) | ForgetError::NotSetUp(_) => {
            tracing::error!(%err, "right-to-delete is unavailable");
            ApiError::Unavailable(Dependency::Database)
        }
        ForgetError::Audit(_) => ApiError::Unavailable(Dependency::AuditLog),
        ForgetError::Privilege { .. }
        | ForgetError::Database { .. }
        | ForgetError::RolledBack { .. } => ApiError::Internal(err.to_string()),
    }
}

/// `dataset` and `subject`, each exactly once, percent-decoded.
fn params(query: Option<&str>) -> Result<(String, String), ApiError> {
    let mut dataset = None;
    let mut subject = None;
    let usage = || {
        ApiError::bad_request(
            None,
            "give dataset=<id> and subject=<key>, once each (percent-encoded)",
        )
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(usage)?;
        let slot = match name {
            "dataset" => &mut dataset,
            "subject" => &mut subject,
            _ => return Err(usage()),
        };
        if slot.is_some() {
            return Err(usage());
        }
        *slot =
            Some(decode(value).ok_or_else(|| {
                ApiError::bad_request(Some(name), "not valid percent-encoded UTF-8")
            })?);
    }
    match (dataset, subject) {
        (Some(dataset), Some(subject)) if !dataset.is_empty() && !subject.is_empty() => {
            Ok((dataset, subject))
        }
        _ => Err(usage()),
    }
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_checked() {
        let (dataset, subject) = params(Some("dataset=burial_2024&subject=a%20b+c%2B")).unwrap();
        assert_eq!(
            (dataset.as_str(), subject.as_str()),
            ("burial_2024", "a b c+")
        );
        for bad in [
            None,
            Some("dataset=d"),
            Some("dataset=d&subject=1&subject=2"),
            Some("dataset=d&subject=1&other=3"),
            Some("dataset=d&subject=%zz"),
            Some("dataset=d&subject=%ff"),
            Some("dataset=d&subject=%4"),
            Some("dataset=d&subject=%+1"),
        ] {
            assert!(params(bad).is_err(), "{bad:?}");
        }
    }
}
