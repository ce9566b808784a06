//! The CSV files of an export: written row by row as the guard's answer
//! streams in (never the whole answer in memory), hashed on the way out,
//! and validated by re-reading before packaging, so a bundle never ships a
//! file that does not parse as the columns it claims.
//!
//! Quoting is the `csv` crate's (RFC 4180, `\n` line ends). A NULL is an
//! empty field — as is an empty string: CSV cannot tell them apart without
//! quoting rules the crate does not offer per field, and both validate as
//! "no value". Validation errors name the file, data row and column, never
//! the value.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

pub use super::envelope::BundleError;
use super::package::{create_private, valid_file_name, HashWriter};

/// One column of a CSV file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// PostgreSQL type name (`int8`, `text`, `date`, `bool`, `numeric`,
    /// `timestamptz`, …); empty when unknown. Types [`validate_csv`] does
    /// not know are checked as UTF-8 text only.
    pub r#type: String,
}

/// A finished CSV file, as listed in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFile {
    /// File name inside the bundle.
    pub name: String,
    /// Where it is on disk (not part of the manifest).
    #[serde(skip)]
    pub path: PathBuf,
    /// Data rows (the header row not counted).
    pub rows: u64,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
    pub bytes: u64,
    pub columns: Vec<ColumnSpec>,
}

/// Streams rows into a new CSV file.
pub struct CsvSink {
    writer: csv::Writer<HashWriter<File>>,
    path: PathBuf,
    name: String,
    columns: Vec<ColumnSpec>,
    rows: u64,
}

impl std::fmt::Debug for CsvSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSink")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CsvSink {
    /// Creates `path` (mode 0600; an existing file is an error) and writes
    /// the header row. The column types are unknown (empty): set
    /// [`CsvFile::columns`] before validating, or use [`CsvSink::create_typed`].
    pub fn create(path: &Path, columns: &[String]) -> Result<CsvSink, BundleError> {
        let columns: Vec<ColumnSpec> = columns
            .iter()
            .map(|name| ColumnSpec {
                name: name.clone(),
                r#type: String::new(),
            })
            .collect();
        CsvSink::create_typed(path, &columns)
    }

    /// As [`CsvSink::create`], with the columns' types (they go to the
    /// manifest and drive validation).
    pub fn create_typed(path: &Path, columns: &[ColumnSpec]) -> Result<CsvSink, BundleError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| valid_file_name(n))
            .ok_or_else(|| {
                BundleError::Invalid(format!(
                    "{} is not a usable CSV file name (letters, digits, . _ -)",
                    path.display()
                ))
            })?;
        if columns.is_empty() {
            return Err(BundleError::Invalid(
                "a CSV file needs at least one column".into(),
            ));
        }
        let file = create_private(path)?;
        let mut writer = csv::WriterBuilder::new()
            .buffer_capacity(64 * 1024)
            .from_writer(HashWriter::new(file));
        writer
            .write_record(columns.iter().map(|c| c.name.as_bytes()))
            .map_err(|e| BundleError::io("write", path, e.into()))?;
        Ok(CsvSink {
            writer,
            path: path.to_path_buf(),
            name: name.to_string(),
            columns: columns.to_vec(),
            rows: 0,
        })
    }

    /// One row: `None` is NULL (an empty field); bytes are PostgreSQL's
    /// text form (UTF-8).
    pub fn write_row(&mut self, row: &[Option<&[u8]>]) -> Result<(), BundleError> {
        if row.len() != self.columns.len() {
            return Err(BundleError::Invalid(format!(
                "{}: a row of {} fields for {} columns",
                self.path.display(),
                row.len(),
                self.columns.len()
            )));
        }
        self.writer
            .write_record(row.iter().map(|field| field.unwrap_or(b"")))
            .map_err(|e| BundleError::io("write", &self.path, e.into()))?;
        self.rows += 1;
        Ok(())
    }

    /// Data rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and fsyncs the file; returns what the manifest lists.
    pub fn finish(mut self) -> Result<CsvFile, BundleError> {
        let path = self.path;
        let failed = |e| BundleError::io("write", &path, e);
        self.writer.flush().map_err(failed)?;
        let (file, sha256, bytes) = self
            .writer
            .into_inner()
            .map_err(|e| failed(e.into_error()))?
            .finish();
        file.sync_all().map_err(failed)?;
        Ok(CsvFile {
            name: self.name,
            path: path.clone(),
            rows: self.rows,
            sha256,
            bytes,
            columns: self.columns,
        })
    }
}

/// Re-reads a CSV file, streaming: the header is `columns`' names, every
/// record has that many fields, every field is UTF-8, and values of the
/// types it knows (int2/4/8, numeric, float4/8, bool, date, timestamp,
/// timestamptz) parse as such; empty is NULL. Returns the data row count.
pub fn validate_csv(path: &Path, columns: &[ColumnSpec]) -> Result<u64, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    validate_reader(file, columns, &path.display().to_string())
}

/// [`validate_csv`] over any reader; `label` names it in errors.
pub(crate) fn validate_reader<R: Read>(
    reader: R,
    columns: &[ColumnSpec],
    label: &str,
) -> Result<u64, BundleError> {
    let bad = |reason: String| BundleError::Csv {
        file: label.to_string(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(reader);
    let read_error = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(e) => bad(format!("cannot read: {e}")),
        _ => bad("malformed CSV".into()),
    };
    let mut record = csv::ByteRecord::new();
    if !reader.read_byte_record(&mut record).map_err(read_error)? {
        return Err(bad("empty: no header row".into()));
    }
    if record.len() != columns.len() {
        return Err(bad(format!(
            "the header has {} columns, expected {}",
            record.len(),
            columns.len()
        )));
    }
    for (i, (field, column)) in record.iter().zip(columns).enumerate() {
        if field != column.name.as_bytes() {
            return Err(bad(format!(
                "header column {} is not {:?}",
                i + 1,
                column.name
            )));
        }
    }
    let mut rows: u64 = 0;
    while reader.read_byte_record(&mut record).map_err(read_error)? {
        rows += 1;
        if record.len() != columns.len() {
            return Err(bad(format!(
                "data row {rows} has {} fields, expected {}",
                record.len(),
                columns.len()
            )));
        }
        for (field, column) in record.iter().zip(columns) {
            let problem = match std::str::from_utf8(field) {
                Err(_) => Some("not UTF-8".to_string()),
                Ok("") => None,
                Ok(value) if !well_formed(&column.r#type, value) => {
                    Some(format!("not a valid {}", column.r#type))
                }
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                return Err(bad(format!(
                    "data row {rows}, column {:?}: {problem}",
                    column.name
                )));
            }
        }
    }
    Ok(rows)
}

/// Whether `value` is PostgreSQL's text output for type `ty` (ISO
/// DateStyle). Unknown types are accepted.
fn well_formed(ty: &str, value: &str) -> bool {
    match ty {
        "int2" | "smallint" => value.parse::<i16>().is_ok(),
        "int4" | "integer" | "int" => value.parse::<i32>().is_ok(),
        "int8" | "bigint" => value.parse::<i64>().is_ok(),
        "numeric" | "decimal" => numeric(value),
        "float4" | "real" => value.parse::<f32>().is_ok(),
        "float8" | "double precision" => value.parse::<f64>().is_ok(),
        "bool" | "boolean" => matches!(value, "t" | "f" | "true" | "false"),
        "date" => dated(value, |v| NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()),
        "timestamp" => dated(value, timestamp),
        "timestamptz" => dated(value, timestamptz),
        _ => true,
    }
}

fn digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn numeric(value: &str) -> bool {
    if matches!(value, "NaN" | "Infinity" | "-Infinity") {
        return true;
    }
    let body = value.strip_prefix(['+', '-']).unwrap_or(value);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    (!int.is_empty() || !frac.is_empty())
        && digits(int)
        && digits(frac)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// Infinities and ` BC` dates around a date/time check.
fn dated(value: &str, check: impl Fn(&str) -> bool) -> bool {
    if matches!(value, "infinity" | "-infinity") {
        return true;
    }
    check(value.strip_suffix(" BC").unwrap_or(value))
}

fn timestamp(value: &str) -> bool {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .any(|format| NaiveDateTime::parse_from_str(value, format).is_ok())
}

/// `2024-01-31 12:34:56.5+00`, `…-08`, `…+05:30`, `…-04:56:02`.
fn timestamptz(value: &str) -> bool {
    let Some(sep) = value.find([' ', 'T']) else {
        return false;
    };
    let time = &value[sep + 1..];
    let Some(at) = time.rfind(['+', '-']) else {
        return false;
    };
    let offset = &time[at + 1..];
    let parts: Vec<&str> = offset.split(':').collect();
    parts.len() <= 3
        && parts.iter().all(|p| p.len() == 2 && digits(p))
        && timestamp(&value[..sep + 1 + at])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            r#type: ty.into(),
        }
    }

    /// Writes `rows` (strings; "\0" stands for NULL) under `columns`.
    fn write(dir: &Path, name: &str, columns: &[ColumnSpec], rows: &[&[&str]]) -> CsvFile {
        let mut sink = CsvSink::create_typed(&dir.join(name), columns).unwrap();
        for row in rows {
            let fields: Vec<Option<&[u8]>> = row
                .iter()
                .map(|f| (*f != "\0").then_some(f.as_bytes()))
                .collect();
            sink.write_row(&fields).unwrap();
        }
        assert_eq!(sink.rows(), rows.len() as u64);
        sink.finish().unwrap()
    }

    fn error(dir: &Path, columns: &[ColumnSpec], text: &str) -> String {
        let path = dir.join("bad.csv");
        std::fs::write(&path, text).unwrap();
        validate_csv(&path, columns).unwrap_err().to_string()
    }

    #[test]
    fn rows_round_trip_through_quoting_and_hashes_match() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let columns = [col("id", "int8"), col("note", "text"), col("d", "date")];
        let rows: &[&[&str]] = &[
            &["1", "plain", "2024-01-31"],
            &["2", "comma, \"quote\"\nnewline\r\n", "\0"],
            &["-3", "ünïcödé ✓", "infinity"],
            &["\0", "\0", "0044-03-15 BC"],
        ];
        let file = write(dir.path(), "data.csv", &columns, rows);
        assert_eq!(file.name, "data.csv");
        assert_eq!(file.rows, 4);
        assert_eq!(file.columns, columns);
        let meta = std::fs::metadata(&file.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), file.bytes);
        let (sha, bytes) = crate::exports::package::sha256_file(&file.path).unwrap();
        assert_eq!((sha, bytes), (file.sha256.clone(), file.bytes));
        assert_eq!(validate_csv(&file.path, &columns).unwrap(), 4);

        let mut reader = csv::Reader::from_path(&file.path).unwrap();
        let back: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        let expected: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|f| f.replace('\0', "")).collect())
            .collect();
        assert_eq!(back, expected);

        assert!(
            CsvSink::create(&file.path, &["id".into()]).is_err(),
            "an existing file is never overwritten"
        );
    }

    #[test]
    fn a_lone_null_column_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let columns = [col("x", "int4")];
        let file = write(dir.path(), "one.csv", &columns, &[&["\0"], &["5"], &["\0"]]);
        assert_eq!(validate_csv(&file.path, &columns).unwrap(), 3);
    }

    #[test]
    fn misuse_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink =
            CsvSink::create(&dir.path().join("a.csv"), &["a".into(), "b".into()]).unwrap();
        assert!(sink.write_row(&[Some(b"1")]).is_err());
        assert!(CsvSink::create(&dir.path().join("b.csv"), &[]).is_err());
        assert!(CsvSink::create(&dir.path().join("../x y.csv"), &["a".into()]).is_err());
        assert!(CsvSink::create(&dir.path().join("manifest.json"), &["a".into()]).is_err());
    }

    #[test]
    fn validation_names_row_and_column_but_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let columns = [col("id", "int4"), col("ok", "bool")];
        let err = error(dir.path(), &columns, "id,ok\n1,t\n2,f\nSECRET42,t\n");
        assert!(
            err.contains("data row 3") && err.contains("\"id\""),
            "{err}"
        );
        assert!(err.contains("int4") && !err.contains("SECRET42"), "{err}");

        let err = error(dir.path(), &columns, "id,ok\n1,t\n2\n");
        assert!(err.contains("data row 2 has 1 fields, expected 2"), "{err}");
        let err = error(dir.path(), &columns, "id,ok\n1,t,SECRET\n");
        assert!(
            err.contains("data row 1 has 3 fields") && !err.contains("SECRET"),
            "{err}"
        );

        let err = error(dir.path(), &columns, "id,okay\n1,t\n");
        assert!(err.contains("header column 2 is not \"ok\""), "{err}");
        let err = error(dir.path(), &columns, "id\n1\n");
        assert!(err.contains("header has 1 columns, expected 2"), "{err}");
        let err = error(dir.path(), &columns, "");
        assert!(err.contains("no header row"), "{err}");

        let path = dir.path().join("latin1.csv");
        std::fs::write(&path, b"id,ok\n1,t\n\xe9,t\n").unwrap();
        let err = validate_csv(&path, &[col("id", "text"), col("ok", "bool")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("data row 2, column \"id\": not UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn postgres_text_forms_of_known_types_validate() {
        let good: &[(&str, &[&str])] = &[
            ("int2", &["0", "-32768", "32767"]),
            ("int8", &["-9223372036854775808", "42"]),
            (
                "numeric",
                &[
                    "0",
                    "-1.50",
                    "123456789012345678901234567890.5",
                    "NaN",
                    "Infinity",
                    ".5",
                    "1e10",
                ],
            ),
            (
                "float8",
                &["1.5", "-0", "1e+300", "NaN", "Infinity", "-Infinity"],
            ),
            ("float4", &["3.25", "1e-5"]),
            ("bool", &["t", "f"]),
            ("date", &["2024-02-29", "-infinity", "0001-01-01 BC"]),
            (
                "timestamp",
                &[
                    "2024-01-31 12:34:56",
                    "2024-01-31 12:34:56.123456",
                    "infinity",
                ],
            ),
            (
                "timestamptz",
                &[
                    "2024-01-31 12:34:56+00",
                    "2024-01-31 12:34:56.5-08",
                    "2024-01-31 12:34:56+05:30",
                    "1850-01-01 00:00:00-04:56:02",
                    "0044-03-15 12:00:00+00 BC",
                ],
            ),
            ("text", &["anything at all"]),
            ("", &["unknown type"]),
        ];
        for (ty, values) in good {
            for value in *values {
                assert!(well_formed(ty, value), "{ty} {value:?} should be valid");
            }
        }
        let bad: &[(&str, &[&str])] = &[
            ("int2", &["32768", "1.0", "x"]),
            ("int4", &["2147483648", " 1"]),
            ("int8", &["1e3", "--1"]),
            ("numeric", &["1.2.3", ".", "1e", "abc", "1,5"]),
            ("float8", &["1.5.5", "one"]),
            ("bool", &["yes", "1", "T"]),
            ("date", &["2023-02-29", "31/01/2024", "2024-01-31 12:00:00"]),
            (
                "timestamp",
                &[
                    "2024-01-31",
                    "2024-01-31 25:00:00",
                    "2024-01-31 12:00:00+00",
                ],
            ),
            (
                "timestamptz",
                &[
                    "2024-01-31 12:34:56",
                    "2024-01-31 12:34:56+5",
                    "2024-01-31 12:34:56+0x:00",
                    "2024-13-01 00:00:00+00",
                ],
            ),
        ];
        for (ty, values) in bad {
            for value in *values {
                assert!(!well_formed(ty, value), "{ty} {value:?} should be invalid");
            }
        }
    }
}
