//! Decisions cached per (scope id, statement text) in a bounded LRU, so a
//! repeated statement costs a hash lookup and no parse. Bounded by entries
//! and by the bytes of the statement texts it keeps, so many long distinct
//! statements cannot grow it without limit.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::Decision;

pub(super) struct DecisionCache {
    entries: Option<Mutex<Entries>>,
    max_bytes: usize,
}

/// A decision and the tombstone generation it was made under.
type Entry = (u64, Decision);

struct Entries {
    lru: LruCache<Key, Entry>,
    bytes: usize,
}

/// Statement text kept by the cache at most (keys only; decisions are small).
pub(super) const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The key keeps both strings so a hash collision can never return another
/// statement's decision.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    scope: Box<str>,
    sql: Box<str>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            entries: NonZeroUsize::new(capacity).map(|c| {
                Mutex::new(Entries {
                    lru: LruCache::new(c),
                    bytes: 0,
                })
            }),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The decision for (scope, text) if it was made under `generation`.
    pub fn get(&self, scope: &str, sql: &str, generation: u64) -> Option<Decision> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .lru
            .get(&KeyRef { scope, sql } as &dyn AsKey)
            .filter(|(made_under, _)| *made_under == generation)
            .map(|(_, decision)| decision.clone())
    }

    pub fn put(&self, scope: &str, sql: &str, generation: u64, decision: Decision) {
        let Some(entries) = self.entries.as_ref() else {
            return;
        };
        let size = scope.len() + sql.len();
        if size > self.max_bytes / 16 {
            return; // one huge statement may not flush everything else
        }
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = Key {
            scope: scope.into(),
            sql: sql.into(),
        };
        if let Some((old, _)) = entries.lru.push(key, (generation, decision)) {
            entries.bytes -= old.scope.len() + old.sql.len();
        }
        entries.bytes += size;
        while entries.bytes > self.max_bytes {
            match entries.lru.pop_lru() {
                Some((old, _)) => entries.bytes -= old.scope.len() + old.sql.len(),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn with_max_bytes(capacity: usize, max_bytes: usize) -> DecisionCache {
        DecisionCache {
            max_bytes,
            ..DecisionCache::new(capacity)
        }
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let entries = self
            .entries
            .as_ref()
            .map(|e| e.lock().unwrap_or_else(|p| p.into_inner()));
        entries.map(|e| (e.lru.len(), e.bytes)).unwrap_or((0, 0))
    }
}

/// Borrowed lookups without allocating a key.
trait AsKey {
    fn parts(&self) -> (&str, &str);
}

struct KeyRef<'a> {
    scope: &'a str,
    sql: &'a str,
}

impl AsKey for Key {
    fn parts(&self) -> (&str, &str) {
        (&self.scope, &self.sql)
    }
}

impl AsKey for KeyRef<'_> {
    fn parts(&self) -> (&str, &str) {
        (self.scope, self.sql)
    }
}

impl<'a> std::borrow::Borrow<dyn AsKey + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsKey + '_ {}

impl Hash for dyn AsKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (scope, sql) = self.parts();
        scope.hash(state);
        sql.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::guard::Denial;

    fn decision() -> Decision {
        Decision::Deny(Arc::new(Denial::syntax("x")))
    }

    #[test]
    fn hits_return_what_was_put_for_the_same_scope_only() {
        let cache = DecisionCache::new(10);
        cache.put("S-1", "SELECT 1", 0, decision());
        assert_eq!(cache.get("S-1", "SELECT 1", 0), Some(decision()));
        assert_eq!(cache.get("S-2", "SELECT 1", 0), None);
        assert_eq!(
            cache.get("S-1", "SELECT 1", 1),
            None,
            "a decision made before the tombstones changed is made again"
        );
        assert_eq!(cache.get("S-1", "SELECT 2", 0), None);
    }

    #[test]
    fn the_cache_is_bounded_by_entries_and_by_bytes() {
        let cache = DecisionCache::with_max_bytes(4, 1_600);
        for i in 0..10 {
            cache.put("S", &format!("SELECT {i}"), 0, decision());
        }
        assert_eq!(cache.held().0, 4, "entry bound");
        let long = "x".repeat(90);
        for i in 0..40 {
            cache.put("S", &format!("{long}{i:03}"), 0, decision());
        }
        let (_, bytes) = cache.held();
        assert!(bytes <= 1_600, "{bytes} bytes held");
        cache.put("S", &"y".repeat(1_000), 0, decision());
        assert_eq!(
            cache.get("S", &"y".repeat(1_000), 0),
            None,
            "huge statements are not cached"
        );
    }

    #[test]
    fn a_zero_sized_cache_caches_nothing() {
        let cache = DecisionCache::new(0);
        cache.put("S", "SELECT 1", 0, decision());
        assert_eq!(cache.get("S", "SELECT 1", 0), None);
    }
}
