//! What a denial carries: the SQLSTATE, a one-line reason, a detail naming
//! the rule (and policy), and a hint that teaches the compliant path.
//! Only a denial about what the ticket's scope allows names the ticket's
//! policies: one of esq's own rules (syntax, allowlists, session
//! statements) would be refused under any ticket, and citing a policy there
//! sends the reader to the wrong place.

use serde::Serialize;

/// SQLSTATEs the guard answers with.
pub mod sqlstate {
    /// insufficient_privilege: a policy forbids it.
    pub const FORBIDDEN: &str = crate::sqlstate::INSUFFICIENT_PRIVILEGE;
    /// syntax_error: neither parser could read it, or they disagree.
    pub const SYNTAX: &str = crate::sqlstate::SYNTAX_ERROR;
    /// feature_not_supported: legal SQL the guard does not analyse.
    pub const UNSUPPORTED: &str = crate::sqlstate::FEATURE_NOT_SUPPORTED;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub code: &'static str,
    pub reason: String,
    pub detail: String,
    pub hint: String,
    pub policy_id: Option<String>,
    /// Set for esq's own rules, which hold whatever the ticket: such a
    /// denial names no ticket policy and describes no scope.
    #[serde(skip)]
    pub esq_rule: bool,
}

impl Denial {
    pub fn forbidden(
        reason: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Denial {
        Denial {
            code: sqlstate::FORBIDDEN,
            reason: reason.into(),
            detail: detail.into(),
            hint: hint.into(),
            policy_id: None,
            esq_rule: false,
        }
    }

    pub fn unsupported(what: impl Into<String>, hint: impl Into<String>) -> Denial {
        let what = what.into();
        Denial {
            code: sqlstate::UNSUPPORTED,
            reason: format!("esq does not analyse {what}, so it cannot allow it"),
            detail: "esq forwards only statements it has fully analysed (fail closed)".into(),
            hint: hint.into(),
            policy_id: None,
            esq_rule: true,
        }
    }

    pub fn syntax(reason: impl Into<String>) -> Denial {
        Denial {
            code: sqlstate::SYNTAX,
            reason: reason.into(),
            detail: "esq forwards only statements that PostgreSQL's grammar and esq's parser read the same way".into(),
            hint: "check the statement's syntax".into(),
            policy_id: None,
            esq_rule: true,
        }
    }

    /// Marks a denial as one of esq's own rules (its `esq_rule` field).
    pub fn by_esq_rule(mut self) -> Denial {
        self.esq_rule = true;
        self
    }

    /// Whether the denial may name the ticket's policies.
    pub fn cites_scope(&self) -> bool {
        !self.esq_rule
    }

    pub fn with_policy(mut self, policy_id: Option<String>) -> Denial {
        self.policy_id = policy_id;
        self
    }
}

pub type Checked<T> = Result<T, Denial>;
