//! The privacy budget ledger and the answer memo, in one atomic step.
//!
//! A budget belongs to an [`Account`]: (user, dataset, period length,
//! window), where the window is `floor(now / period)` — fixed windows, so
//! every replica computes the same `renews_at` without talking. Amounts
//! are integer micro-epsilon.
//!
//! [`Ledger::settle`] is the only write, and it is atomic: if an answer is
//! stored under the memo key, return it (no charge); else if the budget
//! allows, charge and store this answer; else refuse. So two concurrent
//! identical statements get one answer and one charge, and two different
//! statements racing can never overspend. The memory ledger (one node) and
//! the Redis ledger (replicas; [`super::RedisLedger`]) implement it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

/// Ledger entries outlive their window by this much, so a replica whose
/// clock runs a little behind still finds (and charges) the right entry.
pub const GRACE_SECONDS: i64 = 3_600;

/// Whose budget, for which window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    pub dataset: String,
    pub period_seconds: u64,
    /// `floor(now / period_seconds)`.
    pub window: u64,
}

impl Account {
    /// The account whose window holds `now`.
    pub fn at(user: &str, dataset: &str, period_seconds: u64, now: DateTime<Utc>) -> Account {
        let period = period_seconds.max(1);
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        Account {
            user: user.to_string(),
            dataset: dataset.to_string(),
            period_seconds: period,
            window: seconds / period,
        }
    }

    /// When this window's budget is whole again.
    pub fn renews_at(&self) -> DateTime<Utc> {
        let seconds = (self.window + 1).saturating_mul(self.period_seconds);
        Utc.timestamp_opt(i64::try_from(seconds).unwrap_or(i64::MAX / 2), 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// When the ledger may forget this window (milliseconds since the epoch).
    pub fn forget_at_ms(&self) -> i64 {
        (self.renews_at().timestamp() + GRACE_SECONDS).saturating_mul(1000)
    }

    /// A short, key-safe digest of the account (user names never reach
    /// Redis as such).
    pub fn tag(&self) -> String {
        let mut hash = Sha256::new();
        for part in [self.user.as_bytes(), self.dataset.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(self.period_seconds.to_be_bytes());
        hash.update(self.window.to_be_bytes());
        hex::encode(&hash.finalize()[..12])
    }
}

/// The outcome of one settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The same statement was answered before in this window: this is
    /// that answer, and nothing was charged.
    Recalled { answer: Vec<u8>, spent: u64 },
    /// Charged; the answer is stored for repeats. `spent` includes it.
    Charged { spent: u64 },
    /// The budget cannot pay for it; nothing changed.
    Refused { spent: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy ledger unavailable: {0}")]
pub struct LedgerUnavailable(pub String);

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Atomically: recall the answer stored under `memo`, or charge
    /// `charge` (if `spent + charge <= budget`) and store `answer`, or
    /// refuse. `memo` is a digest already bound to the account.
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable>;

    /// What the account has spent in its window.
    async fn spent(&self, account: &Account) -> Result<u64, LedgerUnavailable>;

    /// Whether a settle now would answer (a stored answer under `memo`, or
    /// budget for `charge`): a look before the statement runs, so a spent
    /// budget is refused cleanly. Only [`Ledger::settle`] decides.
    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
    ) -> Result<bool, LedgerUnavailable>;
}

/// The one-node ledger: two maps behind one lock (so a settle is atomic),
/// swept of past windows as it goes.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Spent micro-epsilon and when to forget it, by account tag.
    spent: HashMap<String, (u64, i64)>,
    /// Stored answers and when to forget them, by account tag + memo.
    answers: HashMap<(String, String), (Vec<u8>, i64)>,
    settles: u64,
}

/// Sweep past windows every this many settles.
const SWEEP_EVERY: u64 = 1_024;

impl MemoryLedger {
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Every change under the lock is one insert: a panic cannot leave
        // the maps half-written, so poisoning is safe to ignore.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn settle(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
        answer: &[u8],
    ) -> Result<Settlement, LedgerUnavailable> {
        let tag = account.tag();
        let forget_at = account.forget_at_ms();
        let mut state = self.lock();
        state.settles += 1;
        if state.settles.is_multiple_of(SWEEP_EVERY) {
            let now = Utc::now().timestamp_millis();
            state.spent.retain(|_, (_, until)| *until > now);
            state.answers.retain(|_, (_, until)| *until > now);
        }
        let spent = state.spent.get(&tag).map_or(0, |(s, _)| *s);
        let memo_key = (tag.clone(), memo.to_string());
        if let Some((stored, _)) = state.answers.get(&memo_key) {
            return Ok(Settlement::Recalled {
                answer: stored.clone(),
                spent,
            });
        }
        let Some(after) = spent.checked_add(charge).filter(|a| *a <= budget) else {
            return Ok(Settlement::Refused { spent });
        };
        state.spent.insert(tag, (after, forget_at));
        state.answers.insert(memo_key, (answer.to_vec(), forget_at));
        Ok(Settlement::Charged { spent: after })
    }

    async fn spent(&self, account: &Account) -> Result<u64, LedgerUnavailable> {
        Ok(self.lock().spent.get(&account.tag()).map_or(0, |(s, _)| *s))
    }

    async fn would_answer(
        &self,
        account: &Account,
        memo: &str,
        charge: u64,
        budget: u64,
    ) -> Result<bool, LedgerUnavailable> {
        let tag = account.tag();
        let state = self.lock();
        if state.answers.contains_key(&(tag.clone(), memo.to_string())) {
            return Ok(true);
        }
        let spent = state.spent.get(&tag).map_or(0, |(s, _)| *s);
        Ok(spent
            .checked_add(charge)
            .is_some_and(|after| after <= budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, now: DateTime<Utc>) -> Account {
        Account::at(user, "burial_2024", 86_400, now)
    }

    #[test]
    fn windows_are_fixed_and_renew_on_the_boundary() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap();
        let a = account("journalist", now);
        assert_eq!(
            a.renews_at(),
            Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap()
        );
        let later = account("journalist", a.renews_at());
        assert_eq!(later.window, a.window + 1);
        assert_ne!(later.tag(), a.tag());
        assert_ne!(account("other", now).tag(), a.tag());
    }

    #[tokio::test]
    async fn memory_ledger_charges_recalls_and_refuses() {
        let ledger = MemoryLedger::new();
        let a = account("journalist", Utc::now());
        let first = ledger.settle(&a, "m1", 500_000, 1_000_000, b"one").await;
        assert_eq!(first, Ok(Settlement::Charged { spent: 500_000 }));
        let repeat = ledger.settle(&a, "m1", 500_000, 1_000_000, b"other").await;
        assert_eq!(
            repeat,
            Ok(Settlement::Recalled {
                answer: b"one".to_vec(),
                spent: 500_000
            })
        );
        let second = ledger.settle(&a, "m2", 500_000, 1_000_000, b"two").await;
        assert_eq!(second, Ok(Settlement::Charged { spent: 1_000_000 }));
        let third = ledger.settle(&a, "m3", 500_000, 1_000_000, b"three").await;
        assert_eq!(third, Ok(Settlement::Refused { spent: 1_000_000 }));
        // A refused statement is not remembered.
        let again = ledger.settle(&a, "m3", 0, 1_000_000, b"x").await;
        assert_eq!(again, Ok(Settlement::Charged { spent: 1_000_000 }));
        assert_eq!(ledger.spent(&a).await, Ok(1_000_000));
    }
}
