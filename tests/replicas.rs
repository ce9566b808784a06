//! Several esq replicas sharing one Redis (issue 6): tickets and
//! revocations are seen by every replica, the breach sentinel counts uses
//! across replicas and trips once (revoking the ticket and alerting the
//! webhook), and a Redis outage fails closed and heals by itself.
//!
//! Replica A runs in this test process (the harness), replica B is the
//! `esq` binary in its own process; both share one `redis-server` started
//! here and one throwaway PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::{Esq, Options};
use common::redis::{free_port, TestRedis};
use common::webhook::Receiver;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A second esq: the release binary under test, on its own ports.
struct Replica {
    child: Child,
    http: String,
    pg_port: u16,
}

impl Replica {
    async fn spawn(env: &[(String, String)]) -> Replica {
        let (pg_port, http_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_esq"))
            .arg("--config")
            .arg(common::shipped_config())
            .arg("serve")
            .envs(env.iter().cloned())
            .env("ESQ_SERVER__PG_LISTEN", format!("127.0.0.1:{pg_port}"))
            .env("ESQ_SERVER__HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("esq binary starts");
        let replica = Replica {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            pg_port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("{}/readyz", replica.http)).await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return replica;
            }
            assert!(Instant::now() < deadline, "replica B never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(user: &str) -> String {
    format!("Bearer demo-{user}-token")
}

fn hash_hex(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

async fn issue(http: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{http}/api/esq/ticket"))
        .header("authorization", token("journalist"))
        .json(
            &json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                      "fields": ["state", "id"], "aggregate": "count", "ttl": "10m"}),
        )
        .send()
        .await
        .expect("ticket request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ticket(http: &str) -> String {
    let (status, body) = issue(http).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["ticket"].as_str().expect("ticket").to_string()
}

async fn query(http: &str, ticket: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{http}/api/dta/query"))
        .header("X-ESQ-Ticket", ticket)
        .json(&json!({"groupBy": "state"}))
        .send()
        .await
        .expect("query request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn metric_sum(http: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A PostgreSQL session on replica B under `ticket`.
async fn pg_session(port: u16, database: &str, ticket: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} dbname={database} user=journalist password=journalist sslmode=disable"
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("psql-style login on replica B");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET esq.ticket = '{ticket}'"))
        .await
        .expect("SET esq.ticket");
    client
}

const COUNT_BY_STATE: &str = "SELECT state, count(id) FROM burial_2024 GROUP BY state";

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_tickets_revocations_and_the_sentinel() {
    let redis = TestRedis::start();
    // The first delivery attempt is refused: the alert must be retried.
    let hook = Receiver::start(1).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let shared_env = |name: &str| -> Vec<(String, String)> {
        vec![
            ("ESQ_TICKETS__STORE".into(), redis.url()),
            ("ESQ_TICKETS__VALIDATION_CACHE".into(), "1s".into()),
            // Redis fsyncs every write here: give a slow disk time (a
            // stopped Redis still fails at once: connection refused).
            ("ESQ_TICKETS__STORE_TIMEOUT".into(), "10s".into()),
            ("ESQ_SENTINEL__FLUSH_INTERVAL".into(), "100ms".into()),
            ("ESQ_SENTINEL__WEBHOOK".into(), hook.url.clone()),
            (
                "ESQ_SENTINEL__RULES".into(),
                r#"[{name = "ticket_volume", measure = "uses", limit = 40, window = "60s"}]"#
                    .into(),
            ),
            (
                "ESQ_AUDIT__PATH".into(),
                audit_dir
                    .path()
                    .join(format!("{name}.jsonl"))
                    .display()
                    .to_string(),
            ),
        ]
    };
    let a = Esq::start(Options {
        env: shared_env("a"),
        ..Options::default()
    })
    .await;
    let a_http = format!("http://{}", a.running().http_addr);
    let mut b_env = a.config_env.clone();
    b_env.retain(|(k, _)| !k.starts_with("ESQ_SERVER__"));
    b_env.extend(shared_env("b"));
    let mut b = Replica::spawn(&b_env).await;

    // Issued through A, usable on B (both doors).
    let first = ticket(&a_http).await;
    let (status, rows) = query(&b.http, &first).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{rows}");
    let session = pg_session(b.pg_port, &a.database, &first).await;
    let counts = session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect("counts on B");
    assert!(!counts.is_empty());

    // Revoked through A: B's HTTP door refuses at once, B's open session
    // within tickets.validation_cache (1 s).
    let revoked = reqwest::Client::new()
        .delete(format!("{a_http}/api/esq/ticket/{first}"))
        .header("authorization", token("journalist"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    let (status, body) = query(&b.http, &first).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "ticket stale");
    let refused_after = loop {
        // When the statement was asked (its answer may come later).
        let asked = revoked_at.elapsed();
        match session.query(COUNT_BY_STATE, &[]).await {
            Err(err) => {
                assert_eq!(sqlstate(&err), "28000", "{err:?}");
                break revoked_at.elapsed();
            }
            Ok(_) => {
                assert!(
                    asked < Duration::from_secs(3),
                    "B's session still answers a statement asked {asked:?} after the revocation"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    eprintln!("revocation reached B's open session after {refused_after:?}");

    // The sentinel: 25 uses on each replica, limit 40 → one trip.
    let abused = ticket(&b.http).await;
    for _ in 0..25 {
        for http in [&a_http, &b.http] {
            let (status, body) = query(http, &abused).await;
            if status != StatusCode::OK {
                // Tripped already (counts flush every 100 ms): refused.
                assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.delivered().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert delivered; attempts: {}",
            hook.attempts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for http in [&a_http, &b.http] {
        let (status, body) = query(http, &abused).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "tripped ticket still works: {body}"
        );
    }
    // Quiet for a while: no second trip, no second alert.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered = hook.delivered();
    assert_eq!(delivered.len(), 1, "one alert per trip: {delivered:?}");
    assert_eq!(
        hook.attempts(),
        2,
        "the refused first attempt was retried once"
    );
    let alert = &delivered[0];
    assert_eq!(alert["event"], "esq.breach");
    assert_eq!(alert["source"], "sentinel");
    assert_eq!(alert["rule"], "ticket_volume");
    assert_eq!(alert["ticket_hash"], hash_hex(&abused));
    assert_eq!(alert["user"], "journalist");
    assert_eq!(alert["limit"], 40);
    assert_eq!(alert["window_seconds"], 60);
    assert_eq!(alert["revoked"], true);
    let count = alert["count"].as_u64().expect("count");
    assert!((40..=50).contains(&count), "count {count}");
    assert!(
        !alert.to_string().contains(&abused),
        "the ticket id itself leaked"
    );
    let trips = metric_sum(&a_http, "esq_sentinel_trips_total").await
        + metric_sum(&b.http, "esq_sentinel_trips_total").await;
    assert_eq!(trips, 1.0, "the trip is counted once across replicas");
    // Either replica lists it, with the id the webhook got.
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/esq/breach", b.http))
        .header("authorization", token("admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["breaches"][0]["id"], alert["id"], "{listed}");

    // Redis goes away: everything that needs a ticket check fails closed.
    let kept = ticket(&a_http).await;
    let session = pg_session(b.pg_port, &a.database, &kept).await;
    session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect("works before the outage");
    let mut redis = redis;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the validation cache
    let (status, body) = query(&a_http, &kept).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    let (status, _) = issue(&b.http).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let err = session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect_err("no answer without a ticket check");
    assert_eq!(sqlstate(&err), "08006", "{err:?}");
    let ready = reqwest::get(format!("{a_http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.alive(), "replica B exited when Redis went away");

    // Redis is back (with its data): both replicas recover by themselves.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = query(&a_http, &kept).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "A did not recover: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match session.query(COUNT_BY_STATE, &[]).await {
            Ok(rows) => {
                assert!(!rows.is_empty());
                break;
            }
            Err(err) => {
                assert_eq!(sqlstate(&err), "08006", "{err:?}");
                assert!(Instant::now() < deadline, "B's session did not recover");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let (status, _) = query(&b.http, &kept).await;
    assert_eq!(status, StatusCode::OK);
    assert!(b.alive());
}
