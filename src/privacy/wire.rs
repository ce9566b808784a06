//! Answers as the PostgreSQL protocol carries them, so that the release
//! step serves both doors without knowing either: a row is a list of
//! nullable raw values, each column is text (format 0) or binary (format 1),
//! and the count column is an `int8`. Keys pass through byte for byte; only
//! counts are decoded and re-encoded, in their column's format.

use bytes::Bytes;

/// One row: a raw value per column (`None`: SQL NULL).
pub type Row = Vec<Option<Bytes>>;

/// PostgreSQL's format codes.
pub const TEXT: i16 = 0;
pub const BINARY: i16 = 1;

/// The exact answer as the database returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactAnswer {
    pub rows: Vec<Row>,
    /// Result-column formats as in `Bind`: empty (all text), one (for all
    /// columns) or one per column.
    pub formats: Vec<i16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the exact answer does not fit the private plan: {0}")]
pub struct WireError(pub String);

impl ExactAnswer {
    /// The format code of column `i`, read the way `Bind` defines it.
    pub fn format(&self, i: usize) -> Result<i16, WireError> {
        let code = match self.formats.as_slice() {
            [] => TEXT,
            [all] => *all,
            each => *each
                .get(i)
                .ok_or_else(|| WireError(format!("no format for column {i}")))?,
        };
        match code {
            TEXT | BINARY => Ok(code),
            other => Err(WireError(format!("unknown format code {other}"))),
        }
    }
}

/// Reads an `int8` in the given format.
pub fn decode_int8(value: Option<&Bytes>, format: i16) -> Result<i64, WireError> {
    let value = value.ok_or_else(|| WireError("a count is NULL".into()))?;
    match format {
        BINARY => {
            let bytes: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| WireError(format!("a binary int8 of {} bytes", value.len())))?;
            Ok(i64::from_be_bytes(bytes))
        }
        _ => std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| WireError("a text count that is not an integer".into())),
    }
}

/// Writes an `int8` in the given format.
pub fn encode_int8(value: i64, format: i16) -> Bytes {
    match format {
        BINARY => Bytes::copy_from_slice(&value.to_be_bytes()),
        _ => Bytes::from(value.to_string()),
    }
}

/// Rows as one byte string (for the answer memo): row count, column
/// count, then each value as a length (−1: NULL) and its bytes.
pub fn encode_rows(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rows.len() * 32);
    out.extend_from_slice(b"ESQ1");
    out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    for row in rows {
        out.extend_from_slice(&(row.len() as u32).to_be_bytes());
        for value in row {
            match value {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }
    out
}

/// The inverse of [`encode_rows`]; anything else is an error.
pub fn decode_rows(data: &[u8]) -> Result<Vec<Row>, WireError> {
    let bad = || WireError("a stored answer does not decode".into());
    let mut rest = data.strip_prefix(b"ESQ1".as_slice()).ok_or_else(bad)?;
    let mut take = |n: usize| -> Result<&[u8], WireError> {
        if rest.len() < n {
            return Err(bad());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let word = |b: &[u8]| -> [u8; 4] { [b[0], b[1], b[2], b[3]] };
    let count = u32::from_be_bytes(word(take(4)?)) as usize;
    let mut rows = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let width = u32::from_be_bytes(word(take(4)?)) as usize;
        let mut row = Vec::with_capacity(width.min(1 << 12));
        for _ in 0..width {
            let len = i32::from_be_bytes(word(take(4)?));
            row.push(match usize::try_from(len) {
                Ok(len) => Some(Bytes::copy_from_slice(take(len)?)),
                Err(_) if len == -1 => None,
                Err(_) => return Err(bad()),
            });
        }
        rows.push(row);
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trips_in_both_formats() {
        for value in [0i64, 3, -7, 2_530, i64::MAX, i64::MIN] {
            for format in [TEXT, BINARY] {
                let bytes = encode_int8(value, format);
                assert_eq!(decode_int8(Some(&bytes), format), Ok(value));
            }
        }
        assert_eq!(encode_int8(2_530, TEXT), Bytes::from_static(b"2530"));
        assert!(decode_int8(None, TEXT).is_err());
        assert!(decode_int8(Some(&Bytes::from_static(b"12x")), TEXT).is_err());
        assert!(decode_int8(Some(&Bytes::from_static(b"\0\0\0\x01")), BINARY).is_err());
    }

    #[test]
    fn formats_read_as_bind_defines_them() {
        let answer = |formats: Vec<i16>| ExactAnswer {
            rows: vec![],
            formats,
        };
        assert_eq!(answer(vec![]).format(3), Ok(TEXT));
        assert_eq!(answer(vec![1]).format(3), Ok(BINARY));
        assert_eq!(answer(vec![0, 1]).format(1), Ok(BINARY));
        assert!(answer(vec![0, 1]).format(2).is_err());
        assert!(answer(vec![2]).format(0).is_err());
    }

    #[test]
    fn rows_round_trip_and_garbage_does_not_decode() {
        let rows = vec![
            vec![Some(Bytes::from_static(b"CA")), None, Some(Bytes::new())],
            vec![],
        ];
        let encoded = encode_rows(&rows);
        assert_eq!(decode_rows(&encoded), Ok(rows));
        assert!(decode_rows(&encoded[..encoded.len() - 1]).is_err());
        assert!(decode_rows(b"nope").is_err());
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(decode_rows(&longer).is_err());
    }
}
