use std::path::Path;

use super::load::parse_dataset;
use super::*;

const VALID: &str = "\
id: burial_2024
table: public.burial_2024
owner: NCA
steward: privacy@nca.example
sensitivity: PHI
subject_key: id
retention_years: 10
retention_field: burial_date
min_group_size: 11
fields:
  - { name: id, pii: true }
  - { name: ssn, pii: true }
  - { name: state }
  - { name: burial_date }
  - { name: cause_of_death, sensitivity: PHI }
";

fn parse(text: &str) -> Result<Dataset, CatalogError> {
    parse_dataset(Path::new("catalog/burial_2024.yaml"), text)
}

/// The error message, which must start with `file:line:`.
fn error_at(text: &str, line: u64) -> String {
    let message = parse(text).expect_err("should be refused").to_string();
    let prefix = format!("catalog/burial_2024.yaml:{line}:");
    assert!(
        message.starts_with(&prefix),
        "expected {prefix} in: {message}"
    );
    message
}

#[test]
fn the_contract_example_loads() {
    let dataset = parse(VALID).expect("valid");
    assert_eq!(dataset.table.to_string(), "public.burial_2024");
    assert_eq!(dataset.sensitivity, Sensitivity::Phi);
    assert_eq!(dataset.subject_key.as_deref(), Some("id"));
    assert_eq!(dataset.retention_years, Some(10));
    assert_eq!(dataset.fields.len(), 5);
}

#[test]
fn the_privacy_unit_defaults_to_the_subject_key() {
    let dataset = parse(VALID).expect("valid");
    assert_eq!(dataset.privacy_unit, None);
    assert_eq!(dataset.privacy_unit(), Some("id"));
    let own = parse(&VALID.replace("subject_key: id", "subject_key: id\nprivacy_unit: ssn"))
        .expect("valid");
    assert_eq!(own.privacy_unit(), Some("ssn"));
    let neither = parse(&VALID.replace("subject_key: id\n", "")).expect("valid");
    assert_eq!(neither.privacy_unit(), None);
}

#[test]
fn field_sensitivity_follows_pii_and_the_dataset() {
    let dataset = parse(VALID).expect("valid");
    let of = |name: &str| dataset.field_sensitivity(dataset.field(name).expect("field"));
    assert_eq!(of("ssn"), Sensitivity::Phi, "pii on a PHI dataset is PHI");
    assert_eq!(
        of("state"),
        Sensitivity::Internal,
        "non-pii is at most INTERNAL"
    );
    assert_eq!(
        of("cause_of_death"),
        Sensitivity::Phi,
        "stated sensitivity wins"
    );

    let public = parse(&VALID.replace("sensitivity: PHI\nsubject", "sensitivity: PUBLIC\nsubject"))
        .expect("valid");
    let of = |name: &str| public.field_sensitivity(public.field(name).expect("field"));
    assert_eq!(of("ssn"), Sensitivity::Pii, "pii is never below PII");
    assert_eq!(of("state"), Sensitivity::Public);
}

#[test]
fn broken_yaml_names_file_and_line() {
    let broken = VALID.replace("  - { name: state }", "  - { name: state ");
    let message = parse(&broken).expect_err("broken").to_string();
    assert!(
        message.starts_with("catalog/burial_2024.yaml:"),
        "{message}"
    );
    assert!(
        message.contains(":13:") || message.contains(":14:") || message.contains(":15:"),
        "{message}"
    );
}

#[test]
fn unknown_keys_name_the_line() {
    let message = error_at(&VALID.replace("owner: NCA", "ownr: NCA"), 3);
    assert!(message.contains("ownr"), "{message}");
    let message = error_at(
        &VALID.replace("{ name: state }", "{ name: state, pi: true }"),
        13,
    );
    assert!(message.contains("pi"), "{message}");
}

#[test]
fn rule_violations_name_the_line() {
    let cases: &[(&str, &str, u64, &str)] = &[
        (
            "id: burial_2024",
            "id: other",
            1,
            "must match the file name",
        ),
        (
            "table: public.burial_2024",
            "table: burial_2024",
            2,
            "schema-qualified",
        ),
        (
            "table: public.burial_2024",
            "table: public.Burial",
            2,
            "schema-qualified",
        ),
        (
            "sensitivity: PHI\nsubject",
            "sensitivity: TOP\nsubject",
            5,
            "unknown sensitivity",
        ),
        ("subject_key: id", "subject_key: person", 6, "subject_key"),
        (
            "subject_key: id",
            "subject_key: id\nprivacy_unit: person",
            7,
            "privacy_unit: \"person\" is not one of the dataset's fields",
        ),
        (
            "retention_field: burial_date",
            "retention_field: died",
            8,
            "retention_field",
        ),
        ("min_group_size: 11", "min_group_size: 1", 9, "at least 2"),
        (
            "  - { name: state }",
            "  - { name: ssn }",
            13,
            "listed twice",
        ),
        (
            "  - { name: state }",
            "  - { name: State }",
            13,
            "lower-case",
        ),
        (
            "  - { name: ssn, pii: true }",
            "  - { name: ssn, pii: true, sensitivity: PUBLIC }",
            12,
            "cannot be below PII",
        ),
    ];
    for (from, to, line, expected) in cases {
        let message = error_at(&VALID.replace(from, to), *line);
        assert!(message.contains(expected), "{to:?}: {message}");
    }
}

#[test]
fn a_dataset_needs_fields() {
    let text = VALID.split("fields:").next().expect("head").to_string() + "fields: []\n";
    let message = error_at(&text, 10);
    assert!(message.contains("at least one field"), "{message}");
}

#[test]
fn the_directory_loader_refuses_duplicates_and_empty_dirs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let message = Catalog::load_dir(dir.path())
        .expect_err("empty")
        .to_string();
    assert!(message.contains("holds no *.yaml"), "{message}");

    std::fs::write(dir.path().join("burial_2024.yaml"), VALID).expect("write");
    let other = VALID.replace("id: burial_2024", "id: copy");
    std::fs::write(dir.path().join("copy.yaml"), other).expect("write");
    let message = Catalog::load_dir(dir.path())
        .expect_err("duplicate")
        .to_string();
    assert!(message.contains("already described by"), "{message}");

    std::fs::remove_file(dir.path().join("copy.yaml")).expect("remove");
    let catalog = Catalog::load_dir(dir.path()).expect("valid");
    let table = TableName {
        schema: "public".into(),
        name: "burial_2024".into(),
    };
    assert_eq!(
        catalog.dataset_for_table(&table).map(|d| d.id.as_str()),
        Some("burial_2024")
    );
}

#[test]
fn the_shipped_catalog_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let catalog = Catalog::load_dir(&dir).expect("shipped catalog is valid");
    assert!(catalog.dataset("burial_2024").is_some());
}
