//! The ticket store shared by replicas: Redis. A ticket lives under the hex
//! SHA-256 of its id (the id itself never reaches Redis) with Redis's own
//! expiry; a revocation is a second key beside it, so every replica sees it
//! at its next lookup. Both keys carry the hash in braces (`esq:{…}:ticket`)
//! so they share a hash slot on a Redis Cluster.
//!
//! Keys outlive the ticket by [`EXPIRED_KEPT`] so that a late use is
//! reported (and audited) as "expired" rather than "unknown". A sorted set
//! of live hashes scored by expiry counts active tickets.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::id::{TicketHash, TicketId};
use super::store::{Lookup, Stale, StoreError, Ticket, TicketStore};
use crate::shared::{Redis, Unavailable};

/// How long an expired ticket is still recognised as "expired".
pub const EXPIRED_KEPT: chrono::Duration = chrono::Duration::minutes(15);
const LIVE_SET: &str = "esq:tickets:live";

pub struct RedisTicketStore {
    redis: std::sync::Arc<Redis>,
}

impl RedisTicketStore {
    pub fn new(redis: std::sync::Arc<Redis>) -> RedisTicketStore {
        RedisTicketStore { redis }
    }

    fn ticket_key(hash: &TicketHash) -> String {
        format!("esq:{{{}}}:ticket", hash.to_hex())
    }

    fn revoked_key(hash: &TicketHash) -> String {
        format!("esq:{{{}}}:revoked", hash.to_hex())
    }

    /// Both keys of a ticket, as one round trip.
    async fn read(&self, hash: &TicketHash) -> Result<(Option<Ticket>, bool), StoreError> {
        let (ticket, revoked): (Option<String>, Option<String>) = self
            .redis
            .query(
                redis::cmd("MGET")
                    .arg(Self::ticket_key(hash))
                    .arg(Self::revoked_key(hash)),
            )
            .await
            .map_err(unavailable)?;
        let ticket = match ticket {
            Some(json) => Some(serde_json::from_str(&json).map_err(|err| {
                StoreError::Unavailable(format!("a stored ticket does not decode: {err}"))
            })?),
            None => None,
        };
        Ok((ticket, revoked.is_some()))
    }
}

fn unavailable(err: Unavailable) -> StoreError {
    StoreError::Unavailable(err.0)
}

/// Milliseconds since the epoch at which a ticket's keys disappear.
fn kept_until_ms(ticket: &Ticket) -> i64 {
    (ticket.expires_at() + EXPIRED_KEPT).timestamp_millis()
}

#[async_trait]
impl TicketStore for RedisTicketStore {
    async fn put(&self, id: &TicketId, ticket: &Ticket) -> Result<(), StoreError> {
        let hash = id.hash();
        let json = serde_json::to_string(ticket)
            .map_err(|err| StoreError::Unavailable(format!("ticket does not encode: {err}")))?;
        self.redis
            .query::<()>(
                redis::cmd("SET")
                    .arg(Self::ticket_key(&hash))
                    .arg(json)
                    .arg("PXAT")
                    .arg(kept_until_ms(ticket)),
            )
            .await
            .map_err(unavailable)?;
        // The live set is only a count: a failure here does not undo the
        // ticket (which is already stored and valid).
        let _ = self
            .redis
            .query::<()>(
                redis::cmd("ZADD")
                    .arg(LIVE_SET)
                    .arg(ticket.expires_at().timestamp_millis())
                    .arg(hash.to_hex()),
            )
            .await;
        Ok(())
    }

    async fn get(&self, id: &TicketId, now: DateTime<Utc>) -> Result<Lookup, StoreError> {
        let (ticket, revoked) = self.read(&id.hash()).await?;
        Ok(match ticket {
            None => Lookup::Stale(Stale::Unknown),
            Some(_) if revoked => Lookup::Stale(Stale::Revoked),
            Some(t) if t.expires_at() <= now => Lookup::Stale(Stale::Expired),
            Some(t) => Lookup::Valid(Box::new(t)),
        })
    }

    async fn revoke(&self, hash: &TicketHash, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let (ticket, revoked) = self.read(hash).await?;
        let Some(ticket) = ticket.filter(|t| !revoked && t.expires_at() > now) else {
            return Ok(false);
        };
        // NX: of two replicas revoking at once, one reports the revocation.
        let set: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(Self::revoked_key(hash))
                    .arg(now.timestamp_millis())
                    .arg("PXAT")
                    .arg(kept_until_ms(&ticket))
                    .arg("NX"),
            )
            .await
            .map_err(unavailable)?;
        let _ = self
            .redis
            .query::<()>(redis::cmd("ZREM").arg(LIVE_SET).arg(hash.to_hex()))
            .await;
        Ok(set.is_some())
    }

    async fn owner(
        &self,
        hash: &TicketHash,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let (ticket, revoked) = self.read(hash).await?;
        Ok(ticket
            .filter(|t| !revoked && t.expires_at() > now)
            .map(|t| t.scope.user))
    }

    async fn active(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(LIVE_SET)
            .arg("-inf")
            .arg(now.timestamp_millis())
            .ignore()
            .cmd("ZCARD")
            .arg(LIVE_SET);
        let (count,): (u64,) = self.redis.pipeline(&pipe).await.map_err(unavailable)?;
        Ok(count)
    }

    fn shared(&self) -> bool {
        true
    }
}
