//! The HTTP door: esq's JSON API (DESIGN.md 3.3) on pingora's HTTP/1.1 and
//! HTTP/2 server sessions, with rustls for HTTPS.
//!
//! pingora normally owns its process (`Server::run_forever`, its own
//! runtimes and signal handling). esq embeds only its protocol layer: this
//! module accepts TCP connections on a tokio listener in esq's runtime,
//! performs the TLS handshake with pingora's rustls acceptor when the client
//! starts one, and hands each connection to [`handler::Handler`], an
//! implementation of pingora's `HttpServerApp` (which streams answers,
//! unlike `ServeHttp`). Stopping closes the listener, ends idle keep-alive
//! connections and waits for requests in flight.
//!
//! One module per job: [`handler`] reads requests, applies the limits and
//! routes; [`tickets`], [`query`] and [`ops`] are the endpoints (the
//! guard compiles structured query bodies to SQL); [`rows`] turns
//! rows into JSON; [`rate_limit`] limits requests per user; [`error`] maps
//! failures to statuses. Upstream connections come from the pool both doors
//! share ([`crate::upstream`]).

pub mod breach;
pub mod error;
pub mod exceptions;
pub mod exports;
pub mod handler;
pub mod lifecycle;
pub mod metrics_door;
pub mod ops;
pub mod private;
pub mod query;
pub mod rate_limit;
pub mod reload;
pub mod rows;
pub mod tickets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::metrics::{Door, DoorLabels};
use crate::upstream::UpstreamPool;
use handler::{Handler, Shared};

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Time a client has to start and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpDoor {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<Acceptor>>,
    tls_required: bool,
}

impl HttpDoor {
    /// Binds `server.http_listen` (port 0 picks a free port).
    pub async fn bind(
        app: Arc<App>,
        upstream: Arc<UpstreamPool>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<HttpDoor> {
        let listener = TcpListener::bind(app.config.server.http_listen).await?;
        let shared = Arc::new(Shared::new(app.clone(), upstream));
        let tls = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(Acceptor::from_server_config(Arc::new(config)))
        });
        Ok(HttpDoor {
            listener,
            shared,
            tls,
            tls_required: app.config.tls.required,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` turns true, then drains: idle connections
    /// close at once, requests in flight get `grace` to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let door = Arc::new(self);
        let mut connections = JoinSet::new();
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
                        let shutdown = shutdown.clone();
                        connections.spawn(async move { door.serve(tcp, peer, shutdown).await });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "HTTP door: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                "HTTP door: requests still running after the grace period are cut"
            );
            connections.shutdown().await;
        }
    }

    async fn serve(&self, tcp: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
        let _ = tcp.set_nodelay(true);
        let mut first = [0u8; 1];
        let is_tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
            _ => return,
        };
        let stream: pingora::protocols::Stream = match (&self.tls, is_tls) {
            (Some(acceptor), true) => {
                let handshake = acceptor.tls_handshake(L4Stream::from(tcp));
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "HTTP door: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
            (None, true) => {
                tracing::debug!(%peer, "HTTP door: TLS client but no certificate configured");
                return;
            }
            (Some(_), false) if self.tls_required => {
                refuse_plaintext(tcp).await;
                return;
            }
            (_, false) => Box::new(L4Stream::from(tcp)),
        };
        let sessions = self
            .shared
            .app
            .metrics
            .active_sessions
            .get_or_create(&DoorLabels { door: Door::http })
            .clone();
        sessions.inc();
        let handler = Arc::new(Handler::new(self.shared.clone(), peer));
        let span = crate::telemetry::session_span(Door::http, peer);
        let _ = tracing::Instrument::instrument(handler.process_new(stream, &shutdown), span).await;
        sessions.dec();
    }
}

/// Answers a plaintext request on a TLS-only door, then closes.
async fn refuse_plaintext(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"tls required","message":"this door accepts HTTPS only"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(response.as_bytes())).await;
}
