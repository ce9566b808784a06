//! `[exports]` (DESIGN 3.9): where encrypted export bundles are written,
//! the key-encryption key that wraps their data keys, and how many jobs
//! one esq runs at once. Exports also need `[maintenance]`: their jobs and
//! the consent ledger live in schema `esq`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Where bundles (`<job>.enc`, mode 0600) and the work files of
    /// running jobs are written (a directory every replica shares). Unset:
    /// exports are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The key-encryption key (`esq kek generate --out F`). Secret: keep it
    /// out of the repository, mode 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_file: Option<PathBuf>,
    /// Jobs one esq runs at the same time. Default 1.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// How often an idle esq looks for queued jobs. Default `2s`.
    #[serde(default = "default_poll", with = "duration")]
    pub poll: Duration,
    /// A job whose runner has not reported for this long is taken over
    /// (its esq stopped or died): it starts again from the beginning, or
    /// fails after `max_attempts`. Default `60s`.
    #[serde(default = "default_stale_after", with = "duration")]
    pub stale_after: Duration,
    /// Attempts before an interrupted job ends `FAILED`. Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Retention of a bundle when the request names none. Default 90.
    #[serde(default = "default_retention_days")]
    pub default_retention_days: u32,
    /// The longest retention a request may ask for. Default 365.
    #[serde(default = "default_max_retention_days")]
    pub max_retention_days: u32,
    /// A URL that gets a POST of `{"event":"export_completed",…}` (job,
    /// dataset, requester, rows, bundle SHA-256; never data) when a job
    /// completes. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// How long the export's query may run. Default `30m`.
    #[serde(default = "default_statement_timeout", with = "duration")]
    pub statement_timeout: Duration,
    /// The most rows one export may hold; a larger answer fails the job.
    /// Default 10 000 000.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            dir: None,
            kek_file: None,
            workers: default_workers(),
            poll: default_poll(),
            stale_after: default_stale_after(),
            max_attempts: default_max_attempts(),
            default_retention_days: default_retention_days(),
            max_retention_days: default_max_retention_days(),
            webhook: None,
            statement_timeout: default_statement_timeout(),
            max_rows: default_max_rows(),
        }
    }
}

impl ExportsConfig {
    /// Exports are on when both a directory and a KEK are configured.
    pub fn enabled(&self) -> bool {
        self.dir.is_some() && self.kek_file.is_some()
    }
}

fn default_workers() -> u32 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(2)
}
fn default_stale_after() -> Duration {
    Duration::from_secs(60)
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retention_days() -> u32 {
    90
}
fn default_max_retention_days() -> u32 {
    365
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_rows() -> u64 {
    10_000_000
}
