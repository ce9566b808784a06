//! Cancel keys: each session gets a random (process id, secret) from esq,
//! mapped to its upstream backend's own key. A cancel request is matched by
//! comparing the secret's bytes (pgwire decodes incoming keys as bytes) in
//! constant time, then forwarded upstream with the backend's key.
//!
//! A cancel can arrive while esq is still deciding the statement (the
//! guard, the ticket store, the audit record): PostgreSQL, idle then,
//! would drop it. Each session therefore counts the cancels it was sent
//! ([`CancelRequests`]) and forwards one again once its statement has
//! reached PostgreSQL ([`forward_held`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::upstream::UpstreamPool;

#[derive(Default)]
pub struct CancelKeys {
    sessions: Mutex<HashMap<i32, Entry>>,
}

struct Entry {
    secret: [u8; 4],
    backend_key: (i32, i32),
    requests: CancelRequests,
}

/// How many cancel requests a session was sent (shared with the session).
#[derive(Clone, Default)]
pub struct CancelRequests(Arc<AtomicU64>);

impl CancelRequests {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl CancelKeys {
    /// Registers a session; returns the key to give the client and the
    /// session's count of cancel requests.
    pub fn register(&self, backend_key: (i32, i32)) -> ((i32, i32), CancelRequests) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut random = [0u8; 8];
            let _ = getrandom::fill(&mut random);
            let pid = i32::from_be_bytes([random[0] & 0x7f, random[1], random[2], random[3]]);
            if pid == 0 || sessions.contains_key(&pid) {
                continue;
            }
            let secret = [random[4], random[5], random[6], random[7]];
            let requests = CancelRequests::default();
            sessions.insert(
                pid,
                Entry {
                    secret,
                    backend_key,
                    requests: requests.clone(),
                },
            );
            return ((pid, i32::from_be_bytes(secret)), requests);
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// A client's cancel request: if it matches, counts it for the session
    /// and returns the upstream backend key to forward it to.
    pub fn request(&self, pid: i32, secret: &[u8]) -> Option<(i32, i32)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sessions.get(&pid)?;
        if secret.len() != 4 || !bool::from(entry.secret.ct_eq(secret)) {
            return None;
        }
        entry.requests.add();
        Some(entry.backend_key)
    }
}

/// After the first copy, when a held cancel is sent again while its
/// statement is still running.
const HELD_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// Forwards a cancel that came while esq was deciding the statement just
/// sent upstream. PostgreSQL drops a cancel that reaches it before it has
/// read the statement, so the cancel is sent again, further apart, until
/// `round_ended` says the statement's round has been answered.
pub async fn forward_held(
    upstream: Arc<UpstreamPool>,
    backend_key: (i32, i32),
    round_ended: impl Fn() -> bool,
) {
    let mut retries = HELD_RETRIES.into_iter();
    loop {
        if let Err(err) = upstream.cancel(backend_key).await {
            tracing::warn!(%err, "forwarding a held cancel request failed");
            return;
        }
        let Some(wait) = retries.next() else { return };
        tokio::time::sleep(wait).await;
        if round_ended() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_issued_secret() {
        let keys = CancelKeys::default();
        let ((pid, secret), requests) = keys.register((42, 7));
        assert_eq!(keys.request(pid, &secret.to_be_bytes()), Some((42, 7)));
        assert_eq!(keys.request(pid, &(secret ^ 1).to_be_bytes()), None);
        assert_eq!(keys.request(pid, &[1, 2, 3]), None);
        assert_eq!(requests.count(), 1, "only the matching request counts");
        keys.unregister(pid);
        assert_eq!(keys.request(pid, &secret.to_be_bytes()), None);
    }
}
