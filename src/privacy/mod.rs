//! Differentially private counts (DESIGN 3.7), the protocol-agnostic part.
//!
//! Why: k-suppression alone does not protect small cells. A total minus the
//! shown groups, or `count(DISTINCT …)`, recovers a suppressed cell exactly
//! in a few queries. For tickets whose scope carries [`Privacy`], the guard
//! rewrites a count so that each privacy unit (a person) counts at most once
//! per group and in at most L0 groups, and hands the doors a
//! [`PrivatePlan`]; the doors run the rewritten SQL, collect the (few) group
//! rows, and call the release step here before sending anything:
//!
//! ```text
//! guard::decide ──► Allowed { sql, private: Some(plan) }
//!   door runs sql ──► ExactAnswer { rows (raw wire values), formats }
//!   Releaser::release(&plan, &AnswerKey, exact)
//!     ├─ Ok(Released { rows, charged, cost, spent, remaining, renews_at })
//!     │     send rows (same encoding; keys byte for byte) + NOTICE / header
//!     └─ Err(PrivacyRefusal::BudgetSpent { renews_at, .. })  → 42501 / 403
//!        Err(PrivacyRefusal::Unavailable(_) | Failed(_))     → fail closed
//! ```
//!
//! * [`params`]: the parameters, their validation and narrowing.
//! * [`mechanism`]: OpenDP's discrete Laplace noise and noisy threshold.
//! * [`wire`]: raw PostgreSQL values in and out (text or binary `int8`).
//! * [`ledger`] / [`RedisLedger`]: budgets per (user, dataset) over
//!   sliding windows, and the answer memo, settled in one atomic step.
//! * [`release`]: [`Releaser`], the one entry point for both doors, and
//!   [`Releaser::status`] for `GET /api/esq/budget`.
//!
//! Nothing in a released answer says how many groups were dropped: rows
//! are removed, never marked, and the answer holds only what passed; the
//! doors must count the released rows (CommandComplete `SELECT n`), never
//! the database's.
//!
//! The memo key ([`AnswerKey`]) is the rewritten SQL (so formatting does
//! not make a new statement), the scope id, the bound parameters and the
//! result formats, within the (user, dataset, window) account. It stores
//! the noisy groups before the release-side ORDER BY count and LIMIT, which
//! are applied on every answer.

pub mod ledger;
pub mod mechanism;
pub mod params;
pub mod plan;
pub mod redis_ledger;
pub mod release;
pub mod wire;

pub use ledger::{Account, Ledger, LedgerUnavailable, MemoryLedger, Settlement, Standing, Window};
pub use params::{InvalidPrivacy, Privacy};
pub use plan::{PrivatePlan, SortDirection};
pub use redis_ledger::RedisLedger;
pub use release::{AnswerKey, BudgetStatus, Epsilon, PrivacyRefusal, Released, Releaser};
pub use wire::{ExactAnswer, Row};
