//! MP-6 and SI-12 say what the lifecycle has done, observed as the
//! maintenance role: SI-12 is met only once every dataset with a retention
//! was purged on schedule, MP-6 not while a forgotten subject's rows are
//! back in the database or the maintenance role may not delete what it
//! must; each names the fix.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::lifecycle::esq_run;
use serde_json::Value;

async fn plan(fixture: &Esq, env: &[(&str, &str)]) -> Value {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    fixture.plan(&env).await
}

fn control<'a>(ssp: &'a Value, id: &str) -> (&'a str, &'a str) {
    let found = ssp["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id}"));
    (
        found["status"].as_str().unwrap(),
        found["reason"].as_str().unwrap(),
    )
}

async fn superuser(fixture: &Esq, sql: &str) {
    fixture
        .pg()
        .connect()
        .await
        .batch_execute(sql)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp6_and_si12_follow_what_the_lifecycle_did() {
    let fixture = Esq::builder().lifecycle().rows(2_000).prepare().await;
    let maintenance = fixture
        .env()
        .iter()
        .find(|(k, _)| k == "ESQ_MAINTENANCE__URL")
        .map(|(_, url)| url.split(['/', '@']).nth(2).unwrap().to_string())
        .unwrap();

    let before = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "03:00")]).await;
    assert_eq!(
        control(&before, "MP-6").0,
        "satisfied",
        "{:?}",
        control(&before, "MP-6")
    );
    let (status, reason) = control(&before, "SI-12");
    assert_eq!(status, "not_satisfied");
    assert!(reason.contains("burial_2024 (never purged)"), "{reason}");

    let purged = esq_run(&fixture, "cli", &["purge"]).await;
    assert_eq!(purged.status, 0, "{}{}", purged.stdout, purged.stderr);
    let after = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "03:00")]).await;
    assert_eq!(
        control(&after, "SI-12").0,
        "satisfied",
        "{:?}",
        control(&after, "SI-12")
    );
    let (status, reason) = control(&after, "SI-12");
    let off = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "off")]).await;
    assert_eq!(
        control(&off, "SI-12").0,
        "not_satisfied",
        "{status} {reason}"
    );
    assert!(control(&off, "SI-12").1.contains("never deleted"));

    // The maintenance role must be able to delete the linked rows too.
    superuser(
        &fixture,
        &format!("REVOKE DELETE ON public.staff_notes FROM {maintenance}"),
    )
    .await;
    let revoked = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "03:00")]).await;
    let (status, reason) = control(&revoked, "MP-6");
    assert_eq!(status, "not_satisfied");
    assert!(
        reason.contains(&format!(
            "GRANT SELECT, DELETE ON public.staff_notes TO {maintenance};"
        )),
        "{reason}"
    );
    superuser(
        &fixture,
        &format!("GRANT DELETE ON public.staff_notes TO {maintenance}"),
    )
    .await;

    // A forgotten subject's row back in the table (a restored backup).
    let id: i64 = fixture
        .pg()
        .connect()
        .await
        .query_one("SELECT min(id) FROM burial_2024", &[])
        .await
        .unwrap()
        .get(0);
    superuser(
        &fixture,
        &format!("CREATE TABLE saved AS SELECT * FROM burial_2024 WHERE id = {id}"),
    )
    .await;
    common::lifecycle::forget_cli(&fixture, "cli", id).await;
    superuser(&fixture, "INSERT INTO burial_2024 SELECT * FROM saved").await;
    let back = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "03:00")]).await;
    let (status, reason) = control(&back, "MP-6");
    assert_eq!(status, "not_satisfied");
    assert!(
        reason.contains("1 rows of forgotten subjects are back") && reason.contains("--reapply"),
        "{reason}"
    );
    let reapplied = esq_run(&fixture, "cli", &["forget", "--reapply"]).await;
    assert_eq!(
        reapplied.status, 0,
        "{}{}",
        reapplied.stdout, reapplied.stderr
    );
    let clean = plan(&fixture, &[("ESQ_LIFECYCLE__PURGE_SCHEDULE", "03:00")]).await;
    assert_eq!(
        control(&clean, "MP-6").0,
        "satisfied",
        "{:?}",
        control(&clean, "MP-6")
    );
}
