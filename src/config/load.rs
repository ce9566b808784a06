//! Reading the config file and applying `ESQ_…` environment overrides.
//!
//! An override names a key path with `__` between the parts:
//! `ESQ_TICKETS__DEFAULT_TTL=10m` sets `tickets.default_ttl`,
//! `ESQ_USERS__JOURNALIST__CLEARANCE=PII` sets `users.journalist.clearance`.
//! The value is read as a TOML value when it is one (`true`, `16`,
//! `["a","b"]`) and as a string otherwise; where the file already holds a
//! string at that key, the value is always taken as a string. Environment
//! variables without `__` (such as `ESQ_CONFIG`) are not overrides.

use std::path::{Path, PathBuf};

use super::Config;

pub const ENV_PREFIX: &str = "ESQ_";
pub const ENV_SEPARATOR: &str = "__";
/// The public key seals must verify with (see [`super::Config::seal_key`]).
pub const SEAL_KEY_VAR: &str = "ESQ_SEAL_KEY";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax error, unknown key or bad value in the file; the message from
    /// `toml` carries line, column and the offending key.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value that parses but is not acceptable (names the key).
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The environment variable that overrides `key` (e.g. `tickets.store` →
/// `ESQ_TICKETS__STORE`).
pub fn env_var_for(key: &str) -> String {
    let parts: Vec<String> = key.split('.').map(|p| p.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", parts.join(ENV_SEPARATOR))
}

pub(super) fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };

    // The file alone first: its errors carry line and column.
    toml::from_str::<Config>(&text).map_err(|err| file_error(err.to_string().trim().into()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|err| file_error(err.to_string().trim().into()))?;
    reject_secrets_in_file(&table).map_err(file_error)?;

    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    let overrides = apply_env_overrides(&mut table, env.clone())?;
    let digest = digest(&table);
    let mut config = deserialize_with_overrides(table, &overrides, path)?;
    config.digest = digest;
    config.source = path.to_path_buf();
    config.seal_key = env
        .iter()
        .find(|(name, _)| name == SEAL_KEY_VAR)
        .map(|(_, value)| PathBuf::from(value))
        .filter(|path| !path.as_os_str().is_empty());
    config.env = env
        .into_iter()
        .map(|(name, value)| (name, super::Secret::new(value)))
        .collect();

    let base = path.parent().unwrap_or(Path::new("."));
    resolve_paths(&mut config, base);
    read_password_file(&mut config, path)?;
    super::metrics::load(&mut config.metrics, &config.server, base, path)?;
    super::validate::validate(&config).map_err(|(key, message)| {
        match overrides.iter().find(|o| o.key == key) {
            Some(o) => ConfigError::Env {
                var: o.var.clone(),
                message: format!("{key}: {message}"),
            },
            None => ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            },
        }
    })?;
    Ok(config)
}

/// Deserializes the merged table. An override read as a TOML value (say
/// `12345`) that does not fit its key is retried as the plain string it was.
fn deserialize_with_overrides(
    mut table: toml::Table,
    overrides: &[Override],
    path: &Path,
) -> Result<Config, ConfigError> {
    let mut as_strings: Vec<&Override> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(config) => return Ok(config),
            Err(error) => error,
        };
        let key = error.path().to_string();
        let message = error.inner().to_string();
        let culprit = overrides.iter().find(|o| key.starts_with(o.key.as_str()));
        match culprit {
            Some(o) if o.typed && !as_strings.iter().any(|done| done.key == o.key) => {
                let parts: Vec<String> = o.key.split('.').map(str::to_string).collect();
                let string = toml::Value::String(o.raw.clone());
                set_path(&mut table, &parts, string).map_err(|message| ConfigError::Env {
                    var: o.var.clone(),
                    message,
                })?;
                as_strings.push(o);
            }
            Some(o) => {
                return Err(ConfigError::Env {
                    var: o.var.clone(),
                    message: format!("{key}: {}", message.trim()),
                })
            }
            None => {
                return Err(ConfigError::File {
                    path: path.to_path_buf(),
                    message: format!("{key}: {}", message.trim()),
                })
            }
        }
    }
}

/// One applied `ESQ_…` override.
struct Override {
    /// `tickets.default_ttl`
    key: String,
    var: String,
    raw: String,
    /// Whether the value went in as a TOML value rather than a string.
    typed: bool,
}

fn reject_secrets_in_file(table: &toml::Table) -> Result<(), String> {
    for section in ["upstream", "maintenance"] {
        let has_password = table
            .get(section)
            .and_then(|u| u.as_table())
            .is_some_and(|u| u.contains_key("password"));
        if has_password {
            return Err(format!(
                "{section}.password: secrets do not belong in the config file; set {} or {section}.password_file",
                env_var_for(&format!("{section}.password"))
            ));
        }
    }
    Ok(())
}

/// Applies every `ESQ_A__B=v` to `table`.
/// SHA-256 of the merged table (file plus overrides) without the upstream
/// password: keys sorted, paths as written, so the same configuration
/// hashes the same wherever it is installed.
fn digest(table: &toml::Table) -> String {
    use sha2::{Digest, Sha256};
    let mut table = table.clone();
    for section in ["upstream", "maintenance"] {
        if let Some(toml::Value::Table(section)) = table.get_mut(section) {
            section.remove("password");
        }
    }
    let canonical = serde_json::to_vec(&table).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains(ENV_SEPARATOR))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let parts: Vec<String> = var[ENV_PREFIX.len()..]
            .split(ENV_SEPARATOR)
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "empty key segment: write ESQ_SECTION__KEY".into(),
            });
        }
        let existing_is_string = matches!(get_path(table, &parts), Some(toml::Value::String(_)));
        let value = if existing_is_string {
            toml::Value::String(raw.clone())
        } else {
            parse_value(&raw)
        };
        let typed = !value.is_str();
        set_path(table, &parts, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        applied.push(Override {
            key: parts.join("."),
            var,
            raw,
            typed,
        });
    }
    Ok(applied)
}

fn get_path<'a>(table: &'a toml::Table, parts: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = parts.split_first()?;
    rest.iter()
        .try_fold(table.get(first)?, |value, part| value.as_table()?.get(part))
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = parts.split_last().ok_or_else(|| "empty key".to_string())?;
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            format!(
                "{} is not a table, so it has no key {:?}",
                parts[..=depth].join("."),
                parts[depth + 1]
            )
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Holder {
        v: toml::Value,
    }
    match toml::from_str::<Holder>(&format!("v = {raw}")) {
        Ok(holder) => holder.v,
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = normalize(&base.join(&*p));
        }
    };
    resolve(&mut config.catalog.dir);
    resolve(&mut config.policy.dir);
    resolve(&mut config.audit.path);
    if let Some(ca) = config.upstream.ca_file.as_mut() {
        resolve(ca);
    }
    if let Some(cert) = config.tls.cert.as_mut() {
        resolve(cert);
    }
    if let Some(key) = config.tls.key.as_mut() {
        resolve(key);
    }
    if let Some(file) = config.upstream.password_file.as_mut() {
        resolve(file);
    }
    if let Some(file) = config
        .maintenance
        .as_mut()
        .and_then(|m| m.password_file.as_mut())
    {
        resolve(file);
    }
    if let Some(file) = config.lifecycle.subject_key_file.as_mut() {
        resolve(file);
    }
    for log in config.lifecycle.recover_from.iter_mut() {
        resolve(log);
    }
    for path in [
        config.exports.dir.as_mut(),
        config.exports.kek_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        resolve(path);
    }
    for path in [
        config.audit.checkpoint_copy.as_mut(),
        config.signing.key_file.as_mut(),
        config.signing.seal_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        resolve(path);
    }
}

/// Removes `.` and `name/..` pairs without touching the file system, so that
/// messages say `catalog/x.yaml` rather than `config/../catalog/x.yaml`.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

fn read_password_file(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let read = |key: &str, file: &Path| {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message: format!("cannot read {}: {err}", file.display()),
        })?;
        Ok::<_, ConfigError>(super::Secret::new(text.lines().next().unwrap_or("")))
    };
    if config.upstream.password.is_none() {
        if let Some(file) = &config.upstream.password_file {
            config.upstream.password = Some(read("upstream.password_file", file)?);
        }
    }
    if let Some(maintenance) = config.maintenance.as_mut() {
        if maintenance.password.is_none() {
            if let Some(file) = &maintenance.password_file {
                maintenance.password = Some(read("maintenance.password_file", file)?);
            }
        }
    }
    Ok(())
}
