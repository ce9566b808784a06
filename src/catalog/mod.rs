//! The dataset catalog: one `catalog/<dataset>.yaml` per governed table,
//! saying which columns exist for esq, which are PII, how sensitive the data
//! is, how long it is kept and which key right-to-delete targets. A column
//! that is in the database but not in the catalog is forbidden.

mod load;
pub mod schema_check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::sensitivity::Sensitivity;

pub use load::CatalogError;

/// A schema-qualified table name, lower-case as PostgreSQL folds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `"schema"."name"`, quoted for SQL that esq writes itself.
    pub fn quoted(&self) -> String {
        let quote = |part: &str| format!("\"{}\"", part.replace('"', "\"\""));
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column of a dataset as esq knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: String,
    /// Identifies a person (alone or with other fields).
    pub pii: bool,
    /// The field's own sensitivity, when the catalog states one.
    pub sensitivity: Option<Sensitivity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A field of another dataset that holds this dataset's subject keys
/// (`links: [{dataset: staff_notes, field: veteran_id}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub dataset: String,
    pub field: String,
}

/// One governed table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataset {
    pub id: String,
    pub table: TableName,
    pub owner: String,
    pub steward: String,
    pub sensitivity: Sensitivity,
    /// The key that right-to-delete targets.
    pub subject_key: Option<String>,
    /// The person whose contribution private answers bound (DESIGN 3.7);
    /// `None`: the subject key (see [`Dataset::privacy_unit`]).
    pub privacy_unit: Option<String>,
    /// Rows older than this many years (by `retention_field`) are hidden,
    /// then purged.
    pub retention_years: Option<u32>,
    pub retention_field: Option<String>,
    /// The dataset's own `k`; the effective `k` is never below the config's.
    pub min_group_size: Option<u32>,
    /// Rows of other datasets that belong to this dataset's subjects:
    /// right-to-delete deletes and hides them too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    pub fields: Vec<Field>,
    /// The file this dataset was read from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

impl Dataset {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field that identifies one person for differential privacy: the
    /// catalog's `privacy_unit`, else its `subject_key`; `None` when it
    /// names neither (then no private answer can be given).
    pub fn privacy_unit(&self) -> Option<&str> {
        self.privacy_unit.as_deref().or(self.subject_key.as_deref())
    }

    /// The sensitivity that policies and result classification use for a
    /// field: its own when stated; else a PII field is as sensitive as the
    /// dataset but at least PII, and any other field is at most INTERNAL.
    pub fn field_sensitivity(&self, field: &Field) -> Sensitivity {
        match (field.sensitivity, field.pii) {
            (Some(own), _) => own,
            (None, true) => self.sensitivity.max(Sensitivity::Pii),
            (None, false) => self.sensitivity.min(Sensitivity::Internal),
        }
    }
}

/// All datasets, by id and by table.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    datasets: BTreeMap<String, Arc<Dataset>>,
    by_table: BTreeMap<TableName, String>,
    /// The digest of the loaded files (see [`crate::digest`]).
    digest: String,
}

impl Catalog {
    /// Loads and validates every `*.yaml` / `*.yml` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        load::load_dir(dir)
    }

    /// SHA-256 over the files this catalog was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn dataset(&self, id: &str) -> Option<&Arc<Dataset>> {
        self.datasets.get(id)
    }

    pub fn dataset_for_table(&self, table: &TableName) -> Option<&Arc<Dataset>> {
        self.by_table
            .get(table)
            .and_then(|id| self.datasets.get(id))
    }

    pub fn datasets(&self) -> impl Iterator<Item = &Arc<Dataset>> {
        self.datasets.values()
    }

    /// The subjects whose rows `dataset` holds: its own subject key, and
    /// each dataset linking to it with the field of `dataset` that holds
    /// that dataset's keys. Right-to-delete and tombstones follow these.
    pub fn subject_fields<'a>(&'a self, dataset: &'a Dataset) -> Vec<(&'a Dataset, &'a str)> {
        let own = dataset.subject_key.as_deref().map(|key| (dataset, key));
        let linked = self.datasets.values().flat_map(move |subject| {
            subject
                .links
                .iter()
                .filter(move |link| link.dataset == dataset.id)
                .map(move |link| (subject.as_ref(), link.field.as_str()))
        });
        own.into_iter().chain(linked).collect()
    }

    pub fn len(&self) -> usize {
        self.datasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty()
    }

    fn insert(&mut self, dataset: Dataset) {
        self.by_table
            .insert(dataset.table.clone(), dataset.id.clone());
        self.datasets.insert(dataset.id.clone(), Arc::new(dataset));
    }
}

#[cfg(test)]
mod tests;
