//! A per-user request rate limit: a token bucket per user name that refills
//! at `http.rate_limit_per_minute` per minute and holds at most that many.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets untouched this long are full again and can be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(120);
const SWEEP_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user`; `Err(seconds)` to wait when none is left.
    /// A limit of 0 disables the limiter.
    pub fn check(&self, user: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < FORGET_AFTER);
        }
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / per_second).ceil();
            // `wait` is positive and at most 60 (one token at the slowest rate).
            Err(wait.clamp(1.0, 60.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_then_refills() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert!(limiter.check("a", t0).is_err());
        // Another user has a bucket of their own.
        assert_eq!(limiter.check("b", t0), Ok(()));
        // One token per 20 s at 3 per minute.
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(21)), Ok(()));
    }

    #[test]
    fn zero_disables() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(limiter.check("a", Instant::now()), Ok(()));
        }
    }
}
