//! What a denial says through the PostgreSQL door, with a real client: a
//! hint gives its advice once and offers only what works with any ticket
//! store; only a denial about the ticket's scope names the ticket's
//! policies and what it allows — esq's own rules (`SHOW search_path`,
//! `SET work_mem`, a syntax error) do not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::pg_client::{connect_as, connect_with_ticket};

/// (SQLSTATE, message, detail, hint) of a refused statement.
async fn refusal(client: &tokio_postgres::Client, sql: &str) -> (String, String, String, String) {
    let Err(error) = client.simple_query(sql).await else {
        panic!("{sql} was answered");
    };
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: {error:?}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        db.detail().unwrap_or_default().to_string(),
        db.hint().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_say_things_once_and_only_scope_denials_cite_policies() {
    let esq = Esq::builder().rows(2_000).start().await;

    // No ticket: the advice on getting one, once, and nothing that cannot
    // work (a CLI-issued ticket lands in a store the server may not share).
    let no_ticket = connect_as(&esq, "journalist", "journalist").await.unwrap();
    let (code, _, _, hint) = refusal(
        &no_ticket,
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    )
    .await;
    assert_eq!(code, "42501");
    assert_eq!(hint.matches("/api/esq/ticket").count(), 1, "{hint}");
    assert_eq!(hint.matches("esq.ticket =").count(), 1, "{hint}");
    assert!(!hint.contains("esq ticket issue"), "{hint}");
    // Refusals a ticket would not change carry no ticket advice.
    let (_, _, _, hint) = refusal(&no_ticket, "SHOW search_path").await;
    assert!(!hint.contains("/api/esq/ticket"), "{hint}");

    // Under a ticket: esq's own rules name no policy and no scope.
    let ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let client = connect_with_ticket(&esq, &ticket).await;
    for sql in [
        "SHOW search_path",
        "SET work_mem = '64MB'",
        "SELEC state FROM burial_2024",
        "SELECT state FROM burial_2024 WHERE county ~~ 'a' || 'b'",
        "DELETE FROM burial_2024",
    ] {
        let (code, message, detail, hint) = refusal(&client, sql).await;
        for text in [&message, &detail, &hint] {
            assert!(
                !text.contains("P-"),
                "{sql} ({code}) cites a policy: {text}"
            );
            assert!(
                !text.contains("ticket for burial_2024 allows"),
                "{sql}: {text}"
            );
        }
    }
    // A denial about the ticket's scope names its policies.
    let (code, _, detail, _) =
        refusal(&client, "SELECT state FROM burial_2024 WHERE ssn = '1'").await;
    assert_eq!(code, "42501");
    assert!(detail.contains("(policy P-"), "{detail}");
    assert!(detail.contains("ticket for burial_2024 allows"), "{detail}");
}
