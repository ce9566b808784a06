//! PostgreSQL's other string spellings (`E'…'`, `$$…$$`, `U&'…'`,
//! `UESCAPE`, `N'…'`) and the operator spellings of LIKE (`~~`, `!~~`,
//! `~~*`, `!~~*`) on a real PostgreSQL with unique markers planted in the
//! PII and PHI fields: through the guard and through the PostgreSQL door,
//! each safe spelling answers exactly what its plain spelling answers, each
//! unsafe one is refused, and no marker of a field outside the ticket ever
//! comes back, in an answer or in an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;

use common::esq::Esq;
use common::pg_client::{connect_with_ticket, sqlstate};
use common::postgres::TestPostgres;
use common::upstream::load_sample_data;
use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use serde::Deserialize;
use tokio_postgres::SimpleQueryMessage;

/// Marker prefixes planted per field, and the scopes that may see them.
const MARKERS: &[(&str, &str, &[&str])] = &[
    ("name", "ZZNAME", &["clinician"]),
    ("ssn", "ZZSSN", &[]),
    ("cause_of_death", "ZZCOD", &["clinician"]),
];

/// Plants the markers and a few counties spelled with quotes and
/// backslashes (what the special spellings are for).
const PLANT: &str = "UPDATE public.burial_2024 SET name = 'ZZNAME' || id, ssn = 'ZZSSN' || id, \
     cause_of_death = 'ZZCOD' || id; \
     UPDATE public.burial_2024 SET county = 'O''Brien' WHERE id % 7 = 1; \
     UPDATE public.burial_2024 SET county = 'a\\b' WHERE id % 7 = 2; \
     UPDATE public.burial_2024 SET county = 'it''s' WHERE id % 7 = 3";

/// (scope, special spelling, plain spelling): the same question.
const SAME_ANSWER: &[(&str, &str, &str)] = &[
    (
        "analyst",
        r"SELECT state, county FROM burial_2024 WHERE county = E'O\'Brien' ORDER BY 1, 2",
        "SELECT state, county FROM burial_2024 WHERE county = 'O''Brien' ORDER BY 1, 2",
    ),
    (
        "analyst",
        r"SELECT count(*) FROM burial_2024 WHERE county = E'a\\b'",
        r"SELECT count(*) FROM burial_2024 WHERE county = 'a\b'",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE county = $q$it's$q$",
        "SELECT count(*) FROM burial_2024 WHERE county = 'it''s'",
    ),
    (
        "analyst",
        r"SELECT count(*) FROM burial_2024 WHERE county = $$a\b$$",
        r"SELECT count(*) FROM burial_2024 WHERE county = 'a\b'",
    ),
    (
        "analyst",
        r"SELECT count(*) FROM burial_2024 WHERE county = U&'Los \0041ngeles'",
        "SELECT count(*) FROM burial_2024 WHERE county = 'Los Angeles'",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE county = U&'San !+000044iego' UESCAPE '!'",
        "SELECT count(*) FROM burial_2024 WHERE county = 'San Diego'",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE county = N'Orange'",
        "SELECT count(*) FROM burial_2024 WHERE county = 'Orange'",
    ),
    (
        "analyst",
        "SELECT county, count(*) FROM burial_2024 WHERE county ~~ 'San%' GROUP BY county ORDER BY 1",
        "SELECT county, count(*) FROM burial_2024 WHERE county LIKE 'San%' GROUP BY county ORDER BY 1",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE county !~~ 'San%'",
        "SELECT count(*) FROM burial_2024 WHERE county NOT LIKE 'San%'",
    ),
    (
        "analyst",
        r"SELECT count(*) FROM burial_2024 WHERE county ~~* E'los%'",
        "SELECT count(*) FROM burial_2024 WHERE county ILIKE 'los%'",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE county !~~* $$los%$$",
        "SELECT count(*) FROM burial_2024 WHERE county NOT ILIKE 'los%'",
    ),
    (
        "clinician",
        "SELECT name FROM burial_2024 WHERE name ~~ E'ZZNAME1_' ORDER BY 1",
        "SELECT name FROM burial_2024 WHERE name LIKE 'ZZNAME1_' ORDER BY 1",
    ),
];

/// Refused under the scope, whatever the spelling: each reads a field the
/// ticket lacks.
const REFUSED: &[(&str, &str)] = &[
    (
        "analyst",
        "SELECT state FROM burial_2024 WHERE ssn ~~ 'ZZSSN1%'",
    ),
    (
        "analyst",
        "SELECT count(*) FROM burial_2024 WHERE ssn !~~ 'ZZSSN1%'",
    ),
    (
        "analyst",
        "SELECT state FROM burial_2024 WHERE name ~~* 'zzname1%'",
    ),
    (
        "clinician",
        "SELECT name FROM burial_2024 WHERE ssn !~~* $$zzssn1%$$",
    ),
    (
        "clinician",
        r"SELECT name FROM burial_2024 WHERE ssn = E'ZZSSN\061'",
    ),
    (
        "clinician",
        "SELECT name FROM burial_2024 WHERE ssn = U&'ZZSSN!0031' UESCAPE '!'",
    ),
    (
        "analyst",
        "SELECT state FROM burial_2024 WHERE cause_of_death = $c$ZZCOD1$c$",
    ),
    (
        "foia",
        "SELECT count(*) FROM burial_2024 WHERE county ~~ E'San%'",
    ),
];

/// Every text value of an answer (or of an error's message, detail, hint).
fn values(messages: &[SimpleQueryMessage]) -> Vec<String> {
    let mut out = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            for i in 0..row.columns().len() {
                out.push(row.get(i).unwrap_or("NULL").to_string());
            }
        }
    }
    out
}

fn leaks(scope: &str, texts: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for text in texts {
        for (field, marker, visible_to) in MARKERS {
            if text.contains(marker) && !visible_to.contains(&scope) {
                found.push(format!("a value of {field} ({text})"));
            }
        }
    }
    found
}

#[derive(Deserialize)]
struct Case {
    name: String,
    scope: String,
    sql: String,
    #[serde(default)]
    allow: Option<serde_json::Value>,
    #[serde(flatten)]
    _rest: std::collections::BTreeMap<String, serde_json::Value>,
}

#[tokio::test]
async fn the_guard_answers_special_spellings_as_plain_ones_and_leaks_nothing() {
    let pg = TestPostgres::start().await;
    let client = load_sample_data(&pg, 5_000).await;
    client.batch_execute(PLANT).await.unwrap();
    let catalog = Arc::new(Catalog::load_dir(&common::repo().join("catalog")).unwrap());
    let guard = Guard::new(catalog);
    let run = |sql: String| {
        let client = &client;
        async move {
            client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", common::postgres::describe(&e)))
        }
    };

    let mut non_empty = 0;
    for (scope_name, special, plain) in SAME_ANSWER {
        let scope = common::tickets::guard_scope(scope_name).unwrap();
        let decide = |sql: &str| match guard.decide(Some(&scope), sql) {
            Decision::Allow(allowed) => allowed.sql.clone(),
            Decision::Deny(denial) => panic!("{sql} denied: {}", denial.reason),
        };
        let (special_sql, plain_sql) = (decide(special), decide(plain));
        for form in ["E'", "$$", "$q$", "U&'", "UESCAPE"] {
            assert!(!special_sql.contains(form), "{special_sql}");
        }
        let (got, want) = (run(special_sql).await, run(plain_sql).await);
        let (got, want) = (values(&got), values(&want));
        assert_eq!(got, want, "{special}");
        assert!(leaks(scope_name, &got).is_empty(), "{special}: {got:?}");
        if !got.is_empty() && got.iter().any(|v| v != "0") {
            non_empty += 1;
        }
    }
    // The pairs ask questions with answers (not all zero or empty).
    assert!(non_empty >= SAME_ANSWER.len() - 1, "{non_empty}");

    for (scope_name, sql) in REFUSED {
        let scope = common::tickets::guard_scope(scope_name).unwrap();
        assert!(
            matches!(guard.decide(Some(&scope), sql), Decision::Deny(_)),
            "{sql} was allowed under {scope_name}"
        );
    }

    // Every allowed case of the corpus file runs and leaks nothing.
    let path = common::repo().join("tests/guard_cases/literals.yaml");
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut executed = 0;
    for case in cases.iter().filter(|c| c.allow.is_some()) {
        let scope = common::tickets::guard_scope(&case.scope);
        let Decision::Allow(allowed) = guard.decide(scope.as_ref(), &case.sql) else {
            panic!("{}: denied (guard_cases.rs says why)", case.name);
        };
        let answer = run(allowed.sql.clone()).await;
        let found = leaks(&case.scope, &values(&answer));
        assert!(found.is_empty(), "{}: {found:?}", case.name);
        executed += 1;
    }
    assert!(executed >= 15, "{executed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_door_special_spellings_answer_and_forbidden_ones_are_refused() {
    let esq = Esq::builder().rows(5_000).start().await;
    esq.pg().connect().await.batch_execute(PLANT).await.unwrap();
    // Row-level tickets: one without any PII, one with name (never ssn).
    let analyst = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let clinician = esq
        .ticket(
            "clinician",
            serde_json::json!({"dataset": "burial_2024", "purpose": "treatment",
                               "fields": ["id", "name", "state", "county", "burial_date", "branch"]}),
        )
        .await;
    let sessions = [
        ("analyst", connect_with_ticket(&esq, &analyst).await),
        ("clinician", connect_with_ticket(&esq, &clinician).await),
    ];
    let session = |name: &str| &sessions.iter().find(|(n, _)| *n == name).unwrap().1;

    for (scope, special, plain) in SAME_ANSWER {
        let client = session(scope);
        let got = client
            .simple_query(special)
            .await
            .unwrap_or_else(|e| panic!("{special}: {e:?}"));
        let want = client.simple_query(plain).await.unwrap();
        assert_eq!(values(&got), values(&want), "{special}");
        // The clinician's ticket here has name but never ssn or PHI.
        assert!(leaks(scope, &values(&got)).is_empty(), "{special}");
    }

    // A quote after a backslash, in a value or a name, cannot end what
    // esq forwards early (sqlparser's print would let it: a UNION reading
    // every ssn ran before this was fixed).
    let client = session("analyst");
    let answer = client
        .simple_query(
            r"SELECT state FROM burial_2024 WHERE county = '\'' UNION SELECT ssn FROM public.burial_2024 --'",
        )
        .await
        .unwrap();
    assert!(values(&answer).iter().all(|v| !v.contains("ZZ")));
    let Err(error) = client
        .simple_query(
            r#"SELECT state AS "\"" UNION SELECT ssn FROM public.burial_2024 --" FROM burial_2024"#,
        )
        .await
    else {
        panic!("an ambiguous quoted name was answered");
    };
    assert_eq!(sqlstate(&error), "0A000", "{error:?}");

    // The extended protocol reads them the same way.
    let client = session("analyst");
    let row = client
        .query_one(
            r"SELECT count(*) FROM burial_2024 WHERE county = E'O\'Brien' AND county ~~ $$O%$$",
            &[],
        )
        .await
        .unwrap();
    let count: i64 = row.get(0);
    assert!(count > 0);

    for (scope, sql) in REFUSED.iter().filter(|(s, _)| *s != "foia") {
        let Err(error) = session(scope).simple_query(sql).await else {
            panic!("{sql} was answered under {scope}");
        };
        assert_eq!(sqlstate(&error), "42501", "{sql}: {error:?}");
        let db = error.as_db_error().unwrap();
        let texts = vec![
            db.message().to_string(),
            db.detail().unwrap_or_default().to_string(),
            db.hint().unwrap_or_default().to_string(),
        ];
        assert!(texts.iter().all(|t| !t.contains("ZZ")), "{sql}: {texts:?}");
    }
}
