//! Operations endpoints: `GET /healthz` (the process answers), `GET /readyz`
//! (the ticket store and the upstream database answer, the tombstones are
//! read) and `GET /metrics` (Prometheus text exposition), which the HTTP
//! door answers only when `metrics.listen = "http"` (behind the scrape
//! token); by default it is served by [`super::metrics_door`] alone.

use bytes::Bytes;
use chrono::Utc;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::error::ApiError;
use super::handler::{send, send_json, Failure, Handler};
use crate::app::App;
use crate::credentials::token;
use crate::tickets::TicketId;

pub async fn healthz(session: &mut ServerSession) -> Result<(), Failure> {
    send_json(session, 200, &json!({"status": "ok"}), &[]).await?;
    Ok(())
}

pub async fn readyz(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    // Any lookup exercises the store; an unknown id costs nothing.
    let store = match TicketId::generate() {
        Ok(probe) => match app.ticket_store.get(&probe, Utc::now()).await {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(%err, "not ready: the ticket store did not answer");
                false
            }
        },
        Err(err) => {
            tracing::warn!(%err, "not ready: no random source");
            false
        }
    };
    let upstream = match handler.shared.upstream.check().await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, "not ready: the database did not answer");
            false
        }
    };
    // What failed is in the log; the answer names only the part.
    let state = |ok: bool| {
        if ok {
            json!("ok")
        } else {
            json!({"error": "unavailable"})
        }
    };
    // Until esq knows whom to hide, datasets with subjects are refused.
    let tombstones = app.tombstones.is_read();
    let ready = store && upstream && tombstones;
    let mut body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "ticket_store": state(store),
        "upstream": state(upstream),
        "tombstones": state(tombstones),
    });
    if !ready {
        body["error"] = json!("not ready");
    }
    send_json(session, if ready { 200 } else { 503 }, &body, &[]).await?;
    Ok(())
}

/// `GET /metrics` on the HTTP door: only when `metrics.listen = "http"`,
/// and then only with the scrape token; otherwise the door knows no such
/// endpoint (the metrics have a listener of their own, [`super::metrics_door`]).
pub async fn metrics(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let config = &handler.app().config.metrics;
    if config.own_listener().is_some() {
        return Err(ApiError::NotFound.into());
    }
    if session.req_header().method.as_str() != "GET" {
        return Err(ApiError::MethodNotAllowed("GET").into());
    }
    authorize_scrape(config, session)?;
    let (content_type, text) = exposition(handler.app(), session);
    send(session, 200, content_type, Bytes::from(text), &[]).await?;
    Ok(())
}

/// The scrape token, when one is configured: `Authorization: Bearer
/// <token>`, compared in constant time.
pub fn authorize_scrape(
    config: &crate::config::MetricsConfig,
    session: &ServerSession,
) -> Result<(), ApiError> {
    let Some(expected) = &config.token else {
        return Ok(());
    };
    let presented = session
        .get_header("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized(
            "send Authorization: Bearer <token> (the token in metrics.token_file)",
        ))?;
    let same = token::hashes_equal(&token::hash(presented), &token::hash(expected.expose()));
    if !same {
        return Err(ApiError::Unauthorized("wrong metrics token"));
    }
    Ok(())
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format (`promtool check metrics`, curl).
pub fn exposition(app: &App, session: &ServerSession) -> (&'static str, String) {
    let openmetrics = session
        .get_header("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics.render(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            app.metrics.render_prometheus_text(),
        )
    }
}
