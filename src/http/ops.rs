//! Operations endpoints: `GET /healthz` (the process answers), `GET /readyz`
//! (the ticket store and the upstream database answer, the tombstones are
//! read) and `GET /metrics`
//! (Prometheus text exposition).

use bytes::Bytes;
use chrono::Utc;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::handler::{send, send_json, Failure, Handler};
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

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format (`promtool check metrics`, curl).
pub async fn metrics(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let openmetrics = session
        .get_header("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let metrics = &handler.app().metrics;
    let (content_type, text) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render_prometheus_text(),
        )
    };
    send(session, 200, content_type, Bytes::from(text), &[]).await?;
    Ok(())
}
