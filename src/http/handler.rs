//! One HTTP request from start to end: read it, apply the header, body,
//! time and rate limits, route on method and path, and answer — a JSON
//! error with a stable `error` code on every failure path. Implements
//! pingora's `HttpServerApp`, so answers can stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::rate_limit::RateLimiter;
use crate::app::App;
use crate::auth::Principal;
use crate::metrics::{Door, DoorLabels, HttpStatusLabels};
use crate::per_user::PerUser;
use crate::upstream::UpstreamPool;

/// Request line plus headers accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a keep-alive connection may sit idle between requests.
const KEEPALIVE_SECS: u64 = 60;

/// What every connection shares: the app, the upstream pool (both doors
/// share it), the limits.
pub struct Shared {
    pub app: Arc<App>,
    pub upstream: Arc<UpstreamPool>,
    pub limiter: RateLimiter,
    /// Queries each user has running (`http.max_in_flight_per_user`).
    pub in_flight: PerUser,
    options: HttpServerOptions,
}

impl Shared {
    pub fn new(app: Arc<App>, upstream: Arc<UpstreamPool>) -> Shared {
        let limiter = RateLimiter::new(app.config.http.rate_limit_per_minute);
        let in_flight = PerUser::new(app.config.http.max_in_flight_per_user);
        let mut options = HttpServerOptions::default();
        // HTTP/2 with prior knowledge on plaintext; ALPN decides under TLS.
        options.h2c = true;
        Shared {
            app,
            upstream,
            limiter,
            in_flight,
            options,
        }
    }
}

/// The handler of one connection (it knows the peer for the audit).
pub struct Handler {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
}

/// An answer was started but could not be completed: the connection is
/// closed so the client sees a truncated body, never a wrong one.
#[derive(Debug)]
pub struct Aborted;

/// How a request ended.
pub enum Failure {
    /// Nothing sent yet: answer with this error.
    Api(ApiError),
    /// Already streaming: drop the connection.
    Aborted,
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Failure {
        Failure::Api(err)
    }
}

impl From<crate::guard::structured::BadQuery> for Failure {
    fn from(err: crate::guard::structured::BadQuery) -> Failure {
        Failure::Api(err.into())
    }
}

impl From<Aborted> for Failure {
    fn from(_: Aborted) -> Failure {
        Failure::Aborted
    }
}

impl Handler {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr) -> Handler {
        Handler { shared, peer }
    }

    pub fn app(&self) -> &App {
        &self.shared.app
    }

    async fn route(&self, session: &mut ServerSession) -> Result<(), Failure> {
        let header = session.req_header();
        let method = header.method.as_str().to_string();
        let path = header.uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => super::ops::healthz(session).await,
            ("GET", "/readyz") => super::ops::readyz(self, session).await,
            (_, "/metrics") => super::ops::metrics(self, session).await,
            ("POST", "/api/esq/ticket") => super::tickets::issue(self, session).await,
            ("POST", "/api/dta/query") => super::query::query(self, session).await,
            ("POST", "/api/dta/export") => super::exports::submit(self, session).await,
            ("GET", p) if p.starts_with("/api/dta/export/") => {
                let rest = p.trim_start_matches("/api/dta/export/").to_string();
                super::exports::status(self, session, &rest).await
            }
            ("POST", "/api/esq/breach") => super::breach::raise(self, session).await,
            ("GET", "/api/esq/breach") => super::breach::list(self, session).await,
            ("GET", "/api/esq/budget") => super::private::budget(self, session).await,
            ("POST", "/api/esq/reload") => super::reload::reload(self, session).await,
            ("POST", "/api/esq/forget") => super::lifecycle::forget(self, session).await,
            ("GET", "/api/esq/subject") => super::lifecycle::subject(self, session).await,
            (m, p) if super::exceptions::handles(p) => {
                super::exceptions::route(self, session, m, p).await
            }
            ("DELETE", p) if p.starts_with("/api/esq/ticket/") => {
                let id = p.trim_start_matches("/api/esq/ticket/").to_string();
                super::tickets::revoke(self, session, &id).await
            }
            (_, "/healthz" | "/readyz" | "/api/esq/budget" | "/api/esq/subject") => {
                Err(ApiError::MethodNotAllowed("GET").into())
            }
            (_, "/api/esq/ticket" | "/api/dta/query" | "/api/esq/reload" | "/api/esq/forget") => {
                Err(ApiError::MethodNotAllowed("POST").into())
            }
            (_, "/api/esq/breach") => Err(ApiError::MethodNotAllowed("GET, POST").into()),
            (_, "/api/dta/export") => Err(ApiError::MethodNotAllowed("POST").into()),
            (_, p) if p.starts_with("/api/dta/export/") => {
                Err(ApiError::MethodNotAllowed("GET").into())
            }
            (_, p) if p.starts_with("/api/esq/ticket/") => {
                Err(ApiError::MethodNotAllowed("DELETE").into())
            }
            _ => Err(ApiError::NotFound.into()),
        }
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, session: &ServerSession) -> Result<Principal, ApiError> {
        let header = session
            .get_header("authorization")
            .ok_or(ApiError::Unauthorized(
                "send Authorization: Bearer <token> (a configured user's API token)",
            ))?;
        let text = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be \"Bearer <token>\"",
            ))?;
        self.app()
            .bundle()
            .users
            .authenticate_token(token)
            .cloned()
            .ok_or(ApiError::Unauthorized("unknown API token"))
    }

    /// The caller, who must be an operator (role `esq_admin`) to use
    /// `what`.
    pub fn operator(&self, session: &ServerSession, what: &str) -> Result<Principal, ApiError> {
        let user = self.authenticate(session)?;
        self.rate_limit(&user.name)?;
        if !user.has_role(super::tickets::ADMIN_ROLE) {
            return Err(ApiError::Forbidden(format!(
                "{what} are for operators: a user with role {}",
                super::tickets::ADMIN_ROLE
            )));
        }
        Ok(user)
    }

    pub fn rate_limit(&self, user: &str) -> Result<(), ApiError> {
        self.shared
            .limiter
            .check(user, Instant::now())
            .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
    }

    /// Reads the whole body (at most `http.max_body_bytes`) and parses it as
    /// `T`; errors name the offending field.
    pub async fn json_body<T: DeserializeOwned>(
        &self,
        session: &mut ServerSession,
    ) -> Result<T, ApiError> {
        if let Some(value) = session.get_header("content-type") {
            let text = value.to_str().unwrap_or("");
            let media = text.split(';').next().unwrap_or("").trim();
            // `curl -d` sends form encoding by default: the seed's
            // walk-through does exactly that, so its bodies are read as JSON.
            let json = media.eq_ignore_ascii_case("application/json")
                || media.eq_ignore_ascii_case("application/x-www-form-urlencoded");
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let body = self.read_body(session).await?;
        if body.is_empty() {
            return Err(ApiError::bad_request(None, "the request needs a JSON body"));
        }
        let mut de = serde_json::Deserializer::from_slice(&body);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            let field = (path != ".").then_some(path);
            let inner = err.into_inner();
            let message = if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else {
                inner.to_string()
            };
            ApiError::BadRequest { field, message }
        })?;
        de.end().map_err(|err| {
            ApiError::bad_request(None, format!("malformed JSON: trailing data ({err})"))
        })?;
        Ok(value)
    }

    async fn read_body(&self, session: &mut ServerSession) -> Result<Bytes, ApiError> {
        let limit = self.app().config.http.max_body_bytes;
        let max = usize::try_from(limit).unwrap_or(usize::MAX);
        if declared_length(session)?.is_some_and(|declared| declared > u64::from(limit)) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        if expects_continue(session) {
            // curl waits a second for this before sending bodies over 1 KiB.
            session.write_continue_response().await.map_err(|err| {
                ApiError::bad_request(None, format!("cannot answer Expect: {err}"))
            })?;
        }
        let mut body = BytesMut::new();
        loop {
            let chunk = session.read_request_body().await.map_err(|err| {
                ApiError::bad_request(None, format!("cannot read the body: {err}"))
            })?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > max {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Size of the request line and headers as received.
    fn header_bytes(session: &ServerSession) -> usize {
        let header = session.req_header();
        let uri = header.uri.to_string().len();
        header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
            + uri
    }
}

/// Writes a complete JSON answer.
pub async fn send_json(
    session: &mut ServerSession,
    status: u16,
    body: &serde_json::Value,
    extra: &[(&'static str, String)],
) -> Result<(), Aborted> {
    let mut bytes = serde_json::to_vec(body).map_err(|_| Aborted)?;
    bytes.push(b'\n');
    send(
        session,
        status,
        "application/json",
        Bytes::from(bytes),
        extra,
    )
    .await
}

/// Writes a complete answer with a known length.
pub async fn send(
    session: &mut ServerSession,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<(), Aborted> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len())).map_err(|_| Aborted)?;
    header
        .insert_header("content-type", content_type)
        .map_err(|_| Aborted)?;
    header
        .insert_header("content-length", body.len().to_string())
        .map_err(|_| Aborted)?;
    header
        .insert_header("cache-control", "no-store")
        .map_err(|_| Aborted)?;
    for (name, value) in extra {
        header
            .insert_header(*name, value.as_str())
            .map_err(|_| Aborted)?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(|_| Aborted)?;
    session
        .write_response_body(body, true)
        .await
        .map_err(|_| Aborted)?;
    Ok(())
}

/// The request's declared `Content-Length` (`None`: not declared).
fn declared_length(session: &ServerSession) -> Result<Option<u64>, ApiError> {
    session
        .get_header("content-length")
        .map(|length| {
            length
                .to_str()
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request(None, "Content-Length is not a number"))
        })
        .transpose()
}

/// The client waits for `100 Continue` before it sends the body.
fn expects_continue(session: &ServerSession) -> bool {
    session
        .get_header("expect")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// How long reading and dropping an unread body may take.
const DISCARD_BODY_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// An error answered before the request body was read (a stale ticket, a
/// missing token): read and drop a body the door would have accepted
/// (declared, at most `http.max_body_bytes`) first. Closing a connection
/// with unread data resets it, and the reset can destroy the answer on its
/// way to the client. A client waiting for `100 Continue` sent no body.
async fn discard_unread_body(session: &mut ServerSession, err: &ApiError, limit: u32) {
    if matches!(err, ApiError::PayloadTooLarge(_))
        || session.is_body_done()
        || expects_continue(session)
    {
        return;
    }
    let acceptable = declared_length(session)
        .ok()
        .flatten()
        .is_some_and(|declared| declared <= u64::from(limit));
    if acceptable {
        let _ = tokio::time::timeout(DISCARD_BODY_TIME, session.drain_request_body()).await;
    }
}

async fn send_error(session: &mut ServerSession, err: &ApiError) -> Result<(), Aborted> {
    let (status, body) = err.to_response();
    let mut extra = Vec::new();
    if let Some(seconds) = err.retry_after() {
        extra.push(("retry-after", seconds.to_string()));
    }
    match err {
        ApiError::Unauthorized(_) | ApiError::TicketRequired => {
            extra.push(("www-authenticate", "Bearer".to_string()));
        }
        ApiError::MethodNotAllowed(allowed) => extra.push(("allow", allowed.to_string())),
        _ => {}
    }
    send_json(session, status, &body, &extra).await
}

async fn shutdown_requested(shutdown: &ShutdownWatch) {
    let mut watch = shutdown.clone();
    let _ = watch.wait_for(|stop| *stop).await;
}

#[async_trait]
impl HttpServerApp for Handler {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let timeout = self.app().config.http.request_timeout;
        // Idle keep-alive connections end as soon as the door stops.
        // A keep-alive connection may idle up to KEEPALIVE_SECS; after that
        // the request head must arrive within the request timeout (no
        // slow-loris connections held forever).
        let head_deadline = timeout + Duration::from_secs(KEEPALIVE_SECS);
        let read = tokio::select! {
            read = tokio::time::timeout(head_deadline, session.read_request()) => match read {
                Ok(read) => read,
                Err(_) => return None,
            },
            _ = shutdown_requested(shutdown) => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(err) => {
                tracing::debug!(peer = %self.peer, error = %err, "HTTP door: unreadable request");
                self.app()
                    .metrics
                    .protocol_errors
                    .get_or_create(&DoorLabels { door: Door::http })
                    .inc();
                return None;
            }
        }
        session.set_read_timeout(Some(timeout));
        session.set_write_timeout(Some(timeout));
        let stopping = *shutdown.borrow();
        session.set_keepalive(if stopping { None } else { Some(KEEPALIVE_SECS) });

        let result = if Handler::header_bytes(&session) > MAX_HEADER_BYTES {
            Err(Failure::Api(ApiError::HeadersTooLarge(MAX_HEADER_BYTES)))
        } else {
            match tokio::time::timeout(timeout, self.route(&mut session)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Api(ApiError::Timeout)),
            }
        };
        match result {
            Ok(()) => {}
            Err(Failure::Aborted) => return None,
            Err(Failure::Api(err)) => {
                if session.response_written().is_some() {
                    // Too late for a status: cut the answer short.
                    return None;
                }
                let limit = self.app().config.http.max_body_bytes;
                discard_unread_body(&mut session, &err, limit).await;
                // A body still unread: do not reuse the connection.
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                if send_error(&mut session, &err).await.is_err() {
                    return None;
                }
            }
        }
        if let Some(answer) = session.response_written() {
            self.app()
                .metrics
                .http_responses
                .get_or_create(&HttpStatusLabels {
                    code: answer.status.as_u16().to_string(),
                })
                .inc();
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.shared.options)
    }
}
