//! Tombstones in force: the subject keys right-to-delete has forgotten,
//! per dataset, held in memory so the guard can hide them from every
//! answer at once (its row filter on the dataset and on every dataset
//! linked to it), whatever a restored backup brought back.
//!
//! The set only grows while esq runs: a forget made here is added at
//! once, the ones other replicas made are merged in at each
//! `lifecycle.tombstone_check`, and a tombstone missing from the database
//! (schema `esq` restored from an old backup) stays hidden here. Until the
//! first read from the database succeeds, datasets that hold subjects are
//! refused (fail closed): esq does not know whom to hide yet.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_postgres::Client;

use super::subject::SubjectKeys;
use super::MaintenanceError;
use crate::catalog::{Catalog, Dataset};

/// Why a dataset cannot be answered from (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// The tombstones have not been read yet.
    NotRead,
    /// Some tombstones of this subject dataset do not open with esq's key.
    Unreadable(String),
}

#[derive(Debug, Default)]
struct State {
    read: bool,
    /// Subject dataset id → forgotten keys (canonical text).
    keys: BTreeMap<String, BTreeSet<String>>,
    /// Subject datasets with a tombstone esq could not open.
    unreadable: BTreeSet<String>,
}

/// The tombstones esq enforces. Shared by every bundle (a reload keeps them).
#[derive(Debug)]
pub struct Tombstones {
    state: ArcSwap<State>,
    generation: AtomicU64,
}

/// Tombstones as read from `esq.tombstones`.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys: BTreeMap<String, BTreeSet<String>>,
    pub unreadable: BTreeSet<String>,
}

impl Tombstones {
    /// No tombstones and none to read (no `[maintenance]`: esq deletes
    /// nothing, so it has forgotten no one).
    pub fn none() -> Tombstones {
        Tombstones::with_state(State {
            read: true,
            ..State::default()
        })
    }

    /// Tombstones still to be read from the database: until then datasets
    /// with subjects are refused.
    pub fn unread() -> Tombstones {
        Tombstones::with_state(State::default())
    }

    fn with_state(state: State) -> Tombstones {
        Tombstones {
            state: ArcSwap::from_pointee(state),
            generation: AtomicU64::new(0),
        }
    }

    /// Changes whenever the set does: decisions and statements prepared
    /// under another generation are decided again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_read(&self) -> bool {
        self.state.load().read
    }

    /// Forgotten keys of `dataset` (a subject dataset).
    pub fn keys(&self, dataset: &str) -> Vec<String> {
        self.state
            .load()
            .keys
            .get(dataset)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Subject datasets with tombstones, and how many each.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.state
            .load()
            .keys
            .iter()
            .map(|(dataset, keys)| (dataset.clone(), keys.len()))
            .collect()
    }

    /// Adds one tombstone (a forget made by this esq).
    pub fn add(&self, dataset: &str, key: &str) {
        self.update(|state| {
            state
                .keys
                .entry(dataset.to_string())
                .or_default()
                .insert(key.to_string())
        });
    }

    /// Merges what the database holds (never removes: see the module doc).
    pub fn merge(&self, loaded: Loaded) {
        self.update(|state| {
            let mut changed = !state.read || state.unreadable != loaded.unreadable;
            state.read = true;
            state.unreadable = loaded.unreadable.clone();
            for (dataset, keys) in &loaded.keys {
                let mine = state.keys.entry(dataset.clone()).or_default();
                for key in keys {
                    changed |= mine.insert(key.clone());
                }
            }
            changed
        });
    }

    /// Applies `change` (which says whether it changed anything); the
    /// generation moves only on a change, so cached decisions stay.
    fn update(&self, change: impl Fn(&mut State) -> bool) {
        let changed = std::cell::Cell::new(false);
        self.state.rcu(|current| {
            let mut next = State {
                read: current.read,
                keys: current.keys.clone(),
                unreadable: current.unreadable.clone(),
            };
            changed.set(change(&mut next));
            Arc::new(next)
        });
        if changed.get() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The SQL condition that hides every forgotten subject from the rows
    /// of `dataset` (its own subject key and the fields that link it to
    /// other datasets' subjects), with the key lists it holds (for
    /// [`Hiding::redact`]); `Ok(None)` when nothing is to be hidden.
    pub fn hiding(&self, catalog: &Catalog, dataset: &Dataset) -> Result<Option<Hiding>, Unknown> {
        let subjects = catalog.subject_fields(dataset);
        if subjects.is_empty() {
            return Ok(None);
        }
        let state = self.state.load();
        if !state.read {
            return Err(Unknown::NotRead);
        }
        let mut conditions = Vec::new();
        let mut literals = Vec::new();
        for (subject, field) in subjects {
            if state.unreadable.contains(&subject.id) {
                return Err(Unknown::Unreadable(subject.id.clone()));
            }
            if let Some(keys) = state.keys.get(&subject.id).filter(|k| !k.is_empty()) {
                let literal = array_literal(keys);
                conditions.push(format!(
                    "({} <> ALL ({literal})) IS NOT FALSE",
                    quote_ident(field)
                ));
                literals.push((literal, keys.len()));
            }
        }
        Ok((!conditions.is_empty()).then(|| Hiding {
            condition: conditions.join(" AND "),
            literals,
        }))
    }
}

/// The condition hiding a dataset's forgotten subjects:
/// `("field" <> ALL ('{"k1","k2"}')) IS NOT FALSE` per subject field. The
/// untyped array literal takes the column's type, so PostgreSQL probes a
/// hash table per row; rows whose field is NULL stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hiding {
    pub condition: String,
    /// Each key list as it appears in the SQL, and how many keys it holds.
    literals: Vec<(String, usize)>,
}

impl Hiding {
    /// `sql` (a statement holding this condition) with every key list
    /// replaced by a count, for the audit log and logs: the keys are of
    /// people who asked to be forgotten.
    pub fn redact(&self, sql: &str) -> String {
        self.literals
            .iter()
            .fold(sql.to_string(), |sql, (literal, count)| {
                sql.replace(literal.as_str(), &format!("'{{<{count} forgotten>}}'"))
            })
    }
}

/// `"field" = ANY ('{"k1","k2"}')`: the rows of these subjects (to count
/// or delete them).
pub fn any_of<'k>(field: &str, keys: impl IntoIterator<Item = &'k String>) -> String {
    format!("{} = ANY ({})", quote_ident(field), array_literal(keys))
}

/// `'{"k1","k2"}'`: an array literal without a type, escaped for the
/// array parser and then for SQL (standard_conforming_strings is on:
/// esq's sessions cannot turn it off).
fn array_literal<'k>(keys: impl IntoIterator<Item = &'k String>) -> String {
    let elements: Vec<String> = keys
        .into_iter()
        .map(|key| format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("'{{{}}}'", elements.join(",").replace('\'', "''"))
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Reads every tombstone of `esq.tombstones`, opening sealed keys.
pub async fn load(client: &Client, keys: &SubjectKeys) -> Result<Loaded, MaintenanceError> {
    let rows = client
        .query(
            "SELECT dataset, subject_key, subject_sealed FROM esq.tombstones",
            &[],
        )
        .await
        .map_err(MaintenanceError::database)?;
    let mut loaded = Loaded::default();
    for row in rows {
        let dataset: String = row.get(0);
        let plain: Option<String> = row.get(1);
        let sealed: Option<Vec<u8>> = row.get(2);
        let key = match (plain, sealed) {
            (Some(key), _) => Some(key),
            (None, Some(sealed)) => keys.open(&dataset, &sealed).ok(),
            (None, None) => None,
        };
        match key {
            Some(key) => {
                loaded.keys.entry(dataset).or_default().insert(key);
            }
            None => {
                tracing::error!(
                    dataset,
                    "a tombstone's sealed subject key does not open with this esq's key (lifecycle.subject_key_file or the signing key changed?): the dataset and those linked to it are refused"
                );
                loaded.unreadable.insert(dataset);
            }
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tombstones {
        fn filter_for(
            &self,
            catalog: &Catalog,
            dataset: &Dataset,
        ) -> Result<Option<String>, Unknown> {
            Ok(self
                .hiding(catalog, dataset)?
                .map(|hiding| hiding.condition))
        }
    }

    fn catalog() -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("people.yaml"),
            "id: people\ntable: public.people\nowner: o\nsteward: s\nsensitivity: PII\nsubject_key: id\nlinks: [{dataset: notes, field: person_id}]\nfields:\n  - {name: id, pii: true}\n  - {name: state}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("notes.yaml"),
            "id: notes\ntable: public.notes\nowner: o\nsteward: s\nsensitivity: PII\nfields:\n  - {name: person_id, pii: true}\n  - {name: note}\n",
        )
        .unwrap();
        Catalog::load_dir(dir.path()).unwrap()
    }

    #[test]
    fn unread_tombstones_refuse_datasets_with_subjects_only() {
        let catalog = catalog();
        let tombstones = Tombstones::unread();
        let people = catalog.dataset("people").unwrap();
        let notes = catalog.dataset("notes").unwrap();
        assert_eq!(
            tombstones.filter_for(&catalog, people),
            Err(Unknown::NotRead)
        );
        assert_eq!(
            tombstones.filter_for(&catalog, notes),
            Err(Unknown::NotRead)
        );
        tombstones.merge(Loaded::default());
        assert_eq!(tombstones.filter_for(&catalog, people), Ok(None));
    }

    #[test]
    fn a_forgotten_key_is_hidden_in_its_dataset_and_the_linked_one() {
        let catalog = catalog();
        let tombstones = Tombstones::none();
        let before = tombstones.generation();
        tombstones.add("people", "42");
        tombstones.add("people", "it's \"odd\"\\");
        assert!(tombstones.generation() > before);
        let people = tombstones
            .filter_for(&catalog, catalog.dataset("people").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            people,
            r#"("id" <> ALL ('{"42","it''s \"odd\"\\"}')) IS NOT FALSE"#
        );
        let notes = tombstones
            .filter_for(&catalog, catalog.dataset("notes").unwrap())
            .unwrap()
            .unwrap();
        assert!(notes.starts_with(r#"("person_id" <> ALL"#), "{notes}");
    }

    #[test]
    fn merging_never_forgets_and_unreadable_tombstones_refuse() {
        let catalog = catalog();
        let tombstones = Tombstones::none();
        tombstones.add("people", "42");
        tombstones.merge(Loaded::default());
        assert_eq!(tombstones.keys("people"), ["42"]);
        let mut loaded = Loaded::default();
        loaded.unreadable.insert("people".into());
        tombstones.merge(loaded);
        assert_eq!(
            tombstones.filter_for(&catalog, catalog.dataset("notes").unwrap()),
            Err(Unknown::Unreadable("people".into()))
        );
    }
}
