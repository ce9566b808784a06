//! Cancel keys: each session gets a random (process id, secret) from esq,
//! mapped to its upstream backend's own key. A cancel request is matched by
//! comparing the secret's bytes (pgwire decodes incoming keys as bytes) in
//! constant time, then forwarded upstream with the backend's key.

use std::collections::HashMap;
use std::sync::Mutex;

use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct CancelKeys {
    sessions: Mutex<HashMap<i32, Entry>>,
}

struct Entry {
    secret: [u8; 4],
    backend_key: (i32, i32),
}

impl CancelKeys {
    /// Registers a session; returns the key to give the client.
    pub fn register(&self, backend_key: (i32, i32)) -> (i32, i32) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut random = [0u8; 8];
            let _ = getrandom::fill(&mut random);
            let pid = i32::from_be_bytes([random[0] & 0x7f, random[1], random[2], random[3]]);
            if pid == 0 || sessions.contains_key(&pid) {
                continue;
            }
            let secret = [random[4], random[5], random[6], random[7]];
            sessions.insert(
                pid,
                Entry {
                    secret,
                    backend_key,
                },
            );
            return (pid, i32::from_be_bytes(secret));
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// The upstream backend key for a client's cancel request, if it matches.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<(i32, i32)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sessions.get(&pid)?;
        (secret.len() == 4 && bool::from(entry.secret.ct_eq(secret))).then_some(entry.backend_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_issued_secret() {
        let keys = CancelKeys::default();
        let (pid, secret) = keys.register((42, 7));
        assert_eq!(keys.lookup(pid, &secret.to_be_bytes()), Some((42, 7)));
        assert_eq!(keys.lookup(pid, &(secret ^ 1).to_be_bytes()), None);
        assert_eq!(keys.lookup(pid, &[1, 2, 3]), None);
        keys.unregister(pid);
        assert_eq!(keys.lookup(pid, &secret.to_be_bytes()), None);
    }
}
