//! The release step: exact group rows in, noisy rows out, the budget
//! charged (or the earlier answer recalled) in one atomic ledger step.
//!
//! Order matters: the noisy answer is computed first (cheap), then
//! [`Ledger::settle`] either recalls the answer stored for this very
//! statement in this window (returned instead, nothing charged), or charges
//! and stores the new one, or refuses. The exact answer never leaves this
//! function; on refusal nothing at all is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ledger::{Account, Ledger, MemoryLedger, Settlement, Window};
use super::mechanism;
use super::params::{from_micro, Privacy};
use super::plan::{PrivatePlan, SortDirection};
use super::redis_ledger::RedisLedger;
use super::wire::{self, ExactAnswer, Row};
use crate::shared::Redis;

/// What makes two statements "the same" for the answer memo. The dataset
/// and the window come from the plan and the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerKey {
    pub user: String,
    /// The ticket scope's id (it covers the privacy parameters).
    pub scope_id: String,
    /// The rewritten SQL the guard forwarded.
    pub sql: String,
    /// Bound parameter values (extended protocol), raw.
    pub params: Vec<Option<Bytes>>,
    pub param_formats: Vec<i16>,
    /// Result formats: the stored rows are in these.
    pub result_formats: Vec<i16>,
}

impl AnswerKey {
    /// A key for a statement without parameters, answered in text.
    pub fn simple(user: &str, scope_id: &str, sql: &str) -> AnswerKey {
        AnswerKey {
            user: user.to_string(),
            scope_id: scope_id.to_string(),
            sql: sql.to_string(),
            params: Vec::new(),
            param_formats: Vec::new(),
            result_formats: Vec::new(),
        }
    }

    /// The memo digest (hex): every part length-prefixed, so no two keys
    /// collide by concatenation.
    fn digest(&self) -> String {
        let mut hash = Sha256::new();
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(self.scope_id.as_bytes());
        part(self.sql.as_bytes());
        for value in &self.params {
            match value {
                None => part(b"\xffNULL"),
                Some(bytes) => part(bytes),
            }
        }
        let formats = |codes: &[i16]| {
            codes
                .iter()
                .flat_map(|c| c.to_be_bytes())
                .collect::<Vec<_>>()
        };
        part(&formats(&self.param_formats));
        part(&formats(&self.result_formats));
        hex::encode(hash.finalize())
    }
}

/// A released answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The rows to send, in the exact answer's encoding.
    pub rows: Vec<Row>,
    /// Whether this answer was charged (false: a repeat, recalled).
    pub charged: bool,
    /// Epsilon this answer cost (0 when recalled).
    pub cost: Epsilon,
    /// Spent in the window so far, this answer included.
    pub spent: Epsilon,
    pub remaining: Epsilon,
    pub renews_at: DateTime<Utc>,
}

/// An epsilon amount, kept in micro-epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Epsilon(pub u64);

impl Epsilon {
    pub fn as_f64(self) -> f64 {
        from_micro(self.0)
    }
}

impl std::fmt::Display for Epsilon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// Why nothing was released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivacyRefusal {
    /// The window's budget cannot pay for this answer.
    #[error("privacy budget spent")]
    BudgetSpent {
        renews_at: DateTime<Utc>,
        remaining: Epsilon,
        needed: Epsilon,
    },
    /// The ledger cannot answer: fail closed.
    #[error("privacy ledger unavailable: {0}")]
    Unavailable(String),
    /// The exact answer or the plan is not what the guard promised, or
    /// the mechanism failed: an internal error, nothing released.
    #[error("private answer failed: {0}")]
    Failed(String),
}

/// A (user, dataset) budget as `GET /api/esq/budget` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub dataset: String,
    pub epsilon_budget: f64,
    pub epsilon_per_query: f64,
    pub spent: f64,
    pub remaining: f64,
    pub budget_period_seconds: u64,
    pub renews_at: DateTime<Utc>,
}

/// The release step with its ledger. Cheap to share (`Arc`).
pub struct Releaser {
    ledger: Arc<dyn Ledger>,
    /// Thresholds by (ε micro, L0, k): finding one takes several OpenDP
    /// privacy-map evaluations, and a deployment uses a handful of them.
    thresholds: Mutex<HashMap<(u64, u32, u32), i64>>,
}

/// Distinct thresholds kept; past this the cache starts over.
const THRESHOLDS_KEPT: usize = 256;

impl Releaser {
    pub fn new(ledger: Arc<dyn Ledger>) -> Releaser {
        Releaser {
            ledger,
            thresholds: Mutex::new(HashMap::new()),
        }
    }

    /// The plan's release threshold (see [`mechanism::threshold_for`]).
    fn threshold(&self, plan: &PrivatePlan) -> Result<i64, PrivacyRefusal> {
        let key = (
            plan.epsilon_per_query_micro,
            plan.max_groups_per_unit,
            plan.min_group_size,
        );
        let lock = || self.thresholds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&known) = lock().get(&key) {
            return Ok(known);
        }
        let found = mechanism::threshold_for(
            from_micro(plan.epsilon_per_query_micro),
            plan.max_groups_per_unit,
            plan.min_group_size,
        )
        .map_err(|e| PrivacyRefusal::Failed(e.0))?;
        let mut cache = lock();
        if cache.len() >= THRESHOLDS_KEPT {
            cache.clear();
        }
        cache.insert(key, found);
        Ok(found)
    }

    /// One node: budgets in memory (lost on restart).
    pub fn memory() -> Releaser {
        Releaser::new(Arc::new(MemoryLedger::new()))
    }

    /// Replicas: budgets in the Redis the ticket store uses.
    pub fn redis(redis: Arc<Redis>) -> Releaser {
        Releaser::new(Arc::new(RedisLedger::new(redis)))
    }

    /// Whether `key` can be answered now (its answer is stored, or the
    /// budget can pay): checked before the statement runs, so a spent budget
    /// is refused before any work. Only [`Releaser::release`] charges.
    pub async fn can_answer(
        &self,
        plan: &PrivatePlan,
        key: &AnswerKey,
    ) -> Result<(), PrivacyRefusal> {
        let now = Utc::now().timestamp_millis();
        let account = Account::new(&key.user, &plan.dataset);
        let window = window(plan.budget_period_seconds, plan.epsilon_budget_micro);
        let charge = plan.epsilon_per_query_micro;
        let answers = self
            .ledger
            .would_answer(&account, &key.digest(), charge, window, now)
            .await
            .map_err(unavailable)?;
        if answers {
            return Ok(());
        }
        let standing = self
            .ledger
            .standing(&account, window, now)
            .await
            .map_err(unavailable)?;
        Err(PrivacyRefusal::BudgetSpent {
            renews_at: at_ms(standing.renews_at),
            remaining: Epsilon(window.budget.saturating_sub(standing.spent)),
            needed: Epsilon(charge),
        })
    }

    /// Releases `exact` under `plan` now.
    pub async fn release(
        &self,
        plan: &PrivatePlan,
        key: &AnswerKey,
        exact: ExactAnswer,
    ) -> Result<Released, PrivacyRefusal> {
        self.release_at(plan, key, exact, Utc::now()).await
    }

    /// As [`Releaser::release`], at a given time (tests, replays).
    pub async fn release_at(
        &self,
        plan: &PrivatePlan,
        key: &AnswerKey,
        exact: ExactAnswer,
        now: DateTime<Utc>,
    ) -> Result<Released, PrivacyRefusal> {
        let formats = exact.formats.clone();
        let groups = self.noise(plan, exact)?;
        self.settle_at(plan, key, groups, &formats, now).await
    }

    /// Noise and the threshold on some of an answer's exact rows (any
    /// split of a grouped answer gives the same distribution: each group's
    /// noise is its own), so exact counts are never held beyond a chunk.
    /// An ungrouped answer is noised whole (its one row).
    pub fn noise(
        &self,
        plan: &PrivatePlan,
        exact: ExactAnswer,
    ) -> Result<Vec<Row>, PrivacyRefusal> {
        let threshold = if plan.grouped {
            Some(self.threshold(plan)?)
        } else {
            None
        };
        noisy_groups_with(plan, exact, threshold)
    }

    /// Charges for (or recalls) the noisy groups of `key` and arranges them
    /// (ORDER BY count, LIMIT) in the result formats.
    pub async fn settle_at(
        &self,
        plan: &PrivatePlan,
        key: &AnswerKey,
        groups: Vec<Row>,
        formats: &[i16],
        now: DateTime<Utc>,
    ) -> Result<Released, PrivacyRefusal> {
        let format = ExactAnswer {
            rows: Vec::new(),
            formats: formats.to_vec(),
        }
        .format(plan.count_column)
        .map_err(|e| PrivacyRefusal::Failed(e.to_string()))?;
        // The memo keeps the noisy groups before sorting and LIMIT: those
        // are post-processing (not part of the rewritten SQL), so the same
        // statement with another LIMIT or sort order reuses them for free.
        let account = Account::new(&key.user, &plan.dataset);
        let window = window(plan.budget_period_seconds, plan.epsilon_budget_micro);
        let encoded = wire::encode_rows(&groups);
        let charge = plan.epsilon_per_query_micro;
        let settlement = self
            .ledger
            .settle(
                &account,
                &key.digest(),
                charge,
                window,
                now.timestamp_millis(),
                &encoded,
            )
            .await
            .map_err(unavailable)?;
        let remaining = |spent: u64| Epsilon(window.budget.saturating_sub(spent));
        match settlement {
            Settlement::Charged { spent, renews_at } => Ok(Released {
                rows: arrange(plan, groups, format)?,
                charged: true,
                cost: Epsilon(charge),
                spent: Epsilon(spent),
                remaining: remaining(spent),
                renews_at: at_ms(renews_at),
            }),
            Settlement::Recalled {
                answer,
                spent,
                renews_at,
            } => {
                let stored = wire::decode_rows(&answer)
                    .map_err(|err| PrivacyRefusal::Failed(err.to_string()))?;
                Ok(Released {
                    rows: arrange(plan, stored, format)?,
                    charged: false,
                    cost: Epsilon(0),
                    spent: Epsilon(spent),
                    remaining: remaining(spent),
                    renews_at: at_ms(renews_at),
                })
            }
            Settlement::Refused { spent, renews_at } => Err(PrivacyRefusal::BudgetSpent {
                renews_at: at_ms(renews_at),
                remaining: remaining(spent),
                needed: Epsilon(charge),
            }),
        }
    }

    /// The budget of `user` on `dataset` under `privacy`, now.
    pub async fn status(
        &self,
        user: &str,
        dataset: &str,
        privacy: &Privacy,
    ) -> Result<BudgetStatus, PrivacyRefusal> {
        self.status_at(user, dataset, privacy, Utc::now()).await
    }

    pub async fn status_at(
        &self,
        user: &str,
        dataset: &str,
        privacy: &Privacy,
        now: DateTime<Utc>,
    ) -> Result<BudgetStatus, PrivacyRefusal> {
        let account = Account::new(user, dataset);
        let window = window(privacy.budget_period_seconds, privacy.budget_micro());
        let standing = self
            .ledger
            .standing(&account, window, now.timestamp_millis())
            .await
            .map_err(unavailable)?;
        Ok(BudgetStatus {
            dataset: dataset.to_string(),
            epsilon_budget: privacy.epsilon_budget,
            epsilon_per_query: privacy.epsilon_per_query,
            spent: from_micro(standing.spent),
            remaining: from_micro(window.budget.saturating_sub(standing.spent)),
            budget_period_seconds: privacy.budget_period_seconds,
            renews_at: at_ms(standing.renews_at),
        })
    }
}

/// A ticket's window over its account's spends.
fn window(period_seconds: u64, budget_micro: u64) -> Window {
    Window {
        period_ms: i64::try_from(period_seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 4),
        budget: budget_micro,
    }
}

/// Milliseconds since the epoch as a time (far future when out of range).
fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn unavailable(err: super::ledger::LedgerUnavailable) -> PrivacyRefusal {
    PrivacyRefusal::Unavailable(err.0)
}

/// The whole mechanism over wire rows: [`noisy_groups`], then [`arrange`].
pub fn noisy_rows(plan: &PrivatePlan, exact: ExactAnswer) -> Result<Vec<Row>, PrivacyRefusal> {
    let format = exact
        .format(plan.count_column)
        .map_err(|e| PrivacyRefusal::Failed(e.to_string()))?;
    arrange(plan, noisy_groups(plan, exact)?, format)
}

/// Noisy counts in place of exact ones; groups below the noisy threshold
/// left out (an ungrouped count is always kept). The database's order.
pub fn noisy_groups(plan: &PrivatePlan, exact: ExactAnswer) -> Result<Vec<Row>, PrivacyRefusal> {
    noisy_groups_with(plan, exact, None)
}

/// As [`noisy_groups`], with the threshold already found (`None`: find it).
fn noisy_groups_with(
    plan: &PrivatePlan,
    exact: ExactAnswer,
    threshold: Option<i64>,
) -> Result<Vec<Row>, PrivacyRefusal> {
    let failed = |message: String| PrivacyRefusal::Failed(message);
    let width = plan.width();
    let format = exact
        .format(plan.count_column)
        .map_err(|e| failed(e.to_string()))?;
    let epsilon = from_micro(plan.epsilon_per_query_micro);
    let mut counts = Vec::with_capacity(exact.rows.len());
    for (i, row) in exact.rows.iter().enumerate() {
        if row.len() < width {
            return Err(failed(format!(
                "a row of {} columns, expected {width}",
                row.len()
            )));
        }
        let count = wire::decode_int8(row[plan.count_column].as_ref(), format)
            .map_err(|e| failed(e.to_string()))?;
        counts.push((i as u64, count));
    }
    if !plan.grouped {
        let [(_, count)] = counts.as_slice() else {
            return Err(failed(format!(
                "an ungrouped count with {} rows",
                counts.len()
            )));
        };
        let noisy = mechanism::noisy_total(*count, epsilon).map_err(|e| failed(e.0))?;
        let mut row = exact.rows.into_iter().next().unwrap_or_default();
        row[plan.count_column] = Some(wire::encode_int8(noisy, format));
        return Ok(vec![row]);
    }
    let threshold = match threshold {
        Some(known) => known,
        None => mechanism::threshold_for(epsilon, plan.max_groups_per_unit, plan.min_group_size)
            .map_err(|e| failed(e.0))?,
    };
    let noisy = mechanism::noisy_groups(&counts, epsilon, plan.max_groups_per_unit, threshold)
        .map_err(|e| failed(e.0))?;
    // The database's order (by the keys), minus the groups not released.
    let mut released = Vec::with_capacity(noisy.len());
    for (i, mut row) in exact.rows.into_iter().enumerate() {
        if let Some(&value) = noisy.get(&(i as u64)) {
            row[plan.count_column] = Some(wire::encode_int8(value, format));
            released.push(row);
        }
    }
    Ok(released)
}

/// What the statement asked for that must act on noisy counts: ORDER BY
/// the count (stable: the database's key order breaks ties), then
/// OFFSET/LIMIT — after thresholding, so the number of rows says nothing
/// about the groups left out.
pub fn arrange(
    plan: &PrivatePlan,
    rows: Vec<Row>,
    format: i16,
) -> Result<Vec<Row>, PrivacyRefusal> {
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let count = wire::decode_int8(row.get(plan.count_column).and_then(Option::as_ref), format)
            .map_err(|e| PrivacyRefusal::Failed(e.to_string()))?;
        keyed.push((count, row));
    }
    match plan.order_by_count {
        Some(SortDirection::Asc) => keyed.sort_by_key(|(count, _)| *count),
        Some(SortDirection::Desc) => keyed.sort_by_key(|(count, _)| std::cmp::Reverse(*count)),
        None => {}
    }
    let offset = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let limit = plan
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(keyed
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, row)| row)
        .collect())
}
