//! The Redis ticket store and the sentinel's Redis windows against a real
//! `redis-server`: tickets under their hash with Redis's own expiry, never
//! the id; two handles (two replicas) see each other's tickets and
//! revocations; one revocation and one trip claim win; an unreachable Redis
//! is an error, never an answer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::redis::some_redis;
use common::tickets::foia_ticket_request;
use esq::sentinel::{RedisWindows, Windows};
use esq::shared::{Redis, RedisTarget};
use esq::tickets::{Lookup, RedisTicketStore, Stale, StoreError, TicketId, TicketStore};
use redis::AsyncCommands;

/// A handle with a store timeout long enough for a slow disk (the test
/// Redis fsyncs every write).
fn handle(url: &str) -> Arc<Redis> {
    handle_with_timeout(url, Duration::from_secs(10))
}

fn handle_with_timeout(url: &str, timeout: Duration) -> Arc<Redis> {
    Arc::new(Redis::new(RedisTarget::parse(url).unwrap(), timeout))
}

#[tokio::test]
async fn tickets_live_in_redis_under_their_hash_with_native_expiry() {
    let (url, _server) = some_redis();
    let app = common::shipped_app();
    let replica_a = Arc::new(RedisTicketStore::new(handle(&url)));
    let replica_b = RedisTicketStore::new(handle(&url));
    let shared: Arc<dyn TicketStore> = replica_a.clone();
    let bundle = app.bundle();
    let issuer = esq::tickets::TicketIssuer {
        store: shared,
        catalog: bundle.tickets.catalog.clone(),
        policies: bundle.tickets.policies.clone(),
        limits: bundle.tickets.limits.clone(),
    };
    let journalist = bundle.users.principal("journalist").unwrap().clone();
    let now = Utc::now();
    let issued = issuer
        .issue(&journalist, &foia_ticket_request("10m"), now)
        .await
        .expect("issued into Redis");
    let id = TicketId::parse(&issued.ticket).unwrap();

    // The other replica sees it, with its scope.
    match replica_b.get(&id, now).await.unwrap() {
        Lookup::Valid(ticket) => assert_eq!(ticket.scope, issued.scope),
        other => panic!("expected valid on replica B, got {other:?}"),
    }
    assert_eq!(
        replica_b.owner(&id.hash(), now).await.unwrap().as_deref(),
        Some("journalist")
    );
    assert!(replica_b.active(now).await.unwrap() >= 1);

    // Nothing in Redis holds the id; the key expires by itself.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("esq:{{{}}}:ticket", id.hash().to_hex());
    let keys: Vec<String> = raw.keys("esq:*").await.unwrap();
    assert!(keys.contains(&key), "{keys:?}");
    for stored in &keys {
        assert!(!stored.contains(id.as_str()));
        let kind: String = redis::cmd("TYPE")
            .arg(stored)
            .query_async(&mut raw)
            .await
            .unwrap();
        if kind == "string" {
            let value: String = raw.get(stored).await.unwrap();
            assert!(!value.contains(id.as_str()), "{stored} holds the ticket id");
        }
    }
    let ttl_ms: i64 = raw.pttl(&key).await.unwrap();
    let expected = (issued.scope.expires_at + esq::tickets::redis_store::EXPIRED_KEPT - now)
        .num_milliseconds();
    assert!(
        ttl_ms > 0 && (ttl_ms - expected).abs() < 60_000,
        "PTTL {ttl_ms} ms, expected about {expected} ms"
    );

    // Past its expiry it is reported as expired, not unknown.
    let later = now + chrono::Duration::minutes(11);
    assert_eq!(
        replica_b.get(&id, later).await.unwrap(),
        Lookup::Stale(Stale::Expired)
    );

    // Revoked through B: A sees it at once; of two revocations one wins.
    let hash = id.hash();
    let (first, second) = tokio::join!(replica_b.revoke(&hash, now), replica_a.revoke(&hash, now));
    assert!(
        first.unwrap() ^ second.unwrap(),
        "exactly one replica reports the revocation"
    );
    assert_eq!(
        replica_a.get(&id, now).await.unwrap(),
        Lookup::Stale(Stale::Revoked)
    );
    assert_eq!(replica_a.owner(&id.hash(), now).await.unwrap(), None);
    let unknown = TicketId::generate().unwrap();
    assert_eq!(
        replica_a.get(&unknown, now).await.unwrap(),
        Lookup::Stale(Stale::Unknown)
    );
}

#[tokio::test]
async fn sentinel_windows_add_up_across_replicas_and_a_trip_is_claimed_once() {
    let (url, _server) = some_redis();
    let suffix = TicketId::generate().unwrap().hash().to_hex();
    let key = format!("esq:{{t:{suffix}}}:sentinel:test");
    let a = RedisWindows::new(handle(&url));
    let b = RedisWindows::new(handle(&url));
    let window = Duration::from_secs(30);
    let now = Utc::now().timestamp_millis();
    assert_eq!(a.add_uses(&key, 30, now, window).await.unwrap(), 30);
    assert_eq!(b.add_uses(&key, 25, now + 10, window).await.unwrap(), 55);
    // A bucket older than the window no longer counts.
    assert_eq!(a.add_uses(&key, 1, now + 31_000, window).await.unwrap(), 1);

    let statements = format!("esq:{{t:{suffix}}}:sentinel:distinct");
    assert_eq!(
        a.add_statements(&statements, &[1, 2, 3], now, window)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        b.add_statements(&statements, &[3, 4], now + 5, window)
            .await
            .unwrap(),
        4
    );

    let streak = format!("esq:{{u:{suffix}}}:sentinel:streak");
    assert_eq!(a.streak(&streak, false, 3, window).await.unwrap(), 3);
    assert_eq!(b.streak(&streak, false, 2, window).await.unwrap(), 5);
    assert_eq!(a.streak(&streak, true, 1, window).await.unwrap(), 1);

    let claim = format!("esq:{{t:{suffix}}}:trip:test");
    let (one, two) = tokio::join!(a.claim_trip(&claim, window), b.claim_trip(&claim, window));
    assert!(
        one.unwrap() ^ two.unwrap(),
        "exactly one replica claims the trip"
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_an_answer() {
    let port = common::free_port();
    let store = RedisTicketStore::new(handle_with_timeout(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_secs(1),
    ));
    let id = TicketId::generate().unwrap();
    let started = std::time::Instant::now();
    let result = store.get(&id, Utc::now()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(store.revoke(&id.hash(), Utc::now()).await.is_err());
}

/// One pass over the store and the windows through `url`: issue, look up
/// from a second handle, revoke, count, claim.
async fn exercise(url: &str) {
    let now = Utc::now();
    let a = RedisTicketStore::new(handle(url));
    let b = RedisTicketStore::new(handle(url));
    let app = common::shipped_app();
    let bundle = app.bundle();
    let journalist = bundle.users.principal("journalist").unwrap().clone();
    let issued = esq::tickets::TicketIssuer {
        store: Arc::new(RedisTicketStore::new(handle(url))),
        catalog: bundle.tickets.catalog.clone(),
        policies: bundle.tickets.policies.clone(),
        limits: bundle.tickets.limits.clone(),
    }
    .issue(&journalist, &foia_ticket_request("10m"), now)
    .await
    .unwrap_or_else(|e| panic!("issue through {url}: {e}"));
    let id = TicketId::parse(&issued.ticket).unwrap();
    assert!(matches!(a.get(&id, now).await.unwrap(), Lookup::Valid(_)));
    assert!(b.revoke(&id.hash(), now).await.unwrap());
    assert_eq!(
        a.get(&id, now).await.unwrap(),
        Lookup::Stale(Stale::Revoked)
    );
    assert!(a.active(now).await.is_ok());

    let windows = RedisWindows::new(handle(url));
    let key = format!("esq:{{t:{}}}:sentinel:test", id.hash().to_hex());
    let ms = now.timestamp_millis();
    windows
        .add_uses(&key, 2, ms, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        windows
            .add_uses(&key, 3, ms, Duration::from_secs(30))
            .await
            .unwrap(),
        5
    );
    let claim = format!("esq:{{t:{}}}:trip:test", id.hash().to_hex());
    assert!(windows
        .claim_trip(&claim, Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!windows
        .claim_trip(&claim, Duration::from_secs(30))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_and_a_sentinel_watched_primary_work_too() {
    let cluster = common::redis::TestCluster::start();
    exercise(&cluster.url()).await;
    let sentinel = common::redis::TestSentinel::start();
    exercise(&sentinel.url()).await;
}
