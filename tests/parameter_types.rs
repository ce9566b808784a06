//! Parameter types declared in `Parse` (red team, issue 20): a type whose
//! input function looks things up (`regrole`, `aclitem`, the other `reg*`
//! types) would turn a parameter's text into role names or a role-existence
//! oracle, unseen by the guard, which reads only the SQL. The door refuses
//! such a Parse and the session goes on; plain types work as before.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::pg_client::{connect_as, sqlstate};
use tokio_postgres::types::Type;

#[tokio::test]
async fn lookup_parameter_types_are_refused_and_plain_ones_work() {
    let esq = Esq::builder().rows(200).start().await;
    let client = connect_as(&esq, "journalist", "journalist").await.unwrap();

    for (sql, types) in [
        ("SELECT $1", vec![Type::ACLITEM]),
        ("SELECT $1::text", vec![Type::ACLITEM]),
        ("SELECT $1", vec![Type::ACLITEM_ARRAY]),
        ("SELECT $1", vec![Type::REGROLE]),
        ("SELECT $1::text", vec![Type::INT4, Type::REGROLE]),
        ("SELECT $1 IS NULL", vec![Type::REGNAMESPACE]),
        ("SELECT $1::text", vec![Type::REGCLASS]),
    ] {
        let error = client
            .prepare_typed(sql, &types)
            .await
            .expect_err(&format!("{sql} with {types:?} was prepared"));
        assert_eq!(sqlstate(&error), "0A000", "{sql} {types:?}: {error:?}");
        // esq's own refusal, not PostgreSQL's reading of the parameter.
        let message = error.as_db_error().map(|e| e.message().to_string());
        assert_eq!(
            message.as_deref(),
            Some("this parameter type is not accepted"),
            "{sql} {types:?}"
        );
    }

    // Plain declared types, and none, still work; the session went on.
    let statement = client
        .prepare_typed(
            "SELECT $1::int4 + 1, $2::text",
            &[Type::INT4, Type::VARCHAR],
        )
        .await
        .expect("plain types are prepared");
    let row = client.query_one(&statement, &[&41i32, &"x"]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "x");
    let row = client
        .query_one("SELECT $1::text", &[&"inferred"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "inferred");
}
