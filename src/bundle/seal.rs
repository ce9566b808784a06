//! Seals: `esq seal` signs the bundle hash (and the digests it is made of)
//! with the `[signing]` key; in production `esq serve` and every reload
//! check that the bundle about to be served is the sealed one. A seal that
//! does not verify, was made by another key, or names other digests than
//! the files on disk is refused, and the message names what differs.
//!
//! Whose key counts: the one in `ESQ_SEAL_KEY` — from the environment
//! esq is started with, never from the configuration, since a
//! configuration that names the key vouching for it vouches for itself.
//! Serving sealed requires it. Commands that only report (`esq seal
//! --check`, the SSP) fall back to the public half of `signing.key_file`
//! when it is not set, and say so.
//!
//! The seal file is JSON; its signature covers
//! `esq-seal/v1\nbundle <hash>\nsealed_at <time>\n`, and the bundle hash
//! covers the three digests (see [`super::Parts::hash`]).

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::Parts;
use crate::config::Config;
use crate::signing::{KeyError, PublicKey, SigningKey};

const FORMAT: &str = "esq-seal/v1";

/// A seal as written to its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seal {
    pub format: String,
    pub bundle: String,
    pub parts: Parts,
    pub sealed_at: String,
    pub key_id: String,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no key to check the seal with: set ESQ_SEAL_KEY to the public half of the sealing key (or signing.key_file)")]
    NoKey,
    #[error("esq serves only a sealed bundle here, and the key to check the seal with must come from outside the configuration it protects: set ESQ_SEAL_KEY to the public half of the sealing key (`esq keys generate` writes it to FILE.pub)")]
    NoAnchoredKey,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the seal {path} cannot be read ({reason}): run `esq seal` after reviewing config, catalog and policies")]
    Missing { path: PathBuf, reason: String },
    #[error("the seal {path} is not an esq seal: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("the seal {path} does not verify: it was made by key {found} or altered, and key {expected} is the one trusted")]
    Forged {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the sealed bundle ({path}, sealed {sealed_at}) does not match what is on disk: {} changed since; refusing to serve an unsealed change (review it, then run `esq seal`)", differs.join(" and "))]
    Differs {
        path: PathBuf,
        sealed_at: String,
        differs: Vec<&'static str>,
    },
    #[error("cannot write the seal {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the seal on disk (sealed {sealed_at}) is older than the one esq last served (sealed {served}, audit record {seq}): a rollback to an earlier release is refused; to serve it on purpose, review and seal it again")]
    Rollback {
        sealed_at: String,
        served: String,
        seq: u64,
    },
    #[error("cannot read the audit log {path} to compare seals: {reason}")]
    AuditUnreadable { path: PathBuf, reason: String },
}

/// Where the seal of `config` lives.
pub fn seal_path(config: &Config) -> PathBuf {
    config.signing.seal_file.clone().unwrap_or_else(|| {
        let mut name = config.source.as_os_str().to_os_string();
        name.push(".seal");
        PathBuf::from(name)
    })
}

/// Signs `parts` with `key` and writes the seal (replacing the file
/// atomically).
pub fn write(config: &Config, parts: &Parts, key: &SigningKey) -> Result<Seal, SealError> {
    let bundle = parts.hash();
    let sealed_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let seal = Seal {
        format: FORMAT.to_string(),
        signature: key.sign(&message(&bundle, &sealed_at)),
        bundle,
        parts: parts.clone(),
        sealed_at,
        key_id: key.public().id().to_string(),
    };
    let path = seal_path(config);
    let failed = |reason: String| SealError::Write {
        path: path.clone(),
        reason,
    };
    let mut text = serde_json::to_string_pretty(&seal).map_err(|e| failed(e.to_string()))?;
    text.push('\n');
    let temporary = path.with_extension("seal.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| failed(e.to_string()))?;
    Ok(seal)
}

/// A seal that verified: by which key, and when it was made (signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: String,
    pub sealed_at: String,
}

impl Verified {
    /// When it was sealed (`None` if the signed time does not parse).
    pub fn time(&self) -> Option<chrono::DateTime<Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.sealed_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// As [`check`], for serving: only with the key from `ESQ_SEAL_KEY`.
pub fn check_for_serving(config: &Config, parts: &Parts) -> Result<Verified, SealError> {
    if config.seal_key.is_none() {
        return Err(SealError::NoAnchoredKey);
    }
    verify(config, parts)
}

/// Checks that `parts` are what the seal of `config` signed; the sealing
/// key's id when they are.
pub fn check(config: &Config, parts: &Parts) -> Result<String, SealError> {
    verify(config, parts).map(|verified| verified.key_id)
}

fn verify(config: &Config, parts: &Parts) -> Result<Verified, SealError> {
    let trusted = trusted_key(config)?;
    let path = seal_path(config);
    let text = std::fs::read_to_string(&path).map_err(|e| SealError::Missing {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let seal: Seal = serde_json::from_str(&text).map_err(|e| SealError::Malformed {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if seal.format != FORMAT {
        return Err(SealError::Malformed {
            path,
            reason: format!("format {:?}, expected {FORMAT:?}", seal.format),
        });
    }
    let verified = trusted
        .verify(&message(&seal.bundle, &seal.sealed_at), &seal.signature)
        .is_ok();
    if !verified || seal.parts.hash() != seal.bundle {
        return Err(SealError::Forged {
            path,
            found: seal.key_id,
            expected: trusted.id().to_string(),
        });
    }
    let mut differs = Vec::new();
    if seal.parts.config != parts.config {
        differs.push("the configuration (the file or its ESQ_… overrides)");
    }
    if seal.parts.catalog != parts.catalog {
        differs.push("the catalog files");
    }
    if seal.parts.policies != parts.policies {
        differs.push("the policy files");
    }
    if !differs.is_empty() {
        return Err(SealError::Differs {
            path,
            sealed_at: seal.sealed_at,
            differs,
        });
    }
    Ok(Verified {
        key_id: trusted.id().to_string(),
        sealed_at: seal.sealed_at,
    })
}

/// Refuses a start whose seal is older than the one the audit log says
/// esq served last (a restart must not roll back to an earlier release).
pub fn not_older_than_served(audit_base: &Path, sealed: &Verified) -> Result<(), SealError> {
    let last = crate::audit::files::last_served_seal(audit_base).map_err(|e| {
        SealError::AuditUnreadable {
            path: audit_base.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let Some((seq, served)) = last else {
        return Ok(());
    };
    let served_time = chrono::DateTime::parse_from_rfc3339(&served).ok();
    let this_time = chrono::DateTime::parse_from_rfc3339(&sealed.sealed_at).ok();
    if this_time < served_time {
        return Err(SealError::Rollback {
            sealed_at: sealed.sealed_at.clone(),
            served,
            seq,
        });
    }
    Ok(())
}

/// The key a seal must verify with: `ESQ_SEAL_KEY`, else (for reports
/// only) the public half of `signing.key_file`.
pub fn trusted_key(config: &Config) -> Result<PublicKey, SealError> {
    let path: &Path = match (&config.seal_key, &config.signing.key_file) {
        (Some(public), _) => public,
        (None, Some(private)) => private,
        (None, None) => return Err(SealError::NoKey),
    };
    Ok(PublicKey::load(path)?)
}

fn message(bundle: &str, sealed_at: &str) -> Vec<u8> {
    format!("{FORMAT}\nbundle {bundle}\nsealed_at {sealed_at}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path, key: &Path) -> Config {
        let path = dir.join("esq.toml");
        let text = format!(
            "[upstream]\nurl = \"postgres://esq@localhost/db\"\n[signing]\nkey_file = \"{}\"\n",
            key.display()
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        Config::load_with_env(&path, []).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parts(policies: &str) -> Parts {
        Parts {
            config: "c".repeat(64),
            catalog: "d".repeat(64),
            policies: policies.repeat(64),
        }
    }

    #[test]
    fn a_seal_verifies_only_for_the_sealed_parts_and_the_trusted_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key_path = dir.path().join("esq.key");
        let key = SigningKey::generate();
        key.write(&key_path).unwrap_or_else(|e| panic!("{e}"));
        let config = config_in(dir.path(), &key_path);
        assert_eq!(seal_path(&config), dir.path().join("esq.toml.seal"));

        assert!(matches!(
            check(&config, &parts("a")),
            Err(SealError::Missing { .. })
        ));
        let sealed = write(&config, &parts("a"), &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sealed.bundle, parts("a").hash());
        assert_eq!(
            check(&config, &parts("a")).ok().as_deref(),
            Some(key.public().id())
        );

        let changed = check(&config, &parts("b")).map(|_| ()).unwrap_err();
        assert!(
            changed.to_string().contains("the policy files"),
            "{changed}"
        );
        assert!(!changed.to_string().contains("catalog"), "{changed}");

        // Sealed by a key that is not the trusted one.
        let stranger = SigningKey::generate();
        write(&config, &parts("a"), &stranger).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            check(&config, &parts("a")),
            Err(SealError::Forged { .. })
        ));

        // The trusted key's seal, edited to name other digests.
        write(&config, &parts("a"), &key).unwrap_or_else(|e| panic!("{e}"));
        let path = seal_path(&config);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, text.replace(&"a".repeat(64), &"b".repeat(64)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            check(&config, &parts("b")),
            Err(SealError::Forged { .. })
        ));
        std::fs::write(&path, "{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            check(&config, &parts("a")),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn serving_trusts_only_the_key_from_the_environment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let release = SigningKey::generate();
        let release_path = dir.path().join("release.key");
        let release_public = release
            .write(&release_path)
            .unwrap_or_else(|e| panic!("{e}"));
        let node_path = dir.path().join("node.key");
        let node = SigningKey::generate();
        node.write(&node_path).unwrap_or_else(|e| panic!("{e}"));

        // The configuration's own key: fine for a report, not for serving.
        let mut config = config_in(dir.path(), &node_path);
        write(&config, &parts("a"), &node).unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&config, &parts("a")).is_ok());
        assert!(matches!(
            check_for_serving(&config, &parts("a")),
            Err(SealError::NoAnchoredKey)
        ));

        // ESQ_SEAL_KEY names the release key: a seal made with the key the
        // configuration names (which whoever edits it can change) fails.
        config.seal_key = Some(release_public);
        assert!(matches!(
            check_for_serving(&config, &parts("a")),
            Err(SealError::Forged { .. })
        ));
        write(&config, &parts("a"), &release).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            check_for_serving(&config, &parts("a"))
                .ok()
                .map(|v| v.key_id)
                .as_deref(),
            Some(release.public().id())
        );
        assert!(
            crate::bundle::seal_required(&config),
            "a seal key requires a seal"
        );
    }

    #[test]
    fn a_seal_key_that_cannot_be_read_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let node_path = dir.path().join("node.key");
        SigningKey::generate()
            .write(&node_path)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut config = config_in(dir.path(), &node_path);
        let missing = dir.path().join("release.key.pub");
        config.seal_key = Some(missing.clone());
        let error = check_for_serving(&config, &parts("a"))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, SealError::Key(_)), "{error:?}");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        std::fs::write(&missing, "not a key").unwrap_or_else(|e| panic!("{e}"));
        let error = check_for_serving(&config, &parts("a"))
            .map(|_| ())
            .unwrap_err();
        assert!(error.to_string().contains("esq keys generate"), "{error}");
    }

    #[test]
    fn without_a_key_nothing_can_be_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("esq.toml");
        std::fs::write(&path, "[upstream]\nurl = \"postgres://esq@localhost/db\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load_with_env(&path, []).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(check(&config, &parts("a")), Err(SealError::NoKey)));
    }
}
