//! Each control's status, computed from the loaded [`App`]: one function per
//! control, each returning the status, the reason and the facts it read.
//! Nothing here assumes a feature the running build or configuration does
//! not show.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Control, Status};
use crate::app::App;
use crate::audit::AuditProperties;
use crate::config::{AuditConfig, AuditDurability};

type Facts = BTreeMap<&'static str, Value>;

struct Finding {
    status: Status,
    reason: String,
    facts: Facts,
}

fn finding(status: Status, reason: impl Into<String>, facts: Facts) -> Finding {
    Finding {
        status,
        reason: reason.into(),
        facts,
    }
}

type Evaluate = fn(&App) -> Finding;

/// The controls in report order: id, title, evaluation.
const CONTROLS: &[(&str, &str, Evaluate)] = &[
    ("AC-3", "Access Enforcement", access_enforcement),
    ("AC-6", "Least Privilege", least_privilege),
    ("AU-2", "Event Logging", event_logging),
    ("AU-3", "Content of Audit Records", audit_content),
    ("AU-9", "Protection of Audit Information", audit_protection),
    ("AU-10", "Non-repudiation", non_repudiation),
    (
        "IA-2",
        "Identification and Authentication (Organizational Users)",
        identification,
    ),
    ("IR-4", "Incident Handling", incident_handling),
    (
        "MP-6",
        "Media Sanitization (right to delete)",
        right_to_delete,
    ),
    (
        "SC-8",
        "Transmission Confidentiality and Integrity",
        transmission,
    ),
    ("SC-13", "Cryptographic Protection", cryptography),
    ("SC-28", "Protection of Information at Rest", at_rest),
    ("SI-4", "System Monitoring", monitoring),
];

pub fn evaluate(app: &App) -> Vec<super::Control> {
    CONTROLS
        .iter()
        .map(|&(id, title, evaluate)| {
            let Finding {
                status,
                reason,
                facts,
            } = evaluate(app);
            Control {
                id,
                title,
                status,
                reason,
                facts,
                required_by: Vec::new(),
            }
        })
        .collect()
}

fn access_enforcement(app: &App) -> Finding {
    let tests = app.policies.run_tests();
    let failed: Vec<String> = tests.failed().map(|t| t.name.clone()).collect();
    let facts = Facts::from([
        ("catalog.datasets", json!(app.catalog.len())),
        ("policy.packages", json!(app.policies.packages())),
        ("policy.tests", json!(tests.outcomes.len())),
        ("policy.tests_failed", json!(failed)),
        (
            "guard",
            json!("default deny: unknown tables, columns outside the catalog, unparsable or unmodelled statements are refused"),
        ),
    ]);
    if app.catalog.is_empty() || app.policies.packages().is_empty() {
        return finding(
            Status::NotSatisfied,
            "no dataset or no policy is loaded: nothing can be granted, so access is not governed by any rule",
            facts,
        );
    }
    if tests.outcomes.is_empty() {
        return finding(
            Status::PartiallySatisfied,
            "tickets are granted by the Rego policies and every statement is checked against its ticket, but the policies have no tests (*_test.rego)",
            facts,
        );
    }
    if !failed.is_empty() {
        return finding(
            Status::NotSatisfied,
            format!(
                "policy tests fail ({}): the policies do not do what their tests say",
                failed.join(", ")
            ),
            facts,
        );
    }
    finding(
        Status::Satisfied,
        "every statement is checked by the guard against a ticket whose scope the Rego policies granted (default deny); all policy tests pass",
        facts,
    )
}

/// The upstream URL's role and `sslmode`, without the password.
fn upstream(app: &App) -> (String, String, String) {
    match app.config.upstream.url.parse::<tokio_postgres::Config>() {
        Ok(url) => {
            let role = url.get_user().unwrap_or("").to_string();
            let host = match url.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                _ => "localhost".to_string(),
            };
            let sslmode = match url.get_ssl_mode() {
                tokio_postgres::config::SslMode::Require => "require",
                tokio_postgres::config::SslMode::Prefer => "prefer",
                _ => "disable",
            };
            (role, host, sslmode.to_string())
        }
        Err(_) => (String::new(), String::new(), "unknown".to_string()),
    }
}

fn least_privilege(app: &App) -> Finding {
    let (role, _, _) = upstream(app);
    let mut by_clearance: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, user) in &app.config.users {
        by_clearance
            .entry(user.clearance.to_string())
            .or_default()
            .push(name);
    }
    let no_roles: Vec<&str> = app
        .config
        .users
        .iter()
        .filter(|(_, u)| u.roles.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    let facts = Facts::from([
        ("upstream.role", json!(role)),
        (
            "upstream.session",
            json!("default_transaction_read_only=on, statement_timeout set by esq"),
        ),
        ("users.by_clearance", json!(by_clearance)),
        ("users.without_roles", json!(no_roles)),
        (
            "catalog",
            json!("columns not in the catalog are forbidden; a ticket names its fields"),
        ),
    ]);
    if role.is_empty() || role == "postgres" {
        return finding(
            Status::NotSatisfied,
            format!("upstream.url connects as {role:?}: esq must use its own low-privilege service role, not a superuser"),
            facts,
        );
    }
    finding(
        Status::Satisfied,
        format!(
            "esq reads through its own role {role:?} in read-only sessions; a ticket grants only the fields and rows its policy allows and users default to clearance PUBLIC. The role's grants live in PostgreSQL: `esq check --against` compares them with the catalog"
        ),
        facts,
    )
}

fn audit_facts(app: &App) -> Facts {
    let properties = serving_properties(&app.config.audit);
    Facts::from([
        ("audit.enabled", json!(app.config.audit.enabled)),
        ("audit.sink", json!(properties.sink)),
        ("audit.path", json!(app.config.audit.path)),
        ("audit.durable", json!(properties.durable)),
        ("audit.durability", json!(app.config.audit.durability)),
        (
            "audit.synced_before_answer",
            json!(properties.synced_before_answer),
        ),
        ("audit.full_content", json!(properties.full_content)),
        ("audit.hash_chained", json!(properties.hash_chained)),
        ("audit.signed", json!(properties.signed)),
    ])
}

fn event_logging(app: &App) -> Finding {
    let properties = serving_properties(&app.config.audit);
    let facts = audit_facts(app);
    if properties.durable && properties.synced_before_answer {
        finding(
            Status::Satisfied,
            "every decision (allow, rewrite, deny, stale ticket) and ticket event on both doors is a record in the audit log, written and fsynced before the answer completes",
            facts,
        )
    } else if properties.durable {
        finding(
            Status::Satisfied,
            format!(
                "every decision (allow, rewrite, deny, stale ticket) and ticket event on both doors is a record in the audit log, written before the answer completes and fsynced within {} (audit.durability = write)",
                humantime::format_duration(app.config.audit.sync_interval)
            ),
            facts,
        )
    } else {
        finding(
            Status::NotSatisfied,
            "audit.enabled = false: decisions are not recorded",
            facts,
        )
    }
}

fn audit_content(app: &App) -> Finding {
    let properties = serving_properties(&app.config.audit);
    let facts = audit_facts(app);
    if properties.full_content && properties.durable {
        finding(
            Status::Satisfied,
            "records hold time, user, client, ticket hash, door, dataset, statement fingerprint, rewritten SQL, outcome, SQLSTATE and rows",
            facts,
        )
    } else {
        finding(
            Status::NotSatisfied,
            "audit.enabled = false: no audit records are written",
            facts,
        )
    }
}

fn audit_protection(app: &App) -> Finding {
    let properties = serving_properties(&app.config.audit);
    let facts = audit_facts(app);
    match (properties.durable, properties.hash_chained) {
        (true, true) if !properties.synced_before_answer => finding(
            Status::PartiallySatisfied,
            format!(
                "records are hash-chained, but audit.durability = write answers before the fsync: an OS crash or power loss can lose up to {} of records whose answers clients saw",
                humantime::format_duration(app.config.audit.sync_interval)
            ),
            facts,
        ),
        (true, true) => finding(
            Status::Satisfied,
            "each record carries the SHA-256 of the one before: a changed, removed or reordered record is found by `esq audit verify`. File permissions and off-host copies are the host's",
            facts,
        ),
        (true, false) => finding(
            Status::PartiallySatisfied,
            "records are written to a file, but nothing shows whether one was changed or removed",
            facts,
        ),
        _ => finding(
            Status::NotSatisfied,
            "audit.enabled = false: there are no audit records to protect",
            facts,
        ),
    }
}

fn non_repudiation(app: &App) -> Finding {
    let properties = serving_properties(&app.config.audit);
    let facts = audit_facts(app);
    if properties.signed {
        finding(
            Status::Satisfied,
            "records are signed by a key that identifies the esq node that wrote them",
            facts,
        )
    } else if properties.hash_chained {
        finding(
            Status::PartiallySatisfied,
            "the hash chain shows integrity and order, but no signature binds records to their writer",
            facts,
        )
    } else {
        finding(
            Status::NotSatisfied,
            "audit records are neither chained nor signed",
            facts,
        )
    }
}

fn identification(app: &App) -> Finding {
    let users = &app.config.users;
    let scram: Vec<&str> = users
        .iter()
        .filter(|(_, u)| u.scram_verifier.is_some())
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
    if scram.is_empty() && tokens.is_empty() {
        return finding(
            Status::NotSatisfied,
            "no user has a credential: nobody can be identified",
            facts,
        );
    }
    finding(
        Status::Satisfied,
        "every request is made by a named user: SCRAM-SHA-256 on the PostgreSQL door, API tokens (stored as SHA-256) on the HTTP door; a ticket works only for the user it was issued to",
        facts,
    )
}

/// The webhook's scheme and host only: its path may hold a secret.
fn webhook_host(url: &str) -> Value {
    match reqwest::Url::parse(url) {
        Ok(url) => json!(format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or("")
        )),
        Err(_) => json!("unparsable"),
    }
}

fn incident_handling(app: &App) -> Finding {
    let sentinel = &app.config.sentinel;
    let facts = Facts::from([
        ("sentinel.enabled", json!(sentinel.enabled)),
        (
            "sentinel.webhook",
            sentinel
                .webhook
                .as_deref()
                .map(webhook_host)
                .unwrap_or(Value::Null),
        ),
        (
            "sentinel.webhook_attempts",
            json!(sentinel.webhook_attempts),
        ),
    ]);
    match (sentinel.enabled, &sentinel.webhook) {
        (true, Some(_)) => finding(
            Status::Satisfied,
            "a sentinel trip revokes the ticket, is audited and is POSTed to the incident webhook (retried)",
            facts,
        ),
        (true, None) => finding(
            Status::PartiallySatisfied,
            "a sentinel trip revokes the ticket and is audited, but nobody is alerted: set sentinel.webhook",
            facts,
        ),
        (false, _) => finding(
            Status::NotSatisfied,
            "sentinel.enabled = false: ticket abuse is neither detected nor handled",
            facts,
        ),
    }
}

fn right_to_delete(app: &App) -> Finding {
    let keyed: Vec<&str> = app
        .catalog
        .datasets()
        .filter(|d| d.subject_key.is_some())
        .map(|d| d.id.as_str())
        .collect();
    let facts = Facts::from([("catalog.datasets_with_subject_key", json!(keyed))]);
    finding(
        Status::NotSatisfied,
        "right-to-delete (`esq forget`, tombstones hidden from every answer) is not built yet",
        facts,
    )
}

fn tls_facts(app: &App) -> Facts {
    let tls = &app.config.tls;
    let (_, host, sslmode) = upstream(app);
    Facts::from([
        ("tls.cert", json!(tls.cert.is_some())),
        ("tls.key", json!(tls.key.is_some())),
        ("tls.required", json!(tls.required)),
        ("upstream.host", json!(host)),
        ("upstream.sslmode", json!(sslmode)),
    ])
}

fn transmission(app: &App) -> Finding {
    let tls = &app.config.tls;
    let (_, host, sslmode) = upstream(app);
    let facts = tls_facts(app);
    let upstream_note = if sslmode == "require" {
        "the upstream connection uses TLS (sslmode=require)".to_string()
    } else {
        format!("the upstream connection to {host} is plaintext (sslmode is not require): keep it on a trusted network or set sslmode=require")
    };
    let configured = tls.cert.is_some() && tls.key.is_some();
    match (configured, tls.required) {
        (true, true) => finding(
            Status::Satisfied,
            format!("both doors speak TLS only and refuse plaintext clients; {upstream_note}"),
            facts,
        ),
        (true, false) => finding(
            Status::PartiallySatisfied,
            format!("both doors offer TLS, but tls.required = false lets clients connect in plaintext; {upstream_note}"),
            facts,
        ),
        (false, _) => finding(
            Status::NotSatisfied,
            format!("no tls.cert/tls.key: both doors speak plaintext; {upstream_note}"),
            facts,
        ),
    }
}

fn cryptography(app: &App) -> Finding {
    let tls = &app.config.tls;
    let mut facts = tls_facts(app);
    facts.insert("crypto.provider", json!("rustls with ring"));
    facts.insert("crypto.fips_140_validated", json!(false));
    facts.insert(
        "crypto.uses",
        json!([
            "TLS 1.2/1.3 (AEAD suites)",
            "SCRAM-SHA-256",
            "SHA-256 token and ticket hashes"
        ]),
    );
    if tls.cert.is_some() && tls.key.is_some() {
        finding(
            Status::Satisfied,
            "TLS 1.2/1.3 with AEAD suites on both doors, SCRAM-SHA-256 passwords, SHA-256 token and ticket hashes. FIPS 140 validation is not claimed: ring is not a validated module",
            facts,
        )
    } else {
        finding(
            Status::PartiallySatisfied,
            "SCRAM-SHA-256 and SHA-256 hashes are used, but without tls.cert/tls.key nothing in transit is encrypted",
            facts,
        )
    }
}

fn at_rest(app: &App) -> Finding {
    let facts = Facts::from([
        ("audit.path", json!(app.config.audit.path)),
        (
            "esq.stores",
            json!("no dataset rows (answers stream through); the audit log holds fingerprints and rewritten SQL, which may carry literal values"),
        ),
    ]);
    finding(
        Status::External,
        "rests on the database's storage encryption and on the encryption of the disk that holds the audit log, neither of which esq can observe: the operator must attest it",
        facts,
    )
}

fn monitoring(app: &App) -> Finding {
    let sentinel = &app.config.sentinel;
    let rules: Vec<Value> = sentinel
        .rules
        .iter()
        .map(|r| json!({"name": r.name, "measure": r.measure, "per": r.per, "limit": r.limit, "window_seconds": r.window.as_secs()}))
        .collect();
    let facts = Facts::from([
        ("sentinel.enabled", json!(sentinel.enabled)),
        ("sentinel.rules", json!(rules)),
        ("metrics", json!("GET /metrics (Prometheus, esq_ prefix)")),
    ]);
    match (sentinel.enabled, sentinel.rules.is_empty()) {
        (true, false) => finding(
            Status::Satisfied,
            "the breach sentinel watches ticket use against its rules and trips on abuse; decisions, latencies and pool state are exported as metrics",
            facts,
        ),
        (true, true) => finding(
            Status::NotSatisfied,
            "the sentinel is enabled with no rules: nothing is watched",
            facts,
        ),
        (false, _) => finding(
            Status::NotSatisfied,
            "sentinel.enabled = false: ticket abuse is not monitored (metrics alone do not detect it)",
            facts,
        ),
    }
}

/// What the sink `esq serve` installs for `config` guarantees (see
/// `App::from_config`): the hash-chained `AuditLog`, or nothing when
/// `audit.enabled = false`. Commands that serve nothing log events instead,
/// but the plan is about the serving configuration.
pub fn serving_properties(config: &AuditConfig) -> AuditProperties {
    if config.enabled {
        AuditProperties {
            sink: "file",
            durable: true,
            synced_before_answer: config.durability == AuditDurability::Fsync,
            full_content: true,
            hash_chained: true,
            signed: false,
        }
    } else {
        AuditProperties {
            sink: "disabled",
            ..AuditProperties::default()
        }
    }
}
