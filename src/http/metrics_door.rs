//! The metrics listener: `GET /metrics` (Prometheus) on an address of its
//! own (`metrics.listen`, default `127.0.0.1:9433`), so that the API's port
//! exposes no operational data. HTTP/1.1, one request per connection (a
//! scrape is one request), TLS when `[tls]` is set (and only TLS when
//! `tls.required`), the scrape token when `metrics.token_file` is set.
//! Every other path is 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::error::ApiError;
use super::handler::{send, send_json};
use crate::app::App;

/// Time one scrape may take, from connecting to the last byte.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MetricsDoor {
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<Acceptor>>,
    tls_required: bool,
}

impl MetricsDoor {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        app: Arc<App>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<MetricsDoor> {
        let listener = TcpListener::bind(addr).await?;
        let tls = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(Acceptor::from_server_config(Arc::new(config)))
        });
        let tls_required = app.config.tls.required;
        Ok(MetricsDoor {
            listener,
            app,
            tls,
            tls_required,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` turns true; scrapes in flight are cut then
    /// (the next scrape asks again).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let door = Arc::new(self);
        let mut scrapes = JoinSet::new();
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                accepted = door.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let door = door.clone();
                        scrapes.spawn(async move {
                            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, door.serve(tcp, peer)).await;
                        });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
            }
        }
        scrapes.shutdown().await;
    }

    async fn serve(&self, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let mut first = [0u8; 1];
        let is_tls = match tcp.peek(&mut first).await {
            Ok(1) => first[0] == super::TLS_HANDSHAKE,
            _ => return,
        };
        let stream: pingora::protocols::Stream = match (&self.tls, is_tls) {
            (Some(acceptor), true) => match acceptor.tls_handshake(L4Stream::from(tcp)).await {
                Ok(tls) => Box::new(tls),
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "metrics listener: TLS handshake failed");
                    return;
                }
            },
            (None, true) => return,
            (Some(_), false) if self.tls_required => {
                super::refuse_plaintext(tcp).await;
                return;
            }
            (_, false) => Box::new(L4Stream::from(tcp)),
        };
        let mut session = ServerSession::new_http1(stream);
        match session.read_request().await {
            Ok(true) => {}
            _ => return,
        }
        session.set_keepalive(None);
        if let Err(err) = self.answer(&mut session).await {
            let (status, body) = err.to_response();
            let extra = match err {
                ApiError::Unauthorized(_) => vec![("www-authenticate", "Bearer".to_string())],
                ApiError::MethodNotAllowed(allowed) => vec![("allow", allowed.to_string())],
                _ => Vec::new(),
            };
            let _ = send_json(&mut session, status, &body, &extra).await;
        }
        let _ = session.finish().await;
    }

    async fn answer(&self, session: &mut ServerSession) -> Result<(), ApiError> {
        let header = session.req_header();
        if header.uri.path() != "/metrics" {
            return Err(ApiError::NotFound);
        }
        if header.method.as_str() != "GET" {
            return Err(ApiError::MethodNotAllowed("GET"));
        }
        super::ops::authorize_scrape(&self.app.config.metrics, session)?;
        let (content_type, text) = super::ops::exposition(&self.app, session);
        // A scraper that hangs up early gets nothing more: nothing to undo.
        let _ = send(session, 200, content_type, Bytes::from(text), &[]).await;
        Ok(())
    }
}
