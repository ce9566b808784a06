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

use std::time::{Duration, Instant};

use common::esq::Esq;
use common::http::{self, client, issue, metric_sum, query, revoke, token};
use common::pg_client::{connect_and_set_ticket, sqlstate};
use common::tickets::foia_request;
use common::webhook::Receiver;
use common::Doors;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn hash_hex(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

/// The journalist's FOIA ticket, issued through `esq`'s HTTP door.
async fn ticket(esq: &(impl Doors + ?Sized)) -> String {
    http::ticket(esq, "journalist", foia_request("10m")).await
}

/// Per-state counts over the HTTP door.
async fn counts(esq: &(impl Doors + ?Sized), ticket: &str) -> (StatusCode, Value) {
    query(esq, ticket, json!({"groupBy": "state"})).await
}

const COUNT_BY_STATE: &str = "SELECT state, count(id) FROM burial_2024 GROUP BY state";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_tickets_revocations_and_the_sentinel() {
    // The first delivery attempt is refused: the alert must be retried.
    let hook = Receiver::start(1).await;
    let mut a = Esq::builder()
        .private_redis()
        .env("ESQ_TICKETS__VALIDATION_CACHE", "1s")
        .env("ESQ_SENTINEL__FLUSH_INTERVAL", "100ms")
        .env("ESQ_SENTINEL__WEBHOOK", hook.url.clone())
        .env(
            "ESQ_SENTINEL__RULES",
            r#"[{name = "ticket_volume", measure = "uses", limit = 40, window = "60s"}]"#,
        )
        .start()
        .await;
    // B: the same configuration (database, Redis, sentinel, webhook), its
    // own ports and audit log.
    let mut b = a.spawn_binary(&[]).await;
    let replicas: [&dyn Doors; 2] = [&a, &b];

    // Issued through A, usable on B (both doors).
    let first = ticket(&a).await;
    let (status, rows) = counts(&b, &first).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{rows}");
    let session = connect_and_set_ticket(&b, "journalist", &first).await;
    let rows = session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect("counts on B");
    assert!(!rows.is_empty());

    // Revoked through A: B's HTTP door refuses at once, B's open session
    // within tickets.validation_cache (1 s).
    let revoked = revoke(&a, Some("journalist"), &first).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    let (status, body) = counts(&b, &first).await;
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
    let abused = ticket(&b).await;
    for _ in 0..25 {
        for replica in replicas {
            let (status, body) = counts(replica, &abused).await;
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
    for replica in replicas {
        let (status, body) = counts(replica, &abused).await;
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
    let trips = metric_sum(&a, "esq_sentinel_trips_total").await
        + metric_sum(&b, "esq_sentinel_trips_total").await;
    assert_eq!(trips, 1.0, "the trip is counted once across replicas");
    // Either replica lists it, with the id the webhook got.
    let listed: Value = client()
        .get(b.url("/api/esq/breach"))
        .bearer_auth(token("admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["breaches"][0]["id"], alert["id"], "{listed}");

    // Redis goes away: everything that needs a ticket check fails closed.
    let kept = ticket(&a).await;
    let session = connect_and_set_ticket(&b, "journalist", &kept).await;
    session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect("works before the outage");
    a.redis_mut().kill();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the validation cache
    let (status, body) = counts(&a, &kept).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    let (status, _) = issue(&b, "journalist", foia_request("10m")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let err = session
        .query(COUNT_BY_STATE, &[])
        .await
        .expect_err("no answer without a ticket check");
    assert_eq!(sqlstate(&err), "08006", "{err:?}");
    let ready = client().get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.alive(), "replica B exited when Redis went away");

    // Redis is back (with its data): both replicas recover by themselves.
    a.redis_mut().restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = counts(&a, &kept).await;
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
    let (status, _) = counts(&b, &kept).await;
    assert_eq!(status, StatusCode::OK);
    assert!(b.alive());
}
