//! Who may decide what: the input `package esq.exceptions` sees when a
//! steward approves or denies an exception, and how its answer is read.
//! Rust checks the role and that nobody decides their own exception before
//! asking (belt and braces: the shipped policy checks both again); the
//! policy adds what deployments tune — the longest duration, the clearance
//! a row-level exception on PII needs. Only an explicit `allow: true`
//! approves; anything else (no package, an error, a time-out, an undefined
//! or malformed decision) refuses, with the reason logged.

use serde::{Deserialize, Serialize};

use super::store::Exception;
use crate::auth::Principal;
use crate::catalog::Dataset;
use crate::policy::input::DatasetInput;
use crate::policy::PolicySet;

/// The policy id refusals carry when the policy gave no usable answer.
pub const FAILED: &str = "esq-exception-policy";

/// `input` of `data.esq.exceptions.decision`.
#[derive(Debug, Serialize)]
pub struct Input<'a> {
    /// `approve_exception` or `deny_exception`.
    pub action: &'static str,
    pub approver: &'a Principal,
    /// As configured now (a requester no longer configured has no roles
    /// and clearance PUBLIC).
    pub requester: Principal,
    pub exception: Facts<'a>,
    pub dataset: DatasetInput,
    /// RFC 3339, UTC.
    pub now: String,
}

/// The exception as the policy sees it.
#[derive(Debug, Serialize)]
pub struct Facts<'a> {
    pub id: &'a str,
    pub dataset: &'a str,
    pub fields: &'a [String],
    pub aggregate: Option<&'a str>,
    pub duration_seconds: i64,
    pub purpose: &'a str,
    pub justification: &'a str,
    /// The steward the requester named (`null`: any).
    pub approver: Option<&'a str>,
}

impl<'a> Facts<'a> {
    pub fn of(exception: &'a Exception) -> Facts<'a> {
        Facts {
            id: &exception.id,
            dataset: &exception.dataset,
            fields: &exception.fields,
            aggregate: exception.aggregate.as_deref(),
            duration_seconds: exception.duration_seconds,
            purpose: &exception.purpose,
            justification: &exception.justification,
            approver: exception.approver.as_deref(),
        }
    }
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    pub allow: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub policy_id: String,
}

/// Asks `policies` whether `approver` may take `action` on `exception`.
pub fn decide(
    policies: &PolicySet,
    action: &'static str,
    approver: &Principal,
    requester: Principal,
    exception: &Exception,
    dataset: &Dataset,
    now: chrono::DateTime<chrono::Utc>,
) -> Answer {
    let input = Input {
        action,
        approver,
        requester,
        exception: Facts::of(exception),
        dataset: DatasetInput::from_dataset(dataset),
        now: super::store::rfc3339(&now),
    };
    read(policies.evaluate_exception(&input))
}

/// Reads the policy's answer; anything but `allow: true` refuses.
fn read(answer: Result<serde_json::Value, String>) -> Answer {
    let refused = |why: String| {
        tracing::warn!(why, "the exception policy gave no usable answer; refused");
        Answer {
            allow: false,
            reasons: vec![
                "the exception policy (package esq.exceptions) gave no usable answer, so nothing is approved; the operator's log says why".into(),
            ],
            policy_id: FAILED.into(),
        }
    };
    let value = match answer {
        // serde would read a struct from an array too: only an object is
        // a decision.
        Ok(value) if value.is_object() => value,
        Ok(_) => return refused("its `decision` is not an object".into()),
        Err(why) => return refused(why),
    };
    match serde_json::from_value::<Answer>(value) {
        Ok(mut answer) => {
            if answer.policy_id.is_empty() {
                answer.policy_id = "esq.exceptions".into();
            }
            if !answer.allow && answer.reasons.is_empty() {
                answer
                    .reasons
                    .push("refused by the exception policy (no reason given)".into());
            }
            answer
        }
        Err(err) => refused(format!(
            "its `decision` does not follow the contract: {err}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_explicit_allow_allows() {
        let allowed = read(Ok(
            json!({"allow": true, "reasons": [], "policy_id": "P-X"}),
        ));
        assert!(allowed.allow);
        assert_eq!(allowed.policy_id, "P-X");
        for refused in [
            Err("timed out".to_string()),
            Ok(json!({"allow": "true"})),
            Ok(json!({"allow": 1})),
            Ok(json!({"reasons": ["x"]})),
            Ok(json!([true])),
            Ok(json!(null)),
        ] {
            let answer = read(refused.clone());
            assert!(!answer.allow, "{refused:?}");
            assert!(!answer.reasons.is_empty(), "{refused:?}");
        }
        let denied = read(Ok(json!({"allow": false})));
        assert!(!denied.allow);
        assert_eq!(denied.reasons.len(), 1);
    }
}
