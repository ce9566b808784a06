//! Small-group suppression says so (issue 20): an answer whose groups
//! below k are withheld carries a notice — a NOTICE on the PostgreSQL door,
//! the `X-ESQ-Notice` header on the HTTP door — that says groups below k
//! are withheld, never how many. Failing closed, the notice comes with
//! every answer under suppression, whether or not a group was dropped, so
//! its presence says nothing about the data: a query whose only group is
//! small and one whose group is large get the identical words.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::wire_session::{bind, execute, field, parse, query, sync, Backend, Session, Until};
use common::Doors;
use serde_json::json;

/// Wyoming holds 10 people in the sample data (below k = 11).
const SMALL: &str = "SELECT state, count(*) FROM burial_2024 WHERE state = 'WY' GROUP BY state";
/// California holds thousands.
const LARGE: &str = "SELECT state, count(*) FROM burial_2024 WHERE state = 'CA' GROUP BY state";

/// The notices that speak of withheld groups (a private answer's budget
/// notice is another matter).
fn notices(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'N')
        .map(|(_, body)| field(body, b'M'))
        .filter(|text| text.contains("withheld"))
        .collect()
}

fn rows(messages: &[Backend]) -> usize {
    messages.iter().filter(|(tag, _)| *tag == b'D').count()
}

fn errors(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'E')
        .map(|(_, body)| field(body, b'C'))
        .collect()
}

async fn session(esq: &Esq, ticket: &str) -> Session {
    Session::connect(esq.pg_addr(), "ticket", esq.database(), ticket).await
}

async fn simple(session: &mut Session, sql: &str) -> Vec<Backend> {
    session.send(&[query(sql)]).await;
    session.receive(Until::Ready(1)).await
}

/// How many people the database really holds in `state` (superuser,
/// straight to PostgreSQL).
async fn really(esq: &Esq, state: &str) -> i64 {
    let client = esq.pg().connect().await;
    client
        .query_one(
            "SELECT count(*) FROM burial_2024 WHERE state = $1",
            &[&state],
        )
        .await
        .unwrap()
        .get(0)
}

async fn http_notice(esq: &Esq, ticket: &str, sql: &str) -> (String, serde_json::Value) {
    let response = common::http::client()
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", ticket)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let notice = response
        .headers()
        .get("x-esq-notice")
        .expect("the X-ESQ-Notice header is always there")
        .to_str()
        .unwrap()
        .to_string();
    (notice, response.json().await.unwrap())
}

/// Every number written in `text`.
fn numbers(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_doors_say_small_groups_are_withheld_whether_or_not_one_was() {
    let esq = Esq::builder().k_only_counts().start().await;
    let (small, large) = (really(&esq, "WY").await, really(&esq, "CA").await);
    assert!(
        (1..11).contains(&small) && large >= 11,
        "the sample data has one small and one large group ({small}, {large})"
    );
    let ticket = esq.foia_ticket().await;
    let mut pg = session(&esq, &ticket).await;

    let withheld = simple(&mut pg, SMALL).await;
    assert_eq!(errors(&withheld), Vec::<String>::new());
    assert_eq!(rows(&withheld), 0, "Wyoming's group is withheld");
    let shown = simple(&mut pg, LARGE).await;
    assert_eq!(rows(&shown), 1, "California's group is shown");

    let (a, b) = (notices(&withheld), notices(&shown));
    assert_eq!(a.len(), 1, "one notice: {a:?}");
    assert_eq!(a, b, "the same words whether or not a group was withheld");
    let text = a[0].clone();
    assert!(text.contains("fewer than 11"), "{text}");
    assert_eq!(numbers(&text), vec!["11"], "k and no count: {text}");

    // Every answer says it, the extended protocol's too, at each Execute.
    pg.send(&[parse("by_state", SMALL, &[]), sync()]).await;
    let prepared = pg.receive(Until::Ready(1)).await;
    assert_eq!(errors(&prepared), Vec::<String>::new());
    for _ in 0..2 {
        pg.send(&[bind("", "by_state", &[]), execute("", 0), sync()])
            .await;
        let executed = pg.receive(Until::Ready(1)).await;
        assert_eq!(errors(&executed), Vec::<String>::new());
        assert_eq!(notices(&executed), a, "each execution says it");
    }

    // The HTTP door says it in the same words, in X-ESQ-Notice.
    let (withheld, small_rows) = http_notice(&esq, &ticket, SMALL).await;
    let (shown, large_rows) = http_notice(&esq, &ticket, LARGE).await;
    assert_eq!(small_rows, json!([]), "Wyoming's group is withheld");
    assert_eq!(large_rows.as_array().map(Vec::len), Some(1));
    assert_eq!(withheld, text, "both doors say the same");
    assert_eq!(shown, text, "whether or not a group was withheld");

    // No notice where no suppression applies: a table-less statement under
    // the same ticket, and a row-level ticket's answers.
    assert_eq!(
        notices(&simple(&mut pg, "SELECT 1").await),
        Vec::<String>::new()
    );
    let rows_ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let mut row_level = session(&esq, &rows_ticket).await;
    let answer = simple(
        &mut row_level,
        "SELECT state FROM burial_2024 WHERE state = 'WY'",
    )
    .await;
    assert_eq!(errors(&answer), Vec::<String>::new());
    assert!(rows(&answer) > 0, "row-level: Wyoming's rows are answered");
    assert_eq!(notices(&answer), Vec::<String>::new());
    let (none, _) = http_notice(&esq, &rows_ticket, "SELECT state FROM burial_2024 LIMIT 1").await;
    assert_eq!(none, "", "no suppression, an empty X-ESQ-Notice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_answers_say_the_release_threshold_withholds_groups() {
    // Shipped policies: the FOIA ticket's counts are private.
    let esq = Esq::builder().start().await;
    let ticket = esq.foia_ticket().await;
    let mut pg = session(&esq, &ticket).await;
    let small = simple(&mut pg, SMALL).await;
    let large = simple(&mut pg, LARGE).await;
    assert_eq!(errors(&small), Vec::<String>::new());
    assert_eq!(errors(&large), Vec::<String>::new());
    let (a, b) = (notices(&small), notices(&large));
    assert_eq!(a.len(), 1, "one notice: {a:?}");
    assert_eq!(a, b, "the same words whatever the groups");
    let text = a[0].clone();
    assert!(text.contains("release threshold"), "{text}");
    assert_eq!(numbers(&text), vec!["11"], "k and no count: {text}");

    let (over_http, _) = http_notice(&esq, &ticket, SMALL).await;
    assert_eq!(over_http, text, "both doors say the same");
}
