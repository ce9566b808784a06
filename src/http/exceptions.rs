//! Exception waivers on the HTTP door (DESIGN 3.9):
//!
//! | request | who | answer |
//! |---|---|---|
//! | `POST /api/esq/exception` | any user | `201` the exception, `"state":"pending"` |
//! | `GET /api/esq/exception` | any user | `200 {"exceptions":[…]}`: their own; stewards and operators also every open one |
//! | `GET /api/esq/exception/{id}` | its requester, stewards, operators | `200` the exception (else `404`) |
//! | `POST /api/esq/exception/{id}/approve`, `…/deny` | role `data_steward`, not the requester | `200` the exception; `409` when not pending |
//! | `POST /api/esq/exception/{id}/revoke` | role `data_steward` or `esq_admin` | `200` the exception, `revoked`, its tickets revoked; `409` when not approved |
//!
//! The work and its audit are in [`crate::exceptions`]; here bodies are
//! read and errors mapped. Without `[maintenance]` every one answers `503`
//! ("exception waivers need [maintenance]"); the database's and the audit
//! log's failures are logged and shown only as unavailable.

use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Dependency};
use super::handler::{send_json, Failure, Handler};
use crate::auth::Principal;
use crate::exceptions::request::ExceptionRequest;
use crate::exceptions::{Caller, ExceptionError};
use crate::metrics::Door;

/// The path all of these start with.
pub const PATH: &str = "/api/esq/exception";

const NOT_CONFIGURED: &str = "exception waivers need [maintenance]: esq keeps them in schema esq, written only by the maintenance role (docs/exports-and-exceptions.md)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    comment: String,
}

/// Whether `path` is one of these (`/api/esq/exception` or below it).
pub fn handles(path: &str) -> bool {
    path.strip_prefix(PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Routes `method` on `path` (`/api/esq/exception` or below it).
pub async fn route(
    handler: &Handler,
    session: &mut ServerSession,
    method: &str,
    path: &str,
) -> Result<(), Failure> {
    let rest = path.strip_prefix(PATH).unwrap_or("");
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    match (method, parts.as_slice()) {
        ("POST", []) => request(handler, session).await,
        ("GET", []) => list(handler, session).await,
        ("GET", [id]) => show(handler, session, id).await,
        ("POST", [id, "approve"]) => decide(handler, session, id, true).await,
        ("POST", [id, "deny"]) => decide(handler, session, id, false).await,
        ("POST", [id, "revoke"]) => revoke(handler, session, id).await,
        (_, []) => Err(ApiError::MethodNotAllowed("GET, POST").into()),
        (_, [_]) => Err(ApiError::MethodNotAllowed("GET").into()),
        (_, [_, "approve" | "deny" | "revoke"]) => Err(ApiError::MethodNotAllowed("POST").into()),
        _ => Err(ApiError::NotFound.into()),
    }
}

fn caller<'a>(handler: &Handler, user: &'a Principal) -> Caller<'a> {
    Caller {
        user,
        door: Door::http,
        client: Some(handler.peer),
    }
}

/// `POST /api/esq/exception`.
async fn request(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let caller = caller(handler, &user);
    let body: ExceptionRequest = match handler.json_body(session).await {
        Ok(body) => body,
        Err(err) => {
            let bad = ExceptionError::bad("body", "unreadable");
            crate::exceptions::audit_refused(app, caller, None, None, "request", &bad).await;
            return Err(err.into());
        }
    };
    let stored = crate::exceptions::request::request(app, caller, &body)
        .await
        .map_err(api_error)?;
    answer(session, 201, &stored).await
}

/// `GET /api/esq/exception`.
async fn list(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let found = crate::exceptions::decide::list(handler.app(), &user)
        .await
        .map_err(api_error)?;
    send_json(session, 200, &json!({ "exceptions": found }), &[]).await?;
    Ok(())
}

/// `GET /api/esq/exception/{id}`.
async fn show(handler: &Handler, session: &mut ServerSession, id: &str) -> Result<(), Failure> {
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let found = crate::exceptions::decide::show(handler.app(), &user, id)
        .await
        .map_err(api_error)?;
    answer(session, 200, &found).await
}

/// `POST /api/esq/exception/{id}/approve` and `…/deny`.
async fn decide(
    handler: &Handler,
    session: &mut ServerSession,
    id: &str,
    approve: bool,
) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let caller = caller(handler, &user);
    let attempted = if approve { "approve" } else { "deny" };
    let body: DecisionBody = match handler.json_body(session).await {
        Ok(body) => body,
        Err(err) => {
            let bad = ExceptionError::bad("body", "unreadable");
            let named = crate::exceptions::id::parse(id);
            crate::exceptions::audit_refused(app, caller, named, None, attempted, &bad).await;
            return Err(err.into());
        }
    };
    let decided = crate::exceptions::decide::decide(app, caller, id, approve, &body.comment)
        .await
        .map_err(api_error)?;
    answer(session, 200, &decided).await
}

/// `POST /api/esq/exception/{id}/revoke`: withdraws an approved exception
/// and revokes the tickets issued under it.
async fn revoke(handler: &Handler, session: &mut ServerSession, id: &str) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let caller = caller(handler, &user);
    let body: DecisionBody = match handler.json_body(session).await {
        Ok(body) => body,
        Err(err) => {
            let bad = ExceptionError::bad("body", "unreadable");
            let named = crate::exceptions::id::parse(id);
            crate::exceptions::audit_refused(app, caller, named, None, "revoke", &bad).await;
            return Err(err.into());
        }
    };
    let revoked = crate::exceptions::revoke::revoke(app, caller, id, &body.comment)
        .await
        .map_err(api_error)?;
    answer(session, 200, &revoked).await
}

async fn answer(
    session: &mut ServerSession,
    status: u16,
    exception: &crate::exceptions::Exception,
) -> Result<(), Failure> {
    let body = serde_json::to_value(exception)
        .map_err(|err| ApiError::Internal(format!("exception response: {err}")))?;
    send_json(session, status, &body, &[]).await?;
    Ok(())
}

/// How a client sees a failed exception request, decision or lookup (the
/// operator's log has the whole error).
pub fn api_error(err: ExceptionError) -> ApiError {
    match err {
        ExceptionError::NotConfigured => ApiError::NotConfigured(NOT_CONFIGURED),
        ExceptionError::BadInput { field, message } => ApiError::bad_request(Some(field), message),
        ExceptionError::NotFound => ApiError::Missing(
            "no exception with this id that you may see (GET /api/esq/exception lists yours)",
        ),
        ExceptionError::Forbidden(message) => ApiError::Forbidden(message),
        ExceptionError::Conflict(message) => ApiError::Conflict(message),
        ExceptionError::Maintenance(_) | ExceptionError::Database { .. } => {
            tracing::error!(%err, "exception waivers are unavailable");
            ApiError::Unavailable(Dependency::Database)
        }
        ExceptionError::Audit(err) => ApiError::audit(err),
        ExceptionError::Random(detail) => ApiError::Internal(detail),
    }
}
