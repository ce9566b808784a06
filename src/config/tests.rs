use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[upstream]
url = "postgres://esq_service@127.0.0.1:5432/esq_demo"
"#;

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("esq.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let (_dir, path) = write_config(text);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load_with_env(&path, env)
}

fn error(text: &str, env: &[(&str, &str)]) -> String {
    load(text, env)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let config = load(MINIMAL, &[]).expect("valid");
    assert_eq!(config.server.pg_listen.port(), 6432);
    assert_eq!(config.server.http_listen.port(), 8080);
    assert_eq!(config.tickets.store, "memory");
    assert_eq!(config.tickets.default_ttl, Duration::from_secs(300));
    assert_eq!(config.tickets.max_ttl, Duration::from_secs(3600));
    assert_eq!(config.guard.min_group_size, 11);
    assert!(config.users.is_empty());
}

#[test]
fn relative_paths_are_resolved_against_the_config_directory() {
    let (dir, path) = write_config(&format!(
        "{MINIMAL}\n[catalog]\ndir = \"./x/../../catalog\"\n"
    ));
    let config = Config::load_with_env(&path, []).expect("valid");
    let parent = dir.path().parent().expect("temp dir has a parent");
    assert_eq!(config.catalog.dir, parent.join("catalog"));
    assert_eq!(config.policy.dir, dir.path().join("policies"));
}

#[test]
fn environment_overrides_every_kind_of_value() {
    let config = load(
        &format!("{MINIMAL}\n[users.journalist]\nroles = [\"foia_requester\"]\n"),
        &[
            ("ESQ_TICKETS__DEFAULT_TTL", "10m"),
            ("ESQ_GUARD__MIN_GROUP_SIZE", "20"),
            ("ESQ_SERVER__PG_LISTEN", "0.0.0.0:7432"),
            ("ESQ_USERS__JOURNALIST__CLEARANCE", "PII"),
            ("ESQ_USERS__JOURNALIST__ROLES", "[\"a\", \"b\"]"),
            ("ESQ_USERS__CA_OFFICIAL__ATTRIBUTES", "{ state = \"CA\" }"),
            ("ESQ_UPSTREAM__PASSWORD", "12345"),
            ("ESQ_CONFIG", "ignored: not an override"),
            ("OTHER__VAR", "ignored"),
        ],
    )
    .expect("valid");
    assert_eq!(config.tickets.default_ttl, Duration::from_secs(600));
    assert_eq!(config.guard.min_group_size, 20);
    assert_eq!(config.server.pg_listen.port(), 7432);
    let journalist = &config.users["journalist"];
    assert_eq!(journalist.clearance, Sensitivity::Pii);
    assert_eq!(journalist.roles, vec!["a", "b"]);
    assert_eq!(config.users["ca_official"].attributes["state"], "CA");
    // A password that looks like a number stays the string it is.
    assert_eq!(
        config.upstream_password().map(Secret::expose),
        Some("12345")
    );
}

#[test]
fn a_string_key_overridden_with_a_numeric_looking_value_stays_a_string() {
    let config = load(
        &format!("{MINIMAL}\n[server]\nenvironment = \"production\"\n"),
        &[("ESQ_SERVER__ENVIRONMENT", "2026")],
    )
    .expect("valid");
    assert_eq!(config.server.environment, "2026");
}

#[test]
fn bad_environment_values_name_the_variable_and_key() {
    let message = error(MINIMAL, &[("ESQ_TICKETS__STOR", "memory")]);
    assert!(message.contains("ESQ_TICKETS__STOR"), "{message}");
    assert!(message.contains("stor"), "{message}");

    let message = error(MINIMAL, &[("ESQ_TICKETS__DEFAULT_TTL", "soon")]);
    assert!(message.contains("ESQ_TICKETS__DEFAULT_TTL"), "{message}");
    assert!(message.contains("tickets.default_ttl"), "{message}");

    let message = error(MINIMAL, &[("ESQ_GUARD__MIN_GROUP_SIZE", "1")]);
    assert!(message.contains("ESQ_GUARD__MIN_GROUP_SIZE"), "{message}");
    assert!(message.contains("at least 2"), "{message}");

    let message = error(MINIMAL, &[("ESQ_UPSTREAM__URL__HOST", "x")]);
    assert!(message.contains("ESQ_UPSTREAM__URL__HOST"), "{message}");
}

#[test]
fn unknown_keys_in_the_file_name_the_key_and_line() {
    let message = error(
        &format!("{MINIMAL}\n[tickets]\nstore = \"memory\"\nttl = \"5m\"\n"),
        &[],
    );
    assert!(message.contains("esq.toml"), "{message}");
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("ttl"), "{message}");

    let message = error(&format!("{MINIMAL}\n[tickts]\n"), &[]);
    assert!(message.contains("tickts"), "{message}");
}

#[test]
fn syntax_errors_name_the_line() {
    let message = error("[upstream\nurl = 1\n", &[]);
    assert!(message.contains("esq.toml"), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn bad_door_settings_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[tls]\nrequired = true", "tls.required"),
        ("[tls]\ncert = \"server.crt\"", "tls.key"),
        ("[tls]\nkey = \"server.key\"", "tls.cert"),
        (
            "[pg]\nmax_sessions_per_user = 0",
            "pg.max_sessions_per_user",
        ),
        ("[pg]\nmax_message_bytes = 100", "pg.max_message_bytes"),
        ("[pg]\nidle_timeout = \"0s\"", "pg.idle_timeout"),
        (
            "[pg]\nticket_user = \"x\"\n[users.x]\nroles = []",
            "pg.ticket_user",
        ),
        ("[http]\nmax_body_bytes = 10", "http"),
        ("[pg]\nsessions = 3", "sessions"),
    ];
    for (extra, expected) in cases {
        let message = error(&format!("{MINIMAL}\n{extra}\n"), &[]);
        assert!(message.contains(expected), "{extra:?} gave: {message}");
    }
    let config = load(MINIMAL, &[]).expect("valid");
    assert_eq!(config.pg.ticket_user, "ticket");
    assert_eq!(config.pg.max_sessions_per_user, 8);
    assert!(!config.tls.required);
}

#[test]
fn bad_values_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[tickets]\ndefault_ttl = \"2h\"", "tickets.default_ttl"),
        ("[tickets]\nmax_ttl = \"3d\"", "tickets.max_ttl"),
        ("[tickets]\nstore = \"postgres://x\"", "tickets.store"),
        ("[tickets]\nstore = \"redis+cluster://\"", "tickets.store"),
        ("[tickets]\nvalidation_cache = \"5m\"", "tickets.validation_cache"),
        ("[audit]\nsync_interval = \"2m\"", "audit.sync_interval"),
        ("[audit]\nsync_interval = \"0s\"", "audit.sync_interval"),
        ("[audit]\ndurability = \"sometimes\"", "durability"),
        ("[sentinel]\nwebhook = \"ftp://x\"", "sentinel.webhook"),
        (
            "[[sentinel.rules]]\nname = \"a\"\nmeasure = \"uses\"\nlimit = 0",
            "sentinel.rules[0].limit",
        ),
        (
            "[[sentinel.rules]]\nname = \"a\"\nmeasure = \"uses\"\nlimit = 1\n[[sentinel.rules]]\nname = \"a\"\nmeasure = \"uses\"\nlimit = 2",
            "sentinel.rules[1].name",
        ),
        ("[guard]\nmin_group_size = 0", "guard.min_group_size"),
        ("[users.Bad]\nroles = []", "users.Bad"),
        (
            "[users.x]\nscram_verifier = \"hunter2\"",
            "users.x.scram_verifier",
        ),
        (
            "[users.x]\napi_token_sha256 = [\"abc\"]",
            "users.x.api_token_sha256",
        ),
        ("[users.x]\nclearance = \"SECRET\"", "clearance"),
        ("[log]\nformat = \"xml\"", "format"),
        ("[server]\npg_listen = \"nowhere\"", "pg_listen"),
    ];
    for (extra, expected) in cases {
        let message = error(&format!("{MINIMAL}\n{extra}\n"), &[]);
        assert!(message.contains(expected), "{extra:?} gave: {message}");
    }
}

#[test]
fn secrets_are_refused_in_the_file_and_in_the_url() {
    let message = error(
        "[upstream]\nurl = \"postgres://esq@h/db\"\npassword = \"hunter2\"\n",
        &[],
    );
    assert!(message.contains("ESQ_UPSTREAM__PASSWORD"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let message = error("[upstream]\nurl = \"postgres://esq:hunter2@h/db\"\n", &[]);
    assert!(message.contains("upstream.url"), "{message}");
    assert!(message.contains("must not contain a password"), "{message}");
}

#[test]
fn password_file_is_read_and_never_printed() {
    let (dir, path) = write_config(&format!("{MINIMAL}password_file = \"pw\"\n"));
    std::fs::write(dir.path().join("pw"), "s3cret\n").expect("write pw");
    let config = Config::load_with_env(&path, []).expect("valid");
    assert_eq!(
        config.upstream_password().map(Secret::expose),
        Some("s3cret")
    );
    assert!(!format!("{config:?}").contains("s3cret"));

    std::fs::remove_file(dir.path().join("pw")).expect("remove pw");
    let message = Config::load_with_env(&path, [])
        .expect_err("missing")
        .to_string();
    assert!(message.contains("upstream.password_file"), "{message}");
}

#[test]
fn missing_file_says_which() {
    let message = Config::load_with_env(Path::new("/nonexistent/esq.toml"), [])
        .expect_err("missing")
        .to_string();
    assert!(message.contains("/nonexistent/esq.toml"), "{message}");
}

#[test]
fn env_var_names_follow_the_key_path() {
    assert_eq!(
        env_var_for("tickets.default_ttl"),
        "ESQ_TICKETS__DEFAULT_TTL"
    );
}
