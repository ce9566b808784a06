//! Fair shares of the one upstream pool: a user holds at most
//! `upstream.max_per_user` connections (both doors together), at most
//! `upstream.max_waiting` sessions and requests wait at once, and none waits
//! longer than `upstream.acquire_timeout`. A user's own share is taken
//! before a pool slot, so a user at their cap waits for their own
//! connections and never holds a pool slot while doing so: one user cannot
//! make another user's request fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no connection could be lent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every pool slot stayed taken for the whole wait.
    Pool { size: u32 },
    /// The user's own connections stayed at their cap for the whole wait.
    User { limit: u32 },
    /// Too many were waiting already: refused without waiting.
    Queue { limit: u32 },
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Pool { size } => write!(f, "all {size} upstream connections are in use"),
            Busy::User { limit } => {
                write!(f, "the user holds {limit} upstream connections already")
            }
            Busy::Queue { limit } => write!(f, "{limit} are waiting for an upstream connection"),
        }
    }
}

/// The permits a lent connection holds: returned when dropped.
pub struct Slot {
    user_permit: Option<OwnedSemaphorePermit>,
    pool_permit: Option<OwnedSemaphorePermit>,
    user: String,
    shares: Arc<Shares>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The permits go back first: then the user's share may be idle.
        self.pool_permit.take();
        self.user_permit.take();
        self.shares.forget_idle_user(&self.user);
    }
}

pub struct Shares {
    pool: Arc<Semaphore>,
    size: u32,
    per_user: Mutex<HashMap<String, Arc<Semaphore>>>,
    max_per_user: u32,
    waiting: AtomicU32,
    max_waiting: u32,
    timeout: Duration,
}

impl Shares {
    pub fn new(size: u32, max_per_user: u32, max_waiting: u32, timeout: Duration) -> Arc<Shares> {
        Arc::new(Shares {
            pool: Arc::new(Semaphore::new(size as usize)),
            size,
            per_user: Mutex::default(),
            max_per_user: max_per_user.clamp(1, size.max(1)),
            waiting: AtomicU32::new(0),
            max_waiting,
            timeout,
        })
    }

    /// A slot for `user`: their share first, then a pool slot, within the
    /// acquire time-out.
    pub async fn take(self: &Arc<Self>, user: &str) -> Result<Slot, Busy> {
        let user_share = self.share_of(user);
        // The fast path: both free now, no waiting counted.
        if let Ok(user_permit) = user_share.clone().try_acquire_owned() {
            if let Ok(pool_permit) = self.pool.clone().try_acquire_owned() {
                return Ok(self.slot(user, user_permit, pool_permit));
            }
            return self.wait(user, Some(user_permit), user_share).await;
        }
        self.wait(user, None, user_share).await
    }

    async fn wait(
        self: &Arc<Self>,
        user: &str,
        user_permit: Option<OwnedSemaphorePermit>,
        user_share: Arc<Semaphore>,
    ) -> Result<Slot, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            drop(user_permit);
            self.forget_idle_user(user);
            return Err(Busy::Queue {
                limit: self.max_waiting,
            });
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = async {
            let user_permit = match user_permit {
                Some(permit) => permit,
                None => tokio::time::timeout_at(deadline, user_share.acquire_owned())
                    .await
                    .map_err(|_| Busy::User {
                        limit: self.max_per_user,
                    })?
                    .map_err(|_| Busy::User {
                        limit: self.max_per_user,
                    })?,
            };
            let pool_permit = tokio::time::timeout_at(deadline, self.pool.clone().acquire_owned())
                .await
                .map_err(|_| Busy::Pool { size: self.size })?
                .map_err(|_| Busy::Pool { size: self.size })?;
            Ok((user_permit, pool_permit))
        }
        .await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok((user_permit, pool_permit)) => Ok(self.slot(user, user_permit, pool_permit)),
            Err(busy) => {
                self.forget_idle_user(user);
                Err(busy)
            }
        }
    }

    fn slot(
        self: &Arc<Self>,
        user: &str,
        user_permit: OwnedSemaphorePermit,
        pool_permit: OwnedSemaphorePermit,
    ) -> Slot {
        Slot {
            user_permit: Some(user_permit),
            pool_permit: Some(pool_permit),
            user: user.to_string(),
            shares: self.clone(),
        }
    }

    fn share_of(&self, user: &str) -> Arc<Semaphore> {
        let mut shares = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_user as usize)))
            .clone()
    }

    /// Drops a user's share once nobody holds or waits for it (the map
    /// does not grow with every user ever seen).
    fn forget_idle_user(&self, user: &str) {
        let mut shares = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let idle = shares.get(user).is_some_and(|share| {
            Arc::strong_count(share) == 1 && share.available_permits() == self.max_per_user as usize
        });
        if idle {
            shares.remove(user);
        }
    }

    /// Pool slots free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.pool.available_permits()
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// A pool slot for esq's own health check, only if one is free now (no
    /// user share, no waiting).
    pub fn check_slot(&self) -> Result<OwnedSemaphorePermit, Busy> {
        self.pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Pool { size: self.size })
    }

    #[cfg(test)]
    fn users_tracked(&self) -> usize {
        self.per_user.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn one_user_cannot_take_the_whole_pool() {
        let shares = Shares::new(4, 2, 8, SHORT);
        let a1 = shares.take("a").await.expect("first");
        let a2 = shares.take("a").await.expect("second");
        assert_eq!(
            shares.take("a").await.err(),
            Some(Busy::User { limit: 2 }),
            "a third for the same user waits for the user's own share"
        );
        let b = shares.take("b").await.expect("another user is served");
        drop((a1, a2, b));
        assert_eq!(shares.free(), 4);
        assert_eq!(shares.users_tracked(), 0, "idle users are forgotten");
    }

    #[tokio::test]
    async fn a_full_pool_times_out_and_a_long_queue_is_refused_at_once() {
        let shares = Shares::new(1, 1, 1, SHORT);
        let held = shares.take("a").await.expect("the only slot");
        let waiter = {
            let shares = shares.clone();
            tokio::spawn(async move { shares.take("b").await.err() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        assert_eq!(
            shares.take("c").await.err(),
            Some(Busy::Queue { limit: 1 }),
            "the queue holds one already"
        );
        assert!(started.elapsed() < SHORT, "refused without waiting");
        assert_eq!(waiter.await.expect("joins"), Some(Busy::Pool { size: 1 }));
        drop(held);
        let again = shares.take("b").await;
        assert!(again.is_ok(), "a freed slot is lent again");
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_as_soon_as_it_is_returned() {
        let shares = Shares::new(1, 1, 4, Duration::from_secs(5));
        let held = shares.take("a").await.expect("slot");
        let waiter = {
            let shares = shares.clone();
            tokio::spawn(async move { shares.take("b").await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.expect("joins"));
    }
}
