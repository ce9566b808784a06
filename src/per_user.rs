//! A per-user count with a cap, for what one user may hold at once: open
//! sessions on the PostgreSQL door (`pg.max_sessions_per_user`), queries in
//! flight on the HTTP door (`http.max_in_flight_per_user`). A claim is
//! given back when its [`Claim`] is dropped, on every exit path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct PerUser {
    limit: u32,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

/// One unit of a user's count; returned when dropped.
#[derive(Debug)]
pub struct Claim {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    user: String,
}

impl PerUser {
    pub fn new(limit: u32) -> PerUser {
        PerUser {
            limit,
            counts: Arc::default(),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// One more for `user`, or `None` at the cap.
    pub fn claim(&self, user: &str) -> Option<Claim> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(user.to_string()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Claim {
            counts: self.counts.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_cap_and_come_back_when_dropped() {
        let per_user = PerUser::new(2);
        let a = per_user.claim("a").expect("first");
        let b = per_user.claim("a").expect("second");
        assert!(per_user.claim("a").is_none(), "the cap holds");
        assert!(
            per_user.claim("b").is_some(),
            "other users are not affected"
        );
        drop(a);
        assert!(per_user.claim("a").is_some(), "a dropped claim is returned");
        drop(b);
        assert!(per_user
            .counts
            .lock()
            .map(|c| c.is_empty())
            .unwrap_or(false));
    }
}
