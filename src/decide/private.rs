//! Private answers at the doors (DESIGN 3.7), protocol-agnostic. A
//! statement allowed under a ticket with `privacy` carries a
//! [`PrivateQuery`]; both doors then do the same three things:
//!
//! 1. [`check`] before the statement runs: a budget that cannot pay (and
//!    no earlier answer to recall) is refused before any work;
//! 2. run the guard's SQL and feed its rows to a [`Releasing`], never
//!    relaying them: noise and the threshold a chunk at a time;
//! 3. [`Releasing::finish`]: the budget charge (or the stored answer) in
//!    one step ([`crate::privacy::Releaser`]); only the released rows are
//!    sent, with what was spent ([`Spend`]) in a notice or a header and the
//!    audit record.
//!
//! Refusals are counted here (`esq_privacy_refusals_total`), charges too
//! (`esq_privacy_epsilon_spent_total`); the doors render them.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use super::Refusal;
use crate::app::App;
use crate::metrics::{DatasetLabels, PrivacyRefusalLabels};
use crate::privacy::{
    AnswerKey, ExactAnswer, PrivacyRefusal, PrivatePlan, Released, Releaser, Row,
};

/// Exact rows noised at a time: exact counts are never held beyond this
/// many rows, however many groups the statement has.
pub const CHUNK_ROWS: usize = 10_000;

/// The most groups a released answer may have. Past it the answer is
/// refused after it was charged: the refusal then depends only on the
/// noisy answer (as its rows would), never on the exact data.
pub const MAX_RELEASED: usize = 1_000_000;

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

/// Steps 2 and 3: a private answer's rows as they arrive, noised and
/// thresholded a chunk at a time, then charged (or recalled) and released.
/// Nothing here refuses on the exact data: the only refusals come from
/// the budget, or follow the charge.
pub struct Releasing {
    query: Arc<PrivateQuery>,
    bound: Bound,
    exact: Vec<Row>,
    noisy: Vec<Row>,
    failure: Option<PrivacyRefusal>,
}

impl Releasing {
    pub fn new(query: Arc<PrivateQuery>, bound: Bound) -> Releasing {
        Releasing {
            query,
            bound,
            exact: Vec::new(),
            noisy: Vec::new(),
            failure: None,
        }
    }

    /// One exact row of the database's answer.
    pub fn push(&mut self, releaser: &Releaser, row: Row) {
        if self.failure.is_some() {
            return;
        }
        self.exact.push(row);
        if self.query.plan.grouped && self.exact.len() >= CHUNK_ROWS {
            self.noise(releaser);
        }
    }

    fn noise(&mut self, releaser: &Releaser) {
        let exact = ExactAnswer {
            rows: std::mem::take(&mut self.exact),
            formats: self.bound.result_formats.clone(),
        };
        match releaser.noise(&self.query.plan, exact) {
            Ok(rows) => self.noisy.extend(rows),
            Err(err) => self.failure = Some(err),
        }
    }

    /// The released rows and what they cost.
    pub async fn finish(mut self, app: &App) -> Result<(Vec<Row>, Spend), Refusal> {
        if self.failure.is_none() {
            self.noise(&app.privacy);
        }
        let plan = &self.query.plan;
        if let Some(failure) = self.failure.take() {
            return Err(refused(app, plan, failure));
        }
        let key = self.query.key(&self.bound);
        let released = app
            .privacy
            .settle_at(
                plan,
                &key,
                self.noisy,
                &self.bound.result_formats,
                Utc::now(),
            )
            .await
            .map_err(|refusal| refused(app, plan, refusal))?;
        let labels = DatasetLabels {
            dataset: plan.dataset.clone(),
        };
        if released.charged {
            app.metrics
                .privacy_epsilon_spent
                .get_or_create(&labels)
                .inc_by(released.cost.as_f64());
        }
        if released.rows.len() > MAX_RELEASED {
            let failure =
                PrivacyRefusal::Failed(format!("more than {MAX_RELEASED} groups released"));
            return Err(refused(app, plan, failure));
        }
        app.metrics.privacy_answers.get_or_create(&labels).inc();
        let spend = Spend::of(&released);
        Ok((released.rows, spend))
    }
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
