//! The guard: protocol-agnostic and pure. `(scope, sql) -> Decision`. Both
//! doors call it; it knows no sockets. Each stage is small and named, and
//! any stage can end in a denial — none can end in "unsure, so allow":
//!
//! 1. `parse` — sqlparser (PostgreSQL dialect) with a recursion limit;
//! 2. `confirm` — libpg_query reads the same text; statements, kinds,
//!    tables and functions must agree;
//! 3. `classify` — analysed query, harmless session statement, or denied;
//! 4. to 6. `resolve`, `expr`, `aggregate`, `rewrite` — bind every
//!    name, check it against the scope, substitute governed tables, enforce
//!    aggregation and `k`; under a private ticket, `private` bounds each
//!    person's contribution and plans the noisy release;
//! 7. render and re-confirm — the printed AST must parse again in both
//!    parsers; only this text is ever forwarded;
//! 8. decide — cached per (scope, statement text).
//!
//! ```
//! # use esq::guard::{Guard, Decision};
//! # fn demo(guard: &Guard, scope: &esq::tickets::Scope) {
//! match guard.decide(Some(scope), "SELECT state, count(*) FROM burial_2024 GROUP BY state") {
//!     Decision::Allow(allowed) => println!("forward: {}", allowed.sql),
//!     Decision::Deny(denial) => println!("{}: {}", denial.code, denial.reason),
//! }
//! # }
//! ```

mod aggregate;
mod aggregate_shape;
mod cache;
mod classify;
mod confirm;
pub mod denial;
mod expr;
mod from_items;
mod functions;
mod hide_roles;
mod literals;
mod metadata;
mod metadata_lists;
mod metadata_pg;
mod metadata_star;
mod metadata_statistics;
mod names;
mod parse;
mod postcheck;
mod private;
mod projection;
mod resolve;
mod rewrite;
pub mod structured;
pub mod ticket_statement;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Serialize;
use sqlparser::ast::Statement;

use crate::catalog::{Catalog, Dataset, TableName};
use crate::lifecycle::tombstones::{Tombstones, Unknown};
use crate::privacy::PrivatePlan;
use crate::sensitivity::Sensitivity;
use crate::tickets::Scope;

pub use classify::{is_settable, is_settable_to, Kind, PreparedDrop};
pub use denial::{sqlstate, Denial};
pub use ticket_statement::TicketStatement;

/// What the guard decided about one statement string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Decision {
    Allow(Arc<Allowed>),
    Deny(Arc<Denial>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// The rendered, rewritten SQL: the only text ever forwarded.
    pub sql: String,
    /// `sql` as the audit log keeps it, when it differs: the key lists of
    /// forgotten subjects replaced by their counts (see [`Allowed::recorded`]).
    #[serde(skip)]
    pub recorded: Option<String>,
    /// Select-list items removed because they read forbidden fields.
    pub dropped: Vec<String>,
    /// The answer's classification (see [`Guard`]).
    pub classification: Sensitivity,
    pub scope_id: Option<String>,
    pub kinds: Vec<Kind>,
    /// Prepared statements the session statements drop (`DEALLOCATE`,
    /// `DISCARD ALL`), for a door that keeps track of them.
    pub prepared_drops: Vec<PreparedDrop>,
    /// Set for a private count (a ticket with `privacy`): the doors must
    /// not send the database's rows, but pass them through
    /// [`crate::privacy::Releaser::release`] with this plan.
    pub private: Option<PrivatePlan>,
    /// `Some(k)` when the answer's groups pass small-group suppression
    /// (`HAVING count(*) >= k`) or the private release threshold (never
    /// below `k`): the doors say that groups below it are withheld — on
    /// every such answer, whether or not one was.
    #[serde(skip)]
    pub withholds_groups_below: Option<u32>,
}

impl Allowed {
    /// The rewritten SQL for the audit log and logs: never a forgotten
    /// subject's key.
    pub fn recorded(&self) -> &str {
        self.recorded.as_deref().unwrap_or(&self.sql)
    }

    /// What both doors say on an answer whose small groups are withheld
    /// (see [`Allowed::withholds_groups_below`]): the same words whatever
    /// the data holds, never a number of groups.
    pub fn withheld_notice(&self) -> Option<String> {
        let k = self.withholds_groups_below?;
        Some(match self.private {
            Some(_) => format!(
                "groups whose noisy count is below the release threshold (never below {k}) are withheld from this answer; esq does not say whether any were"
            ),
            None => format!(
                "groups of fewer than {k} are withheld from this answer; esq does not say whether any were"
            ),
        })
    }
}

/// The guard over one catalog. Cheap to share (`Arc`).
pub struct Guard {
    catalog: Arc<Catalog>,
    cache: cache::DecisionCache,
    derived: rewrite::DerivedTableCache,
    /// Whether callers pass private answers through the release step
    /// ([`Guard::serving_private_answers`]). Until they do, a private
    /// ticket's counts are refused: sending the database's rows would
    /// release exact counts without even `k`.
    private_release: bool,
    /// Forgotten subjects, hidden from every answer (shared by bundles).
    tombstones: Arc<Tombstones>,
}

/// Everything one decision reads: the scope, its dataset, the row filters.
pub(crate) struct GuardContext<'a> {
    pub scope: &'a Scope,
    pub dataset: &'a Dataset,
    /// Rows before this date (by the dataset's retention field) are hidden.
    pub retention_cutoff: Option<NaiveDate>,
    /// A SQL condition hiding right-to-delete tombstones (`None`: no one
    /// of this dataset's subjects is forgotten).
    pub tombstone_filter: Option<&'a str>,
    /// Derived tables already built for a scope.
    pub derived: &'a rewrite::DerivedTableCache,
}

/// Cached decisions per (scope, statement text).
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

impl Guard {
    pub fn new(catalog: Arc<Catalog>) -> Guard {
        Guard::with_cache_size(catalog, DEFAULT_CACHE_ENTRIES)
    }

    pub fn with_cache_size(catalog: Arc<Catalog>, entries: usize) -> Guard {
        Guard {
            catalog,
            cache: cache::DecisionCache::new(entries),
            derived: rewrite::DerivedTableCache::default(),
            private_release: false,
            tombstones: Arc::new(Tombstones::none()),
        }
    }

    /// Hides the subjects `tombstones` holds from every answer; decisions
    /// are remade when they change ([`Guard::tombstone_generation`]).
    pub fn with_tombstones(mut self, tombstones: Arc<Tombstones>) -> Guard {
        self.tombstones = tombstones;
        self
    }

    /// Moves whenever the tombstones change: a decision made under another
    /// generation may not hide everyone it must.
    pub fn tombstone_generation(&self) -> u64 {
        self.tombstones.generation()
    }

    /// Declares that every caller runs [`Allowed::private`] answers through
    /// [`crate::privacy::Releaser::release`] before sending a row; only
    /// then are private counts allowed (otherwise they are refused, 0A000).
    pub fn serving_private_answers(mut self) -> Guard {
        self.private_release = true;
        self
    }

    /// Decides one statement string (one or more statements) for a session
    /// holding `scope` (`None`: no ticket). Cached per (scope id, text).
    pub fn decide(&self, scope: Option<&Scope>, sql: &str) -> Decision {
        let scope_id = scope.map(|s| s.id.as_str()).unwrap_or("");
        let generation = self.tombstones.generation();
        if let Some(hit) = self.cache.get(scope_id, sql, generation) {
            return hit;
        }
        let decision = match self.decide_uncached(scope, sql) {
            Ok(allowed) => Decision::Allow(Arc::new(allowed)),
            Err(mut denial) => {
                // Name the policies behind the ticket the statement broke
                // (never for one of esq's own rules: see `denial`).
                if denial.policy_id.is_none() && denial.cites_scope() {
                    denial.policy_id = scope
                        .filter(|s| !s.policy_ids.is_empty())
                        .map(|s| s.policy_ids.join(","));
                }
                Decision::Deny(Arc::new(denial))
            }
        };
        self.cache.put(scope_id, sql, generation, decision.clone());
        decision
    }

    fn decide_uncached(&self, scope: Option<&Scope>, sql: &str) -> Result<Allowed, Denial> {
        let mut statements = parse::parse(sql)?;
        let statements_count = statements.len();
        let pg = confirm::read(sql)?;
        let kinds: Vec<Kind> = statements
            .iter()
            .map(classify::classify)
            .collect::<Result<_, _>>()?;
        literals::settle(sql, &mut statements)?;
        classify::keep_read_only(&mut statements);
        if kinds.contains(&Kind::Query) && pg.metadata_only() {
            return metadata_answer(sql, &mut statements, &pg, kinds, scope)
                .map_err(Denial::by_esq_rule);
        }
        let mut tables = BTreeSet::new();
        let mut dropped = Vec::new();
        let mut classification = Sensitivity::Public;
        let mut private = None;
        let mut hidings = Vec::new();
        let mut withholds_groups_below = None;
        for (statement, kind) in statements.iter_mut().zip(&kinds) {
            if *kind == Kind::Session {
                continue;
            }
            let Statement::Query(query) = statement else {
                return Err(Denial::syntax("expected a query"));
            };
            let scope = scope.ok_or_else(no_ticket)?;
            let dataset = self.dataset_of(scope)?;
            let hiding = self
                .tombstones
                .hiding(&self.catalog, dataset)
                .map_err(tombstones_unknown)?;
            let ctx = GuardContext {
                scope,
                dataset,
                retention_cutoff: retention_cutoff(scope, dataset),
                tombstone_filter: hiding.as_ref().map(|h| h.condition.as_str()),
                derived: &self.derived,
            };
            let mut resolver = resolve::Resolver::new(&ctx);
            let mut plan = None;
            if scope.aggregate.is_some() {
                plan = aggregate::aggregate_query(&mut resolver, query)?;
                withholds_groups_below = Some(scope.min_group_size);
            } else {
                resolver.query(query)?;
            }
            let substitutions = resolver.substitutions;
            let rewrite_functions = match plan {
                Some(_) => private::REWRITE_FUNCTIONS,
                None => &[],
            };
            postcheck::check(statement, &dataset.table, substitutions, rewrite_functions)?;
            if plan.is_some() {
                if !self.private_release {
                    return Err(private_not_served());
                }
                // Its answer replaces the statement string's one result: a
                // private query goes alone (no SET, BEGIN or second query).
                if statements_count > 1 {
                    return Err(Denial::forbidden(
                        "a private query goes alone in its statement string",
                        "its released answer replaces the string's one result (no SET, BEGIN or second query beside it)",
                        "send the private query alone",
                    ));
                }
                private = plan;
            }
            tables.extend(resolver.relations.iter().cloned());
            dropped.extend(resolver.dropped.iter().cloned());
            classification = classification.max(classify_answer(&ctx, &resolver.fields_read));
            hidings.extend(hiding);
        }
        confirm::agree(&pg, &kinds, &tables)?;
        let rendered = render(&mut statements)?;
        let recorded = (!hidings.is_empty()).then(|| {
            hidings
                .iter()
                .fold(rendered.clone(), |sql, hiding| hiding.redact(&sql))
        });
        Ok(Allowed {
            sql: rendered,
            recorded,
            dropped,
            classification,
            scope_id: scope.map(|s| s.id.clone()),
            kinds,
            prepared_drops: statements
                .iter()
                .filter_map(classify::prepared_drop)
                .collect(),
            private,
            withholds_groups_below,
        })
    }

    fn dataset_of<'s>(&'s self, scope: &Scope) -> Result<&'s Dataset, Denial> {
        self.catalog
            .dataset(&scope.dataset)
            .map(|d| d.as_ref())
            .ok_or_else(|| {
                Denial::forbidden(
                    format!(
                        "the ticket's dataset {:?} is no longer in the catalog",
                        scope.dataset
                    ),
                    "the catalog changed after the ticket was issued",
                    "request a new ticket",
                )
            })
    }
}

/// Runs `f`, first moving to a fresh heap-allocated stack segment when less
/// than a red zone is left: the walkers recurse as deep as the statement
/// nests, and a proxy thread's stack is small. One statement (at most 64 KiB)
/// then costs memory, never a crashed process.
pub(crate) fn grow_stack<R>(f: impl FnOnce() -> R) -> R {
    const RED_ZONE: usize = 128 * 1024;
    const SEGMENT: usize = 2 * 1024 * 1024;
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// Runs a walk that recurses as deep as the tree without growing the
/// stack itself (sqlparser's derived `Visitor` and `Clone`): on a fresh
/// 32 MiB segment when less than 1 MiB is left, in place otherwise.
pub(crate) fn deep_walk<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(1024 * 1024, 32 * 1024 * 1024, f)
}

/// A copy of an AST node (derived `Clone` recurses as deep as the tree).
pub(crate) fn grow_copy<T: Clone>(node: &T) -> T {
    deep_walk(|| node.clone())
}

/// Catalog-only (or table-less) statements: no dataset values are read, so
/// PostgreSQL's reading of the original and of the rendered text decide.
fn metadata_answer(
    sql: &str,
    statements: &mut [Statement],
    pg: &confirm::PgReading,
    kinds: Vec<Kind>,
    scope: Option<&Scope>,
) -> Result<Allowed, Denial> {
    confirm::agree_kinds(pg, &kinds)?;
    metadata_statistics::hide_statistics(statements)?;
    // sqlparser's Visitor recurses without growing the stack: give it room.
    deep_walk(|| metadata::check_statements(statements))?;
    metadata::check(sql)?;
    hide_roles::hide_roles(statements)?;
    let rendered = render(statements)?;
    metadata::check(&rendered)?;
    metadata_pg::check(&rendered)?;
    Ok(Allowed {
        sql: rendered,
        recorded: None,
        dropped: Vec::new(),
        classification: Sensitivity::Public,
        scope_id: scope.map(|s| s.id.clone()),
        kinds,
        prepared_drops: Vec::new(),
        private: None,
        withholds_groups_below: None,
    })
}

/// Stage 7: print the AST and require both parsers to read the print.
fn render(statements: &mut [Statement]) -> Result<String, Denial> {
    literals::spell_unambiguously(statements)?;
    let sql = statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let reparsed = parse::parse_rewrite(&sql)
        .map_err(|_| Denial::syntax("esq's rewrite did not parse again"))?;
    if reparsed.len() != statements.len() {
        return Err(Denial::syntax(
            "esq's rewrite changed the number of statements",
        ));
    }
    // The print reads back as the tree that was analysed (a quote or a
    // backslash in a value or a name must not end it early).
    literals::reads_back(&sql, &reparsed)?;
    // PostgreSQL's grammar, in C, without building the tree for Rust.
    let pg_statements = pg_query::split_with_parser(&sql)
        .map_err(|_| Denial::syntax("PostgreSQL's parser rejects esq's rewrite"))?;
    if pg_statements.len() != statements.len() {
        return Err(Denial::syntax(
            "PostgreSQL reads esq's rewrite as a different number of statements",
        ));
    }
    Ok(sql)
}

/// The later of the policy's cutoff and the catalog's retention window,
/// counted from the ticket's issue date (tickets live at most hours), so a
/// decision depends only on its inputs.
fn retention_cutoff(scope: &Scope, dataset: &Dataset) -> Option<NaiveDate> {
    let from_catalog = dataset.retention_years.and_then(|years| {
        crate::lifecycle::purge::retention_cutoff(years, scope.issued_at.date_naive())
    });
    scope.retention_cutoff.max(from_catalog)
}

/// Row-level answers are as sensitive as the most sensitive field read;
/// aggregate answers with `k` as their group keys (counts reveal no value).
fn classify_answer(ctx: &GuardContext<'_>, fields_read: &BTreeSet<String>) -> Sensitivity {
    fields_read
        .iter()
        .filter_map(|name| ctx.dataset.field(name))
        .filter(|f| ctx.scope.aggregate.is_none() || !f.pii)
        .map(|f| ctx.dataset.field_sensitivity(f))
        .max()
        .unwrap_or(Sensitivity::Public)
}

/// Whom to hide is not known: nothing of the dataset is answered.
fn tombstones_unknown(unknown: Unknown) -> Denial {
    let detail = match unknown {
        Unknown::NotRead => "esq has not yet read its right-to-delete tombstones from the database, so it cannot hide forgotten subjects".to_string(),
        Unknown::Unreadable(_) => "some right-to-delete tombstones cannot be read with esq's key, so it cannot hide every forgotten subject".to_string(),
    };
    Denial {
        code: crate::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        reason: "this dataset cannot be answered now".into(),
        detail,
        hint: "try again shortly; if it persists, tell esq's operator".into(),
        policy_id: None,
        esq_rule: true,
    }
}

fn private_not_served() -> Denial {
    Denial {
        code: denial::sqlstate::UNSUPPORTED,
        reason: "private (differentially private) answers are not served here yet".into(),
        detail: "your ticket's scope carries privacy: its counts must pass through esq's noisy release step, which this build's doors do not run yet, so esq refuses rather than send exact counts".into(),
        hint: "ask for a ticket without privacy if a policy allows it, or use a build that serves private answers".into(),
        policy_id: None,
        esq_rule: false,
    }
}

fn no_ticket() -> Denial {
    Denial::forbidden(
        "no ticket: queries need an access ticket",
        "this session has not presented a ticket",
        // Only what works against every ticket store: a CLI-issued ticket
        // lands in a store the server may not share (the in-memory one).
        "get one with POST /api/esq/ticket on the HTTP door, then SET esq.ticket = 'T-…'",
    )
}

impl GuardContext<'_> {
    pub fn allows(&self, field: &str) -> bool {
        self.scope.allows_field(field)
    }

    pub fn is_pii(&self, field: &str) -> bool {
        self.dataset.field(field).is_none_or(|f| f.pii)
    }

    pub fn forbidden_field(&self, field: &str, clause: &str) -> Denial {
        let known = self.dataset.field(field).is_some();
        Denial::forbidden(
            format!("field {field:?} is not allowed by your ticket"),
            format!(
                "{} ({} in {}); ticket {} allows: {}",
                if known { "used in" } else { "unknown field" },
                field,
                clause,
                self.scope.id,
                self.scope.fields.join(", ")
            ),
            format!("request a ticket that includes field {field}, or remove it from the {clause}"),
        )
        .with_policy(Some(self.scope.policy_ids.join(",")).filter(|p| !p.is_empty()))
    }

    pub fn foreign_table(&self, table: &TableName) -> Denial {
        Denial::forbidden(
            format!("table {table} is outside your ticket's dataset"),
            format!(
                "ticket {} covers {} only",
                self.scope.id, self.dataset.table
            ),
            format!(
                "query {} or request a ticket for the other dataset",
                self.dataset.table
            ),
        )
    }

    pub fn unknown_column(&self, relation: Option<&str>, name: &str) -> Denial {
        let full = match relation {
            Some(r) => format!("{r}.{name}"),
            None => name.to_string(),
        };
        Denial::forbidden(
            format!("column {full:?} does not exist for your ticket"),
            "names must resolve to a catalog field, a CTE or subquery column (columns not in the catalog are forbidden)",
            format!("allowed fields: {}", self.scope.fields.join(", ")),
        )
    }
}
