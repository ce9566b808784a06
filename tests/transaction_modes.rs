//! The transaction modes drivers send by default, through the PostgreSQL
//! door to a real PostgreSQL: `BEGIN READ WRITE`, isolation levels,
//! `START TRANSACTION … READ WRITE`, `SET TRANSACTION …`, `SET SESSION
//! CHARACTERISTICS AS TRANSACTION …`. Each is answered with PostgreSQL's
//! own command tag, the upstream transaction stays read only (seen from
//! inside the session and from the database itself), and every write is
//! still refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::pg_client::{connect_with_ticket, sqlstate};
use common::wire::{codes, query, Raw};
use tokio_postgres::{IsolationLevel, SimpleQueryMessage};

/// The command tags of an answer (`CommandComplete` bodies).
fn tags(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'C')
        .map(|(_, body)| {
            String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body)).into_owned()
        })
        .collect()
}

/// The transaction status of the closing `ReadyForQuery`.
fn status(messages: &[(u8, Vec<u8>)]) -> u8 {
    messages
        .iter()
        .rev()
        .find(|(tag, _)| *tag == b'Z')
        .map(|(_, body)| body[0])
        .unwrap()
}

/// The one value a `SHOW` answered.
fn shown(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = messages.iter().find(|(tag, _)| *tag == b'D').unwrap();
    let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]) as usize;
    String::from_utf8_lossy(&row[6..6 + len]).into_owned()
}

/// Refused by esq: one denial (a policy's, or a kind esq does not
/// analyse) and nothing run.
fn refused(messages: &[(u8, Vec<u8>)]) -> bool {
    let codes = codes(messages);
    codes.len() == 1
        && ["42501", "0A000"].contains(&codes[0].as_str())
        && !messages.iter().any(|(tag, _)| *tag == b'D' || *tag == b'C')
}

async fn ask(raw: &mut Raw, sql: &str) -> Vec<(u8, Vec<u8>)> {
    raw.send(&[query(sql)]).await;
    raw.until_ready().await
}

/// Writes the guard must refuse inside any transaction.
const WRITES: &[&str] = &[
    "INSERT INTO burial_2024 (state) VALUES ('CA')",
    "UPDATE burial_2024 SET state = 'XX'",
    "SELECT nextval('burial_2024_id_seq')",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SET transaction_read_only = off",
    "SET default_transaction_read_only = off",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_transaction_modes_are_served_read_only_and_writes_stay_refused() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let direct = esq.pg().connect().await;
    let mut raw = Raw::login(&esq, &ticket).await;

    for (begin, tag) in [
        ("BEGIN READ WRITE", "BEGIN"),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", "BEGIN"),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "START TRANSACTION",
        ),
        (
            "begin transaction read write isolation level read committed",
            "BEGIN",
        ),
    ] {
        let answer = ask(&mut raw, begin).await;
        assert_eq!(tags(&answer), vec![tag.to_string()], "{begin}: {answer:?}");
        assert_eq!(status(&answer), b'T', "{begin}");

        // The database itself holds a read-only transaction, opened by what
        // esq forwarded.
        let upstream = direct
            .query(
                "SELECT query FROM pg_stat_activity WHERE usename = $1 AND state = 'idle in transaction'",
                &[&esq.role()],
            )
            .await
            .unwrap();
        let sent: Vec<String> = upstream.iter().map(|r| r.get(0)).collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        // A READ WRITE mode went upstream as READ ONLY; without a mode the
        // session's default (read only) applies.
        let asked_read_write = begin.to_uppercase().contains("READ WRITE");
        assert_eq!(
            sent[0].contains("READ ONLY"),
            asked_read_write,
            "{begin} forwarded as {sent:?}"
        );
        assert!(!sent[0].contains("READ WRITE"), "{sent:?}");

        let answer = ask(&mut raw, "SHOW transaction_read_only").await;
        assert_eq!(shown(&answer), "on", "{begin}");
        if begin.contains("SERIALIZABLE") {
            let answer = ask(&mut raw, "SHOW transaction_isolation").await;
            assert_eq!(shown(&answer), "serializable");
        }
        let answer = ask(&mut raw, "SELECT count(*) FROM burial_2024").await;
        assert!(codes(&answer).is_empty(), "{answer:?}");

        for write in WRITES {
            let answer = ask(&mut raw, write).await;
            assert!(refused(&answer), "{begin}; {write}: {answer:?}");
            let answer = ask(&mut raw, "ROLLBACK").await;
            assert_eq!(status(&answer), b'I');
            let answer = ask(&mut raw, begin).await;
            assert_eq!(status(&answer), b'T');
        }
        let answer = ask(&mut raw, "ROLLBACK").await;
        assert_eq!(tags(&answer), vec!["ROLLBACK".to_string()]);
    }

    // SET TRANSACTION inside a transaction, and for the session.
    let answer = ask(&mut raw, "BEGIN").await;
    assert_eq!(status(&answer), b'T');
    let answer = ask(
        &mut raw,
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE",
    )
    .await;
    assert_eq!(tags(&answer), vec!["SET".to_string()], "{answer:?}");
    let answer = ask(&mut raw, "SHOW transaction_isolation").await;
    assert_eq!(shown(&answer), "repeatable read");
    let answer = ask(&mut raw, "SHOW transaction_read_only").await;
    assert_eq!(shown(&answer), "on");
    ask(&mut raw, "COMMIT").await;

    let answer = ask(
        &mut raw,
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    )
    .await;
    assert_eq!(tags(&answer), vec!["SET".to_string()], "{answer:?}");
    ask(&mut raw, "BEGIN").await;
    let answer = ask(&mut raw, "SHOW transaction_isolation").await;
    assert_eq!(shown(&answer), "serializable");
    let answer = ask(&mut raw, "SHOW transaction_read_only").await;
    assert_eq!(shown(&answer), "on");
    let answer = ask(&mut raw, "SHOW default_transaction_read_only").await;
    assert_eq!(shown(&answer), "on");
    for write in WRITES {
        let answer = ask(&mut raw, write).await;
        assert!(refused(&answer), "{write}: {answer:?}");
    }
    ask(&mut raw, "ROLLBACK").await;

    // A snapshot import and an isolation level PostgreSQL lacks stay refused.
    for refused in [
        "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        "BEGIN ISOLATION LEVEL SNAPSHOT",
    ] {
        let answer = ask(&mut raw, refused).await;
        assert_eq!(codes(&answer).len(), 1, "{refused}: {answer:?}");
        assert_eq!(status(&answer), b'I');
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_transaction_builder_runs_read_only() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let mut client = connect_with_ticket(&esq, &ticket).await;
    // tokio-postgres sends START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE.
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .read_only(false)
        .start()
        .await
        .unwrap();
    let read_only: String = transaction
        .query_one("SHOW transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(read_only, "on");
    let count: i64 = transaction
        .query_one("SELECT count(*) FROM burial_2024", &[])
        .await
        .unwrap()
        .get(0);
    assert!(count > 0);
    let error = transaction
        .execute("INSERT INTO burial_2024 (state) VALUES ($1)", &[&"CA"])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42501", "{error:?}");
    transaction.rollback().await.unwrap();

    // An ordinary transaction still commits.
    let transaction = client.transaction().await.unwrap();
    let messages = transaction
        .simple_query("SHOW transaction_isolation")
        .await
        .unwrap();
    assert!(messages
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    transaction.commit().await.unwrap();
}
