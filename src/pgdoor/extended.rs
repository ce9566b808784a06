//! The extended query protocol. `Parse` is decided when it arrives and the
//! decision is kept with the statement's name; `Bind` and `Execute` run
//! only what esq prepared, under a ticket that must still be live;
//! parameters stay parameters (passed through, never spliced into SQL).
//! A refused message is replaced by a stand-in so PostgreSQL fails the
//! batch exactly where the client expects (see [`super::rounds`]). An
//! empty statement (`;`, comments) is prepared as PostgreSQL prepares it.

use bytes::{BufMut, Bytes};

use super::answers::{Asked, SessionView};
use super::completion::Expect;
use super::dispatch::{Step, Turn};
use super::error::DoorError;
use super::message::Message;
use super::names::{DecidedUnder, Prepared, Space};
use super::private::PrivateRun;
use super::relay::Substitution;
use super::wire::{put_cstr, put_message};
use crate::decide::Timing;
use crate::guard::TicketStatement;
use std::sync::Arc;

pub async fn parse(
    turn: &mut Turn<'_, '_>,
    name: &str,
    sql: &str,
    types: &Bytes,
) -> Result<Step, DoorError> {
    let index = turn.answering()?;
    if !name.is_empty() && turn.state.names.get(Space::Statement, name).is_some() {
        // As PostgreSQL: a named statement is not replaced.
        let marker = turn.stand_in(DoorError::StatementExists(name.to_string()));
        put_parse(turn, name, &marker, types);
        return Ok(Step::Continue);
    }
    if let Some(refused) = super::parameter_types::refused(types) {
        let marker = turn.stand_in(DoorError::ParameterType(refused));
        put_parse(turn, name, &marker, &[0, 0]);
        return Ok(Step::Continue);
    }
    if super::empty::is_empty(sql) {
        // PostgreSQL prepares it and answers its Execute with
        // EmptyQueryResponse; empty text goes upstream in its place.
        put_parse(turn, name, "", types);
        let round = turn.round();
        let empty = Prepared {
            empty: true,
            ..Prepared::reading_nothing()
        };
        turn.state
            .names
            .set(round, index, Space::Statement, name, Some(empty));
        return Ok(Step::Continue);
    }
    // Read before the decision: a reload during it makes Bind decide again.
    let bundle = turn.view.app.bundle().hash.clone();
    let tombstones = turn.view.app.tombstones.generation();
    let prepared = match turn.view.ask(sql, Timing::Prepared).await {
        Asked::TicketStatement(TicketStatement::Show) => {
            let marker = turn.stand_in(DoorError::ShowTicketExtended);
            put_parse(turn, name, &marker, types);
            None
        }
        Asked::TicketStatement(statement) => {
            // Answered when executed; upstream prepares empty text.
            put_parse(turn, name, "", types);
            Some(Prepared {
                ticket_statement: Some(statement),
                ..Prepared::reading_nothing()
            })
        }
        Asked::Forward(forward) => {
            let ticket = turn.view.ticket.filter(|_| forward.under_ticket).cloned();
            let refused = forward
                .substitutions
                .iter()
                .any(|s| matches!(s, Substitution::Error { .. }));
            turn.substitute(forward.substitutions);
            put_parse(turn, name, &forward.sql, types);
            (!refused).then(|| Prepared {
                ticket,
                ticket_statement: None,
                fingerprint: crate::sentinel::fingerprint(sql),
                audit: forward.completion,
                prepared_drops: forward.prepared_drops,
                private: forward.private,
                bound: None,
                empty: false,
                withheld: forward.withheld,
                decided: Some(Arc::new(DecidedUnder {
                    bundle,
                    tombstones,
                    sql: sql.to_string(),
                    rewritten: forward.sql,
                })),
            })
        }
    };
    let round = turn.round();
    turn.state
        .names
        .set(round, index, Space::Statement, name, prepared);
    Ok(Step::Continue)
}

pub async fn bind(
    turn: &mut Turn<'_, '_>,
    portal: &str,
    statement: &str,
    rest: &Bytes,
) -> Result<Step, DoorError> {
    let index = turn.answering()?;
    let prepared = turn.state.names.get(Space::Statement, statement).cloned();
    let refusal = refusal(turn.view, prepared.as_ref(), Space::Statement, statement).await;
    let round = turn.round();
    match refusal {
        Some(error) => {
            // Bind to a statement that does not exist; its error answer is
            // replaced by the refusal.
            let marker = turn.stand_in(error);
            put_message(turn.out, b'B', |b| {
                put_cstr(b, portal);
                put_cstr(b, &marker);
                b.put_slice(rest);
            });
            turn.state
                .names
                .set(round, index, Space::Portal, portal, None);
        }
        None => {
            let mut prepared = prepared;
            if let Some(prepared) = prepared.as_mut().filter(|p| p.private.is_some()) {
                // A private answer is keyed on what it was bound with.
                prepared.bound = Some(super::private::bound(rest).map_err(|err| {
                    DoorError::from(super::error::Fatal::Protocol(err.to_string()))
                })?);
            }
            put_message(turn.out, b'B', |b| {
                put_cstr(b, portal);
                put_cstr(b, statement);
                b.put_slice(rest);
            });
            turn.state
                .names
                .set(round, index, Space::Portal, portal, prepared);
        }
    }
    Ok(Step::Continue)
}

pub async fn execute(
    turn: &mut Turn<'_, '_>,
    portal: &str,
    rest: &Bytes,
) -> Result<Step, DoorError> {
    turn.answering()?;
    let round = turn.round();
    // The ticket is checked again at every Execute: a portal must not keep
    // streaming after revocation.
    let prepared = turn.state.names.get(Space::Portal, portal).cloned();
    let mut refusal = refusal(turn.view, prepared.as_ref(), Space::Portal, portal).await;
    let mut private = None;
    if let (None, Some(prepared)) = (&refusal, &prepared) {
        match private_run(turn, prepared, rest).await {
            Ok(run) => private = run,
            Err(error) => refusal = Some(error),
        }
    }
    // Every Execute has an entry, so the relay's answers and the entries
    // stay aligned; only an allowed statement's is recorded.
    let completion = match &refusal {
        None => prepared.as_ref().and_then(|p| p.audit.clone()),
        Some(_) => None,
    };
    turn.shared
        .audit
        .expect(round, Expect::Execute(completion, private));
    let execute_as = |turn: &mut Turn<'_, '_>, name: &str| {
        put_message(turn.out, b'E', |b| {
            put_cstr(b, name);
            b.put_slice(rest);
        })
    };
    if let Some(error) = refusal {
        let marker = turn.stand_in(error);
        execute_as(turn, &marker);
        return Ok(Step::Continue);
    }
    // Forgetting is safe (a forgotten name is never bound), so a drop is
    // applied when its execution is sent.
    for dropped in prepared.iter().flat_map(|p| &p.prepared_drops) {
        turn.state.names.deallocate(dropped);
    }
    if let Some((ticket, fingerprint)) = prepared
        .as_ref()
        .and_then(|p| p.ticket.as_ref().map(|t| (t.hash(), p.fingerprint)))
    {
        turn.view
            .app
            .sentinel
            .used(&ticket, &turn.view.principal.name, fingerprint);
    }
    if let Some(answer) = prepared.as_ref().and_then(|p| p.withheld.clone()) {
        turn.shared.push(round, Substitution::Before { answer });
    }
    if prepared.as_ref().is_some_and(|p| p.empty) {
        // Its EmptyQueryResponse keeps its place among those a ticket
        // statement of the same round substitutes.
        turn.shared.push(round, empty_answer());
        execute_as(turn, portal);
        return Ok(Step::Continue);
    }
    let Some(statement) = prepared.and_then(|p| p.ticket_statement) else {
        execute_as(turn, portal);
        return Ok(Step::Continue);
    };
    // A ticket statement: upstream runs empty text, whose EmptyQueryResponse
    // is replaced by the statement's answer. A refused one executes a
    // stand-in portal instead, so PostgreSQL fails the round too (and skips
    // the rest, as the client expects).
    let forward = turn.view.ticket_statement(statement, false).await;
    turn.state
        .ticket_statement_sent(round, &forward.substitutions);
    let mut target = portal.to_string();
    for substitution in forward.substitutions {
        if let Substitution::Error { marker, .. } = &substitution {
            target = marker.clone();
        }
        turn.shared.push(round, substitution);
    }
    execute_as(turn, &target);
    Ok(Step::Continue)
}

pub fn describe_or_close(turn: &mut Turn<'_, '_>, message: &Message) -> Result<Step, DoorError> {
    let index = turn.answering()?;
    if let Message::Close { space, name } = message {
        let round = turn.round();
        turn.state.names.set(round, index, *space, name, None);
    }
    pass(turn, message);
    Ok(Step::Continue)
}

pub fn sync(turn: &mut Turn<'_, '_>) -> Result<Step, DoorError> {
    pass(turn, &Message::Sync);
    turn.state.end_round(turn.shared);
    Ok(Step::Continue)
}

/// Forwards a message that carries no SQL, as it came.
pub fn pass(turn: &mut Turn<'_, '_>, message: &Message) {
    match message {
        Message::Describe { space, name } | Message::Close { space, name } => {
            let tag = if matches!(message, Message::Describe { .. }) {
                b'D'
            } else {
                b'C'
            };
            put_message(turn.out, tag, |b| {
                b.put_u8(match space {
                    Space::Statement => b'S',
                    Space::Portal => b'P',
                });
                put_cstr(b, name);
            });
        }
        Message::Sync => put_message(turn.out, b'S', |_| {}),
        Message::Flush => put_message(turn.out, b'H', |_| {}),
        _ => {}
    }
}

/// The run of a private portal, checked against its budget; a row limit is
/// refused (a private answer is released whole).
async fn private_run(
    turn: &Turn<'_, '_>,
    prepared: &Prepared,
    rest: &Bytes,
) -> Result<Option<Arc<PrivateRun>>, DoorError> {
    let Some(query) = &prepared.private else {
        return Ok(None);
    };
    if super::private::row_limit(rest) != 0 {
        return Err(DoorError::PrivateRowLimit);
    }
    let bound = prepared.bound.clone().unwrap_or_default();
    turn.view
        .private_run(query, bound, prepared.audit.as_deref())
        .await
        .map(Some)
}

/// Why a statement or portal must not run: esq does not know it (never
/// prepared, or refused), the ticket it was prepared under is no longer
/// live, or a reload since changed how it is decided.
async fn refusal(
    view: &SessionView<'_>,
    prepared: Option<&Prepared>,
    space: Space,
    name: &str,
) -> Option<DoorError> {
    let Some(prepared) = prepared else {
        return Some(match space {
            Space::Statement => DoorError::NoSuchStatement(name.to_string()),
            Space::Portal => DoorError::NoSuchPortal(name.to_string()),
        });
    };
    if let Some(ticket) = prepared.ticket.as_ref() {
        let check = SessionView {
            ticket: Some(ticket),
            ..*view
        };
        if let Err(error) = check.usable().await {
            return Some(error);
        }
    }
    let decided = prepared.decided.as_ref()?;
    let bundle = view.app.bundle();
    if bundle.hash == decided.bundle && view.app.tombstones.generation() == decided.tombstones {
        return None;
    }
    // Reloaded (or someone forgotten) since it was prepared: it runs only
    // as the bundle and tombstones in force would decide it now.
    let scope = match prepared.ticket.as_ref() {
        Some(ticket) => match crate::decide::check_ticket(view.checks, ticket).await {
            Ok(scope) => Some(scope),
            Err(refusal) => return Some(DoorError::Refused(refusal)),
        },
        None => None,
    };
    match bundle.guard.decide(scope.as_ref(), &decided.sql) {
        crate::guard::Decision::Allow(allowed) if allowed.sql == decided.rewritten => None,
        _ => Some(DoorError::DecidedBeforeReload),
    }
}

/// PostgreSQL's own answer to an empty statement, relayed in its turn.
fn empty_answer() -> Substitution {
    let mut answer = bytes::BytesMut::new();
    put_message(&mut answer, b'I', |_| {});
    Substitution::Empty {
        answer: answer.freeze(),
        ticket: None,
    }
}

fn put_parse(turn: &mut Turn<'_, '_>, name: &str, sql: &str, types: &[u8]) {
    put_message(turn.out, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_slice(types);
    });
}
