//! The privacy budget ledger and the answer memo, in one atomic step.
//!
//! A budget belongs to an [`Account`]: (user, dataset) — never to a ticket
//! and never to a ticket's parameters, so no choice of period or budget in a
//! request opens a second account. The ledger keeps each account's spends
//! (time, micro-epsilon); a ticket's [`Window`] (its period and budget)
//! counts every spend of the account in the last `period`, whatever ticket
//! made it. Windows slide: a user can never spend more than the budget in
//! any span of one period (fixed windows would allow twice the budget
//! around a boundary, and windows of different lengths would start fresh
//! at different times).
//!
//! [`Ledger::settle`] is the only write, and it is atomic: if an answer is
//! stored under the memo key (and not expired), return it (no charge); else
//! if the window allows, record the spend and store this answer for one
//! period; else refuse with when it could be paid. So two concurrent
//! identical statements get one answer and one charge, and two different
//! statements racing can never overspend. The memory ledger (one node) and
//! the Redis ledger (replicas; [`super::RedisLedger`]) implement it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::params::MAX_PERIOD_SECONDS;

/// Spends are kept this long (the longest period a ticket may have).
pub const KEEP_MS: i64 = (MAX_PERIOD_SECONDS as i64) * 1000;

/// Whose budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    pub dataset: String,
}

impl Account {
    pub fn new(user: &str, dataset: &str) -> Account {
        Account {
            user: user.to_string(),
            dataset: dataset.to_string(),
        }
    }

    /// A short, key-safe digest of the account (user names never reach
    /// Redis as such).
    pub fn tag(&self) -> String {
        let mut hash = Sha256::new();
        for part in [self.user.as_bytes(), self.dataset.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hex::encode(&hash.finalize()[..12])
    }
}

/// One ticket's rule over the account's spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub period_ms: i64,
    /// Micro-epsilon the spends of one period may add up to.
    pub budget: u64,
}

/// The outcome of one settle. Times are milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The same statement was answered within its period: this is that
    /// answer, and nothing was charged.
    Recalled {
        answer: Vec<u8>,
        spent: u64,
        renews_at: i64,
    },
    /// Charged; the answer is stored for repeats. `spent` includes it.
    Charged { spent: u64, renews_at: i64 },
    /// The window cannot pay for it until `renews_at`; nothing changed.
    Refused { spent: u64, renews_at: i64 },
}

/// What an account has spent in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub spent: u64,
    /// When the oldest spend in the window leaves it (`now` when none).
    pub renews_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy ledger unavailable: {0}")]
pub struct LedgerUnavailable(pub String);

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Atomically: recall the answer stored under `memo`, or charge
    /// `charge` (if the window's spends plus it fit its budget) and store
    /// `answer` for one period, or refuse. `memo` is a digest.
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable>;

    /// What the account has spent in `window` as of `now_ms`.
    async fn standing(
        &self,
        account: &Account,
        window: Window,
        now_ms: i64,
    ) -> Result<Standing, LedgerUnavailable>;

    /// Whether a settle now would answer (a stored answer under `memo`, or
    /// room for `charge`): a look before the statement runs, so a spent
    /// budget is refused cleanly. Only [`Ledger::settle`] decides.
    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
    ) -> Result<bool, LedgerUnavailable>;
}

/// The spends of one account in time order: the arithmetic both ledgers
/// do (the Redis ledger in its script, the same way).
pub fn standing(spends: &[(i64, u64)], window: Window, now_ms: i64) -> Standing {
    let from = now_ms - window.period_ms;
    let inside: Vec<&(i64, u64)> = spends.iter().filter(|(at, _)| *at > from).collect();
    Standing {
        spent: inside.iter().map(|(_, amount)| amount).sum(),
        renews_at: inside
            .first()
            .map_or(now_ms, |(at, _)| at + window.period_ms),
    }
}

/// When `charge` first fits the window, oldest spends leaving it first.
pub fn fits_at(spends: &[(i64, u64)], window: Window, now_ms: i64, charge: u64) -> i64 {
    let from = now_ms - window.period_ms;
    let mut left: u64 = spends
        .iter()
        .filter(|(at, _)| *at > from)
        .map(|(_, a)| a)
        .sum();
    if left.saturating_add(charge) <= window.budget {
        return now_ms;
    }
    for (at, amount) in spends.iter().filter(|(at, _)| *at > from) {
        left = left.saturating_sub(*amount);
        if left.saturating_add(charge) <= window.budget {
            return at + window.period_ms;
        }
    }
    // Larger than the whole budget: never.
    i64::MAX / 2
}

/// The one-node ledger: spends and answers behind one lock (so a settle
/// is atomic), pruned as it goes.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Spends (time, micro-epsilon) in time order, by account tag.
    spends: HashMap<String, Vec<(i64, u64)>>,
    /// Stored answers and when they expire, by account tag + memo.
    answers: HashMap<(String, String), (Vec<u8>, i64)>,
    settles: u64,
}

/// Sweep expired answers every this many settles.
const SWEEP_EVERY: u64 = 1_024;

impl MemoryLedger {
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every change under the lock is one insert or prune: a panic
        // cannot leave the maps half-written, so poisoning is safe to ignore.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryState {
    fn spends(&mut self, tag: &str, now_ms: i64) -> &mut Vec<(i64, u64)> {
        let spends = self.spends.entry(tag.to_string()).or_default();
        spends.retain(|(at, _)| *at > now_ms - KEEP_MS);
        spends
    }

    fn answer(&self, tag: &str, memo: &str, now_ms: i64) -> Option<&Vec<u8>> {
        self.answers
            .get(&(tag.to_string(), memo.to_string()))
            .filter(|(_, until)| *until > now_ms)
            .map(|(answer, _)| answer)
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable> {
        let tag = account.tag();
        let mut state = self.lock();
        state.settles += 1;
        if state.settles.is_multiple_of(SWEEP_EVERY) {
            state.answers.retain(|_, (_, until)| *until > now_ms);
        }
        let before = standing(state.spends(&tag, now_ms), window, now_ms);
        if let Some(stored) = state.answer(&tag, memo, now_ms) {
            return Ok(Settlement::Recalled {
                answer: stored.clone(),
                spent: before.spent,
                renews_at: before.renews_at,
            });
        }
        let spends = state.spends(&tag, now_ms);
        if before.spent.saturating_add(charge) > window.budget {
            return Ok(Settlement::Refused {
                spent: before.spent,
                renews_at: fits_at(spends, window, now_ms, charge),
            });
        }
        spends.push((now_ms, charge));
        spends.sort_by_key(|(at, _)| *at);
        let after = standing(spends, window, now_ms);
        state.answers.insert(
            (tag, memo.to_string()),
            (answer.to_vec(), now_ms + window.period_ms),
        );
        Ok(Settlement::Charged {
            spent: after.spent,
            renews_at: after.renews_at,
        })
    }

    async fn standing(
        &self,
        account: &Account,
        window: Window,
        now_ms: i64,
    ) -> Result<Standing, LedgerUnavailable> {
        let mut state = self.lock();
        Ok(standing(
            state.spends(&account.tag(), now_ms),
            window,
            now_ms,
        ))
    }

    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        window: Window,
        now_ms: i64,
    ) -> Result<bool, LedgerUnavailable> {
        let tag = account.tag();
        let mut state = self.lock();
        if state.answer(&tag, memo, now_ms).is_some() {
            return Ok(true);
        }
        let spent = standing(state.spends(&tag, now_ms), window, now_ms).spent;
        Ok(spent.saturating_add(charge) <= window.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn day(budget: u64) -> Window {
        Window {
            period_ms: DAY_MS,
            budget,
        }
    }

    #[test]
    fn windows_slide_and_name_when_a_charge_fits() {
        let spends = [(1_000, 2), (5_000, 1), (9_000, 1)];
        let now = 10_000;
        assert_eq!(standing(&spends, day(4), now).spent, 4);
        assert_eq!(standing(&spends, day(4), now).renews_at, 1_000 + DAY_MS);
        // A charge of 1 fits once the first spend (2) leaves the window.
        assert_eq!(fits_at(&spends, day(4), now, 1), 1_000 + DAY_MS);
        // A charge of 3 needs the first two gone.
        assert_eq!(fits_at(&spends, day(4), now, 3), 5_000 + DAY_MS);
        // A day later only the last two are inside.
        assert_eq!(standing(&spends, day(4), 1_000 + DAY_MS).spent, 2);
        assert_eq!(fits_at(&spends, day(4), now, 5), i64::MAX / 2);
    }

    #[tokio::test]
    async fn memory_ledger_charges_recalls_and_refuses() {
        let ledger = MemoryLedger::new();
        let a = Account::new("journalist", "burial_2024");
        let now = 1_700_000_000_000;
        let charged = ledger.settle(&a, "m1", 2, day(4), now, b"one").await;
        assert_eq!(
            charged,
            Ok(Settlement::Charged {
                spent: 2,
                renews_at: now + DAY_MS
            })
        );
        let recalled = ledger.settle(&a, "m1", 2, day(4), now + 1, b"x").await;
        assert!(
            matches!(recalled, Ok(Settlement::Recalled { ref answer, spent: 2, .. }) if answer == b"one")
        );
        assert!(matches!(
            ledger.settle(&a, "m2", 2, day(4), now + 2, b"two").await,
            Ok(Settlement::Charged { spent: 4, .. })
        ));
        assert_eq!(
            ledger.settle(&a, "m3", 1, day(4), now + 3, b"three").await,
            Ok(Settlement::Refused {
                spent: 4,
                renews_at: now + DAY_MS
            })
        );
        // A ticket with a longer period (or a smaller budget) sees the same
        // spends: no second account.
        let week = Window {
            period_ms: 7 * DAY_MS,
            budget: 4,
        };
        assert!(matches!(
            ledger.settle(&a, "m4", 1, week, now + 4, b"four").await,
            Ok(Settlement::Refused { spent: 4, .. })
        ));
        // The answer expires with its period: then it is a new answer.
        assert!(matches!(
            ledger
                .settle(&a, "m1", 2, day(4), now + DAY_MS + 1, b"new")
                .await,
            Ok(Settlement::Charged { .. })
        ));
    }
}
