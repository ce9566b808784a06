//! What a denial carries: the SQLSTATE, a one-line reason, a detail naming
//! the rule (and policy), and a hint that teaches the compliant path.

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
        }
    }

    pub fn syntax(reason: impl Into<String>) -> Denial {
        Denial {
            code: sqlstate::SYNTAX,
            reason: reason.into(),
            detail: "esq forwards only statements that PostgreSQL's grammar and esq's parser read the same way".into(),
            hint: "check the statement's syntax".into(),
            policy_id: None,
        }
    }

    pub fn with_policy(mut self, policy_id: Option<String>) -> Denial {
        self.policy_id = policy_id;
        self
    }
}

pub type Checked<T> = Result<T, Denial>;
