//! Opening one upstream connection: TCP (and TLS when the URL says
//! `sslmode=require`), the startup packet with esq's session settings, the
//! service role's authentication (SCRAM, md5 or cleartext, via
//! postgres-protocol), up to the first `ReadyForQuery`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::UpstreamError;
use crate::stream::BoxedStream;

/// Where and how to connect, derived once from the config.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: Option<crate::config::Secret>,
    /// `-c name=value …` for the startup packet: the session settings every
    /// upstream session starts with (and returns to on `DISCARD ALL`).
    pub options: String,
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub connect_timeout: Duration,
}

/// A live, authenticated upstream session, idle (`ReadyForQuery` seen).
pub struct UpstreamConn {
    pub stream: BoxedStream,
    /// Bytes read past the last message handled.
    pub read_buf: BytesMut,
    /// The backend's cancel key (process id, secret).
    pub backend_key: (i32, i32),
    /// `ParameterStatus` values as of the last `ReadyForQuery`.
    pub parameters: Vec<(String, String)>,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("backend_pid", &self.backend_key.0)
            .finish_non_exhaustive()
    }
}

pub async fn connect(params: &ConnectParams) -> Result<UpstreamConn, UpstreamError> {
    tokio::time::timeout(params.connect_timeout, connect_inner(params))
        .await
        .map_err(|_| {
            UpstreamError::Unavailable(format!(
                "no answer from {}:{} within {:?}",
                params.host, params.port, params.connect_timeout
            ))
        })?
}

async fn connect_inner(params: &ConnectParams) -> Result<UpstreamConn, UpstreamError> {
    let unavailable = |err: std::io::Error| {
        UpstreamError::Unavailable(format!("{}:{}: {err}", params.host, params.port))
    };
    let tcp = TcpStream::connect((params.host.as_str(), params.port))
        .await
        .map_err(unavailable)?;
    let _ = tcp.set_nodelay(true);
    let mut stream: BoxedStream = match &params.tls {
        None => Box::new(tcp),
        Some((config, name)) => Box::new(start_tls(tcp, config.clone(), name.clone()).await?),
    };
    let mut out = BytesMut::new();
    frontend::startup_message(
        [
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", "esq"),
            ("client_encoding", "UTF8"),
            ("options", params.options.as_str()),
        ],
        &mut out,
    )
    .map_err(|err| UpstreamError::Protocol(err.to_string()))?;
    stream.write_all(&out).await.map_err(unavailable)?;

    let mut conn = UpstreamConn {
        stream,
        read_buf: BytesMut::with_capacity(8192),
        backend_key: (0, 0),
        parameters: Vec::new(),
    };
    authenticate(&mut conn, params).await?;
    loop {
        match conn.read_message().await? {
            backend::Message::ParameterStatus(body) => {
                let name = body.name().map_err(protocol)?.to_string();
                let value = body.value().map_err(protocol)?.to_string();
                conn.set_parameter(name, value);
            }
            backend::Message::BackendKeyData(body) => {
                conn.backend_key = (body.process_id(), body.secret_key());
            }
            backend::Message::ReadyForQuery(_) => return Ok(conn),
            backend::Message::ErrorResponse(body) => return Err(login_refused(&body)),
            backend::Message::NoticeResponse(_) => {}
            _ => {
                return Err(UpstreamError::Protocol(
                    "unexpected message at startup".into(),
                ))
            }
        }
    }
}

pub(crate) async fn start_tls(
    mut tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let io = |err: std::io::Error| UpstreamError::Unavailable(format!("TLS: {err}"));
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return Err(UpstreamError::Config(
            "upstream refused TLS, but the upstream URL says sslmode=require".into(),
        ));
    }
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(io)
}

async fn authenticate(
    conn: &mut UpstreamConn,
    params: &ConnectParams,
) -> Result<(), UpstreamError> {
    let password = || {
        params.password.as_ref().map(|p| p.expose()).ok_or_else(|| {
            UpstreamError::Config(
                "upstream asks for a password: set ESQ_UPSTREAM__PASSWORD or upstream.password_file"
                    .into(),
            )
        })
    };
    let mut out = BytesMut::new();
    match conn.read_message().await? {
        backend::Message::AuthenticationOk => return Ok(()),
        backend::Message::AuthenticationCleartextPassword => {
            frontend::password_message(password()?.as_bytes(), &mut out).map_err(protocol)?;
            conn.send(&out).await?;
        }
        backend::Message::AuthenticationMd5Password(body) => {
            let hashed = postgres_protocol::authentication::md5_hash(
                params.user.as_bytes(),
                password()?.as_bytes(),
                body.salt(),
            );
            frontend::password_message(hashed.as_bytes(), &mut out).map_err(protocol)?;
            conn.send(&out).await?;
        }
        backend::Message::AuthenticationSasl(body) => {
            let mut mechanisms = body.mechanisms();
            let mut scram_offered = false;
            while let Some(mechanism) = fallible_next(&mut mechanisms)? {
                scram_offered |= mechanism == SCRAM_SHA_256;
            }
            if !scram_offered {
                return Err(UpstreamError::Config(
                    "upstream offers no SCRAM-SHA-256".into(),
                ));
            }
            scram(conn, password()?.as_bytes()).await?;
        }
        backend::Message::ErrorResponse(body) => return Err(login_refused(&body)),
        _ => {
            return Err(UpstreamError::Config(
                "upstream asks for an authentication method esq does not speak".into(),
            ))
        }
    }
    match conn.read_message().await? {
        backend::Message::AuthenticationOk => Ok(()),
        backend::Message::ErrorResponse(body) => Err(login_refused(&body)),
        _ => Err(UpstreamError::Protocol(
            "unexpected authentication answer".into(),
        )),
    }
}

async fn scram(conn: &mut UpstreamConn, password: &[u8]) -> Result<(), UpstreamError> {
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    let mut out = BytesMut::new();
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out).map_err(protocol)?;
    conn.send(&out).await?;
    match conn.read_message().await? {
        backend::Message::AuthenticationSaslContinue(body) => {
            scram.update(body.data()).map_err(protocol)?;
        }
        backend::Message::ErrorResponse(body) => return Err(login_refused(&body)),
        _ => return Err(UpstreamError::Protocol("unexpected SCRAM answer".into())),
    }
    out.clear();
    frontend::sasl_response(scram.message(), &mut out).map_err(protocol)?;
    conn.send(&out).await?;
    match conn.read_message().await? {
        backend::Message::AuthenticationSaslFinal(body) => {
            scram.finish(body.data()).map_err(protocol)
        }
        backend::Message::ErrorResponse(body) => Err(login_refused(&body)),
        _ => Err(UpstreamError::Protocol("unexpected SCRAM answer".into())),
    }
}

fn fallible_next<'a>(
    it: &mut backend::SaslMechanisms<'a>,
) -> Result<Option<&'a str>, UpstreamError> {
    use fallible_iterator::FallibleIterator;
    it.next().map_err(protocol)
}

impl UpstreamConn {
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream.write_all(bytes).await.map_err(lost)?;
        self.stream.flush().await.map_err(lost)
    }

    /// Reads one whole backend message.
    pub async fn read_message(&mut self) -> Result<backend::Message, UpstreamError> {
        loop {
            if let Some(message) = backend::Message::parse(&mut self.read_buf).map_err(protocol)? {
                return Ok(message);
            }
            let read = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(lost)?;
            if read == 0 {
                return Err(UpstreamError::Lost("upstream closed the connection".into()));
            }
        }
    }

    pub fn set_parameter(&mut self, name: String, value: String) {
        match self.parameters.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.parameters.push((name, value)),
        }
    }

    /// Sends `sql` as a simple query and reads to `ReadyForQuery`, keeping
    /// parameter changes; an error answer becomes `UpstreamError::Server`.
    pub async fn simple(&mut self, sql: &str) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(protocol)?;
        self.send(&out).await?;
        self.drain_to_ready().await
    }

    /// Applies client settings with `set_config($1, $2, false)` (values
    /// travel as parameters, never spliced into SQL).
    pub async fn apply_settings(
        &mut self,
        settings: &[(String, String)],
    ) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        frontend::parse(
            "",
            "SELECT pg_catalog.set_config($1, $2, false)",
            [],
            &mut out,
        )
        .map_err(protocol)?;
        for (name, value) in settings {
            frontend::bind(
                "",
                "",
                [0i16],
                [name.as_str(), value.as_str()],
                |text, buf| {
                    buf.extend_from_slice(text.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                },
                [0i16],
                &mut out,
            )
            .map_err(|_| UpstreamError::Protocol("cannot encode a setting".into()))?;
            frontend::execute("", 0, &mut out).map_err(protocol)?;
        }
        frontend::sync(&mut out);
        self.send(&out).await?;
        self.drain_to_ready().await
    }

    /// Reads to `ReadyForQuery`; the first error seen is returned after it.
    pub async fn drain_to_ready(&mut self) -> Result<(), UpstreamError> {
        let mut failure = None;
        loop {
            match self.read_message().await? {
                backend::Message::ReadyForQuery(_) => {
                    return failure.map_or(Ok(()), Err);
                }
                backend::Message::ParameterStatus(body) => {
                    let name = body.name().map_err(protocol)?.to_string();
                    let value = body.value().map_err(protocol)?.to_string();
                    self.set_parameter(name, value);
                }
                backend::Message::ErrorResponse(body) => {
                    failure.get_or_insert(server_error(&body));
                }
                _ => {}
            }
        }
    }
}

fn protocol(err: std::io::Error) -> UpstreamError {
    UpstreamError::Protocol(err.to_string())
}

fn lost(err: std::io::Error) -> UpstreamError {
    UpstreamError::Lost(err.to_string())
}

/// The database refused esq's own login (a role, password, limit or
/// database problem): the operator's business, never a client's, so it is
/// "unavailable" with the database's words for the log.
fn login_refused(body: &backend::ErrorResponseBody) -> UpstreamError {
    match server_error(body) {
        UpstreamError::Server { code, message } => UpstreamError::Unavailable(format!(
            "the database refused esq's login: {code}: {message}"
        )),
        other => other,
    }
}

/// An upstream error as SQLSTATE and message.
pub(super) fn server_error(body: &backend::ErrorResponseBody) -> UpstreamError {
    use fallible_iterator::FallibleIterator;
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    UpstreamError::Server { code, message }
}
