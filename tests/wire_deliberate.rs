//! The PostgreSQL door's deliberate differences from PostgreSQL, each
//! listed with why, esq's exact answer and PostgreSQL's, and checked
//! against both (runner: `tests/common/wire_compare.rs`): a refusal, a
//! protocol use esq cannot follow safely, a statement esq answers itself.
//! Everything else must answer as PostgreSQL does (`wire_differential.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::wire_compare::{assert_none, batch, compare, deliberate, q, runs, servers, Script};
use common::wire_session::{message, parse, query, Until};

fn deliberate_scripts() -> Vec<Script> {
    vec![
        deliberate(
            "deliberate: a refused statement mid-pipeline",
            "esq's refusal stands where PostgreSQL would have run it; the rest of the batch is skipped as after any error",
            vec![batch(runs(&["SELECT 1", "SET search_path = public", "SELECT 2"]))],
            &[
                "ParseComplete",
                "BindComplete",
                "DataRow(1)",
                "CommandComplete(SELECT 1)",
                "ErrorResponse(42501)",
                "ReadyForQuery(I)",
            ],
            &[
                "ParseComplete",
                "BindComplete",
                "DataRow(1)",
                "CommandComplete(SELECT 1)",
                "ParseComplete",
                "BindComplete",
                "CommandComplete(SET)",
                "ParseComplete",
                "BindComplete",
                "DataRow(2)",
                "CommandComplete(SELECT 1)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: a refused statement fails the transaction",
            "a refusal is an error like PostgreSQL's own: the transaction must be rolled back",
            vec![q("BEGIN"), q("SET search_path = public"), q("SELECT 1"), q("ROLLBACK")],
            &[
                "CommandComplete(BEGIN)",
                "ReadyForQuery(T)",
                "ErrorResponse(42501)",
                "ReadyForQuery(E)",
                "ErrorResponse(25P02)",
                "ReadyForQuery(E)",
                "CommandComplete(ROLLBACK)",
                "ReadyForQuery(I)",
            ],
            &[
                "CommandComplete(BEGIN)",
                "ReadyForQuery(T)",
                "CommandComplete(SET)",
                "ReadyForQuery(T)",
                "RowDescription(?column?:23)",
                "DataRow(1)",
                "CommandComplete(SELECT 1)",
                "ReadyForQuery(T)",
                "CommandComplete(ROLLBACK)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: COPY",
            "esq never starts a COPY (its rows would pass unexamined)",
            vec![q("COPY (SELECT 1) TO STDOUT")],
            &["ErrorResponse(42501)", "ReadyForQuery(I)"],
            &[
                "H(5 bytes)",
                "d(2 bytes)",
                "c(0 bytes)",
                "CommandComplete(COPY 1)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: SHOW esq.ticket",
            "esq answers for the session's ticket itself; PostgreSQL knows no such setting",
            vec![q("SHOW esq.ticket")],
            &[
                "RowDescription(esq.ticket:25)",
                "DataRow(ticket for burial_2024 (fields state, county, burial_date; expires *",
                "CommandComplete(SHOW)",
                "ReadyForQuery(I)",
            ],
            &["ErrorResponse(42704)", "ReadyForQuery(I)"],
        ),
        deliberate(
            "deliberate: COMMIT AND CHAIN",
            "esq allows transaction control without chaining only",
            vec![q("BEGIN"), q("COMMIT AND CHAIN"), q("ROLLBACK")],
            &[
                "CommandComplete(BEGIN)",
                "ReadyForQuery(T)",
                "ErrorResponse(42501)",
                "ReadyForQuery(E)",
                "CommandComplete(ROLLBACK)",
                "ReadyForQuery(I)",
            ],
            &[
                "CommandComplete(BEGIN)",
                "ReadyForQuery(T)",
                "CommandComplete(COMMIT)",
                "ReadyForQuery(T)",
                "CommandComplete(ROLLBACK)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: a setting that changes how names resolve",
            "esq refuses SET search_path (and every setting off its allowlist)",
            vec![q("SET search_path = public")],
            &["ErrorResponse(42501)", "ReadyForQuery(I)"],
            &["CommandComplete(SET)", "ReadyForQuery(I)"],
        ),
        deliberate(
            "deliberate: SHOW of a setting off the allowlist",
            "esq shows only client settings and harmless server facts",
            vec![q("SHOW search_path")],
            &["ErrorResponse(42501)", "ReadyForQuery(I)"],
            &[
                "RowDescription(search_path:25)",
                "DataRow(\"$user\", public)",
                "CommandComplete(SHOW)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: a write",
            "esq refuses every write before it reaches the read-only role",
            vec![q("CREATE TABLE differential (a int)")],
            &["ErrorResponse(42501)", "ReadyForQuery(I)"],
            &["ErrorResponse(25006)", "ReadyForQuery(I)"],
        ),
        deliberate(
            "deliberate: a Query inside an unfinished batch",
            "PostgreSQL would run it or skip it after an error: esq cannot tell which, and ends the session (no driver does this)",
            vec![(
                vec![parse("", "SELECT 1", &[]), query("SELECT 2")],
                Until::Ready(1),
            )],
            &["ErrorResponse(08P01)", "Closed"],
            &[
                "ParseComplete",
                "RowDescription(?column?:23)",
                "DataRow(2)",
                "CommandComplete(SELECT 1)",
                "ReadyForQuery(I)",
            ],
        ),
        deliberate(
            "deliberate: a statement name esq reserves",
            "names starting esq_refused_ are esq's stand-ins; a client may not take them over",
            vec![batch(vec![parse("esq_refused_x", "SELECT 1", &[])])],
            &["ErrorResponse(08P01)", "Closed"],
            &["ParseComplete", "ReadyForQuery(I)"],
        ),
        deliberate(
            "deliberate: a statement name past 63 bytes",
            "PostgreSQL truncates it (two names can become one); esq refuses rather than track it differently",
            vec![batch(vec![parse(&"s".repeat(64), "SELECT 1", &[])])],
            &["ErrorResponse(08P01)", "Closed"],
            &["ParseComplete", "ReadyForQuery(I)"],
        ),
        deliberate(
            "deliberate: a fast-path function call",
            "esq never runs a function call it cannot see as SQL",
            vec![(
                vec![message(
                    b'F',
                    &[
                        &1_u32.to_be_bytes()[..],  // OID 1: no such function
                        &0_u16.to_be_bytes(),      // argument formats
                        &0_u16.to_be_bytes(),      // arguments
                        &0_u16.to_be_bytes(),      // result format
                    ]
                    .concat(),
                )],
                Until::Ready(1),
            )],
            &["ErrorResponse(0A000)", "ReadyForQuery(I)"],
            &["ErrorResponse(42883)", "ReadyForQuery(I)"],
        ),
    ]
}

/// Runs `script` on a fresh session: the backend messages, as lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_differences_are_exactly_the_listed_ones() {
    let servers = servers().await;
    assert_none(compare(&servers, deliberate_scripts()).await);
}
