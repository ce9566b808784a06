//! The PostgreSQL door.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::upstream::UpstreamPool;

pub struct PgDoor {
    listener: TcpListener,
}

impl PgDoor {
    pub async fn bind(
        app: Arc<App>,
        _upstream: Arc<UpstreamPool>,
        _tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<PgDoor> {
        let listener = TcpListener::bind(app.config.server.pg_listen).await?;
        Ok(PgDoor { listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let _ = shutdown.changed().await;
    }
}
