//! The System Security Plan (`esq ssp`): the system, its datasets and their
//! sensitivity, its users' clearances, and every control with its checks
//! and the status they support, computed from the running configuration
//! and what was observed of the database and the audit log, as one JSON
//! document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::observe::{observe, observe_blocking, Observations};
use super::{apply_profiles, evaluate, Control, Profile, Status, Unmet};
use crate::app::App;
use crate::sensitivity::Sensitivity;

/// What the SSP says about where the configuration came from.
#[derive(Debug, Clone, Default)]
pub struct SspInputs {
    /// The config file that was loaded (hashed into the SSP).
    pub config_path: Option<PathBuf>,
    /// Profiles whose requirements are marked on the controls.
    pub profiles: Vec<Profile>,
}

#[derive(Debug, Serialize)]
pub struct SystemSecurityPlan {
    pub ssp_version: u32,
    pub generated_at: String,
    pub generator: String,
    /// When the database and the audit log were observed.
    pub observed_at: String,
    pub system: System,
    pub datasets: Vec<DatasetEntry>,
    pub users: Vec<UserEntry>,
    pub profiles: Vec<ProfileResult>,
    /// Exception waivers open now (pending, or approved and unexpired):
    /// access granted beyond the policies, each by a data steward.
    pub exceptions: OpenExceptions,
    pub controls: Vec<Control>,
    /// Controls per status.
    pub summary: BTreeMap<&'static str, usize>,
    /// What each status means.
    pub statuses: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Serialize)]
pub struct System {
    pub name: &'static str,
    pub description: &'static str,
    pub environment: String,
    pub doors: BTreeMap<&'static str, String>,
    pub upstream: String,
    pub ticket_store: String,
    /// SHA-256 (hex) of the config file, the catalog and the policies.
    pub hashes: BTreeMap<&'static str, String>,
    /// The bundle that decides (see `esq seal`): its hash, what it is
    /// made of, and whether its seal verifies.
    pub bundle: BundleSummary,
}

#[derive(Debug, Serialize)]
pub struct BundleSummary {
    pub hash: String,
    pub parts: crate::bundle::Parts,
    /// `verified with key <id>`, `not sealed (no signing key)`, or why the
    /// seal does not verify.
    pub seal: String,
}

/// The bundle in force and the state of its seal.
pub fn bundle_summary(app: &App) -> BundleSummary {
    let bundle = app.bundle();
    let seal = match crate::bundle::seal::check(&app.config, &bundle.parts) {
        Ok(key_id) => format!("verified with key {key_id}"),
        Err(crate::bundle::SealError::NoKey) => "not sealed (no signing key)".to_string(),
        Err(crate::bundle::SealError::Missing { path, .. }) => {
            format!(
                "not sealed ({} does not exist: `esq seal` makes it)",
                path.display()
            )
        }
        Err(error) => error.to_string(),
    };
    BundleSummary {
        hash: bundle.hash.clone(),
        parts: bundle.parts.clone(),
        seal,
    }
}

#[derive(Debug, Serialize)]
pub struct DatasetEntry {
    pub id: String,
    pub table: String,
    pub owner: String,
    pub steward: String,
    pub sensitivity: Sensitivity,
    pub min_group_size: u32,
    pub retention_years: Option<u32>,
    pub subject_key: Option<String>,
    /// Field names per effective sensitivity.
    pub fields: BTreeMap<Sensitivity, Vec<String>>,
    pub pii_fields: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UserEntry {
    pub name: String,
    pub roles: Vec<String>,
    pub clearance: Sensitivity,
    pub postgres_login: bool,
    pub api_tokens: usize,
}

/// The open exception waivers, as the maintenance role read them.
#[derive(Debug, Serialize)]
pub struct OpenExceptions {
    pub open: Vec<OpenException>,
    /// Why they could not be read (then `open` is empty and says nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unobserved: Option<String>,
}

/// One open exception (its purpose, justification and comment stay in
/// `esq.exceptions`).
#[derive(Debug, Serialize)]
pub struct OpenException {
    pub id: String,
    pub state: crate::exceptions::State,
    pub requester: String,
    pub dataset: String,
    pub fields: Vec<String>,
    pub aggregate: Option<String>,
    pub approver: Option<String>,
    pub decided_by: Option<String>,
    pub expires_at: Option<String>,
    pub uses: i64,
}

fn open_exceptions(observed: &Observations) -> OpenExceptions {
    match &observed.lifecycle {
        Ok(facts) => OpenExceptions {
            open: facts
                .open_exceptions
                .iter()
                .map(|e| OpenException {
                    id: e.id.clone(),
                    state: e.state,
                    requester: e.requester.clone(),
                    dataset: e.dataset.clone(),
                    fields: e.fields.clone(),
                    aggregate: e.aggregate.clone(),
                    approver: e.approver.clone(),
                    decided_by: e.decided_by.clone(),
                    expires_at: e.expires_at.as_ref().map(crate::exceptions::store::rfc3339),
                    uses: e.uses,
                })
                .collect(),
            unobserved: None,
        },
        Err(reason) => OpenExceptions {
            open: Vec::new(),
            unobserved: Some(reason.clone()),
        },
    }
}

#[derive(Debug, Serialize)]
pub struct ProfileResult {
    pub profile: Profile,
    pub met: bool,
    pub required: Vec<&'static str>,
    pub unmet: Vec<&'static str>,
}

/// Observes the database and the audit log, then builds the SSP of `app`;
/// the second value lists the required controls the requested profiles are
/// not met on (empty: all met).
pub async fn system_security_plan(
    app: &App,
    inputs: &SspInputs,
) -> (SystemSecurityPlan, Vec<Unmet>) {
    plan(app, inputs, &observe(app).await)
}

/// [`system_security_plan`] for synchronous callers (see
/// [`observe_blocking`]).
pub fn system_security_plan_blocking(
    app: &App,
    inputs: &SspInputs,
) -> (SystemSecurityPlan, Vec<Unmet>) {
    plan(app, inputs, &observe_blocking(app))
}

/// The SSP of `app` from observations already made.
pub fn plan(
    app: &App,
    inputs: &SspInputs,
    observed: &Observations,
) -> (SystemSecurityPlan, Vec<Unmet>) {
    let mut controls = evaluate(app, observed);
    let unmet = apply_profiles(&mut controls, &inputs.profiles);
    let profiles = inputs
        .profiles
        .iter()
        .map(|&profile| {
            let missing: Vec<&'static str> = unmet
                .iter()
                .filter(|u| u.profiles.contains(&profile))
                .map(|u| u.id)
                .collect();
            ProfileResult {
                profile,
                met: missing.is_empty(),
                required: profile.required().to_vec(),
                unmet: missing,
            }
        })
        .collect();
    let mut summary = BTreeMap::new();
    for control in &controls {
        *summary.entry(control.status.as_str()).or_insert(0) += 1;
    }
    let ssp = SystemSecurityPlan {
        ssp_version: 1,
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        generator: format!("esq {}", env!("CARGO_PKG_VERSION")),
        observed_at: observed
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        system: system(app, inputs),
        datasets: datasets(app),
        users: users(app),
        profiles,
        exceptions: open_exceptions(observed),
        controls,
        summary,
        statuses: statuses(),
    };
    (ssp, unmet)
}

fn statuses() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            Status::Satisfied.as_str(),
            "every check of the control passed (see its checks)",
        ),
        (
            Status::PartiallySatisfied.as_str(),
            "a check the control should pass failed; the reason names what was found (a required control in this state fails `esq check --profile`)",
        ),
        (
            Status::NotSatisfied.as_str(),
            "a check the control must pass failed or could not be made (\"could not verify: …\"), or esq does not have the feature yet",
        ),
        (
            Status::External.as_str(),
            "rests on something esq cannot observe; the operator must attest it with evidence of their own",
        ),
    ])
}

fn system(app: &App, inputs: &SspInputs) -> System {
    let config = &app.config;
    let scheme = |tls: bool| if tls { "TLS" } else { "plaintext" };
    let tls_on = config.tls.cert.is_some() && config.tls.key.is_some();
    let mode = match (tls_on, config.tls.required) {
        (true, true) => scheme(true).to_string(),
        (true, false) => "TLS or plaintext".to_string(),
        (false, _) => scheme(false).to_string(),
    };
    let doors = BTreeMap::from([
        (
            "postgres",
            format!("{} ({mode}, SCRAM-SHA-256)", config.server.pg_listen),
        ),
        (
            "http",
            format!("{} ({mode}, bearer API tokens)", config.server.http_listen),
        ),
    ]);
    let upstream = match config.upstream.url.parse::<tokio_postgres::Config>() {
        Ok(url) => {
            let host = match url.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                _ => "localhost".into(),
            };
            format!(
                "postgres://{}@{}:{}/{}",
                url.get_user().unwrap_or(""),
                host,
                url.get_ports().first().copied().unwrap_or(5432),
                url.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "unparsable upstream.url".into(),
    };
    let ticket_store = if config.tickets.store == "memory" {
        "memory".to_string()
    } else {
        "redis".to_string()
    };
    let mut hashes = BTreeMap::new();
    if let Some(path) = &inputs.config_path {
        hashes.insert("config", file_sha256(path));
    }
    hashes.insert("catalog", dir_sha256(&config.catalog.dir));
    hashes.insert("policies", dir_sha256(&config.policy.dir));
    System {
        name: "esq",
        description: "data-access guard proxy: authenticates users, checks every statement against a time-limited ticket, the catalog and Rego policies, rewrites it, forwards it to PostgreSQL and audits the decision",
        environment: config.server.environment.clone(),
        doors,
        upstream,
        ticket_store,
        hashes,
        bundle: bundle_summary(app),
    }
}

fn datasets(app: &App) -> Vec<DatasetEntry> {
    let floor = app.config.guard.min_group_size;
    let bundle = app.bundle();
    bundle
        .catalog
        .datasets()
        .map(|d| {
            let mut fields: BTreeMap<Sensitivity, Vec<String>> = BTreeMap::new();
            for field in &d.fields {
                fields
                    .entry(d.field_sensitivity(field))
                    .or_default()
                    .push(field.name.clone());
            }
            DatasetEntry {
                id: d.id.clone(),
                table: d.table.to_string(),
                owner: d.owner.clone(),
                steward: d.steward.clone(),
                sensitivity: d.sensitivity,
                min_group_size: d.min_group_size.unwrap_or(floor).max(floor),
                retention_years: d.retention_years,
                subject_key: d.subject_key.clone(),
                fields,
                pii_fields: d
                    .fields
                    .iter()
                    .filter(|f| f.pii)
                    .map(|f| f.name.clone())
                    .collect(),
            }
        })
        .collect()
}

fn users(app: &App) -> Vec<UserEntry> {
    app.bundle()
        .user_configs
        .iter()
        .map(|(name, user)| UserEntry {
            name: name.clone(),
            roles: user.roles.clone(),
            clearance: user.clearance,
            postgres_login: user.scram_verifier.is_some(),
            api_tokens: user.api_token_sha256.len(),
        })
        .collect()
}

/// Hex SHA-256 of a file, or `unreadable: …`.
pub fn file_sha256(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
        Err(err) => format!("unreadable: {err}"),
    }
}

/// Hex SHA-256 over a directory's files (sorted by name): each file's name,
/// a NUL, its SHA-256, a newline. Subdirectories are not read.
pub fn dir_sha256(dir: &Path) -> String {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return format!("unreadable: {err}"),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(file_sha256(&file).as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}
