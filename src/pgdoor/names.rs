//! Prepared statement and portal names, as esq knows them — and as
//! PostgreSQL really has them. esq updates its maps as it forwards
//! `Parse`, `Bind` and `Close`, and journals each change with its place in
//! the round (the messages up to the next `Sync`). When a round ends in an
//! error, PostgreSQL ran the messages before the failing one and skipped
//! the rest; the relay reports how many completed, and [`Names::confirm`]
//! undoes every change PostgreSQL did not make. A message that names a
//! statement or portal changed in an earlier, unconfirmed round waits for
//! that confirmation ([`Names::unconfirmed_round`]): esq never binds or
//! executes on a guess about what PostgreSQL holds.

use std::collections::HashMap;

use crate::guard::TicketStatement;
use crate::tickets::TicketId;

/// What a prepared statement (or a portal bound to it) was decided under.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The ticket it was rewritten for; it must still be live to run it.
    pub ticket: Option<TicketId>,
    /// A ticket statement, applied when executed.
    pub ticket_statement: Option<TicketStatement>,
    /// The client's statement text's [`crate::sentinel::fingerprint`]:
    /// each Execute is one use of the ticket.
    pub fingerprint: u64,
    /// The audit record each execution writes when it completes.
    pub audit: Option<std::sync::Arc<crate::decide::Completion>>,
    /// Prepared statements each execution drops (`DEALLOCATE`, `DISCARD
    /// ALL` sent through the extended protocol).
    pub prepared_drops: Vec<crate::guard::PreparedDrop>,
    /// A private count: its rows go through the release step.
    pub private: Option<std::sync::Arc<crate::decide::private::PrivateQuery>>,
    /// A portal's parameters and result formats (private answers are keyed
    /// on them).
    pub bound: Option<crate::decide::private::Bound>,
    /// The bundle that decided it, and how: checked again at every Bind and
    /// Execute after a reload.
    pub decided: Option<std::sync::Arc<DecidedUnder>>,
    /// An empty statement (see [`super::empty`]): prepared upstream as
    /// empty text, answered with `EmptyQueryResponse`.
    pub empty: bool,
    /// The NOTICE that small groups are withheld, sent at each Execute.
    pub withheld: Option<bytes::Bytes>,
}

impl Prepared {
    /// A statement that reads no data (a ticket statement, an empty one):
    /// no ticket, no decision to check again, nothing to audit.
    pub fn reading_nothing() -> Prepared {
        Prepared {
            ticket: None,
            ticket_statement: None,
            fingerprint: 0,
            audit: None,
            prepared_drops: Vec::new(),
            private: None,
            bound: None,
            decided: None,
            empty: false,
            withheld: None,
        }
    }
}

/// What a statement was prepared as, under which bundle. After a reload the
/// statement runs only if the bundle now in force decides it the same way
/// (the same rewritten SQL); otherwise it must be prepared again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedUnder {
    /// The hash of the bundle in force when it was decided (read before the
    /// decision, so a reload during it errs towards deciding again).
    pub bundle: String,
    /// The tombstone generation then (a forget changes what is hidden).
    pub tombstones: u64,
    /// The client's statement text.
    pub sql: String,
    /// The SQL prepared upstream (the guard's rewrite).
    pub rewritten: String,
}

/// Messages that answer (Parse, Bind, Close, Describe, Execute) allowed
/// between two `Sync`s: esq journals each until PostgreSQL answers.
pub const MAX_ROUND_MESSAGES: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Statement,
    Portal,
}

/// One change not yet confirmed by PostgreSQL.
struct Change {
    round: u64,
    /// Its index among the round's messages that answer once (Parse,
    /// Bind, Close, Describe, Execute).
    index: u32,
    space: Space,
    name: String,
    /// The entry before the change (restored when PostgreSQL skipped it).
    before: Option<Prepared>,
}

#[derive(Default)]
pub struct Names {
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Prepared>,
    journal: Vec<Change>,
    /// The round of each name's unconfirmed change (its latest: a name
    /// changed by an earlier round waits for it before changing again).
    pending: HashMap<(Space, String), u64>,
    /// The round being written, and how many answering messages it has.
    round: u64,
    answering: u32,
}

impl Names {
    pub fn get(&self, space: Space, name: &str) -> Option<&Prepared> {
        self.map(space).get(name)
    }

    fn map(&self, space: Space) -> &HashMap<String, Prepared> {
        match space {
            Space::Statement => &self.statements,
            Space::Portal => &self.portals,
        }
    }

    fn map_mut(&mut self, space: Space) -> &mut HashMap<String, Prepared> {
        match space {
            Space::Statement => &mut self.statements,
            Space::Portal => &mut self.portals,
        }
    }

    /// Counts a forwarded message that answers once (Parse, Bind, Close,
    /// Describe, Execute) in `round`; returns its index, or `None` past
    /// [`MAX_ROUND_MESSAGES`].
    pub fn answering(&mut self, round: u64) -> Option<u32> {
        if round != self.round {
            self.round = round;
            self.answering = 0;
        }
        self.answering += 1;
        (self.answering <= MAX_ROUND_MESSAGES).then_some(self.answering - 1)
    }

    /// Records that the message at `index` of `round` sets `name` to
    /// `after` (`None`: removes it).
    pub fn set(
        &mut self,
        round: u64,
        index: u32,
        space: Space,
        name: &str,
        after: Option<Prepared>,
    ) {
        let before = match after {
            Some(after) => self.map_mut(space).insert(name.to_string(), after),
            None => self.map_mut(space).remove(name),
        };
        self.pending.insert((space, name.to_string()), round);
        self.journal.push(Change {
            round,
            index,
            space,
            name: name.to_string(),
            before,
        });
    }

    /// Whether any change still waits for PostgreSQL's answer.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets statements after a SQL `DEALLOCATE` or `DISCARD ALL`.
    /// Forgetting is always safe: a forgotten name is never bound.
    pub fn deallocate(&mut self, dropped: &crate::guard::PreparedDrop) {
        match dropped {
            crate::guard::PreparedDrop::One(name) => {
                self.statements.remove(name);
            }
            crate::guard::PreparedDrop::All => self.statements.clear(),
        }
    }

    /// The latest round before `current` that changed `name` and is not yet
    /// confirmed. Every journalled change is unconfirmed (confirming removes
    /// it): a round that has just ended still counts until [`Names::confirm`]
    /// has applied it.
    pub fn unconfirmed_round(&self, space: Space, name: &str, current: u64) -> Option<u64> {
        self.pending
            .get(&(space, name.to_string()))
            .copied()
            .filter(|round| *round < current)
    }

    /// Applies PostgreSQL's verdict on every round before `done`: for a
    /// round that erred at message `failed`, changes from that message on
    /// did not happen. A failed change forgets the name (PostgreSQL may have
    /// dropped it); a skipped one restores what was there.
    pub fn confirm(&mut self, done: u64, errored: &[(u64, u32)]) {
        let (finished, pending): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.journal)
            .into_iter()
            .partition(|c| c.round < done);
        self.journal = pending;
        if !finished.is_empty() {
            self.pending.retain(|_, round| *round >= done);
        }
        for change in finished.into_iter().rev() {
            let Some(&(_, failed)) = errored.iter().find(|(r, _)| *r == change.round) else {
                continue;
            };
            if change.index < failed {
                continue;
            }
            let restored = if change.index == failed {
                None
            } else {
                change.before
            };
            match restored {
                Some(before) => {
                    self.map_mut(change.space).insert(change.name, before);
                }
                None => {
                    self.map_mut(change.space).remove(&change.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Option<Prepared> {
        Some(Prepared::reading_nothing())
    }

    #[test]
    fn a_skipped_parse_restores_what_postgresql_still_holds() {
        let mut names = Names::default();
        let i = names.answering(0).unwrap_or_default();
        names.set(0, i, Space::Statement, "s", prepared());
        names.confirm(1, &[]);
        assert!(names.journal.is_empty());
        // Round 1: a failing message, then a Parse of "s" that is skipped.
        let _failing = names.answering(1);
        let i = names.answering(1).unwrap_or_default();
        names.set(1, i, Space::Statement, "s", None);
        assert_eq!(names.unconfirmed_round(Space::Statement, "s", 2), Some(1));
        assert_eq!(names.unconfirmed_round(Space::Statement, "s", 1), None);
        names.confirm(2, &[(1, 0)]);
        assert_eq!(names.get(Space::Statement, "s"), prepared().as_ref());
    }

    #[test]
    fn the_failing_change_forgets_and_earlier_ones_stand() {
        let mut names = Names::default();
        let a = names.answering(0).unwrap_or_default();
        names.set(0, a, Space::Statement, "a", prepared());
        let b = names.answering(0).unwrap_or_default();
        names.set(0, b, Space::Statement, "b", prepared());
        names.confirm(1, &[(0, 1)]);
        assert!(names.get(Space::Statement, "a").is_some());
        assert!(names.get(Space::Statement, "b").is_none());
    }
}
