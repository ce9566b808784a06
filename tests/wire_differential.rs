//! Message-level differential test of the PostgreSQL door, as poolers test
//! themselves: each script of frontend messages runs once straight against
//! PostgreSQL (as esq's own service role, on the same database) and once
//! through esq, and the backend messages that come back must be the same —
//! the same types in the same order, the same CommandComplete tags,
//! SQLSTATEs, ReadyForQuery statuses, column names and types, and values
//! (runner: `tests/common/wire_compare.rs`). Where esq answers differently
//! on purpose, `tests/wire_deliberate.rs` lists and checks each difference.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::wire_compare::{assert_none, batch, compare, q, runs, same, servers, Script};
use common::wire_session::{
    bind, close_portal, close_statement, describe_portal, describe_statement, execute, flush,
    message, parse, run, sync, Until,
};

fn simple_scripts() -> Vec<Script> {
    vec![
        same("simple: one row", vec![q("SELECT 1")]),
        same(
            "simple: types and NULL",
            vec![q(
                "SELECT 1 AS a, 'x'::text AS b, NULL::int AS c, 2.5::numeric AS d, true AS e",
            )],
        ),
        same(
            "simple: a VALUES list",
            vec![q("VALUES (1, 'a'), (2, 'b')")],
        ),
        same("simple: server facts", vec![q("SHOW server_version_num")]),
        same("simple: empty string", vec![q("")]),
        same("simple: a semicolon", vec![q(";")]),
        same("simple: spaces and a semicolon", vec![q("  ;  ")]),
        same("simple: two semicolons", vec![q(";;")]),
        same(
            "simple: only a line comment",
            vec![q("-- connection check")],
        ),
        same(
            "simple: only block comments",
            vec![q("/* a /* nested */ one */ ; /**/")],
        ),
        same(
            "simple: several statements",
            vec![q("SELECT 1; SELECT 2 AS two")],
        ),
        same(
            "simple: several statements, an error mid-way",
            vec![q("SELECT 1; SELECT 1/0; SELECT 2")],
        ),
        same(
            "simple: statements between empty ones",
            vec![q("SELECT 1;; SELECT 2;")],
        ),
        same(
            "simple: an error, then the session goes on",
            vec![q("SELECT 1/0"), q("SELECT 1")],
        ),
        same(
            "simple: a client setting",
            vec![
                q("SET application_name = 'differential'"),
                q("SHOW application_name"),
            ],
        ),
        same("simple: a syntax error", vec![q("SELEC 1")]),
    ]
}

fn transaction_scripts() -> Vec<Script> {
    vec![
        same(
            "transaction: BEGIN, COMMIT",
            vec![q("BEGIN"), q("SELECT 1"), q("COMMIT")],
        ),
        same(
            "transaction: BEGIN, ROLLBACK",
            vec![q("BEGIN"), q("SELECT 1"), q("ROLLBACK")],
        ),
        same(
            "transaction: COMMIT of a failed transaction answers ROLLBACK",
            vec![q("BEGIN"), q("SELECT 1/0"), q("SELECT 1"), q("COMMIT")],
        ),
        same(
            "transaction: COMMIT and ROLLBACK outside one warn",
            vec![q("COMMIT"), q("ROLLBACK")],
        ),
        same(
            "transaction: BEGIN inside one warns",
            vec![q("BEGIN"), q("BEGIN"), q("ROLLBACK")],
        ),
        same(
            "transaction: in one Query",
            vec![q("BEGIN; SELECT 1; COMMIT")],
        ),
        same(
            "transaction: BEGIN READ ONLY",
            vec![q("BEGIN READ ONLY"), q("SELECT 1"), q("COMMIT")],
        ),
        same(
            "transaction: a savepoint undoes an error",
            vec![
                q("BEGIN"),
                q("SAVEPOINT a"),
                q("SELECT 1/0"),
                q("ROLLBACK TO SAVEPOINT a"),
                q("SELECT 1"),
                q("RELEASE SAVEPOINT a"),
                q("COMMIT"),
            ],
        ),
        same(
            "transaction: extended protocol",
            vec![
                batch(runs(&["BEGIN", "SELECT 1"])),
                batch(runs(&["COMMIT"])),
            ],
        ),
        same(
            "transaction: an error mid-batch inside one, then ROLLBACK",
            vec![
                q("BEGIN"),
                batch(runs(&["SELECT 1", "SELECT 1/0", "SELECT 2"])),
                batch(runs(&["SELECT 3"])),
                q("ROLLBACK"),
                q("SELECT 4"),
            ],
        ),
    ]
}

fn driver_mode_scripts() -> Vec<Script> {
    vec![
        same(
            "transaction mode: BEGIN READ WRITE",
            vec![q("BEGIN READ WRITE"), q("SELECT 1"), q("COMMIT")],
        ),
        same(
            "transaction mode: BEGIN ISOLATION LEVEL",
            vec![
                q("BEGIN ISOLATION LEVEL SERIALIZABLE"),
                q("SHOW transaction_isolation"),
                q("COMMIT"),
            ],
        ),
        same(
            "transaction mode: SET TRANSACTION",
            vec![
                q("BEGIN"),
                q("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
                q("SHOW transaction_isolation"),
                q("COMMIT"),
            ],
        ),
    ]
}

fn extended_scripts() -> Vec<Script> {
    vec![
        same(
            "extended: Parse, Bind, Describe portal, Execute",
            vec![batch(vec![
                parse("", "SELECT 1 AS one", &[]),
                bind("", "", &[]),
                describe_portal(""),
                execute("", 0),
            ])],
        ),
        same(
            "extended: a parameter",
            vec![batch(vec![
                parse("", "SELECT $1::int + 1 AS next", &[]),
                bind("", "", &[Some("41")]),
                describe_portal(""),
                execute("", 0),
            ])],
        ),
        same(
            "extended: parameter types given, a NULL",
            vec![batch(vec![
                parse("", "SELECT $1 AS v, $2::text AS w", &[23, 0]),
                describe_statement(""),
                bind("", "", &[Some("7"), None]),
                execute("", 0),
            ])],
        ),
        same(
            "extended: describe a statement",
            vec![batch(vec![
                parse("s_describe", "SELECT $1::int AS n, 'x'::text AS t", &[]),
                describe_statement("s_describe"),
            ])],
        ),
        same(
            "extended: a named statement bound twice, across rounds",
            vec![
                batch(vec![parse("s_twice", "SELECT $1::text AS v", &[])]),
                batch(vec![
                    bind("", "s_twice", &[Some("a")]),
                    execute("", 0),
                    bind("", "s_twice", &[Some("b")]),
                    execute("", 0),
                ]),
                batch(vec![close_statement("s_twice")]),
                batch(vec![bind("", "s_twice", &[Some("c")]), execute("", 0)]),
            ],
        ),
        same(
            "extended: a named portal described",
            vec![batch(vec![
                parse("", "VALUES (1, 'a')", &[]),
                bind("p_described", "", &[]),
                describe_portal("p_described"),
                execute("p_described", 0),
            ])],
        ),
        same(
            "extended: a pipeline of three",
            vec![batch(runs(&["SELECT 1", "SELECT 2", "SELECT 3"]))],
        ),
        same(
            "extended: an error mid-pipeline skips the rest until Sync",
            vec![
                batch(runs(&["SELECT 1", "SELECT 1/0", "SELECT 2"])),
                batch(runs(&["SELECT 3"])),
            ],
        ),
        same(
            "extended: a syntax error in Parse skips Bind and Execute",
            vec![batch(runs(&["SELEC 1"])), batch(runs(&["SELECT 1"]))],
        ),
        same(
            "extended: pipelined rounds, each with its Sync",
            vec![(
                [
                    run("SELECT 1"),
                    vec![sync()],
                    run("SELECT 1/0"),
                    vec![sync()],
                    run("SELECT 2"),
                    vec![sync()],
                ]
                .concat(),
                Until::Ready(3),
            )],
        ),
        same(
            "extended: a duplicate named statement",
            vec![
                batch(vec![
                    parse("s_dup", "SELECT 1", &[]),
                    parse("s_dup", "SELECT 2", &[]),
                    bind("", "s_dup", &[]),
                    execute("", 0),
                ]),
                batch(vec![bind("", "s_dup", &[]), execute("", 0)]),
            ],
        ),
        same(
            "extended: Bind of a statement that does not exist",
            vec![batch(vec![bind("", "s_missing", &[]), execute("", 0)])],
        ),
        same(
            "extended: Execute of a portal that does not exist",
            vec![batch(vec![execute("p_missing", 0)])],
        ),
        same(
            "extended: Describe of what does not exist",
            vec![
                batch(vec![describe_statement("s_missing")]),
                batch(vec![describe_portal("p_missing")]),
            ],
        ),
        same(
            "extended: Close of statements and portals",
            vec![
                batch(vec![
                    parse("s_close", "SELECT 1", &[]),
                    bind("p_close", "s_close", &[]),
                    close_portal("p_close"),
                    close_statement("s_close"),
                ]),
                batch(vec![bind("", "s_close", &[])]),
            ],
        ),
        same(
            "extended: Close of what does not exist",
            vec![batch(vec![
                close_statement("s_never"),
                close_portal("p_never"),
            ])],
        ),
        same(
            "extended: a simple Query after a batch",
            vec![batch(runs(&["SELECT 1"])), q("SELECT 2")],
        ),
    ]
}

fn more_protocol_scripts(ticket: &str) -> Vec<Script> {
    let set_ticket = format!("SET esq.ticket = '{ticket}'");
    let set_ticket: &'static str = Box::leak(set_ticket.into_boxed_str());
    vec![
        same(
            "more: Bind with the wrong number of parameters",
            vec![batch(vec![
                parse("", "SELECT $1::int", &[]),
                bind("", "", &[]),
                execute("", 0),
            ])],
        ),
        same(
            "more: Bind with a value the type refuses",
            vec![batch(vec![
                parse("", "SELECT $1::int", &[]),
                bind("", "", &[Some("not a number")]),
                execute("", 0),
            ])],
        ),
        same(
            "more: an error ends a transaction's batch in state E",
            vec![q("BEGIN; SELECT 1/0; COMMIT"), q("ROLLBACK")],
        ),
        same(
            "more: DISCARD ALL forgets prepared statements",
            vec![
                batch(vec![parse("s_discard", "SELECT 1", &[])]),
                q("DISCARD ALL"),
                batch(vec![bind("", "s_discard", &[]), execute("", 0)]),
            ],
        ),
        same(
            "more: DEALLOCATE forgets one",
            vec![
                batch(vec![parse("s_dealloc", "SELECT 1", &[])]),
                q("DEALLOCATE s_dealloc"),
                batch(vec![bind("", "s_dealloc", &[]), execute("", 0)]),
            ],
        ),
        same(
            "more: a longer answer streams whole",
            vec![q(Box::leak(
                format!(
                    "SELECT g, '{}' AS filler FROM generate_series(1, 3000) AS g",
                    "x".repeat(100)
                )
                .into_boxed_str(),
            ))],
        ),
        same(
            "more: Terminate closes the session",
            vec![(vec![message(b'X', b"")], Until::Ready(1))],
        ),
        same(
            "more: a Sync after a failed transaction's batch",
            vec![
                q("BEGIN"),
                batch(runs(&["SELECT 1/0"])),
                (vec![sync()], Until::Ready(1)),
                q("COMMIT"),
            ],
        ),
        same(
            "more: SET esq.ticket between empty statements keeps its place",
            vec![batch(runs(&["", set_ticket, ";"]))],
        ),
        same(
            "more: SET esq.ticket skipped after an error in its batch",
            vec![batch(runs(&["SELECT 1/0", set_ticket, ""]))],
        ),
    ]
}

/// The dataset under the session's row-level ticket (fields state,
/// county, burial_date).
const WYOMING: &str = "SELECT state, county, burial_date FROM burial_2024 WHERE state = 'WY' ORDER BY burial_date, county";

fn dataset_scripts() -> Vec<Script> {
    vec![
        same("dataset: a simple query", vec![q(WYOMING)]),
        same(
            "dataset: extended, described, fetched in parts inside a transaction",
            vec![
                q("BEGIN"),
                batch(vec![
                    parse("s_wy", WYOMING, &[]),
                    describe_statement("s_wy"),
                    bind("p_wy", "s_wy", &[]),
                    describe_portal("p_wy"),
                    execute("p_wy", 3),
                ]),
                batch(vec![execute("p_wy", 0)]),
                q("COMMIT"),
            ],
        ),
        same(
            "dataset: a parameter",
            vec![batch(vec![
                parse("", "SELECT count(*) FROM burial_2024 WHERE state = $1", &[]),
                bind("", "", &[Some("WY")]),
                execute("", 0),
            ])],
        ),
    ]
}

fn empty_scripts() -> Vec<Script> {
    vec![
        same(
            "empty: Parse of empty text, Bind, Describe, Execute",
            vec![batch(vec![
                parse("", "", &[]),
                bind("", "", &[]),
                describe_portal(""),
                execute("", 0),
            ])],
        ),
        same(
            "empty: a semicolon, described as a statement",
            vec![batch(vec![
                parse("", ";", &[]),
                describe_statement(""),
                bind("", "", &[]),
                execute("", 0),
            ])],
        ),
        same(
            "empty: a named one, executed twice in two rounds",
            vec![
                batch(vec![
                    parse("s_empty", " -- nothing\n ; ", &[]),
                    bind("", "s_empty", &[]),
                    execute("", 0),
                ]),
                batch(vec![bind("", "s_empty", &[]), execute("", 0)]),
            ],
        ),
        same(
            "empty: between statements in a pipeline",
            vec![batch(runs(&["SELECT 1", "", "SELECT 2", ";"]))],
        ),
        same(
            "empty: inside a transaction",
            vec![q("BEGIN"), q(";"), batch(runs(&[""])), q("COMMIT")],
        ),
        same(
            "empty: after an error in the batch (skipped)",
            vec![batch(runs(&["SELECT 1/0", ""]))],
        ),
    ]
}

fn portal_scripts() -> Vec<Script> {
    vec![
        same(
            "portal: a row limit suspends, the rest follows",
            vec![batch(vec![
                parse("", "VALUES (1), (2), (3)", &[]),
                bind("p_limit", "", &[]),
                execute("p_limit", 2),
                execute("p_limit", 2),
            ])],
        ),
        same(
            "portal: a limit exactly the size of the answer",
            vec![batch(vec![
                parse("", "VALUES (1), (2)", &[]),
                bind("p_exact", "", &[]),
                execute("p_exact", 2),
                execute("p_exact", 0),
            ])],
        ),
        same(
            "portal: fetched across rounds inside a transaction",
            vec![
                q("BEGIN"),
                batch(vec![
                    parse("", "VALUES (1), (2), (3)", &[]),
                    bind("p_rounds", "", &[]),
                    execute("p_rounds", 1),
                ]),
                batch(vec![execute("p_rounds", 1)]),
                batch(vec![execute("p_rounds", 0)]),
                q("COMMIT"),
            ],
        ),
        same(
            "portal: gone after Sync outside a transaction",
            vec![
                batch(vec![
                    parse("", "VALUES (1), (2)", &[]),
                    bind("p_gone", "", &[]),
                    execute("p_gone", 1),
                ]),
                batch(vec![execute("p_gone", 0)]),
            ],
        ),
    ]
}

fn sync_scripts() -> Vec<Script> {
    vec![
        same("sync: alone", vec![(vec![sync()], Until::Ready(1))]),
        same(
            "sync: two in a row",
            vec![(vec![sync(), sync()], Until::Ready(2))],
        ),
        same(
            "sync: Flush sends what is ready before Sync",
            vec![
                (
                    vec![
                        parse("", "SELECT 1", &[]),
                        bind("", "", &[]),
                        execute("", 0),
                        flush(),
                    ],
                    Until::Tag(b'C'),
                ),
                (vec![sync()], Until::Ready(1)),
            ],
        ),
        same(
            "sync: Flush then an error (at Bind: constants fold), then Sync",
            vec![
                (
                    vec![parse("", "SELECT 1/0", &[]), bind("", "", &[]), flush()],
                    Until::Tag(b'E'),
                ),
                (vec![execute("", 0), sync()], Until::Ready(1)),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_answers_as_postgresql_does() {
    let servers = servers().await;
    let mut failures = Vec::new();
    for scripts in [
        simple_scripts(),
        transaction_scripts(),
        extended_scripts(),
        empty_scripts(),
        portal_scripts(),
        sync_scripts(),
        more_protocol_scripts(&servers.ticket),
        dataset_scripts(),
    ] {
        failures.extend(compare(&servers, scripts).await);
    }
    assert_none(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_modes_drivers_send_are_served() {
    let servers = servers().await;
    assert_none(compare(&servers, driver_mode_scripts()).await);
}
