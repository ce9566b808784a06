//! Ticket lifetime in the in-memory store: valid until `expires_at`, stale
//! after it, stale at once when revoked, and never kept by id.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::tickets::foia_ticket_request;
use esq::tickets::{Lookup, MemoryTicketStore, Stale, TicketId, TicketStore};

#[tokio::test]
async fn tickets_expire_and_can_be_revoked() {
    let app = common::shipped_app();
    let journalist = app
        .bundle()
        .users
        .principal("journalist")
        .expect("user")
        .clone();
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 25, 18, 0, 0)
        .single()
        .expect("time");
    let issued = app
        .bundle()
        .tickets
        .issue(&journalist, &foia_ticket_request("10m"), t0)
        .await
        .expect("issued");
    let id = TicketId::parse(&issued.ticket).expect("well-formed");
    let store = &app.ticket_store;

    let valid = store
        .get(&id, t0 + Duration::minutes(9))
        .await
        .expect("store");
    match valid {
        Lookup::Valid(ticket) => assert_eq!(ticket.scope, issued.scope),
        other => panic!("expected valid, got {other:?}"),
    }
    // The scope-free check agrees with `get` in every state.
    assert_eq!(
        store
            .stale(&id, t0 + Duration::minutes(9))
            .await
            .expect("store"),
        None
    );
    assert_eq!(
        store
            .stale(&id, t0 + Duration::minutes(10))
            .await
            .expect("store"),
        Some(Stale::Expired)
    );
    assert_eq!(
        store
            .get(&id, t0 + Duration::minutes(10))
            .await
            .expect("store"),
        Lookup::Stale(Stale::Expired),
        "a ticket is stale at its expiry instant"
    );

    let second = app
        .bundle()
        .tickets
        .issue(&journalist, &foia_ticket_request("10m"), t0)
        .await
        .expect("issued");
    let second_id = TicketId::parse(&second.ticket).expect("well-formed");
    assert_ne!(second_id, id, "every ticket gets a fresh id");
    assert_eq!(
        store
            .owner(&second_id.hash(), t0)
            .await
            .expect("store")
            .as_deref(),
        Some("journalist")
    );
    assert!(store.revoke(&second_id.hash(), t0).await.expect("store"));
    assert_eq!(
        store.get(&second_id, t0).await.expect("store"),
        Lookup::Stale(Stale::Revoked)
    );
    assert_eq!(
        store.stale(&second_id, t0).await.expect("store"),
        Some(Stale::Revoked)
    );
    assert!(
        !store.revoke(&second_id.hash(), t0).await.expect("store"),
        "revoking twice reports nothing to revoke"
    );
    assert_eq!(
        store.owner(&second_id.hash(), t0).await.expect("store"),
        None
    );

    let forged = TicketId::generate().expect("random");
    assert_eq!(
        store.get(&forged, t0).await.expect("store"),
        Lookup::Stale(Stale::Unknown)
    );
    assert_eq!(
        store.stale(&forged, t0).await.expect("store"),
        Some(Stale::Unknown)
    );
}

#[tokio::test]
async fn the_memory_store_keeps_hashes_not_ids_and_sweeps_expired_tickets() {
    let app = common::shipped_app();
    let journalist = app
        .bundle()
        .users
        .principal("journalist")
        .expect("user")
        .clone();
    let store = MemoryTicketStore::new();
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 25, 18, 0, 0)
        .single()
        .expect("time");
    let issued = app
        .bundle()
        .tickets
        .issue(&journalist, &foia_ticket_request("1m"), t0)
        .await
        .expect("issued");
    let id = TicketId::parse(&issued.ticket).expect("well-formed");
    let ticket = esq::tickets::Ticket {
        scope: issued.scope.clone(),
    };
    store.put(&id, &ticket).await.expect("put");
    let held = format!("{store:?}");
    assert!(
        !held.contains(&issued.ticket[2..]),
        "the id itself is never stored"
    );
    assert_eq!(store.live_count(t0), 1);
    assert_eq!(store.live_count(t0 + Duration::minutes(1)), 0);

    // A later write sweeps what has expired.
    let mut later = ticket.clone();
    later.scope.issued_at = t0 + Duration::minutes(2);
    later.scope.expires_at = t0 + Duration::minutes(3);
    let other = TicketId::generate().expect("random");
    store.put(&other, &later).await.expect("put");
    assert_eq!(store.len(), 1, "the expired ticket was swept");
}
