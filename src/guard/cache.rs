//! Decisions cached per (scope id, statement text) in a bounded LRU, so a
//! repeated statement costs a hash lookup and no parse.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::Decision;

pub(super) struct DecisionCache {
    entries: Option<Mutex<LruCache<Key, Decision>>>,
}

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
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    pub fn get(&self, scope: &str, sql: &str) -> Option<Decision> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&KeyRef { scope, sql } as &dyn AsKey).cloned()
    }

    pub fn put(&self, scope: &str, sql: &str, decision: Decision) {
        if let Some(entries) = self.entries.as_ref() {
            let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.put(
                Key {
                    scope: scope.into(),
                    sql: sql.into(),
                },
                decision,
            );
        }
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
