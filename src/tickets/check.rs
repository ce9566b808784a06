//! Checking a presented ticket on every statement, cheaply: one connection
//! reuses a positive answer from a shared (Redis) store for
//! `tickets.validation_cache` (default 1 s), never past the ticket's
//! expiry. That window is the longest a revocation made elsewhere takes to
//! reach an open connection. Negative answers and store failures are never
//! reused, and the memory store is always asked directly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::id::{TicketHash, TicketId};
use super::store::{Lookup, Stale, StoreError, TicketStore};
use super::Scope;

/// One connection's ticket checks.
pub struct TicketCheck {
    store: Arc<dyn TicketStore>,
    reuse_for: Duration,
    last: Mutex<Option<Remembered>>,
}

struct Remembered {
    hash: TicketHash,
    scope: Scope,
    checked: Instant,
}

impl TicketCheck {
    pub fn new(store: Arc<dyn TicketStore>, validation_cache: Duration) -> TicketCheck {
        let reuse_for = if store.shared() {
            validation_cache
        } else {
            Duration::ZERO
        };
        TicketCheck {
            store,
            reuse_for,
            last: Mutex::new(None),
        }
    }

    /// The ticket's state as of `now`, from this connection's last positive
    /// check when it is recent enough.
    pub async fn lookup(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Lookup, StoreError> {
        if self.reuse_for.is_zero() {
            return self.store.get(id, now).await;
        }
        let hash = id.hash();
        if let Some(scope) = self.remembered(&hash, now) {
            return Ok(Lookup::Valid(Box::new(super::Ticket { scope })));
        }
        let lookup = self.store.get(id, now).await;
        let mut last = self.lock();
        *last = match &lookup {
            Ok(Lookup::Valid(ticket)) => Some(Remembered {
                hash,
                scope: ticket.scope.clone(),
                checked: Instant::now(),
            }),
            _ => None,
        };
        lookup
    }

    /// Why the ticket cannot be used as of `now` (`None`: it can), without
    /// copying its scope where the store can avoid it.
    pub async fn stale(
        &self,
        id: &TicketId,
        now: DateTime<Utc>,
    ) -> Result<Option<Stale>, StoreError> {
        if self.reuse_for.is_zero() {
            return self.store.stale(id, now).await;
        }
        Ok(match self.lookup(id, now).await? {
            Lookup::Valid(_) => None,
            Lookup::Stale(why) => Some(why),
        })
    }

    fn remembered(&self, hash: &TicketHash, now: DateTime<Utc>) -> Option<Scope> {
        let last = self.lock();
        let remembered = last.as_ref()?;
        (remembered.hash == *hash
            && remembered.checked.elapsed() < self.reuse_for
            && remembered.scope.expires_at > now)
            .then(|| remembered.scope.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Remembered>> {
        // Every write replaces the whole value: a poisoned lock holds a
        // consistent one.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}
