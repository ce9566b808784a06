//! The lifecycle sections (DESIGN 3.8): `[maintenance]`, the credentials
//! that may delete (the query doors' service role stays read-only), and
//! `[lifecycle]`, when purges run and how tombstones are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// `postgres://role@host:port/db` of the maintenance role: it owns
    /// schema `esq` and may delete from governed tables. Must not contain
    /// a password: use `password_file` or `ESQ_MAINTENANCE__PASSWORD`.
    pub url: String,
    /// A file whose first line is the maintenance password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Only from the environment (`ESQ_MAINTENANCE__PASSWORD`).
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// When `esq serve` purges rows past retention: `"HH:MM"` (daily, UTC),
    /// `"every <duration>"` (e.g. `"every 6h"`) or `"off"`. Default
    /// `"03:00"`. Runs only when `[maintenance]` is configured.
    #[serde(default = "default_purge_schedule")]
    pub purge_schedule: PurgeSchedule,
    /// Rows one purge transaction deletes at most. Default 1000.
    #[serde(default = "default_purge_batch_rows")]
    pub purge_batch_rows: u32,
    /// Pause between two purge batches, so read load keeps its share of
    /// the database. Default `20ms`.
    #[serde(default = "default_purge_batch_pause", with = "duration")]
    pub purge_batch_pause: Duration,
    /// How often `esq serve` re-reads the tombstones (forgets made by other
    /// replicas or the CLI); every sixth time it also counts tombstoned rows
    /// still present (a restored backup). Default `10s`.
    #[serde(default = "default_tombstone_check", with = "duration")]
    pub tombstone_check: Duration,
    /// A file holding at least 32 random bytes (any encoding) that keys the
    /// hash of subject keys the catalog marks as PII and seals the key
    /// itself in tombstones. Default: derived from `[signing] key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_key_file: Option<PathBuf>,
    /// Audit logs besides `audit.path` (e.g. the one `esq forget` runs
    /// with) whose forgets `esq serve` re-creates at start when schema
    /// `esq` lacks their tombstones. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recover_from: Vec<PathBuf>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            purge_schedule: default_purge_schedule(),
            purge_batch_rows: default_purge_batch_rows(),
            purge_batch_pause: default_purge_batch_pause(),
            tombstone_check: default_tombstone_check(),
            subject_key_file: None,
            recover_from: Vec::new(),
        }
    }
}

fn default_purge_schedule() -> PurgeSchedule {
    PurgeSchedule::Daily { hour: 3, minute: 0 }
}
fn default_purge_batch_rows() -> u32 {
    1000
}
fn default_purge_batch_pause() -> Duration {
    Duration::from_millis(20)
}
fn default_tombstone_check() -> Duration {
    Duration::from_secs(10)
}

/// When scheduled purges run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PurgeSchedule {
    Off,
    /// Every day at this time (UTC).
    Daily {
        hour: u32,
        minute: u32,
    },
    /// Every this long, counted from esq's start.
    Every(Duration),
}

impl PurgeSchedule {
    /// How long from `now` until the next run (`None`: never).
    pub fn next_after(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        match *self {
            PurgeSchedule::Off => None,
            PurgeSchedule::Every(every) => Some(every),
            PurgeSchedule::Daily { hour, minute } => {
                let today = now.date_naive().and_hms_opt(hour, minute, 0)?.and_utc();
                let next = if today > now {
                    today
                } else {
                    today + chrono::Duration::days(1)
                };
                (next - now).to_std().ok()
            }
        }
    }
}

impl TryFrom<String> for PurgeSchedule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a schedule: write \"HH:MM\" (daily, UTC), \"every 6h\" or \"off\""
            )
        };
        if text.eq_ignore_ascii_case("off") {
            return Ok(PurgeSchedule::Off);
        }
        if let Some(every) = text.strip_prefix("every ") {
            let every = humantime::parse_duration(every.trim()).map_err(|_| bad())?;
            if every < Duration::from_secs(1) {
                return Err(format!("{text:?}: purges at most once a second"));
            }
            return Ok(PurgeSchedule::Every(every));
        }
        let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
        let hour: u32 = hour.parse().map_err(|_| bad())?;
        let minute: u32 = minute.parse().map_err(|_| bad())?;
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(PurgeSchedule::Daily { hour, minute })
    }
}

impl From<PurgeSchedule> for String {
    fn from(schedule: PurgeSchedule) -> String {
        match schedule {
            PurgeSchedule::Off => "off".into(),
            PurgeSchedule::Daily { hour, minute } => format!("{hour:02}:{minute:02}"),
            PurgeSchedule::Every(every) => format!("every {}", humantime::format_duration(every)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_print_back() {
        for text in ["off", "03:00", "every 6h", "every 30s"] {
            let schedule = PurgeSchedule::try_from(text.to_string()).unwrap();
            assert_eq!(String::from(schedule), text);
        }
        for bad in ["", "25:00", "3", "every", "every 0s", "daily"] {
            assert!(PurgeSchedule::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_daily_schedule_runs_next_at_its_time() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let daily = PurgeSchedule::Daily { hour: 3, minute: 0 };
        assert_eq!(
            daily.next_after(at("2026-12-07T02:00:00Z")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            daily.next_after(at("2026-12-07T03:00:00Z")),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(
            PurgeSchedule::Off.next_after(at("2026-12-07T03:00:00Z")),
            None
        );
    }
}
