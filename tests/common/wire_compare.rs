//! The runner of the message-level comparison with PostgreSQL
//! (`tests/wire_differential.rs`, `tests/wire_deliberate.rs`): scripts of
//! frontend messages, played once straight against PostgreSQL (as esq's
//! own service role, on the same database) and once through esq, the
//! answers traced line by line ([`super::wire_session::trace`]) and
//! compared — equal, or, for a deliberate difference, each side exactly as
//! listed.

use super::esq::Esq;
use super::upstream::SERVICE_PASSWORD;
use super::wire_session::{query, run, sync, trace, Session, Until};
use super::Doors;

/// What the test expects of a script.
pub enum Expect {
    /// esq answers exactly as PostgreSQL does.
    Same,
    /// esq differs on purpose: why, its answer, and PostgreSQL's.
    Deliberate {
        why: &'static str,
        esq: Vec<&'static str>,
        postgres: Vec<&'static str>,
    },
}

/// Frontend messages sent in one write, then read up to `Until`.
pub type Step = (Vec<Vec<u8>>, Until);

pub struct Script {
    pub name: &'static str,
    pub steps: Vec<Step>,
    pub expect: Expect,
}

pub fn same(name: &'static str, steps: Vec<Step>) -> Script {
    Script {
        name,
        steps,
        expect: Expect::Same,
    }
}

pub fn deliberate(
    name: &'static str,
    why: &'static str,
    steps: Vec<Step>,
    esq: &[&'static str],
    postgres: &[&'static str],
) -> Script {
    Script {
        name,
        steps,
        expect: Expect::Deliberate {
            why,
            esq: esq.to_vec(),
            postgres: postgres.to_vec(),
        },
    }
}

/// One simple Query, read to its ReadyForQuery.
pub fn q(sql: &str) -> Step {
    (vec![query(sql)], Until::Ready(1))
}

/// Extended-protocol messages, the batch ended by one Sync.
pub fn batch(messages: Vec<Vec<u8>>) -> Step {
    let mut messages = messages;
    messages.push(sync());
    (messages, Until::Ready(1))
}

pub fn runs(sqls: &[&str]) -> Vec<Vec<u8>> {
    sqls.iter().flat_map(|sql| run(sql)).collect()
}

async fn play(mut session: Session, steps: &[Step]) -> Vec<String> {
    let mut lines = Vec::new();
    for (messages, until) in steps {
        session.send(messages).await;
        let got = trace(&session.receive(*until).await);
        let closed = got.last().is_some_and(|l| l == "Closed" || l == "NoAnswer");
        lines.extend(got);
        if closed {
            break;
        }
    }
    lines
}

pub struct Servers {
    pub esq: Esq,
    /// A row-level ticket (the clinician's: state, county, burial_date).
    pub ticket: String,
}

impl Servers {
    async fn postgres(&self) -> Session {
        let upstream = self.esq.upstream();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.esq.pg().port()));
        Session::connect(addr, &upstream.role, &upstream.database, SERVICE_PASSWORD).await
    }

    async fn through_esq(&self) -> Session {
        Session::connect(
            self.esq.pg_addr(),
            "ticket",
            self.esq.database(),
            &self.ticket,
        )
        .await
    }
}

pub async fn servers() -> Servers {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq
        .ticket("clinician", super::tickets::clinician_request())
        .await;
    Servers { esq, ticket }
}

/// Plays every script on both sides; returns a report of each mismatch.
pub async fn compare(servers: &Servers, scripts: Vec<Script>) -> Vec<String> {
    let mut failures = Vec::new();
    for script in scripts {
        let postgres = play(servers.postgres().await, &script.steps).await;
        let esq = play(servers.through_esq().await, &script.steps).await;
        if std::env::var_os("ESQ_TEST_SHOW_TRACES").is_some() {
            println!(
                "{}\n  postgres: {postgres:?}\n  esq:      {esq:?}",
                script.name
            );
        }
        if [&postgres, &esq]
            .iter()
            .any(|lines| lines.iter().any(|l| l == "NoAnswer"))
        {
            failures.push(format!(
                "{}: an answer never came\n  postgres: {postgres:?}\n  esq:      {esq:?}",
                script.name
            ));
            continue;
        }
        match &script.expect {
            Expect::Same => {
                if esq != postgres {
                    let (postgres, esq) = around_difference(&postgres, &esq);
                    failures.push(format!(
                        "{}:\n  postgres: {postgres:?}\n  esq:      {esq:?}",
                        script.name
                    ));
                }
            }
            Expect::Deliberate {
                why,
                esq: expected_esq,
                postgres: expected_postgres,
            } => {
                if !fits(&esq, expected_esq)
                    || !fits(&postgres, expected_postgres)
                    || esq == postgres
                {
                    failures.push(format!(
                        "{} (deliberate: {why}):\n  postgres: {postgres:?}\n  expected: {expected_postgres:?}\n  esq:      {esq:?}\n  expected: {expected_esq:?}",
                        script.name
                    ));
                }
            }
        }
    }
    failures
}

/// The two traces from a little before their first difference, at most
/// a few lines each (a long answer's rows would drown the report).
fn around_difference<'a>(a: &'a [String], b: &'a [String]) -> (&'a [String], &'a [String]) {
    let first = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let from = first.saturating_sub(3);
    let window = |t: &'a [String]| &t[from.min(t.len())..(first + 5).min(t.len())];
    (window(a), window(b))
}

/// Whether `lines` are `expected`, where an expected line ending in `*`
/// stands for any line that starts with the rest (a time, a version).
fn fits(lines: &[String], expected: &[&str]) -> bool {
    lines.len() == expected.len()
        && lines
            .iter()
            .zip(expected)
            .all(|(line, want)| match want.strip_suffix('*') {
                Some(prefix) => line.starts_with(prefix),
                None => line == want,
            })
}

pub fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} script(s) answered differently:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
