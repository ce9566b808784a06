//! The binary works as installed, away from the source tree (what
//! `cargo install --path .` and the Debian package give): it is copied to
//! an empty directory and run from another one, with no `ESQ_…` variables;
//! the packaged configuration (`packaging/etc/esq.toml` with the shipped
//! catalog and policies, laid out as in `/etc/esq/`) loads and its policy
//! tests pass. `packaging/check` installs the real package.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::Run;

/// A copy of the test binary in a directory of its own.
fn installed_binary(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("a bin directory");
    let esq = bin.join("esq");
    std::fs::copy(env!("CARGO_BIN_EXE_esq"), &esq).expect("copying esq");
    esq
}

/// `esq ARGS` run in `cwd` with no ESQ_ variable from the caller.
fn run(esq: &Path, cwd: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    let mut command = Command::new(esq);
    command.current_dir(cwd).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("ESQ_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    Run::of(&mut command)
}

/// `/etc/esq/` as the package lays it out, under `root`.
fn packaged_etc(root: &Path) -> PathBuf {
    let etc = root.join("etc/esq");
    for (from, to) in [("catalog", "catalog"), ("policies", "policies")] {
        let dir = etc.join(to);
        std::fs::create_dir_all(&dir).expect("a directory");
        for entry in std::fs::read_dir(common::repo().join(from)).expect("the shipped files") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.join(name)).expect("copying");
        }
    }
    std::fs::copy(
        common::repo().join("packaging/etc/esq.toml"),
        etc.join("esq.toml"),
    )
    .expect("copying the packaged config");
    // What postinst generates.
    std::fs::write(etc.join("upstream.password"), "generated-1\n").expect("a password");
    std::fs::write(etc.join("maintenance.password"), "generated-2\n").expect("a password");
    etc
}

#[test]
fn the_packaged_config_loads_outside_the_checkout() {
    let root = tempfile::tempdir().expect("a directory");
    let esq = installed_binary(root.path());
    let etc = packaged_etc(root.path());
    let elsewhere = root.path().join("cwd");
    std::fs::create_dir_all(&elsewhere).expect("a directory");
    let key = root.path().join("signing.key");
    let generated = run(
        &esq,
        &elsewhere,
        &[],
        &["keys", "generate", "--out", "../signing.key"],
    );
    assert_eq!(generated.status, 0, "{}", generated.stderr);
    assert!(
        key.exists(),
        "keys generate writes relative to the working directory"
    );

    let config = etc.join("esq.toml").display().to_string();
    // The packaged key path is /var/lib/esq/signing.key; here a key of its own.
    let env = [("ESQ_SIGNING__KEY_FILE", key.display().to_string())];
    let check = run(&esq, &elsewhere, &env, &["--config", &config, "check"]);
    assert_eq!(check.status, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("0 users"), "{}", check.stdout);
    assert!(
        check.stdout.contains("environment staging"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("2 datasets"), "{}", check.stdout);
    assert!(
        check.stdout.contains("tests passed") && !check.stdout.contains(" 0 of "),
        "{}",
        check.stdout
    );

    // Its SQL names the packaged roles (and the generated passwords only as
    // verifiers).
    let setup = run(
        &esq,
        &elsewhere,
        &env,
        &["--config", &config, "setup", "upstream", "--with-passwords"],
    );
    assert_eq!(setup.status, 0, "{}", setup.stderr);
    assert!(setup.stdout.contains("CREATE ROLE \"esq_service\" LOGIN"));
    assert!(setup
        .stdout
        .contains("CREATE ROLE \"esq_maintenance\" LOGIN"));
    assert!(!setup.stdout.contains("generated-1"), "{}", setup.stdout);
}

#[test]
fn without_a_config_the_binary_says_which_file_it_looked_for() {
    let root = tempfile::tempdir().expect("a directory");
    let esq = installed_binary(root.path());
    let version = run(&esq, root.path(), &[], &["--version"]);
    assert_eq!(version.status, 0);
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );
    let check = run(&esq, root.path(), &[], &["check"]);
    assert_eq!(check.status, 2, "{}", check.stderr);
    assert!(check.stderr.contains("config/esq.toml"), "{}", check.stderr);
}

#[test]
fn the_packaged_config_has_no_users_and_no_secrets() {
    let text = std::fs::read_to_string(common::repo().join("packaging/etc/esq.toml"))
        .expect("the packaged config");
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for line in &settings {
        assert!(
            !line.starts_with("[users.")
                && !line.starts_with("scram_verifier")
                && !line.starts_with("api_token_sha256"),
            "users (and their demo secrets) are the operator's: {line}"
        );
    }
    assert!(settings.contains(&"password_file = \"upstream.password\""));
}
