//! The simple query protocol: one `Query` is one round, decided when it
//! arrives; only the guard's rewrite (or a stand-in) goes upstream. A
//! fast-path `FunctionCall` never runs: a stand-in carries its refusal.
//! An empty text (`;`, comments) is answered as PostgreSQL answers it.

use super::dispatch::{Step, Turn};
use super::error::DoorError;
use super::private::PrivateRun;
use super::relay::Substitution;
use super::wire::{put_cstr, put_message};
use crate::decide::private::Bound;
use crate::decide::Completion;
use std::sync::Arc;

pub async fn query(turn: &mut Turn<'_, '_>, sql: &str) -> Result<Step, DoorError> {
    if super::empty::is_empty(sql) {
        // PostgreSQL answers EmptyQueryResponse; empty text is forwarded
        // in its place (see [`super::empty`]).
        put_message(turn.out, b'Q', |b| put_cstr(b, ""));
        turn.state.end_round(turn.shared);
        return Ok(Step::Continue);
    }
    let round = turn.round();
    let mut forward = turn.view.decide_now(sql).await;
    let mut private = None;
    if let Some(query) = forward.private.clone() {
        // A simple query's rows come back in text, unbound.
        let completion = forward.completion.clone();
        match turn
            .view
            .private_run(&query, Bound::default(), completion.as_deref())
            .await
        {
            Ok(run) => private = Some(run),
            Err(error) => forward = turn.view.refuse(error),
        }
    }
    if let Some(completion) = forward.completion.clone() {
        expect_query(turn, round, completion, private);
    }
    turn.state
        .ticket_statement_sent(round, &forward.substitutions);
    for dropped in &forward.prepared_drops {
        turn.state.names.deallocate(dropped);
    }
    turn.substitute(forward.substitutions);
    if let Some(answer) = forward.withheld {
        turn.substitute(vec![Substitution::Before { answer }]);
    }
    put_message(turn.out, b'Q', |b| put_cstr(b, &forward.sql));
    turn.state.end_round(turn.shared);
    Ok(Step::Continue)
}

fn expect_query(
    turn: &Turn<'_, '_>,
    round: u64,
    completion: Arc<Completion>,
    private: Option<Arc<PrivateRun>>,
) {
    turn.shared
        .audit
        .expect(round, super::completion::Expect::Query(completion, private));
}

pub fn function_call(turn: &mut Turn<'_, '_>) -> Result<Step, DoorError> {
    let marker = turn.stand_in(DoorError::FastPath);
    put_message(turn.out, b'Q', |b| put_cstr(b, &marker));
    turn.state.end_round(turn.shared);
    Ok(Step::Continue)
}
