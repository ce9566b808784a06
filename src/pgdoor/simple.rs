//! The simple query protocol: one `Query` is one round, decided when it
//! arrives; only the guard's rewrite (or a stand-in) goes upstream. A
//! fast-path `FunctionCall` never runs: a stand-in carries its refusal.

use super::dispatch::{Step, Turn};
use super::error::DoorError;
use super::wire::{put_cstr, put_message};
use crate::decide::Completion;

pub async fn query(turn: &mut Turn<'_, '_>, sql: &str) -> Result<Step, DoorError> {
    let round = turn.round();
    let forward = turn.view.decide_now(sql).await;
    if let Some(completion) = forward.completion.clone() {
        expect_query(turn, round, completion);
    }
    turn.state
        .ticket_statement_sent(round, &forward.substitutions);
    for dropped in &forward.prepared_drops {
        turn.state.names.deallocate(dropped);
    }
    turn.substitute(forward.substitutions);
    put_message(turn.out, b'Q', |b| put_cstr(b, &forward.sql));
    turn.state.end_round(turn.shared);
    Ok(Step::Continue)
}

fn expect_query(turn: &Turn<'_, '_>, round: u64, completion: std::sync::Arc<Completion>) {
    turn.shared
        .audit
        .expect(round, super::completion::Expect::Query(completion));
}

pub fn function_call(turn: &mut Turn<'_, '_>) -> Result<Step, DoorError> {
    let marker = turn.stand_in(DoorError::FastPath);
    put_message(turn.out, b'Q', |b| put_cstr(b, &marker));
    turn.state.end_round(turn.shared);
    Ok(Step::Continue)
}
