//! Reading `catalog/*.yaml`: YAML errors and rule violations name the file
//! and the line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Catalog, Dataset, Field, TableName};
use crate::sensitivity::Sensitivity;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog directory {0} holds no *.yaml dataset")]
    Empty(PathBuf),
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    id: Spanned<String>,
    table: Spanned<String>,
    owner: String,
    steward: String,
    sensitivity: Spanned<String>,
    #[serde(default)]
    subject_key: Option<Spanned<String>>,
    #[serde(default)]
    privacy_unit: Option<Spanned<String>>,
    #[serde(default)]
    retention_years: Option<u32>,
    #[serde(default)]
    retention_field: Option<Spanned<String>>,
    #[serde(default)]
    min_group_size: Option<Spanned<u32>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    links: Vec<Spanned<RawLink>>,
    fields: Spanned<Vec<Spanned<RawField>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    dataset: String,
    field: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(default)]
    pii: bool,
    #[serde(default)]
    sensitivity: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

pub(super) fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
    let dir_error = |source| CatalogError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(CatalogError::Empty(dir.to_path_buf()));
    }
    let mut catalog = Catalog::default();
    let mut digest = crate::digest::FilesDigest::default();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|err| CatalogError::File {
            path: path.clone(),
            message: err.to_string(),
        })?;
        digest.add(&crate::digest::file_name(&path), text.as_bytes());
        let dataset = parse_dataset(&path, &text)?;
        if let Some(other) = catalog.dataset_for_table(&dataset.table) {
            return Err(CatalogError::File {
                path: path.clone(),
                message: format!(
                    "table {} is already described by {}",
                    dataset.table,
                    other.source.display()
                ),
            });
        }
        if let Some(other) = catalog.dataset(&dataset.id) {
            return Err(CatalogError::File {
                path: path.clone(),
                message: format!(
                    "dataset id {:?} is already used by {}",
                    dataset.id,
                    other.source.display()
                ),
            });
        }
        catalog.insert(dataset);
    }
    check_links(&catalog)?;
    catalog.digest = digest.finish();
    Ok(catalog)
}

/// Every link names a dataset of the catalog (not the subject's own) and
/// one of its fields.
fn check_links(catalog: &Catalog) -> Result<(), CatalogError> {
    for dataset in catalog.datasets() {
        for link in &dataset.links {
            let error = |message: String| CatalogError::File {
                path: dataset.source.clone(),
                message: format!("links: {message}"),
            };
            let Some(target) = catalog.dataset(&link.dataset) else {
                return Err(error(format!(
                    "dataset {:?} is not in the catalog",
                    link.dataset
                )));
            };
            if target.id == dataset.id {
                return Err(error(format!(
                    "dataset {:?} links to itself (its subject_key already covers it)",
                    link.dataset
                )));
            }
            if target.field(&link.field).is_none() {
                return Err(error(format!(
                    "{:?} is not a field of dataset {:?}",
                    link.field, link.dataset
                )));
            }
        }
    }
    Ok(())
}

/// Parses and validates one dataset file.
pub fn parse_dataset(path: &Path, text: &str) -> Result<Dataset, CatalogError> {
    let raw: RawDataset = serde_saphyr::from_str(text).map_err(|err| match err.location() {
        Some(loc) => CatalogError::Invalid {
            path: path.to_path_buf(),
            line: loc.line(),
            message: first_line(&err.to_string()),
        },
        None => CatalogError::File {
            path: path.to_path_buf(),
            message: first_line(&err.to_string()),
        },
    })?;
    let invalid = |line: u64, message: String| CatalogError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let line = |loc: &serde_saphyr::Location| loc.line();

    let id = raw.id.value.clone();
    if !is_plain_identifier(&id) {
        return Err(invalid(
            line(&raw.id.referenced),
            format!("id {id:?}: use lower-case letters, digits and '_'"),
        ));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != id {
        return Err(invalid(
            line(&raw.id.referenced),
            format!("id {id:?} must match the file name ({stem}.yaml)"),
        ));
    }
    let table = parse_table(&raw.table.value)
        .map_err(|message| invalid(line(&raw.table.referenced), message))?;
    let sensitivity: Sensitivity =
        raw.sensitivity
            .value
            .parse()
            .map_err(|err: crate::sensitivity::UnknownSensitivity| {
                invalid(line(&raw.sensitivity.referenced), err.to_string())
            })?;

    let mut fields = Vec::new();
    let mut seen = BTreeSet::new();
    for raw_field in &raw.fields.value {
        let at = line(&raw_field.referenced);
        let field = &raw_field.value;
        if !is_plain_identifier(&field.name) {
            return Err(invalid(
                at,
                format!(
                    "field {:?}: use lower-case letters, digits and '_' (PostgreSQL folds unquoted names to lower case)",
                    field.name
                ),
            ));
        }
        if !seen.insert(field.name.clone()) {
            return Err(invalid(
                at,
                format!("field {:?} is listed twice", field.name),
            ));
        }
        let own = field
            .sensitivity
            .as_deref()
            .map(str::parse::<Sensitivity>)
            .transpose()
            .map_err(|err| invalid(at, format!("field {:?}: {err}", field.name)))?;
        if field.pii && own.is_some_and(|s| s < Sensitivity::Pii) {
            return Err(invalid(
                at,
                format!(
                    "field {:?} is pii, so its sensitivity cannot be below PII",
                    field.name
                ),
            ));
        }
        fields.push(Field {
            name: field.name.clone(),
            pii: field.pii,
            sensitivity: own,
            description: field.description.clone(),
        });
    }
    if fields.is_empty() {
        return Err(invalid(
            line(&raw.fields.referenced),
            "fields: a dataset needs at least one field".into(),
        ));
    }

    let field_ref =
        |key: &str, value: &Option<Spanned<String>>| -> Result<Option<String>, CatalogError> {
            match value {
                None => Ok(None),
                Some(spanned) if seen.contains(&spanned.value) => Ok(Some(spanned.value.clone())),
                Some(spanned) => Err(invalid(
                    line(&spanned.referenced),
                    format!(
                        "{key}: {:?} is not one of the dataset's fields",
                        spanned.value
                    ),
                )),
            }
        };
    let subject_key = field_ref("subject_key", &raw.subject_key)?;
    let privacy_unit = field_ref("privacy_unit", &raw.privacy_unit)?;
    let retention_field = field_ref("retention_field", &raw.retention_field)?;
    if let Some(k) = &raw.min_group_size {
        if k.value < 2 {
            return Err(invalid(
                line(&k.referenced),
                "min_group_size must be at least 2".into(),
            ));
        }
    }
    let _ = raw.description;
    let mut links = Vec::new();
    for link in &raw.links {
        let at = line(&link.referenced);
        if subject_key.is_none() {
            return Err(invalid(
                at,
                "links: a dataset with links needs a subject_key (the links hold its values)"
                    .into(),
            ));
        }
        if !is_plain_identifier(&link.value.dataset) || !is_plain_identifier(&link.value.field) {
            return Err(invalid(
                at,
                "links: dataset and field use lower-case letters, digits and '_'".into(),
            ));
        }
        links.push(super::Link {
            dataset: link.value.dataset.clone(),
            field: link.value.field.clone(),
        });
    }
    Ok(Dataset {
        id,
        table,
        owner: raw.owner,
        steward: raw.steward,
        sensitivity,
        subject_key,
        privacy_unit,
        retention_years: raw.retention_years,
        retention_field,
        min_group_size: raw.min_group_size.map(|k| k.value),
        links,
        fields,
        source: path.to_path_buf(),
    })
}

fn parse_table(text: &str) -> Result<TableName, String> {
    match text.split('.').collect::<Vec<_>>().as_slice() {
        [schema, name] if is_plain_identifier(schema) && is_plain_identifier(name) => {
            Ok(TableName {
                schema: schema.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!(
            "table {text:?}: write it schema-qualified in lower case, e.g. public.burial_2024"
        )),
    }
}

/// A name PostgreSQL keeps as written without quotes.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// The first line of a serde-saphyr message, without its own
/// `error: line N column M:` prefix (the caller prints `file:line:`).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text).trim();
    let without_error = line.strip_prefix("error: ").unwrap_or(line);
    match without_error.split_once(": ") {
        Some((location, rest)) if location.starts_with("line ") => rest.to_string(),
        _ => without_error.to_string(),
    }
}
