//! Access controls: AC-3 (the guard, the catalog and the policies and
//! their tests), AC-6 (the service role's privileges as the database
//! reports them) and IA-2 (who can be identified).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{list, Checks, Facts, Finding};
use crate::app::App;
use crate::compliance::observe::{Observations, UpstreamFacts};

pub(super) fn enforcement(app: &App, observed: &Observations) -> Finding {
    let bundle = app.bundle();
    let tests = bundle.policies.run_tests();
    let failed: Vec<String> = tests.failed().map(|t| t.name.clone()).collect();
    let ids: Vec<String> = bundle.catalog.datasets().map(|d| d.id.clone()).collect();
    let packages = bundle.policies.packages();
    let facts = Facts::from([
        ("catalog.datasets", json!(bundle.catalog.len())),
        ("policy.packages", json!(packages)),
        ("policy.tests", json!(tests.outcomes.len())),
        ("policy.tests_failed", json!(failed)),
        (
            "guard",
            json!("default deny: unknown tables, columns outside the catalog, unparsable or unmodelled statements are refused"),
        ),
    ]);
    let mut facts = facts;
    // Access granted beyond the policies, by a data steward (a fact: the
    // SSP's `exceptions` lists them).
    if let Ok(lifecycle) = &observed.lifecycle {
        let ids: Vec<&str> = lifecycle
            .open_exceptions
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        facts.insert("exceptions.open", json!(ids));
    }
    let mut checks = Checks::default();
    checks.must(
        "the catalog describes at least one dataset",
        !ids.is_empty(),
        if ids.is_empty() {
            "no dataset is loaded: nothing can be granted, so access is not governed by any rule"
                .to_string()
        } else {
            format!("{} dataset(s): {}", ids.len(), ids.join(", "))
        },
    );
    checks.must(
        "Rego policies are loaded",
        !packages.is_empty(),
        if packages.is_empty() {
            "no policy is loaded: no ticket can be granted by a rule".to_string()
        } else {
            format!("{} policy package(s)", packages.len())
        },
    );
    checks.should(
        "the policies have tests",
        !tests.outcomes.is_empty(),
        if tests.outcomes.is_empty() {
            "the policies have no tests (*_test.rego)".to_string()
        } else {
            format!("{} policy test(s)", tests.outcomes.len())
        },
    );
    checks.must(
        "every policy test passes",
        failed.is_empty(),
        if failed.is_empty() {
            format!("{} of {} pass", tests.passed(), tests.outcomes.len())
        } else {
            format!(
                "policy tests fail ({}): the policies do not do what their tests say",
                failed.join(", ")
            )
        },
    );
    checks.verdict(
        facts,
        format!(
            "every statement is checked by the guard against a ticket whose scope the Rego policies granted (default deny); all {} policy tests pass",
            tests.outcomes.len()
        ),
    )
}

pub(super) fn least_privilege(app: &App, observed: &Observations) -> Finding {
    let bundle = app.bundle();
    let governed: BTreeSet<String> = bundle
        .catalog
        .datasets()
        .map(|d| d.table.to_string())
        .collect();
    let mut by_clearance: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, user) in &bundle.user_configs {
        by_clearance
            .entry(user.clearance.to_string())
            .or_default()
            .push(name);
    }
    let mut facts = Facts::from([
        (
            "upstream.session",
            json!("default_transaction_read_only=on, statement_timeout set by esq"),
        ),
        ("users.by_clearance", json!(by_clearance)),
        ("catalog.tables", json!(governed)),
    ]);
    let mut checks = Checks::default();
    let facts_seen = match &observed.upstream {
        Ok(seen) => seen,
        Err(reason) => {
            checks.must(
                "the database reports the service role's privileges",
                false,
                reason.clone(),
            );
            return checks.verdict(facts, "");
        }
    };
    facts.insert("upstream.role", json!(facts_seen.role));
    facts.insert("upstream.writable", json!(facts_seen.writable));
    facts.insert("upstream.readable", json!(facts_seen.readable));
    role_checks(&mut checks, facts_seen);
    grant_checks(&mut checks, facts_seen, &governed);
    let role = &facts_seen.role;
    checks.verdict(
        facts,
        format!(
            "the service role {role} is no superuser, holds no BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION and acts as no privileged role, can write no table, create nothing, and read only the catalog's tables ({}), in read-only sessions; a ticket grants only the fields and rows its policy allows",
            list(&facts_seen.readable)
        ),
    )
}

/// The role's own attributes, the roles it can act as, its sessions.
fn role_checks(checks: &mut Checks, seen: &UpstreamFacts) {
    let role = &seen.role;
    checks.must(
        "the service role is not a superuser",
        !seen.superuser,
        if seen.superuser {
            format!("the service role {role} is a superuser")
        } else {
            format!("{role}: rolsuper = false")
        },
    );
    let attributes: Vec<String> = [
        (seen.bypass_rls, "BYPASSRLS"),
        (seen.create_role, "CREATEROLE"),
        (seen.create_db, "CREATEDB"),
        (seen.replication, "REPLICATION"),
    ]
    .into_iter()
    .filter(|(held, _)| *held)
    .map(|(_, name)| name.to_string())
    .collect();
    checks.must(
        "the service role holds no BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION",
        attributes.is_empty(),
        if attributes.is_empty() {
            format!("{role} holds none of them")
        } else {
            format!("the service role {role} holds {}", list(&attributes))
        },
    );
    checks.must(
        "the service role is a member of no privileged role",
        seen.privileged_memberships.is_empty(),
        if seen.privileged_memberships.is_empty() {
            format!("{role} can act as no privileged role")
        } else {
            format!(
                "the service role {role} is a member of {}",
                list(&seen.privileged_memberships)
            )
        },
    );
    checks.must(
        "esq's upstream sessions are read-only",
        seen.read_only_session,
        if seen.read_only_session {
            "default_transaction_read_only = on".to_string()
        } else {
            format!(
                "esq's sessions as {role} are not read-only (default_transaction_read_only is off)"
            )
        },
    );
}

/// What the role can write, create and read.
fn grant_checks(checks: &mut Checks, seen: &UpstreamFacts, governed: &BTreeSet<String>) {
    let role = &seen.role;
    checks.must(
        "the service role can write no table",
        seen.writable.is_empty(),
        if seen.writable.is_empty() {
            "no table or view outside the system schemas is writable".to_string()
        } else {
            format!(
                "the service role {role} can write {} (INSERT, UPDATE, DELETE or TRUNCATE)",
                list(&seen.writable)
            )
        },
    );
    checks.must(
        "the service role can run no other role's SECURITY DEFINER function",
        seen.definer_functions.is_empty(),
        if seen.definer_functions.is_empty() {
            "no SECURITY DEFINER function of another role is executable".to_string()
        } else {
            format!(
                "the service role {role} can execute {}, which run with their owners' rights (REVOKE EXECUTE … FROM PUBLIC)",
                list(&seen.definer_functions)
            )
        },
    );
    let mut creates: Vec<String> = seen
        .create_schemas
        .iter()
        .map(|s| format!("schema {s}"))
        .collect();
    if seen.create_in_database {
        creates.insert(0, "the database (new schemas)".to_string());
    }
    if seen.large_objects {
        creates.push(
            "large objects (lo_create, lo_creat and lo_from_bytea are PUBLIC's by default: REVOKE EXECUTE ON FUNCTION … FROM PUBLIC)"
                .to_string(),
        );
    }
    if seen.temporary {
        creates.push(
            "temporary tables (TEMPORARY on the database, PUBLIC's by default: REVOKE TEMPORARY ON DATABASE … FROM PUBLIC)"
                .to_string(),
        );
    }
    checks.must(
        "the service role can create no schema or object",
        creates.is_empty(),
        if creates.is_empty() {
            "no CREATE or TEMPORARY privilege on the database, no CREATE on any schema".to_string()
        } else {
            format!("the service role {role} can create in {}", list(&creates))
        },
    );
    let ungoverned: Vec<String> = seen
        .readable
        .iter()
        .filter(|t| !governed.contains(*t))
        .cloned()
        .collect();
    checks.must(
        "the service role reads only the catalog's tables",
        ungoverned.is_empty(),
        if ungoverned.is_empty() {
            format!("reads {}", list(&seen.readable))
        } else {
            format!(
                "the service role {role} can read {}, which no catalog dataset governs (esq refuses them, but least privilege says the role should not hold them)",
                list(&ungoverned)
            )
        },
    );
}

pub(super) fn identification(app: &App, _: &Observations) -> Finding {
    let bundle = app.bundle();
    let users = &bundle.user_configs;
    let scram: Vec<&str> = users
        .iter()
        .filter(|(_, u)| u.scram_verifier.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let weak: Vec<&str> = users
        .iter()
        .filter(|(_, u)| {
            u.scram_verifier
                .as_deref()
                .is_some_and(|v| !v.starts_with("SCRAM-SHA-256$"))
        })
        .map(|(n, _)| n.as_str())
        .collect();
    let tokens: Vec<&str> = users
        .iter()
        .filter(|(_, u)| !u.api_token_sha256.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    let facts = Facts::from([
        ("users", json!(users.len())),
        ("users.scram_sha_256", json!(scram)),
        ("users.api_token_sha256", json!(tokens)),
        ("pg.ticket_user", json!(app.config.pg.ticket_user)),
    ]);
    let mut checks = Checks::default();
    checks.must(
        "at least one user has a credential",
        !scram.is_empty() || !tokens.is_empty(),
        if scram.is_empty() && tokens.is_empty() {
            "no user has a credential: nobody can be identified".to_string()
        } else {
            format!(
                "{} user(s) with a SCRAM verifier, {} with API tokens",
                scram.len(),
                tokens.len()
            )
        },
    );
    checks.must(
        "every password verifier is SCRAM-SHA-256",
        weak.is_empty(),
        if weak.is_empty() {
            "every scram_verifier is SCRAM-SHA-256".to_string()
        } else {
            format!("not SCRAM-SHA-256: the verifiers of {}", weak.join(", "))
        },
    );
    checks.verdict(
        facts,
        "every request is made by a named user: SCRAM-SHA-256 on the PostgreSQL door, API tokens (stored as SHA-256) on the HTTP door; a ticket works only for the user it was issued to",
    )
}
