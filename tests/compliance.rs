//! `esq ssp` and `esq check --profile` as honest as their checks: every
//! `satisfied` rests on something observed. Against a real PostgreSQL, the
//! service role's privileges decide AC-6 (a superuser, a table it can
//! write, a table outside the catalog it can read) and the connection's
//! TLS as `pg_stat_ssl` reports it decides SC-8 together with both doors
//! and the other hops; against the audit log esq wrote, its chain and
//! signed checkpoints decide AU-9 and AU-10.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;

use common::esq::Esq;
use common::postgres::describe;
use common::process::{esq_command, Run};
use common::Doors;
use serde_json::Value;

/// `esq <args>` in the repository root with more environment variables.
fn esq(args: &[&str], env: &[(&str, String)]) -> Run {
    Run::of(esq_command().args(args).envs(env.iter().cloned()))
}

fn ssp(dir: &Path, env: &[(&str, String)]) -> Value {
    let out = dir.join("SSP.json");
    let run = esq(&["ssp", "--out", out.to_str().unwrap()], env);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("controls ("), "{}", run.stderr);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn control<'a>(ssp: &'a Value, id: &str) -> &'a Value {
    ssp["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the SSP"))
}

/// The check of `control` whose name contains `name`.
fn check<'a>(control: &'a Value, name: &str) -> &'a Value {
    control["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"].as_str().unwrap().contains(name))
        .unwrap_or_else(|| panic!("no check {name:?} in {control}"))
}

fn reason(control: &Value) -> &str {
    control["reason"].as_str().unwrap()
}

/// Control ids named as unmet on stderr ("X required by … is …").
fn unmet(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter(|l| l.contains(" required by "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

async fn plan(fixture: &Esq, env: &[(&str, String)]) -> Value {
    fixture.plan(env).await
}

/// `esq certs dev` into `dir`, and the overrides for TLS-only doors.
fn door_tls(dir: &Path) -> Vec<(&'static str, String)> {
    let certs = dir.join("certs");
    let run = esq(&["certs", "dev", "--out", certs.to_str().unwrap()], &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    vec![
        (
            "ESQ_TLS__CERT",
            certs.join("server.crt").display().to_string(),
        ),
        (
            "ESQ_TLS__KEY",
            certs.join("server.key").display().to_string(),
        ),
        ("ESQ_TLS__REQUIRED", "true".to_string()),
    ]
}

async fn superuser_sql(fixture: &Esq, sql: &str) {
    fixture
        .pg()
        .connect()
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ac6_names_a_superuser_a_writable_table_and_an_ungoverned_read() {
    let fixture = Esq::builder().rows(50).prepare().await;
    let role = fixture.role().to_string();

    // The harness's role: SELECT on the one catalog table, nothing else.
    let baseline = plan(&fixture, &[]).await;
    let ac6 = control(&baseline, "AC-6");
    assert_eq!(ac6["status"], "satisfied", "{ac6}");
    assert!(reason(ac6).contains("public.burial_2024"), "{ac6}");
    assert!(ac6["checks"].as_array().unwrap().len() >= 6, "{ac6}");

    superuser_sql(
        &fixture,
        &format!(
            "CREATE TABLE public.requests (id int);
             GRANT INSERT ON public.requests TO {role};"
        ),
    )
    .await;
    let written = plan(&fixture, &[]).await;
    let ac6 = control(&written, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        reason(ac6).contains(&format!(
            "the service role {role} can write public.requests"
        )),
        "{ac6}"
    );
    assert_eq!(check(ac6, "write no table")["passed"], false);

    superuser_sql(
        &fixture,
        &format!(
            "REVOKE INSERT ON public.requests FROM {role};
             CREATE TABLE public.staff (name text);
             GRANT SELECT ON public.staff TO {role};"
        ),
    )
    .await;
    let ungoverned = plan(&fixture, &[]).await;
    let ac6 = control(&ungoverned, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        reason(ac6).contains(&format!("the service role {role} can read public.staff")),
        "{ac6}"
    );
    assert!(!reason(ac6).contains("burial_2024"), "{ac6}");

    superuser_sql(
        &fixture,
        &format!(
            "REVOKE SELECT ON public.staff FROM {role};
             ALTER ROLE {role} SUPERUSER;"
        ),
    )
    .await;
    let superuser = plan(&fixture, &[]).await;
    let ac6 = control(&superuser, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        reason(ac6).contains(&format!("the service role {role} is a superuser")),
        "{ac6}"
    );
    superuser_sql(&fixture, &format!("ALTER ROLE {role} NOSUPERUSER")).await;

    // A SECURITY DEFINER function of the superuser's that writes, which
    // PUBLIC may execute by default: a write path no table grant shows.
    superuser_sql(
        &fixture,
        "CREATE FUNCTION public.wipe(n int) RETURNS void LANGUAGE sql SECURITY DEFINER
           AS 'DELETE FROM public.burial_2024 WHERE id = n'",
    )
    .await;
    let definer = plan(&fixture, &[]).await;
    let ac6 = control(&definer, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        reason(ac6).contains("can execute public.wipe(n integer) (owned by "),
        "{ac6}"
    );
    assert_eq!(check(ac6, "SECURITY DEFINER")["passed"], false);
    superuser_sql(&fixture, "DROP FUNCTION public.wipe(int)").await;

    // A sequence it may advance (setval): a write.
    superuser_sql(
        &fixture,
        &format!(
            "CREATE SEQUENCE public.counter; GRANT UPDATE ON SEQUENCE public.counter TO {role}"
        ),
    )
    .await;
    let sequence = plan(&fixture, &[]).await;
    let ac6 = control(&sequence, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        reason(ac6).contains(&format!("the service role {role} can write public.counter")),
        "{ac6}"
    );
    superuser_sql(&fixture, "DROP SEQUENCE public.counter").await;

    // Large objects: creatable by PUBLIC unless revoked.
    superuser_sql(
        &fixture,
        "GRANT EXECUTE ON FUNCTION lo_from_bytea(oid, bytea) TO PUBLIC",
    )
    .await;
    let large = plan(&fixture, &[]).await;
    let ac6 = control(&large, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        check(ac6, "create no schema or object")["observed"]
            .as_str()
            .unwrap()
            .contains("large objects"),
        "{ac6}"
    );
    superuser_sql(
        &fixture,
        "REVOKE EXECUTE ON FUNCTION lo_from_bytea(oid, bytea) FROM PUBLIC",
    )
    .await;

    // Temporary tables: something the role can create.
    let database = fixture.database().to_string();
    superuser_sql(
        &fixture,
        &format!("GRANT TEMPORARY ON DATABASE \"{database}\" TO {role}"),
    )
    .await;
    let temporary = plan(&fixture, &[]).await;
    let ac6 = control(&temporary, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied", "{ac6}");
    assert!(
        check(ac6, "create no schema or object")["observed"]
            .as_str()
            .unwrap()
            .contains("temporary tables"),
        "{ac6}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_upstream_fails_sc8_naming_the_upstream_hop() {
    let fixture = Esq::builder().rows(50).prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&fixture, &door_tls(dir.path())).await;
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "not_satisfied", "{sc8}");
    assert_eq!(
        check(sc8, "both doors have a TLS certificate")["passed"],
        true
    );
    assert_eq!(check(sc8, "refuse plaintext")["passed"], true);
    let observed = check(sc8, "pg_stat_ssl");
    assert_eq!(observed["passed"], false, "{sc8}");
    let endpoint = format!("127.0.0.1:{}", fixture.pg().port());
    assert!(
        reason(sc8).contains(&format!(
            "the upstream connection to {endpoint} is plaintext (pg_stat_ssl.ssl = false)"
        )),
        "{sc8}"
    );
    // Least privilege does not depend on the transport.
    assert_eq!(control(&plan, "AC-6")["status"], "satisfied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_role_and_tls_on_every_hop_satisfy_ac6_and_sc8() {
    let fixture = Esq::builder().rows(50).tls_only_upstream().prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&fixture, &door_tls(dir.path())).await;
    let ac6 = control(&plan, "AC-6");
    assert_eq!(ac6["status"], "satisfied", "{ac6}");
    assert!(
        ac6["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{ac6}"
    );
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "satisfied", "{sc8}");
    let observed = check(sc8, "pg_stat_ssl");
    assert!(
        observed["observed"].as_str().unwrap().contains("uses TLS"),
        "{observed}"
    );
    assert!(reason(sc8).starts_with("TLS on every hop"), "{sc8}");
    assert_eq!(control(&plan, "SC-13")["status"], "satisfied");
}

/// Writes `records` decision records with esq's own writer, signing
/// checkpoints with the key of `env` (one at its close).
fn write_audit_log(env: &[(&str, String)], records: usize) {
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let config = esq::config::Config::load_with_env(&common::shipped_config(), vars).unwrap();
    let app = esq::app::App::from_config(config).unwrap();
    for _ in 0..records {
        let event = esq::audit::AuditEvent::event(
            esq::audit::AuditKind::Decision,
            esq::metrics::Door::http,
            "journalist",
        );
        app.audit.record(&event).unwrap();
    }
}

#[test]
fn a_broken_audit_chain_fails_au9_and_check_profile() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("esq.key");
    let run = esq(&["keys", "generate", "--out", key.to_str().unwrap()], &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let log = dir.path().join("audit.jsonl");
    let env = [
        ("ESQ_AUDIT__PATH", log.display().to_string()),
        ("ESQ_SIGNING__KEY_FILE", key.display().to_string()),
    ];
    write_audit_log(&env, 5);

    let intact = ssp(dir.path(), &env);
    let au9 = control(&intact, "AU-9");
    assert_eq!(au9["status"], "satisfied", "{au9}");
    assert_eq!(control(&intact, "AU-10")["status"], "satisfied");
    let run = esq(&["check", "--profile", "FedRAMP-Moderate"], &env);
    assert!(!unmet(&run).contains(&"AU-9".to_string()), "{}", run.stderr);

    // Record 3 changed: the prev of record 4 no longer matches.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = lines[2].replace("journalist", "clinician");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    let broken = ssp(dir.path(), &env);
    let au9 = control(&broken, "AU-9");
    assert_eq!(au9["status"], "not_satisfied", "{au9}");
    assert!(
        reason(au9).contains("the audit chain is broken at record 3 (audit.jsonl line 3)"),
        "{au9}"
    );
    let run = esq(&["check", "--profile", "FedRAMP-Moderate"], &env);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "AU-9 required by FedRAMP-Moderate is not_satisfied: the audit chain is broken at record 3"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn demo_config_without_tls_fails_sc8_and_fedramp_moderate() {
    let dir = tempfile::tempdir().unwrap();
    let plan = ssp(dir.path(), &[]);
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "not_satisfied", "{sc8}");
    assert!(reason(sc8).contains("plaintext"), "{sc8}");
    assert_eq!(plan["datasets"][0]["sensitivity"], "PHI");
    assert_eq!(control(&plan, "SC-28")["status"], "external");
    assert_eq!(control(&plan, "MP-6")["status"], "not_satisfied");

    let run = esq(&["check", "--profile", "FedRAMP-Moderate"], &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("SC-8 required by FedRAMP-Moderate is not_satisfied: no tls.cert/tls.key"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("profile   FedRAMP-Moderate:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("attest    SC-28"), "{}", run.stdout);
    // FISMA-Low does not require SC-8.
    let run = esq(&["check", "--profile", "FISMA-Low"], &[]);
    assert!(!unmet(&run).contains(&"SC-8".to_string()), "{}", run.stderr);
}

#[test]
fn tls_required_doors_alone_do_not_satisfy_sc8() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = door_tls(dir.path());
    env.push((
        "ESQ_SENTINEL__WEBHOOK",
        "https://hooks.example/esq-incidents".to_string(),
    ));
    // Nothing answers here: what needs the database cannot be verified.
    let port = common::free_port();
    env.push((
        "ESQ_UPSTREAM__URL",
        format!("postgres://esq_service@127.0.0.1:{port}/esq_demo"),
    ));
    let plan = ssp(dir.path(), &env);
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "not_satisfied", "{sc8}");
    assert_eq!(sc8["facts"]["tls.required"], true);
    assert_eq!(check(sc8, "refuse plaintext")["passed"], true);
    assert!(reason(sc8).contains("upstream"), "{sc8}");
    assert_eq!(control(&plan, "IR-4")["status"], "satisfied");
    let ac6 = control(&plan, "AC-6");
    assert_eq!(ac6["status"], "not_satisfied");
    assert!(
        reason(ac6).starts_with(&format!(
            "could not verify: cannot reach the upstream database at 127.0.0.1:{port}"
        )),
        "{ac6}"
    );

    let run = esq(&["check", "--profile", "FedRAMP-Moderate,HIPAA"], &env);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let missing = unmet(&run);
    for id in ["SC-8", "AC-6"] {
        assert!(missing.contains(&id.to_string()), "{}", run.stderr);
    }
    for id in ["AC-3", "IA-2", "IR-4", "SI-4", "SC-13"] {
        assert!(!missing.contains(&id.to_string()), "{}", run.stderr);
    }
}

#[test]
fn unknown_profiles_are_refused() {
    let run = esq(&["check", "--profile", "SOC2"], &[]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown compliance profile"),
        "{}",
        run.stderr
    );
}

/// The positive path exists: what a production deployment has (TLS on
/// every hop, a restricted service role, signed checkpoints, an https
/// webhook) meets FedRAMP Moderate, with only SC-28 left to attest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_like_deployment_meets_fedramp_moderate() {
    let fixture = Esq::builder().rows(50).tls_only_upstream().prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("esq.key");
    let run = esq(&["keys", "generate", "--out", key.to_str().unwrap()], &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let mut env: Vec<(&str, String)> = fixture
        .env()
        .iter()
        .filter(|(k, _)| k != "ESQ_AUDIT__PATH")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    env.extend(door_tls(dir.path()));
    env.extend([
        (
            "ESQ_AUDIT__PATH",
            dir.path().join("audit.jsonl").display().to_string(),
        ),
        ("ESQ_SIGNING__KEY_FILE", key.display().to_string()),
        (
            "ESQ_SENTINEL__WEBHOOK",
            "https://hooks.example/esq".to_string(),
        ),
    ]);
    write_audit_log(&env, 5);
    let run = esq(&["check", "--profile", "FedRAMP-Moderate"], &env);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("profile   FedRAMP-Moderate: 11 of 11 required controls met"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("attest    SC-28"), "{}", run.stdout);

    // CM-14: not without a seal key from outside the configuration; then
    // satisfied once the bundle is sealed with that key.
    env.push((
        "ESQ_SIGNING__SEAL_FILE",
        dir.path().join("esq.seal").display().to_string(),
    ));
    let unsealed = ssp(dir.path(), &env);
    assert_eq!(control(&unsealed, "CM-14")["status"], "not_satisfied");
    env.push(("ESQ_SEAL_KEY", format!("{}.pub", key.display())));
    let run = esq(&["seal"], &env);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let sealed = ssp(dir.path(), &env);
    let cm14 = control(&sealed, "CM-14");
    assert_eq!(cm14["status"], "satisfied", "{cm14}");
    assert!(sealed["system"]["bundle"]["seal"]
        .as_str()
        .unwrap()
        .starts_with("verified with key"));
}
