//! The counters behind the sentinel's rules, and where trips are claimed
//! and listed. [`Windows`] is what the sentinel uses; [`MemoryWindows`]
//! serves one node, `RedisWindows` all replicas together.
//!
//! A use count is kept in ten buckets per window (so the sliding window is
//! between 90 % and 100 % of its nominal length); distinct statements are
//! remembered with the time last seen; a denial streak is one counter that
//! an allowed statement resets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::breach::Breach;
use crate::shared::Unavailable;

/// Buckets per sliding window.
pub const BUCKETS: i64 = 10;
/// Breaches kept for `GET /api/esq/breach`.
pub const BREACHES_KEPT: usize = 1000;

#[async_trait]
pub trait Windows: Send + Sync + 'static {
    /// Adds `n` uses at `now_ms` to `key`'s window; returns the window's total.
    async fn add_uses(
        &self,
        key: &str,
        n: u64,
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable>;
    /// Notes statement fingerprints seen at `now_ms`; returns how many
    /// different ones the window holds.
    async fn add_statements(
        &self,
        key: &str,
        fingerprints: &[u64],
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable>;
    /// Continues (or, after an allowed statement, restarts) a denial
    /// streak with `denials`; returns its length. Forgotten after `window`.
    async fn streak(
        &self,
        key: &str,
        restart: bool,
        denials: u64,
        window: Duration,
    ) -> Result<u64, Unavailable>;
    /// True for exactly one caller per `key` until `hold` has passed.
    async fn claim_trip(&self, key: &str, hold: Duration) -> Result<bool, Unavailable>;
    async fn push_breach(&self, breach: &Breach) -> Result<(), Unavailable>;
    /// The newest breaches first.
    async fn recent_breaches(&self, limit: usize) -> Result<Vec<Breach>, Unavailable>;
}

/// The bucket `now_ms` falls in, for a window of `window`.
pub fn bucket_of(now_ms: i64, window: Duration) -> (i64, i64) {
    let size = (window.as_millis() as i64 / BUCKETS).max(1);
    (now_ms / size, size)
}

/// One node's windows, in memory.
#[derive(Default)]
pub struct MemoryWindows {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    uses: HashMap<String, VecDeque<(i64, u64)>>,
    statements: HashMap<String, HashMap<u64, i64>>,
    streaks: HashMap<String, (u64, i64)>,
    trips: HashMap<String, i64>,
    breaches: VecDeque<Breach>,
    /// When each window key is forgotten (as Redis's expiry would).
    expires: HashMap<String, i64>,
    last_sweep: i64,
}

/// How often idle windows are dropped.
const SWEEP_EVERY_MS: i64 = 10_000;

impl MemoryState {
    /// Keeps `key` for another `window` and, now and then, drops the
    /// windows of subjects that went quiet (so memory follows the active
    /// tickets, not every ticket ever used).
    fn touch(&mut self, key: &str, now_ms: i64, window: Duration) {
        let keep = window.as_millis() as i64 * 2;
        self.expires.insert(key.to_string(), now_ms + keep);
        if now_ms - self.last_sweep < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep = now_ms;
        let expired: Vec<String> = self
            .expires
            .iter()
            .filter(|(_, until)| **until < now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.expires.remove(&key);
            self.uses.remove(&key);
            self.statements.remove(&key);
            self.streaks.remove(&key);
        }
    }

    /// Windows currently held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.uses.len() + self.statements.len() + self.streaks.len()
    }
}

impl MemoryWindows {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Each operation leaves the maps consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Windows for MemoryWindows {
    async fn add_uses(
        &self,
        key: &str,
        n: u64,
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let (bucket, _) = bucket_of(now_ms, window);
        let mut state = self.lock();
        state.touch(key, now_ms, window);
        let buckets = state.uses.entry(key.to_string()).or_default();
        match buckets.back_mut() {
            Some((b, count)) if *b == bucket => *count += n,
            _ => buckets.push_back((bucket, n)),
        }
        while buckets.front().is_some_and(|(b, _)| *b <= bucket - BUCKETS) {
            buckets.pop_front();
        }
        Ok(buckets.iter().map(|(_, count)| count).sum())
    }

    async fn add_statements(
        &self,
        key: &str,
        fingerprints: &[u64],
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let oldest = now_ms - window.as_millis() as i64;
        let mut state = self.lock();
        state.touch(key, now_ms, window);
        let seen = state.statements.entry(key.to_string()).or_default();
        for fingerprint in fingerprints {
            seen.insert(*fingerprint, now_ms);
        }
        seen.retain(|_, at| *at > oldest);
        Ok(seen.len() as u64)
    }

    async fn streak(
        &self,
        key: &str,
        restart: bool,
        denials: u64,
        window: Duration,
    ) -> Result<u64, Unavailable> {
        let now = now_ms();
        let mut state = self.lock();
        state.touch(key, now, window);
        let entry = state.streaks.entry(key.to_string()).or_insert((0, now));
        if restart || now - entry.1 > window.as_millis() as i64 {
            entry.0 = 0;
        }
        entry.0 += denials;
        entry.1 = now;
        Ok(entry.0)
    }

    async fn claim_trip(&self, key: &str, hold: Duration) -> Result<bool, Unavailable> {
        let now = now_ms();
        let mut state = self.lock();
        state.trips.retain(|_, until| *until > now);
        if state.trips.contains_key(key) {
            return Ok(false);
        }
        state
            .trips
            .insert(key.to_string(), now + hold.as_millis() as i64);
        Ok(true)
    }

    async fn push_breach(&self, breach: &Breach) -> Result<(), Unavailable> {
        let mut state = self.lock();
        state.breaches.push_front(breach.clone());
        state.breaches.truncate(BREACHES_KEPT);
        Ok(())
    }

    async fn recent_breaches(&self, limit: usize) -> Result<Vec<Breach>, Unavailable> {
        Ok(self.lock().breaches.iter().take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn uses_slide_out_of_the_window() {
        let windows = MemoryWindows::default();
        assert_eq!(windows.add_uses("k", 5, 0, WINDOW).await.unwrap(), 5);
        assert_eq!(windows.add_uses("k", 5, 15_000, WINDOW).await.unwrap(), 10);
        // 30 s after the first bucket it has left the window.
        assert_eq!(windows.add_uses("k", 1, 30_000, WINDOW).await.unwrap(), 6);
        assert_eq!(
            windows.add_uses("other", 1, 30_000, WINDOW).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn distinct_statements_count_each_fingerprint_once() {
        let windows = MemoryWindows::default();
        assert_eq!(
            windows
                .add_statements("k", &[1, 2, 2], 0, WINDOW)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            windows
                .add_statements("k", &[2, 3], 1_000, WINDOW)
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            windows
                .add_statements("k", &[3], 30_500, WINDOW)
                .await
                .unwrap(),
            2
        );
    }

    #[tokio::test]
    async fn quiet_subjects_are_forgotten() {
        let windows = MemoryWindows::default();
        let start = now_ms();
        for ticket in 0..100 {
            let key = format!("t{ticket}");
            windows.add_uses(&key, 1, start, WINDOW).await.unwrap();
            windows
                .add_statements(&key, &[1], start, WINDOW)
                .await
                .unwrap();
        }
        assert_eq!(windows.lock().held(), 200);
        // Two windows later one new use sweeps the quiet ones away.
        let later = start + 2 * WINDOW.as_millis() as i64 + SWEEP_EVERY_MS + 1;
        windows.add_uses("active", 1, later, WINDOW).await.unwrap();
        assert_eq!(windows.lock().held(), 1);
    }

    #[tokio::test]
    async fn an_allowed_statement_restarts_a_streak_and_a_trip_is_claimed_once() {
        let windows = MemoryWindows::default();
        assert_eq!(windows.streak("k", false, 3, WINDOW).await.unwrap(), 3);
        assert_eq!(windows.streak("k", false, 2, WINDOW).await.unwrap(), 5);
        assert_eq!(windows.streak("k", true, 1, WINDOW).await.unwrap(), 1);
        assert!(windows.claim_trip("t", WINDOW).await.unwrap());
        assert!(!windows.claim_trip("t", WINDOW).await.unwrap());
        assert!(windows.claim_trip("u", WINDOW).await.unwrap());
    }
}
