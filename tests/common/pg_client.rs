//! Clients of the PostgreSQL door, for any running esq ([`Doors`]):
//! tokio-postgres sessions (a ticket as the password, or a user's password
//! and `SET esq.ticket`), psql runs, and SQLSTATEs of errors.

use tokio_postgres::{Client, Error};

use super::Doors;

/// A tokio-postgres session through esq's PostgreSQL door (no TLS), its
/// connection driven on a spawned task.
pub async fn connect_as(
    esq: &(impl Doors + ?Sized),
    user: &str,
    password: &str,
) -> Result<Client, Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(esq.pg_addr().port())
        .user(user)
        .password(password)
        .dbname(esq.database())
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A session with `ticket` as the password (user `ticket`).
pub async fn connect_with_ticket(esq: &(impl Doors + ?Sized), ticket: &str) -> Client {
    connect_as(esq, "ticket", ticket)
        .await
        .expect("connect through esq with a ticket as the password")
}

/// A session as `user` (the demo password is the user name), with
/// `ticket` set by `SET esq.ticket`, as psql users do.
pub async fn connect_and_set_ticket(
    esq: &(impl Doors + ?Sized),
    user: &str,
    ticket: &str,
) -> Client {
    let client = connect_as(esq, user, user)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in through esq: {e}"));
    client
        .batch_execute(&format!("SET esq.ticket = '{ticket}'"))
        .await
        .expect("SET esq.ticket");
    client
}

/// The SQLSTATE of an error (empty when it is not a server's error).
pub fn sqlstate(error: &Error) -> String {
    error
        .code()
        .map(|c| c.code().to_string())
        .unwrap_or_default()
}

/// Runs psql on `url`: `(exit status, stdout, stderr)`. Each command is
/// one `-c` (one simple Query message); `options` goes to `PGOPTIONS`.
pub async fn psql(url: &str, options: Option<&str>, commands: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new("psql");
    command
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=0",
            "-P",
            "pager=off",
            "-d",
            url,
        ])
        .env_remove("PGOPTIONS");
    for sql in commands {
        command.args(["-c", sql]);
    }
    if let Some(options) = options {
        command.env("PGOPTIONS", options);
    }
    let out = command.output().await.expect("psql is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
