//! Logs: the `tracing` subscriber `esq serve` installs (text or JSON, per
//! `[log]`), and the two spans every log line of a door sits in:
//!
//! - `session` — one client connection: `door`, `client` (address) and
//!   `user` (once known);
//! - `statement` — one statement decided: `door`, `user`, `fingerprint` (the
//!   same SHA-256 prefix the audit log records), `outcome` (`allow`,
//!   `rewrite`, `deny`, `stale`), and `sql` only when `log.statements = true`;
//!   each ends in a debug `decided` event (target `esq::statement`).
//!
//! Statement text, parameter values and PostgreSQL's error messages (which
//! may quote a value, e.g. `invalid input syntax for type integer: "…"`)
//! may hold PII: they never go to the log unless `log.statements` says so.
//! Log SQLSTATEs and fingerprints instead.

use std::net::SocketAddr;

use tracing::field::{debug, Empty};
use tracing::Span;
use tracing_subscriber::fmt::MakeWriter;

use crate::audit::fingerprint;
use crate::config::{LogConfig, LogFormat};
use crate::metrics::{Door, Outcome};

/// The span of one client connection; record the user with [`record_user`].
pub fn session_span(door: Door, client: SocketAddr) -> Span {
    tracing::info_span!("session", door = debug(door), client = %client, user = Empty)
}

/// The span of one statement; fill it with [`record_statement`] and
/// [`record_outcome`].
pub fn statement_span(door: Door) -> Span {
    tracing::info_span!(
        "statement",
        door = debug(door),
        user = Empty,
        fingerprint = Empty,
        outcome = Empty,
        sql = Empty
    )
}

/// Names the user on `span` (a session or statement span).
pub fn record_user(span: &Span, user: &str) {
    span.record("user", user);
}

/// The statement's fingerprint on `span`, and its text when
/// `log.statements` allows it. Costs nothing when the span is disabled.
pub fn record_statement(span: &Span, sql: &str, log: &LogConfig) {
    if span.is_disabled() {
        return;
    }
    span.record("fingerprint", fingerprint(sql));
    if log.statements {
        span.record("sql", sql);
    }
}

/// The decision's outcome on the current statement span, and one `decided`
/// event in it (target `esq::statement`, level debug): set
/// `log.filter = "info,esq::statement=debug"` for a line per statement.
pub fn record_outcome(outcome: Outcome) {
    Span::current().record("outcome", debug(outcome));
    tracing::debug!(target: "esq::statement", "decided");
}

/// Libraries whose debug logs carry statement text or values, held at
/// `info` unless `log.statements`: sqlparser logs `Parsing sql '…'` and
/// every token it reads; tokio-postgres logs `preparing query s0: SELECT …
/// WHERE x = '…'` (the HTTP door's upstream client).
const TEXT_LOGGING_TARGETS: &[&str] = &["sqlparser", "tokio_postgres"];

/// Installs the process-wide subscriber: `log.filter` (or `RUST_LOG`),
/// text or JSON lines to `writer`, without colour (a writer given here is
/// a file or a buffer). `Err` when one is already installed.
pub fn try_init<W>(log: &LogConfig, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(log, writer, false)
}

/// [`try_init`] to stderr, in colour only when stderr is a terminal and
/// `NO_COLOR` is not set: a log redirected to a file, a pipe or journald
/// carries no escape codes.
pub fn try_init_stderr(log: &LogConfig) -> Result<(), String> {
    install(log, std::io::stderr, stderr_wants_colour())
}

/// Whether lines written to stderr may be coloured (see [`wants_colour`]).
pub fn stderr_wants_colour() -> bool {
    use std::io::IsTerminal;
    wants_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// Colour only on a terminal, and never with a non-empty `NO_COLOR`
/// (<https://no-color.org>).
pub fn wants_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

fn install<W>(log: &LogConfig, writer: W, ansi: bool) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.filter));
    if !log.statements {
        for target in TEXT_LOGGING_TARGETS {
            let directive: tracing_subscriber::filter::Directive = format!("{target}=info")
                .parse()
                .map_err(|err| format!("log filter for {target}: {err}"))?;
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = match log.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsStr::new(""))));
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(!wants_colour(false, None));
    }
}
