//! Private answers at the doors (DESIGN 3.7), protocol-agnostic. A
//! statement allowed under a ticket with `privacy` carries a
//! [`PrivateQuery`]; both doors then do the same three things:
//!
//! 1. [`check`] before the statement runs: a budget that cannot pay (and
//!    no earlier answer to recall) is refused before any work;
//! 2. run the guard's SQL and collect its rows, never relaying them;
//! 3. [`release`]: noise, threshold and the budget charge in one step
//!    ([`crate::privacy::Releaser`]); only the released rows are sent, with
//!    what was spent ([`Spend`]) in a notice or a header and the audit
//!    record.
//!
//! Refusals are counted here (`esq_privacy_refusals_total`), charges too
//! (`esq_privacy_epsilon_spent_total`); the doors render them.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use super::Refusal;
use crate::app::App;
use crate::metrics::{DatasetLabels, PrivacyRefusalLabels};
use crate::privacy::{AnswerKey, ExactAnswer, PrivacyRefusal, PrivatePlan, Released, Row};

/// The most groups a private answer may have: its rows are held in memory
/// until released.
pub const MAX_GROUPS: usize = 100_000;

/// A private statement, as decided.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateQuery {
    pub plan: PrivatePlan,
    pub user: String,
    pub scope_id: String,
    /// The guard's SQL (what runs, and what the answer memo is keyed on).
    pub sql: String,
}

/// What a statement was bound with (extended protocol); empty for a
/// simple query answered in text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    pub params: Vec<Option<Bytes>>,
    pub param_formats: Vec<i16>,
    pub result_formats: Vec<i16>,
}

impl PrivateQuery {
    /// The answer memo's key for one run.
    pub fn key(&self, bound: &Bound) -> AnswerKey {
        AnswerKey {
            user: self.user.clone(),
            scope_id: self.scope_id.clone(),
            sql: self.sql.clone(),
            params: bound.params.clone(),
            param_formats: bound.param_formats.clone(),
            result_formats: bound.result_formats.clone(),
        }
    }
}

/// What one released answer spent, as the requester sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    pub charged: bool,
    pub cost: f64,
    pub spent: f64,
    pub remaining: f64,
    pub renews_at: DateTime<Utc>,
}

impl Spend {
    fn of(released: &Released) -> Spend {
        Spend {
            charged: released.charged,
            cost: released.cost.as_f64(),
            spent: released.spent.as_f64(),
            remaining: released.remaining.as_f64(),
            renews_at: released.renews_at,
        }
    }

    /// `spent=…; remaining=…; renews=…; cost=…` (the
    /// `ESQ-Privacy-Budget` header): the period's totals, and this answer.
    pub fn header(&self) -> String {
        format!(
            "spent={}; remaining={}; renews={}; cost={}",
            self.spent,
            self.remaining,
            self.renews_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.cost
        )
    }

    /// One line for the PostgreSQL door's notice.
    pub fn notice(&self) -> String {
        let what = if self.charged {
            format!("this answer cost epsilon {}", self.cost)
        } else {
            "this answer repeats an earlier one and cost nothing".to_string()
        };
        format!(
            "privacy budget: {what}; spent {} this period, {} left; renews {}",
            self.spent,
            self.remaining,
            self.renews_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// The audit record's `detail`.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({"privacy": {
            "charged": self.charged,
            "epsilon": self.cost,
            "spent": self.spent,
            "remaining": self.remaining,
            "renews_at": self.renews_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }})
    }
}

/// Step 1: whether the answer can be paid for (or recalled).
pub async fn check(app: &App, query: &PrivateQuery, bound: &Bound) -> Result<(), Refusal> {
    let key = query.key(bound);
    app.privacy
        .can_answer(&query.plan, &key)
        .await
        .map_err(|refusal| refused(app, &query.plan, refusal))
}

/// Step 3: the released rows and what they cost.
pub async fn release(
    app: &App,
    query: &PrivateQuery,
    bound: &Bound,
    rows: Vec<Row>,
) -> Result<(Vec<Row>, Spend), Refusal> {
    let exact = ExactAnswer {
        rows,
        formats: bound.result_formats.clone(),
    };
    let key = query.key(bound);
    let released = app
        .privacy
        .release(&query.plan, &key, exact)
        .await
        .map_err(|refusal| refused(app, &query.plan, refusal))?;
    let labels = DatasetLabels {
        dataset: query.plan.dataset.clone(),
    };
    app.metrics.privacy_answers.get_or_create(&labels).inc();
    if released.charged {
        app.metrics
            .privacy_epsilon_spent
            .get_or_create(&labels)
            .inc_by(released.cost.as_f64());
    }
    let spend = Spend::of(&released);
    Ok((released.rows, spend))
}

/// A private answer with more groups than esq holds ([`MAX_GROUPS`]).
pub fn too_many_groups(app: &App, query: &PrivateQuery) -> Refusal {
    refused(
        app,
        &query.plan,
        PrivacyRefusal::Failed(format!("more than {MAX_GROUPS} groups")),
    )
}

fn refused(app: &App, plan: &PrivatePlan, refusal: PrivacyRefusal) -> Refusal {
    let (reason, refusal) = match refusal {
        PrivacyRefusal::BudgetSpent {
            renews_at,
            remaining,
            needed,
        } => (
            "budget",
            Refusal::PrivacyBudgetSpent {
                renews_at,
                remaining: remaining.as_f64(),
                needed: needed.as_f64(),
            },
        ),
        PrivacyRefusal::Unavailable(why) => {
            tracing::error!(%why, "the privacy ledger did not answer");
            ("unavailable", Refusal::PrivacyUnavailable)
        }
        PrivacyRefusal::Failed(why) => {
            tracing::error!(%why, "a private answer failed");
            ("failed", Refusal::PrivateAnswerFailed)
        }
    };
    app.metrics
        .privacy_refusals
        .get_or_create(&PrivacyRefusalLabels {
            dataset: plan.dataset.clone(),
            reason,
        })
        .inc();
    refusal
}

/// A private statement's query, if the decision carries one.
pub fn of(
    allowed: &crate::guard::Allowed,
    user: &str,
    scope: Option<&crate::tickets::Scope>,
) -> Option<Arc<PrivateQuery>> {
    let plan = allowed.private.clone()?;
    Some(Arc::new(PrivateQuery {
        plan,
        user: user.to_string(),
        scope_id: scope.map(|s| s.id.clone()).unwrap_or_default(),
        sql: allowed.sql.clone(),
    }))
}
