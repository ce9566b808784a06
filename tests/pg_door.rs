//! The PostgreSQL door end to end: real psql, pgbench and drivers talk to
//! esq (started in-process on a free port), which talks to a real
//! PostgreSQL with the sample data.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::pg_client::{connect_as, connect_with_ticket, psql};
use common::wire::{
    bind, close_statement, codes, data_row_widths, execute, message, parse, query, rows, sync, Raw,
};
use common::Doors;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_scram_sees_metadata_foia_counts_and_denials() {
    let esq = Esq::builder().start().await;
    let url = esq.libpq_url("journalist", "journalist");

    // Metadata works without a ticket.
    let (status, out, err) = psql(&url, None, &["\\dt", "\\d burial_2024"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("burial_2024"), "{out}");
    assert!(out.contains("burial_date"), "{out}");

    // Without a ticket, data is refused with a hint on how to get one.
    let (_, _, err) = psql(
        &url,
        None,
        &["SELECT state, count(*) FROM burial_2024 GROUP BY state"],
    )
    .await;
    assert!(err.contains("SET esq.ticket"), "{err}");

    // The FOIA story: per-state counts (private: noisy, small states left
    // out, a notice says what the answer spent).
    let ticket = esq.foia_ticket().await;
    let (status, out, err) = psql(
        &url,
        None,
        &[
            &format!("SET esq.ticket = '{ticket}'"),
            "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state",
        ],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    let counts: Vec<i64> = out
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert!(counts.len() > 10, "{out}");
    assert!(
        counts.iter().all(|c| *c >= 11),
        "small groups suppressed: {out}"
    );
    assert!(err.contains("privacy budget"), "the notice: {err}");

    // PII is denied with SQLSTATE 42501 and a hint.
    let (_, _, err) = psql(
        &url,
        Some(&format!("-c esq.ticket={ticket}")),
        &["\\set VERBOSITY verbose", "SELECT ssn FROM burial_2024"],
    )
    .await;
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("HINT"), "{err}");

    // A wrong password is refused.
    let (status, _, err) = psql(&esq.libpq_url("journalist", "wrong"), None, &["SELECT 1"]).await;
    assert_ne!(status, 0);
    assert!(err.contains("password authentication failed"), "{err}");
}

/// The clinician's row-level ticket (no ssn, dob or cause of death).
async fn clinician_ticket(esq: &Esq) -> String {
    esq.ticket(
        "clinician",
        serde_json::json!({"dataset": "burial_2024", "purpose": "treatment",
                           "fields": ["id", "name", "state", "county", "burial_date", "branch"]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_and_tls_required() {
    let certs = tempfile::tempdir().unwrap();
    let files = esq::tls::make_dev_certs(certs.path()).unwrap();
    let esq = Esq::builder()
        .env("ESQ_TLS__CERT", files.server_cert.display().to_string())
        .env("ESQ_TLS__KEY", files.server_key.display().to_string())
        .env("ESQ_TLS__REQUIRED", "true")
        .start()
        .await;
    let tls_url = format!(
        "postgresql://journalist:journalist@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}",
        esq.pg_addr().port(),
        esq.database(),
        files.ca_cert.display()
    );
    let (status, out, err) = psql(
        &tls_url,
        None,
        &[
            "SELECT ssl FROM pg_catalog.pg_stat_ssl LIMIT 0",
            "\\conninfo",
        ],
    )
    .await;
    assert!(out.contains("SSL connection"), "{out}\n{err}");
    let _ = status;
    let (status, _, err) = psql(
        &esq.libpq_url("journalist", "journalist"),
        None,
        &["SELECT 1"],
    )
    .await;
    assert_ne!(status, 0);
    assert!(err.contains("esq requires TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_ticket_drops_columns_with_a_notice_and_sanitizes_errors() {
    let esq = Esq::builder().start().await;
    let ticket = clinician_ticket(&esq).await;
    let url = esq.libpq_url("clinician", "clinician");
    let (status, out, err) = psql(
        &url,
        Some(&format!("-c esq.ticket={ticket}")),
        &["SELECT * FROM burial_2024 LIMIT 3"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("burial_date") && header.contains("name"),
        "{out}"
    );
    assert!(!header.contains("ssn") && !header.contains("dob"), "{out}");
    assert!(err.contains("NOTICE") && err.contains("ssn"), "{err}");

    // A backend error keeps its SQLSTATE but not the value it quoted.
    let client = connect_with_ticket(&esq, &ticket).await;
    let sample: String = client
        .query_one("SELECT county FROM burial_2024 LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let error = client
        .query("SELECT county::int FROM burial_2024", &[])
        .await
        .unwrap_err();
    let db = error.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "22P02");
    assert!(!db.message().contains(&sample), "{}", db.message());
    assert!(db.detail().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepares_with_parameters_and_a_revoked_ticket_goes_stale() {
    let esq = Esq::builder().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    let statement = client
        .prepare("SELECT state, count(*) FROM burial_2024 WHERE state = $1 GROUP BY state")
        .await
        .unwrap();
    for _ in 0..2 {
        let rows = client.query(&statement, &[&"CA"]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].get::<_, i64>(1) >= 11);
    }
    // Small groups are suppressed for parameters too.
    let small = client.query(&statement, &[&"SD"]).await.unwrap();
    assert!(small.iter().all(|r| r.get::<_, i64>(1) >= 11));
    // Denied statements fail at Parse with the guard's SQLSTATE.
    let denied = client
        .prepare("SELECT ssn FROM burial_2024")
        .await
        .unwrap_err();
    assert_eq!(denied.as_db_error().unwrap().code().code(), "42501");
    // The session survives a denial.
    assert_eq!(client.query(&statement, &[&"TX"]).await.unwrap().len(), 1);

    // Pipelined (tokio-postgres sends all three before reading): answers
    // come back in order, the denial in its own place.
    let (first, denied, third) = tokio::join!(
        client.query(&statement, &[&"CA"]),
        client.query("SELECT name FROM burial_2024", &[]),
        client.simple_query("SELECT state, count(*) FROM burial_2024 GROUP BY state"),
    );
    assert_eq!(first.unwrap().len(), 1);
    assert_eq!(
        denied.unwrap_err().as_db_error().unwrap().code().code(),
        "42501"
    );
    assert!(third.unwrap().len() > 10);

    // Revoked mid-session: the next statement is "ticket stale" (28000),
    // also for the statement prepared earlier.
    esq.revoke(&ticket).await;
    let stale = client.query(&statement, &[&"CA"]).await.unwrap_err();
    let db = stale.as_db_error().unwrap();
    assert_eq!((db.code().code(), db.message()), ("28000", "ticket stale"));
    let stale = client
        .simple_query("SELECT state, count(*) FROM burial_2024 GROUP BY state")
        .await
        .unwrap_err();
    assert_eq!(stale.as_db_error().unwrap().code().code(), "28000");
    // Metadata still works, and a fresh ticket set in the session works.
    let fresh = esq.foia_ticket().await;
    client
        .simple_query(&format!("SET esq.ticket = '{fresh}'"))
        .await
        .unwrap();
    assert_eq!(
        client
            .query(&statement, &[&"CA"])
            .await
            .unwrap_err()
            .as_db_error()
            .unwrap()
            .code()
            .code(),
        "28000",
        "a statement prepared under the revoked ticket stays stale"
    );
    let again = client
        .query(
            "SELECT state, count(*) FROM burial_2024 WHERE state = $1 GROUP BY state",
            &[&"CA"],
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_long_query_and_large_results_stream_in_flat_memory() {
    let esq = Esq::builder().start().await;
    let ticket = clinician_ticket(&esq).await;
    let client = connect_with_ticket(&esq, &ticket).await;

    // The cancel goes through esq once PostgreSQL is running the query.
    let cancel = client.cancel_token();
    let direct = esq.pg().connect().await;
    let canceller = tokio::spawn(async move {
        wait_for_cross_join(&direct).await;
        cancel.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let error = client
        .query(
            "SELECT count(*) FROM burial_2024 a CROSS JOIN burial_2024 b CROSS JOIN burial_2024 c",
            &[],
        )
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_cancelled_by_user(&error);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // 1,000,000 rows through esq: memory stays flat.
    use futures_util::TryStreamExt;
    let before = rss_kib();
    let rows = client
        .query_raw(
            "SELECT a.id, a.county FROM burial_2024 a CROSS JOIN burial_2024 b LIMIT 1000000",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let mut count = 0u64;
    let mut peak = before;
    while let Some(_row) = rows.try_next().await.unwrap() {
        count += 1;
        if count.is_multiple_of(50_000) {
            peak = peak.max(rss_kib());
        }
    }
    assert_eq!(count, 1_000_000);
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    println!("1M-row stream: RSS before {before} KiB, peak {peak} KiB (+{growth_mib:.1} MiB)");
    assert!(
        growth_mib < 64.0,
        "RSS grew by {growth_mib:.1} MiB while streaming"
    );
}

/// Waits until PostgreSQL has been running the test's cross join for a
/// while (a prepare round shows the text as active too, for a moment).
async fn wait_for_cross_join(direct: &tokio_postgres::Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = direct
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%CROSS JOIN%' AND datname = current_database() \
                 AND pid <> pg_backend_pid() \
                 AND clock_timestamp() - query_start > interval '200 milliseconds'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if !rows.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cross join never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A cancel request ended the statement (not the statement timeout, which
/// has the same SQLSTATE).
fn assert_cancelled_by_user(error: &tokio_postgres::Error) {
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(db.code().code(), "57014", "{error}");
    assert!(
        db.message().contains("user request"),
        "ended by something else: {}",
        db.message()
    );
}

/// A cancel sent while esq is still deciding the statement (here: waiting
/// for a frozen Redis ticket store) reaches the statement once esq has
/// forwarded it; PostgreSQL alone, idle when the cancel first came, would
/// have dropped it and run the query to the statement timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_while_esq_decides_still_cancels_the_statement() {
    let esq = Esq::builder()
        .private_redis()
        .env("ESQ_TICKETS__STORE_TIMEOUT", "20s")
        .start()
        .await;
    let ticket = clinician_ticket(&esq).await;
    let client = connect_with_ticket(&esq, &ticket).await;
    client
        .simple_query("SELECT count(*) FROM burial_2024")
        .await
        .unwrap();
    // Past tickets.validation_cache, the next statement asks Redis again.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    esq.redis().pause();
    let cancel = client.cancel_token();
    // Cancels every 100 ms for 2 s, all before Redis answers again: one
    // that comes before esq has read the statement does nothing, so only a
    // cancel esq held can end the statement.
    let canceller = async {
        let mut sent = Ok(());
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            sent = sent.and(cancel.cancel_query(tokio_postgres::NoTls).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        esq.redis().resume();
        sent
    };
    let started = std::time::Instant::now();
    let query = client.simple_query(
        "SELECT count(*) FROM burial_2024 a CROSS JOIN burial_2024 b CROSS JOIN burial_2024 c",
    );
    let (answer, sent) = tokio::join!(query, canceller);
    sent.unwrap();
    let error = answer.expect_err("the cross join was cancelled");
    assert_cancelled_by_user(&error);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_simple_extended_and_prepared_modes() {
    let esq = Esq::builder().rows(2_000).pgbench().start().await;
    let ticket = esq
        .ticket(
            "journalist",
            serde_json::json!({"dataset": "pgbench_accounts", "purpose": "benchmark",
                               "fields": ["aid", "abalance"]}),
        )
        .await;
    let script = common::repo().join("bench/pgbench_select_only.sql");
    for mode in ["simple", "extended", "prepared"] {
        let out = tokio::process::Command::new("pgbench")
            .args(["-n", "-c", "4", "-j", "2", "-t", "100", "-M", mode, "-f"])
            .arg(&script)
            .arg(esq.libpq_url("journalist", "journalist"))
            .env("PGOPTIONS", format!("-c esq.ticket={ticket}"))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench -M {mode}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("number of transactions actually processed: 400/400"),
            "pgbench -M {mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_one_connection_and_the_door_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let esq = Esq::builder().rows(1_000).start().await;
    let addr = esq.pg_addr();
    let ticket = esq.foia_ticket().await;

    // Garbage before the startup packet, and bytes of every kind.
    for garbage in [
        vec![0u8; 3],
        vec![0xff; 64],
        vec![0, 0, 0, 8, 0, 3, 0, 0],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(&garbage).await;
        let _ = tcp.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tcp.read_to_end(&mut sink),
        )
        .await
        .expect("esq closes a connection it cannot read");
    }

    // After authenticating: an unknown message type and an oversized message.
    for bad in [
        b"z\0\0\0\x04".to_vec(),
        [b"Q".to_vec(), 0x4000_0000u32.to_be_bytes().to_vec()].concat(),
    ] {
        let mut raw = Raw::login(&esq, &ticket).await;
        raw.send(&[bad]).await;
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            raw.until_ready_or_close(),
        )
        .await
        .expect("closed");
        assert_eq!(codes(&answer), ["08P01"]);
    }

    let metrics = esq.app().metrics.render();
    assert!(
        metrics.contains("esq_protocol_errors_total{door=\"pg\"}"),
        "{metrics}"
    );
    let (status, _, err) = psql(&esq.libpq_url("journalist", "journalist"), None, &["\\dt"]).await;
    assert_eq!(status, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_sessions_cleanly_then_esq_recovers() {
    let esq = Esq::builder().rows(1_000).private_postgres().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    client
        .simple_query("SELECT 1 FROM pg_catalog.pg_class LIMIT 1")
        .await
        .unwrap();
    esq.pg().restart().await;
    let lost = client
        .simple_query("SELECT 1 FROM pg_catalog.pg_class LIMIT 1")
        .await
        .unwrap_err();
    println!("after restart: {lost}");
    // A new session works without restarting esq.
    let fresh = connect_with_ticket(&esq, &ticket).await;
    let rows = fresh
        .query(
            "SELECT state, count(*) FROM burial_2024 GROUP BY state",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_busy_sessions_and_ends_idle_ones_with_57p01() {
    // 10,000 rows: the busy statement below runs for seconds, and the
    // grace period is long enough for it on a loaded machine.
    let mut esq = Esq::builder()
        .rows(10_000)
        .env("ESQ_PG__SHUTDOWN_GRACE", "120s")
        .start()
        .await;
    let ticket = esq.foia_ticket().await;
    let idle = connect_with_ticket(&esq, &ticket).await;
    idle.simple_query("SELECT 1 FROM pg_catalog.pg_class LIMIT 1")
        .await
        .unwrap();
    let busy = connect_with_ticket(&esq, &clinician_ticket(&esq).await).await;
    let in_flight = tokio::spawn(async move {
        let answer = busy
            .query_one(
                "SELECT count(*) FROM burial_2024 a CROSS JOIN burial_2024 b",
                &[],
            )
            .await;
        (answer, busy)
    });
    wait_for_cross_join(&esq.pg().connect().await).await;
    tokio::time::timeout(std::time::Duration::from_secs(150), esq.stop())
        .await
        .expect("sessions drain within the grace period");
    // The statement in flight finished; the idle session was ended.
    let (answer, busy) = in_flight.await.unwrap();
    assert!(answer.unwrap().get::<_, i64>(0) > 10_000_000);
    assert!(busy.simple_query("SELECT 1").await.is_err());
    let ended = idle.simple_query("SELECT 1").await.unwrap_err();
    println!("idle session at shutdown: {ended}");
    assert!(idle.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_revoked_tickets_stop_statements_portals_and_name_reuse() {
    let esq = Esq::builder().rows(2_000).start().await;

    // A statement prepared under a ticket, then its name re-prepared as a
    // ticket statement after revocation: the name is not replaced, and the
    // old statement never runs again.
    let ticket = clinician_ticket(&esq).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse("x", "SELECT name FROM burial_2024 LIMIT 3"), sync()])
        .await;
    assert!(codes(&raw.until_ready().await).is_empty());
    esq.revoke(&ticket).await;
    raw.send(&[parse("x", "RESET esq.ticket"), sync()]).await;
    assert_eq!(codes(&raw.until_ready().await), ["42P05"]);
    raw.send(&[bind("", "x"), execute("", 0), sync()]).await;
    let answer = raw.until_ready().await;
    assert_eq!(codes(&answer), ["28000"]);
    assert_eq!(rows(&answer), 0);

    // A suspended portal stops at the next Execute after revocation.
    let ticket = clinician_ticket(&esq).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[query("BEGIN")]).await;
    raw.until_ready().await;
    raw.send(&[
        parse("", "SELECT name FROM burial_2024"),
        bind("p", ""),
        execute("p", 1),
        sync(),
    ])
    .await;
    let first = raw.until_ready().await;
    assert_eq!((rows(&first), codes(&first).len()), (1, 0));
    esq.revoke(&ticket).await;
    raw.send(&[execute("p", 5), sync()]).await;
    let after = raw.until_ready().await;
    assert_eq!(rows(&after), 0);
    assert_eq!(codes(&after), ["28000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_ticket_statements_skipped_by_an_error_do_not_apply() {
    let esq = Esq::builder().rows(2_000).start().await;
    let ticket = esq.foia_ticket().await;
    let mut raw = Raw::login(&esq, &ticket).await;
    // A denied statement first: PostgreSQL skips the rest of the pipeline,
    // so the RESET after it must not take effect either.
    raw.send(&[
        parse("", "SELECT ssn FROM burial_2024"),
        bind("", ""),
        execute("", 0),
        parse("r", "RESET esq.ticket"),
        bind("", "r"),
        execute("", 0),
        sync(),
    ])
    .await;
    assert_eq!(codes(&raw.until_ready().await), ["42501"]);
    raw.send(&[query(
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    )])
    .await;
    let answer = raw.until_ready().await;
    assert!(codes(&answer).is_empty(), "{:?}", codes(&answer));
    assert!(rows(&answer) > 10);
    // The statement name from the skipped Parse is unknown, not a RESET.
    raw.send(&[bind("", "r"), execute("", 0), sync()]).await;
    assert_eq!(codes(&raw.until_ready().await), ["26000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_one_user_cannot_take_every_upstream_connection() {
    let esq = Esq::builder()
        .rows(1_000)
        .env("ESQ_PG__MAX_SESSIONS_PER_USER", "2")
        .start()
        .await;
    let ticket = esq.foia_ticket().await;
    let _one = connect_with_ticket(&esq, &ticket).await;
    let _two = connect_with_ticket(&esq, &ticket).await;
    let third = connect_as(&esq, "journalist", "journalist")
        .await
        .expect_err("a third session for the same user is refused");
    assert_eq!(third.as_db_error().unwrap().code().code(), "53300");
    // Another user still gets in.
    let other = clinician_ticket(&esq).await;
    connect_with_ticket(&esq, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_used_and_verified_when_the_url_requires_it() {
    // The database refuses the service role without TLS (the harness
    // checks that a plaintext login fails); esq verifies it with the test CA.
    let esq = Esq::builder().rows(1_000).tls_only_upstream().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    let rows = client
        .query(
            "SELECT state, count(*) FROM burial_2024 GROUP BY state",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());

    // A CA that did not sign the database's certificate: esq refuses.
    let other = tempfile::tempdir().unwrap();
    let other_ca = esq::tls::make_dev_certs(other.path()).unwrap().ca_cert;
    let wrong = Esq::builder()
        .rows(10)
        .tls_only_upstream()
        .upstream_ca(other_ca)
        .start()
        .await;
    let ticket = wrong.foia_ticket().await;
    let refused = connect_as(&wrong, "ticket", &ticket)
        .await
        .expect_err("no session without a verified upstream");
    assert_eq!(refused.as_db_error().unwrap().code().code(), "08006");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_skipped_parse_and_close_never_let_an_old_statement_run() {
    let esq = Esq::builder().rows(2_000).start().await;
    let metadata = "SELECT relname FROM pg_catalog.pg_class LIMIT 1";

    // A Close skipped after an error: the statement is still there, with
    // its (now revoked) ticket.
    let ticket = clinician_ticket(&esq).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse("s1", "SELECT name FROM burial_2024 LIMIT 2"), sync()])
        .await;
    assert!(codes(&raw.until_ready().await).is_empty());
    esq.revoke(&ticket).await;
    raw.send(&[query("RESET esq.ticket")]).await;
    raw.until_ready().await;
    raw.send(&[
        parse("", "SELECT ssn FROM burial_2024"),
        close_statement("s1"),
        sync(),
        parse("s1", metadata),
        sync(),
        bind("", "s1"),
        execute("", 0),
        sync(),
    ])
    .await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.extend(raw.until_ready().await);
    }
    assert_eq!(rows(&answers), 0, "the old statement must not run");
    assert_eq!(codes(&answers), ["42501", "42P05", "28000"]);

    // The unnamed statement: a new one skipped after an error leaves the
    // old one, which is checked against its own ticket.
    let ticket = clinician_ticket(&esq).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse("", "SELECT name FROM burial_2024 LIMIT 2"), sync()])
        .await;
    raw.until_ready().await;
    esq.revoke(&ticket).await;
    raw.send(&[query("RESET esq.ticket")]).await;
    raw.until_ready().await;
    raw.send(&[
        parse("x", "SELECT ssn FROM burial_2024"),
        parse("", metadata),
        sync(),
        bind("", ""),
        execute("", 0),
        sync(),
    ])
    .await;
    let mut answers = raw.until_ready().await;
    answers.extend(raw.until_ready().await);
    assert_eq!(rows(&answers), 0, "the old unnamed statement must not run");
    assert_eq!(codes(&answers), ["42501", "28000"]);

    // A Query inside an unfinished extended batch closes the connection
    // (PostgreSQL might run it or skip it: esq cannot know which).
    let ticket = esq.foia_ticket().await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[parse("", "SELECT ssn FROM burial_2024"), query(metadata)])
        .await;
    let answer = raw.until_ready_or_close().await;
    assert!(
        codes(&answer).contains(&"08P01".to_string()),
        "{:?}",
        codes(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ticket_does_not_trap_rollback_and_deallocate_frees_names() {
    let esq = Esq::builder().rows(1_000).start().await;
    let ticket = clinician_ticket(&esq).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    raw.send(&[query("BEGIN")]).await;
    raw.until_ready().await;
    esq.revoke(&ticket).await;
    raw.send(&[query("SELECT name FROM burial_2024 LIMIT 1")])
        .await;
    assert_eq!(codes(&raw.until_ready().await), ["28000"]);
    raw.send(&[query("ROLLBACK")]).await;
    let answer = raw.until_ready().await;
    assert!(codes(&answer).is_empty(), "{:?}", codes(&answer));
    assert_eq!(
        answer.last().map(|(_, body)| body.clone()),
        Some(b"I".to_vec())
    );

    let metadata = "SELECT relname FROM pg_catalog.pg_class LIMIT 1";
    raw.send(&[parse("s", metadata), sync()]).await;
    assert!(codes(&raw.until_ready().await).is_empty());
    raw.send(&[query("DEALLOCATE s")]).await;
    assert!(codes(&raw.until_ready().await).is_empty());
    raw.send(&[parse("s", metadata), bind("", "s"), execute("", 0), sync()])
        .await;
    let answer = raw.until_ready().await;
    assert!(codes(&answer).is_empty(), "{:?}", codes(&answer));
    assert_eq!(rows(&answer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_a_refused_ticket_statement_fails_its_pipeline_like_any_error() {
    let esq = Esq::builder().rows(1_000).start().await;
    let live = clinician_ticket(&esq).await;
    let revoked = clinician_ticket(&esq).await;
    esq.revoke(&revoked).await;
    let mut raw = Raw::login(&esq, &live).await;
    raw.send(&[
        parse("t", &format!("SET esq.ticket = '{revoked}'")),
        bind("", "t"),
        execute("", 0),
        parse("q", "SELECT relname FROM pg_catalog.pg_class LIMIT 1"),
        bind("", "q"),
        execute("", 0),
        sync(),
    ])
    .await;
    let answer = raw.until_ready().await;
    // After the error, nothing more of the pipeline runs (PostgreSQL agrees).
    assert_eq!(codes(&answer), ["28000"]);
    assert_eq!(rows(&answer), 0);
    let tags: Vec<u8> = answer.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(
        tags, b"12EZ",
        "ParseComplete, BindComplete, the error, ReadyForQuery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_team_pipelined_ticket_changes_govern_what_follows_them() {
    let esq = Esq::builder().rows(1_000).start().await;
    let with_names = clinician_ticket(&esq).await;
    let ids_only = esq
        .ticket(
            "clinician",
            serde_json::json!({"dataset": "burial_2024", "purpose": "treatment",
                               "fields": ["id", "state"]}),
        )
        .await;
    let mut raw = Raw::login(&esq, &with_names).await;
    // Both in one write: the SELECT must be decided under the new ticket.
    raw.send(&[
        query(&format!("SET esq.ticket = '{ids_only}'")),
        query("SELECT id, name FROM burial_2024 ORDER BY id LIMIT 1"),
    ])
    .await;
    raw.until_ready().await;
    let answer = raw.until_ready().await;
    assert_eq!(data_row_widths(&answer), [1], "name was dropped");

    // The same in one extended round: SET, then a statement after it.
    raw.send(&[query(&format!("SET esq.ticket = '{with_names}'"))])
        .await;
    raw.until_ready().await;
    raw.send(&[
        parse("t", &format!("SET esq.ticket = '{ids_only}'")),
        bind("", "t"),
        execute("", 0),
        parse("", "SELECT id, name FROM burial_2024 ORDER BY id LIMIT 1"),
        bind("", ""),
        execute("", 0),
        sync(),
    ])
    .await;
    let answer = raw.until_ready().await;
    assert_eq!(data_row_widths(&answer), [1], "name was dropped");

    // A prepared ROLLBACK keeps working after the ticket is revoked.
    raw.send(&[parse("r", "ROLLBACK"), sync(), query("BEGIN")])
        .await;
    raw.until_ready().await;
    raw.until_ready().await;
    esq.revoke(&ids_only).await;
    raw.send(&[bind("", "r"), execute("", 0), sync()]).await;
    let answer = raw.until_ready().await;
    assert!(codes(&answer).is_empty(), "{:?}", codes(&answer));
    assert_eq!(answer.last().map(|(_, b)| b.clone()), Some(b"I".to_vec()));

    // A round esq would have to journal without end is refused.
    let closes: Vec<Vec<u8>> = (0..10_001)
        .map(|i| message(b'C', format!("Pp{i}\0").as_bytes()))
        .collect();
    raw.send(&closes).await;
    raw.send(&[sync()]).await;
    let answer = raw.until_ready_or_close().await;
    assert_eq!(codes(&answer), ["08P01"]);
}
