//! Where tickets live between issue and use. The [`TicketStore`] trait is
//! what the doors use; [`MemoryTicketStore`] is the one-node default
//! (`RedisTicketStore`, shared by replicas, implements the same trait). Stores key tickets by
//! the SHA-256 of their id and never hold the id itself.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::id::{TicketHash, TicketId};
use super::scope::Scope;

/// A stored ticket: its scope, which includes owner and expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub scope: Scope,
}

impl Ticket {
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.scope.expires_at
    }
}

/// Why a presented ticket cannot be used. Doors answer all of these with
/// "ticket stale" (28000 / 403) and keep the distinction for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stale {
    Expired,
    Revoked,
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Valid(Box<Ticket>),
    Stale(Stale),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot answer (e.g. Redis down): callers fail closed.
    #[error("ticket store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Stores a newly issued ticket until it expires.
    async fn put(&self, id: &TicketId, ticket: &Ticket) -> Result<(), StoreError>;
    /// Looks a presented ticket up as of `now`.
    async fn get(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Lookup, StoreError>;
    /// Why a presented ticket cannot be used as of `now` (`None`: it can),
    /// for checks that do not need its scope.
    async fn stale(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Option<Stale>, StoreError> {
        Ok(match self.get(id, now).await? {
            Lookup::Valid(_) => None,
            Lookup::Stale(why) => Some(why),
        })
    }
    /// Revokes a ticket; `false` when it was unknown or already expired.
    async fn revoke(&self, hash: &TicketHash, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// The owner of a live ticket (for revocation rights), by hash.
    async fn owner(
        &self,
        hash: &TicketHash,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;
    /// Live (unexpired, unrevoked) tickets, for the `esq_tickets_active`
    /// gauge.
    async fn active(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Whether other replicas see this store (so a connection may reuse a
    /// positive check for `tickets.validation_cache`); the memory store is
    /// always asked directly.
    fn shared(&self) -> bool {
        false
    }
}

/// The ticket `id` names, if it can be used as of `now`.
fn usable<'a>(
    entries: &'a HashMap<TicketHash, Entry>,
    id: &TicketId,
    now: DateTime<Utc>,
) -> Result<&'a Ticket, Stale> {
    match entries.get(&id.hash()) {
        None => Err(Stale::Unknown),
        Some(e) if e.revoked => Err(Stale::Revoked),
        Some(e) if e.ticket.expires_at() <= now => Err(Stale::Expired),
        Some(e) => Ok(&e.ticket),
    }
}

/// The embedded one-node store: a map from id hash to ticket, with expired
/// entries swept lazily on every write.
#[derive(Debug, Default)]
pub struct MemoryTicketStore {
    entries: Mutex<HashMap<TicketHash, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    ticket: Ticket,
    revoked: bool,
}

impl MemoryTicketStore {
    pub fn new() -> MemoryTicketStore {
        MemoryTicketStore::default()
    }

    /// Live (unexpired, unrevoked) tickets as of `now`.
    pub fn live_count(&self, now: DateTime<Utc>) -> usize {
        self.lock()
            .values()
            .filter(|e| !e.revoked && e.ticket.expires_at() > now)
            .count()
    }

    /// Entries held, including revoked ones not yet swept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TicketHash, Entry>> {
        // A panic while holding the lock cannot leave the map half-written
        // (every operation is a single insert/remove), so poisoning is safe
        // to ignore.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep(entries: &mut HashMap<TicketHash, Entry>, now: DateTime<Utc>) {
        entries.retain(|_, e| e.ticket.expires_at() > now);
    }
}

#[async_trait]
impl TicketStore for MemoryTicketStore {
    async fn put(&self, id: &TicketId, ticket: &Ticket) -> Result<(), StoreError> {
        let mut entries = self.lock();
        Self::sweep(&mut entries, ticket.scope.issued_at);
        entries.insert(
            id.hash(),
            Entry {
                ticket: ticket.clone(),
                revoked: false,
            },
        );
        Ok(())
    }

    async fn get(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Lookup, StoreError> {
        Ok(match usable(&self.lock(), id, now) {
            Ok(ticket) => Lookup::Valid(Box::new(ticket.clone())),
            Err(why) => Lookup::Stale(why),
        })
    }

    async fn stale(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Option<Stale>, StoreError> {
        Ok(usable(&self.lock(), id, now).err())
    }

    async fn revoke(&self, hash: &TicketHash, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        Self::sweep(&mut entries, now);
        Ok(match entries.get_mut(hash) {
            Some(e) if !e.revoked => {
                e.revoked = true;
                true
            }
            _ => false,
        })
    }

    async fn owner(
        &self,
        hash: &TicketHash,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let entries = self.lock();
        Ok(entries
            .get(hash)
            .filter(|e| !e.revoked && e.ticket.expires_at() > now)
            .map(|e| e.ticket.scope.user.clone()))
    }

    async fn active(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.live_count(now) as u64)
    }
}
