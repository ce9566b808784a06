//! `esq check --against postgres://…`: compares the catalog with the live
//! database schema. A catalog table or column missing from the database is an
//! error (the catalog promises something that is not there); a database
//! column missing from the catalog is reported as forbidden by default.

use std::collections::{BTreeMap, BTreeSet};

use super::{Catalog, TableName};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Catalog entries the database does not have.
    pub errors: Vec<String>,
    /// Database columns no catalog entry names: esq never lets them through.
    pub forbidden_by_default: Vec<(TableName, String)>,
}

impl SchemaReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Reads the columns of every catalog table from `information_schema` and
/// compares them with the catalog.
pub async fn compare(
    catalog: &Catalog,
    client: &tokio_postgres::Client,
) -> Result<SchemaReport, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT table_schema::text, table_name::text, column_name::text \
             FROM information_schema.columns \
             WHERE table_schema <> ALL ('{pg_catalog,information_schema}') \
             ORDER BY 1, 2, ordinal_position",
            &[],
        )
        .await?;
    let mut live: BTreeMap<TableName, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let table = TableName {
            schema: row.get(0),
            name: row.get(1),
        };
        live.entry(table).or_default().insert(row.get(2));
    }
    Ok(compare_with(catalog, &live))
}

fn compare_with(catalog: &Catalog, live: &BTreeMap<TableName, BTreeSet<String>>) -> SchemaReport {
    let mut report = SchemaReport::default();
    for dataset in catalog.datasets() {
        let Some(columns) = live.get(&dataset.table) else {
            report.errors.push(format!(
                "{}: table {} does not exist in the database",
                dataset.source.display(),
                dataset.table
            ));
            continue;
        };
        for field in &dataset.fields {
            if !columns.contains(&field.name) {
                report.errors.push(format!(
                    "{}: field {:?} is not a column of {}",
                    dataset.source.display(),
                    field.name,
                    dataset.table
                ));
            }
        }
        for column in columns {
            if dataset.field(column).is_none() {
                report
                    .forbidden_by_default
                    .push((dataset.table.clone(), column.clone()));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Dataset, Field};
    use crate::sensitivity::Sensitivity;

    fn table(name: &str) -> TableName {
        TableName {
            schema: "public".into(),
            name: name.into(),
        }
    }

    fn catalog_with(fields: &[&str]) -> Catalog {
        let mut catalog = Catalog::default();
        catalog.insert(Dataset {
            id: "t".into(),
            table: table("t"),
            owner: "o".into(),
            steward: "s".into(),
            sensitivity: Sensitivity::Public,
            subject_key: None,
            privacy_unit: None,
            retention_years: None,
            retention_field: None,
            min_group_size: None,
            links: Vec::new(),
            fields: fields
                .iter()
                .map(|f| Field {
                    name: f.to_string(),
                    pii: false,
                    sensitivity: None,
                    description: None,
                })
                .collect(),
            source: "catalog/t.yaml".into(),
        });
        catalog
    }

    #[test]
    fn missing_table_column_and_extra_column_are_reported() {
        let catalog = catalog_with(&["a", "b"]);
        let empty = BTreeMap::new();
        let report = compare_with(&catalog, &empty);
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].contains("does not exist"));

        let live = BTreeMap::from([(
            table("t"),
            BTreeSet::from(["a".to_string(), "secret".to_string()]),
        )]);
        let report = compare_with(&catalog, &live);
        assert_eq!(
            report.errors,
            vec!["catalog/t.yaml: field \"b\" is not a column of public.t".to_string()]
        );
        assert_eq!(
            report.forbidden_by_default,
            vec![(table("t"), "secret".to_string())]
        );
    }
}
