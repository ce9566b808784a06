//! Rows to JSON, one at a time: numbers as numbers, dates and timestamps as
//! ISO 8601 strings, NULL as null. Column types are known from the
//! statement's description before the first row, so an answer with a type
//! esq cannot map is refused before anything is sent.

use std::io::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime};
use postgres_protocol::types as pg;
use tokio_postgres::types::Type;

use super::error::ApiError;
use crate::upstream::query::{Column, Results};

/// How a column's binary value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Json,
    Jsonb,
    Uuid,
}

impl ColumnKind {
    pub fn of(ty: &Type) -> Option<ColumnKind> {
        Some(match *ty {
            Type::BOOL => ColumnKind::Bool,
            Type::INT2 => ColumnKind::Int2,
            Type::INT4 => ColumnKind::Int4,
            Type::INT8 => ColumnKind::Int8,
            Type::OID => ColumnKind::Oid,
            Type::FLOAT4 => ColumnKind::Float4,
            Type::FLOAT8 => ColumnKind::Float8,
            Type::NUMERIC => ColumnKind::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                ColumnKind::Text
            }
            Type::DATE => ColumnKind::Date,
            Type::TIMESTAMP => ColumnKind::Timestamp,
            Type::TIMESTAMPTZ => ColumnKind::TimestampTz,
            Type::TIME => ColumnKind::Time,
            Type::JSON => ColumnKind::Json,
            Type::JSONB => ColumnKind::Jsonb,
            Type::UUID => ColumnKind::Uuid,
            _ => return None,
        })
    }
}

/// The answer's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON array of row objects (`application/json`).
    Array,
    /// One row object per line (`application/x-ndjson`).
    Ndjson,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Array => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// Encodes the rows of one answer.
pub struct RowEncoder {
    /// `"name":` already JSON-escaped, per column.
    keys: Vec<Vec<u8>>,
    kinds: Vec<ColumnKind>,
    format: Format,
    /// The values' wire format.
    results: Results,
    rows: u64,
}

impl RowEncoder {
    /// `Err` names the first column whose type esq cannot map.
    pub fn new(
        columns: &[Column],
        format: Format,
        results: Results,
    ) -> Result<RowEncoder, ApiError> {
        let mut keys = Vec::with_capacity(columns.len());
        let mut kinds = Vec::with_capacity(columns.len());
        for column in columns {
            let ty = Type::from_oid(column.type_oid);
            let kind =
                ty.as_ref()
                    .and_then(ColumnKind::of)
                    .ok_or_else(|| ApiError::UnmappableColumn {
                        column: column.name.clone(),
                        type_name: ty.map_or_else(
                            || format!("with OID {}", column.type_oid),
                            |t| t.name().to_string(),
                        ),
                    })?;
            let mut key =
                serde_json::to_vec(&column.name).map_err(|e| ApiError::Internal(e.to_string()))?;
            key.push(b':');
            keys.push(key);
            kinds.push(kind);
        }
        Ok(RowEncoder {
            keys,
            kinds,
            format,
            results,
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// What goes before the first row.
    pub fn start(&self, out: &mut Vec<u8>) {
        if self.format == Format::Array {
            out.push(b'[');
        }
    }

    /// What goes after the last row.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if self.format == Format::Array {
            out.extend_from_slice(b"]\n");
        }
    }

    pub fn row(&mut self, row: &[Option<Bytes>], out: &mut Vec<u8>) -> Result<(), String> {
        if self.format == Format::Array && self.rows > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (i, (key, kind)) in self.keys.iter().zip(&self.kinds).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            let raw = row
                .get(i)
                .ok_or("a row with fewer columns than described")?;
            match (raw.as_deref(), self.results) {
                (None, _) => out.extend_from_slice(b"null"),
                (Some(bytes), Results::Binary) => {
                    value(*kind, bytes, out).map_err(|e| e.to_string())?
                }
                (Some(bytes), Results::Text) => {
                    text_value(*kind, bytes, out).map_err(|e| e.to_string())?
                }
            }
        }
        out.push(b'}');
        if self.format == Format::Ndjson {
            out.push(b'\n');
        }
        self.rows += 1;
        Ok(())
    }
}

type DecodeError = Box<dyn std::error::Error + Sync + Send>;

fn string(text: &str, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    serde_json::to_writer(&mut *out, text)?;
    Ok(())
}

fn float(x: f64, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    match serde_json::Number::from_f64(x) {
        Some(n) => write!(out, "{n}")?,
        // NaN and ±Infinity have no JSON number.
        None => string(&x.to_string(), out)?,
    }
    Ok(())
}

/// PostgreSQL's epoch for dates and timestamps.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

fn value(kind: ColumnKind, raw: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    match kind {
        ColumnKind::Bool => out.extend_from_slice(if pg::bool_from_sql(raw)? {
            b"true"
        } else {
            b"false"
        }),
        ColumnKind::Int2 => write!(out, "{}", pg::int2_from_sql(raw)?)?,
        ColumnKind::Int4 => write!(out, "{}", pg::int4_from_sql(raw)?)?,
        ColumnKind::Int8 => write!(out, "{}", pg::int8_from_sql(raw)?)?,
        ColumnKind::Oid => write!(out, "{}", pg::oid_from_sql(raw)?)?,
        ColumnKind::Float4 => float(f64::from(pg::float4_from_sql(raw)?), out)?,
        ColumnKind::Float8 => float(pg::float8_from_sql(raw)?, out)?,
        ColumnKind::Numeric => match numeric(raw)? {
            Numeric::Number(text) => out.extend_from_slice(text.as_bytes()),
            Numeric::Special(text) => string(text, out)?,
        },
        ColumnKind::Text => string(pg::text_from_sql(raw)?, out)?,
        ColumnKind::Date => match pg::date_from_sql(raw)? {
            i32::MAX => string("infinity", out)?,
            i32::MIN => string("-infinity", out)?,
            days => {
                let date = epoch()
                    .checked_add_signed(Duration::days(i64::from(days)))
                    .ok_or("date out of range")?;
                string(&date.format("%Y-%m-%d").to_string(), out)?
            }
        },
        ColumnKind::Timestamp | ColumnKind::TimestampTz => match pg::timestamp_from_sql(raw)? {
            i64::MAX => string("infinity", out)?,
            i64::MIN => string("-infinity", out)?,
            micros => {
                let at = epoch()
                    .and_time(NaiveTime::MIN)
                    .checked_add_signed(Duration::microseconds(micros))
                    .ok_or("timestamp out of range")?;
                let text = if kind == ColumnKind::TimestampTz {
                    DateTime::<chrono::Utc>::from_naive_utc_and_offset(at, chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                } else {
                    at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                };
                string(&text, out)?
            }
        },
        ColumnKind::Time => {
            let micros = pg::time_from_sql(raw)?;
            let time = NaiveTime::MIN + Duration::microseconds(micros);
            string(&time.format("%H:%M:%S%.f").to_string(), out)?
        }
        ColumnKind::Json => {
            // PostgreSQL validated it: it is JSON text already.
            serde_json::from_slice::<serde::de::IgnoredAny>(raw)?;
            out.extend_from_slice(raw)
        }
        ColumnKind::Jsonb => {
            let text = raw.strip_prefix(&[1u8]).ok_or("unknown jsonb version")?;
            serde_json::from_slice::<serde::de::IgnoredAny>(text)?;
            out.extend_from_slice(text)
        }
        ColumnKind::Uuid => {
            let b = pg::uuid_from_sql(raw)?;
            let h = hex::encode(b);
            string(
                &format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ),
                out,
            )?
        }
    }
    Ok(())
}

/// A column value in PostgreSQL's text format (the session speaks UTF8,
/// DateStyle ISO), as the binary path would write it.
fn text_value(kind: ColumnKind, raw: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let text = std::str::from_utf8(raw)?;
    match kind {
        ColumnKind::Bool => out.extend_from_slice(if text == "t" { b"true" } else { b"false" }),
        ColumnKind::Int2 | ColumnKind::Int4 | ColumnKind::Int8 | ColumnKind::Oid => {
            write!(out, "{}", text.parse::<i64>()?)?
        }
        ColumnKind::Float4 | ColumnKind::Float8 => float(text.parse::<f64>()?, out)?,
        ColumnKind::Numeric => match text {
            "NaN" | "Infinity" | "-Infinity" => string(text, out)?,
            number => {
                // A JSON number is what PostgreSQL prints for a finite numeric.
                serde_json::from_str::<serde_json::Number>(number)?;
                out.extend_from_slice(number.as_bytes())
            }
        },
        ColumnKind::Json | ColumnKind::Jsonb => {
            serde_json::from_str::<serde::de::IgnoredAny>(text)?;
            out.extend_from_slice(raw)
        }
        ColumnKind::Timestamp => string(&text.replacen(' ', "T", 1), out)?,
        ColumnKind::Text
        | ColumnKind::Date
        | ColumnKind::TimestampTz
        | ColumnKind::Time
        | ColumnKind::Uuid => string(text, out)?,
    }
    Ok(())
}

enum Numeric {
    /// A decimal literal that is also a JSON number.
    Number(String),
    Special(&'static str),
}

/// PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale, then
/// base-10000 digits.
fn numeric(raw: &[u8]) -> Result<Numeric, DecodeError> {
    let word = |i: usize| -> Result<u16, DecodeError> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("numeric too short")?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Numeric::Special("NaN")),
        0xD000 => return Ok(Numeric::Special("infinity")),
        0xF000 => return Ok(Numeric::Special("-infinity")),
        _ => return Err("numeric with an unknown sign".into()),
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    // Integer part: groups 0..=weight.
    if weight < 0 {
        text.push('0');
    } else {
        for g in 0..=weight {
            let d = usize::try_from(g)
                .ok()
                .and_then(|g| digits.get(g))
                .copied()
                .unwrap_or(0);
            if g == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut g = weight + 1;
        while fraction.len() < dscale {
            let d = if g < 0 {
                0
            } else {
                usize::try_from(g)
                    .ok()
                    .and_then(|g| digits.get(g))
                    .copied()
                    .unwrap_or(0)
            };
            fraction.push_str(&format!("{d:04}"));
            g += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(Numeric::Number(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    fn number(words: &[u16]) -> String {
        match numeric(&encode(words)).unwrap_or(Numeric::Special("error")) {
            Numeric::Number(text) => text,
            Numeric::Special(text) => text.to_string(),
        }
    }

    #[test]
    fn numeric_binary_decodes_to_decimal_text() {
        // 12345.678: digits [1, 2345, 6780], weight 1, dscale 3.
        assert_eq!(number(&[3, 1, 0, 3, 1, 2345, 6780]), "12345.678");
        // -0.05: digits [500], weight -1, dscale 2.
        assert_eq!(number(&[1, 0xFFFF, 0x4000, 2, 500]), "-0.05");
        // 0
        assert_eq!(number(&[0, 0, 0, 0]), "0");
        // 100000000: digits [1], weight 2.
        assert_eq!(number(&[1, 2, 0, 0, 1]), "100000000");
        assert_eq!(number(&[0, 0, 0xC000, 0]), "NaN");
    }
}
