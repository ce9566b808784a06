//! Regressions of the red-team pass on the one-path refactor (issue 15):
//! names PostgreSQL would truncate, stand-in names a client could take
//! over, DEBUG messages, session state left on shared connections by the
//! HTTP door, sessions idle inside a transaction, the database's login
//! errors, and prepared-statement drops through the extended protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::esq::Esq;
use common::wire::{bind, codes, execute, parse, query, rows, sync, Raw};
use common::{http, pg_client, tickets, Doors};
use reqwest::StatusCode;
use serde_json::json;

const METADATA: &str = "SELECT relname FROM pg_catalog.pg_class LIMIT 1";

/// FATAL messages' SQLSTATEs in what came back.
fn fatal_codes(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, body)| *tag == b'E' && body.windows(6).any(|w| w == b"SFATAL"))
        .flat_map(|(tag, body)| codes(&[(*tag, body.clone())]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_postgresql_would_cut_or_esq_reserves_end_the_session() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq.ticket("clinician", tickets::clinician_request()).await;
    // Two names equal in their first 63 bytes are one name to PostgreSQL.
    let long = "x".repeat(64);
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse(&long, METADATA), sync()]).await;
    let answer = raw.until_ready_or_close().await;
    assert_eq!(fatal_codes(&answer), ["08P01"], "{answer:?}");
    assert_eq!(rows(&answer), 0);

    // esq's own stand-in names cannot be bound by a client.
    for messages in [
        vec![
            parse("", METADATA),
            bind("esq_refused_0123456789abcdefz", ""),
            sync(),
        ],
        vec![execute("esq_refused_0123456789abcdefz", 0), sync()],
        vec![parse("esq_refused_x", METADATA), sync()],
    ] {
        let mut raw = Raw::login(&esq, &ticket).await;
        raw.send(&messages).await;
        let answer = raw.until_ready_or_close().await;
        assert_eq!(fatal_codes(&answer), ["08P01"], "{answer:?}");
    }

    // The longest name PostgreSQL keeps whole still works.
    let longest = "y".repeat(63);
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[
        parse(&longest, METADATA),
        bind("", &longest),
        execute("", 0),
        sync(),
    ])
    .await;
    let answer = raw.until_ready().await;
    assert!(codes(&answer).is_empty(), "{answer:?}");
    assert_eq!(rows(&answer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_messages_never_reach_a_client() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq.foia_ticket().await;
    let client = pg_client::connect_with_ticket(&esq, &ticket).await;
    let error = client
        .simple_query("SET client_min_messages = debug2")
        .await
        .expect_err("DEBUG levels are refused");
    assert_eq!(pg_client::sqlstate(&error), "42501");
    client
        .simple_query("SET client_min_messages = warning")
        .await
        .expect("quieter levels are fine");
    // The same through a startup option.
    let refused = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(esq.pg_addr().port())
        .user("ticket")
        .password(ticket.as_str())
        .dbname(esq.database())
        .options("-c client_min_messages=debug2")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(refused.is_err(), "a DEBUG level at startup is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_door_runs_queries_only_and_leaves_shared_connections_clean() {
    // One connection, so every request and session shares it.
    let esq = Esq::builder()
        .rows(2_000)
        .env("ESQ_UPSTREAM__POOL_SIZE", "1")
        .start()
        .await;
    let ticket = http::ticket(&esq, "clinician", tickets::clinician_request()).await;
    for statement in [
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "SET DateStyle = 'SQL, DMY'",
        "SET TimeZone = 'Pacific/Auckland'",
        "DEALLOCATE ALL",
        "SAVEPOINT s",
    ] {
        let (status, body) = http::query(&esq, &ticket, json!({"sql": statement})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{statement}: {body}");
        assert_eq!(body["sqlstate"], "0A000", "{statement}: {body}");
    }
    let (status, body) = http::query(&esq, &ticket, json!({"select": "state", "limit": 3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The connection the HTTP door used is the session's: as esq lent it.
    let client = pg_client::connect_with_ticket(&esq, &ticket).await;
    let shown = client.simple_query("SHOW DateStyle").await.unwrap();
    let value = shown
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    assert_eq!(value, "ISO, MDY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_inside_a_transaction_times_out() {
    let esq = Esq::builder()
        .rows(2_000)
        .env("ESQ_PG__IDLE_TIMEOUT", "2s")
        .start()
        .await;
    let ticket = esq.ticket("clinician", tickets::clinician_request()).await;
    let client = pg_client::connect_with_ticket(&esq, &ticket).await;
    client
        .batch_execute("BEGIN; SELECT state FROM burial_2024 LIMIT 3")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !client.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session idle in its transaction was never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its connection went back: another session is served.
    let again = pg_client::connect_with_ticket(&esq, &ticket).await;
    again.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databases_refusal_of_esqs_login_is_not_shown() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq.ticket("clinician", tickets::clinician_request()).await;
    // The database stops accepting esq's role, and ends its sessions.
    let direct = esq.pg().connect().await;
    direct
        .batch_execute(&format!("ALTER ROLE {} NOLOGIN", esq.role()))
        .await
        .unwrap();
    direct
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&esq.role()],
        )
        .await
        .unwrap();
    let (status, body) = http::query(&esq, &ticket, json!({"select": "state", "limit": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let text = body.to_string();
    for internal in [esq.role(), "permitted", "log in", "28000"] {
        assert!(!text.contains(internal), "{internal:?} shown: {text}");
    }
    let error = pg_client::connect_as(&esq, "ticket", &ticket)
        .await
        .expect_err("no upstream login, no session");
    assert_eq!(pg_client::sqlstate(&error), "08006");
    assert!(!error.to_string().contains(esq.role()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_through_the_extended_protocol_frees_the_name() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq.foia_ticket().await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse("s1", METADATA), sync()]).await;
    assert!(codes(&raw.until_ready().await).is_empty());
    for drop in ["DEALLOCATE s1", "DISCARD ALL"] {
        raw.send(&[
            parse("", drop),
            bind("", ""),
            execute("", 0),
            sync(),
            parse("s1", METADATA),
            bind("", "s1"),
            execute("", 0),
            sync(),
        ])
        .await;
        let mut answer = raw.until_ready().await;
        answer.extend(raw.until_ready().await);
        assert!(codes(&answer).is_empty(), "{drop}: {answer:?}");
        assert_eq!(rows(&answer), 1, "{drop}");
    }
    raw.send(&[query("SELECT 1")]).await;
    raw.until_ready().await;
}
