//! Audit records of completed statements on the PostgreSQL door. An allowed
//! statement's record is written when it completes, carrying the rows
//! (`DataRow` messages) the client received and the SQLSTATE of a failure;
//! the relay holds back each `ReadyForQuery` until the records of its round
//! are on disk, so a client never sees a statement complete that the audit
//! log could lose.
//!
//! The session queues one [`Expect`] per simple `Query` it forwards with an
//! allowed statement, and one per `Execute` (whatever it runs, so answers
//! and entries stay aligned). The relay counts rows and, at `CommandComplete`
//! / `PortalSuspended` / `EmptyQueryResponse` (an Execute's end), an error,
//! or `ReadyForQuery` (a Query's end), records the entry in front.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::private::PrivateRun;
use crate::audit::{AuditEvent, AuditSink};
use crate::decide::Completion;

/// An answer the relay expects in a round, and what to record for it.
#[derive(Debug)]
pub enum Expect {
    /// A simple Query: recorded at the round's ReadyForQuery.
    Query(Arc<Completion>, Option<Arc<PrivateRun>>),
    /// An Execute: recorded at its completion (`None`: nothing to record,
    /// e.g. a ticket statement or a refused portal).
    Execute(Option<Arc<Completion>>, Option<Arc<PrivateRun>>),
}

/// What the session shares with the relay for the audit.
#[derive(Debug, Default)]
pub struct Pending {
    /// Expected answers with their round.
    expected: Mutex<VecDeque<(u64, Expect)>>,
    /// The highest `seq` the session itself recorded (denials, prepared
    /// statements); `u64::MAX` when a record could not be queued.
    pub recorded: AtomicU64,
}

impl Pending {
    pub fn expect(&self, round: u64, expect: Expect) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((round, expect));
    }

    /// The private run of the statement answering now in `round`, if it is
    /// one (its rows must be collected, not relayed).
    pub fn private_in_front(&self, round: u64) -> Option<Arc<PrivateRun>> {
        let expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        match expected.front() {
            Some((r, Expect::Query(_, private) | Expect::Execute(_, private))) if *r == round => {
                private.clone()
            }
            _ => None,
        }
    }

    /// Notes a record the session made (`None`: it was lost).
    pub fn note(&self, seq: Option<u64>) {
        self.recorded
            .fetch_max(seq.unwrap_or(u64::MAX), Ordering::AcqRel);
    }
}

/// The relay's count of the round in progress.
#[derive(Debug, Default)]
pub struct Tally {
    rows: u64,
    sqlstate: Option<String>,
    /// The highest `seq` recorded by the relay.
    pub max_seq: u64,
    /// A record could not be queued: the round must not be delivered.
    pub lost: bool,
    /// A ReadyForQuery is in the output: wait for durability before sending.
    pub ready: bool,
    /// The `detail` of the next record (a private answer's spend).
    pub detail: Option<serde_json::Value>,
    /// Private answers: collected rows and releases.
    pub private: super::private::Relaying,
}

impl Tally {
    pub fn data_row(&mut self) {
        self.rows += 1;
    }

    /// Counts a released private answer's rows as the client gets them.
    pub fn released(&mut self, rows: u64, detail: Option<serde_json::Value>) {
        self.rows = rows;
        self.detail = detail;
    }

    fn record(&mut self, audit: &dyn AuditSink, event: &AuditEvent<'_>) {
        let detailed;
        let event = match self.detail.take() {
            Some(detail) => {
                detailed = AuditEvent {
                    detail: Some(detail),
                    ..event.clone()
                };
                &detailed
            }
            None => event,
        };
        match audit.record(event) {
            Some(seq) => self.max_seq = self.max_seq.max(seq),
            None => self.lost = true,
        }
    }

    /// An Execute's end (CommandComplete, PortalSuspended, EmptyQueryResponse).
    pub fn executed(&mut self, pending: &Pending, round: u64, audit: &dyn AuditSink) {
        let front = {
            let mut expected = pending.expected.lock().unwrap_or_else(|p| p.into_inner());
            match expected.front() {
                Some((r, Expect::Execute(..))) if *r == round => expected.pop_front(),
                _ => None,
            }
        };
        if let Some((_, Expect::Execute(completion, _))) = front {
            if let Some(completion) = completion {
                let event = completion.event(Some(self.rows), None);
                self.record(audit, &event);
            }
            self.rows = 0;
        }
    }

    /// An ErrorResponse: it ends the Execute in front (the statement that
    /// failed, or could not run), or marks the Query.
    pub fn failed(&mut self, pending: &Pending, round: u64, code: String, audit: &dyn AuditSink) {
        let front = {
            let mut expected = pending.expected.lock().unwrap_or_else(|p| p.into_inner());
            match expected.front() {
                Some((r, Expect::Execute(..))) if *r == round => expected.pop_front(),
                _ => None,
            }
        };
        match front {
            Some((_, Expect::Execute(completion, _))) => {
                if let Some(completion) = completion {
                    let event = completion.event(Some(self.rows), Some(&code));
                    self.record(audit, &event);
                }
                self.rows = 0;
            }
            _ => self.sqlstate = Some(code),
        }
    }

    /// A ReadyForQuery: records the round's Query; Executes PostgreSQL
    /// skipped after an error are dropped (they ran nothing).
    pub fn round_done(&mut self, pending: &Pending, round: u64, audit: &dyn AuditSink) {
        let finished: Vec<(u64, Expect)> = {
            let mut expected = pending.expected.lock().unwrap_or_else(|p| p.into_inner());
            let count = expected.iter().take_while(|(r, _)| *r <= round).count();
            expected.drain(..count).collect()
        };
        let sqlstate = self.sqlstate.take();
        for (_, expect) in finished {
            if let Expect::Query(completion, _) = expect {
                let event = completion.event(Some(self.rows), sqlstate.as_deref());
                self.record(audit, &event);
            }
        }
        self.rows = 0;
        self.ready = true;
    }

    /// The `seq` the output must wait for (0: none); `None` when a record
    /// was lost.
    pub fn wait_target(&self, pending: &Pending) -> Option<u64> {
        let session = pending.recorded.load(Ordering::Acquire);
        if self.lost || session == u64::MAX {
            return None;
        }
        Some(self.max_seq.max(session))
    }
}
