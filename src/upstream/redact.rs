//! Upstream errors and notices without data values: a message like
//! `invalid input syntax for type integer: "<value>"` or a DETAIL like
//! `Key (ssn)=(…) already exists` could echo governed data, so esq keeps
//! the severity, SQLSTATE and position, redacts quoted text in the message
//! and drops every field that can carry values or names.

use bytes::{BufMut, BytesMut};

/// Fields kept: severity (localized and not), SQLSTATE, message
/// (redacted). Not the statement position: it counts characters of esq's
/// rewrite, whose length tells how many subjects were forgotten and how
/// long their keys are (and means nothing in the client's own text).
const KEPT: &[u8] = b"SVCM";

/// Rewrites one ErrorResponse/NoticeResponse body into `out` as a whole
/// message with `tag`. A malformed body becomes a bare internal error.
pub fn sanitized(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    let mut wrote_code = false;
    for (kind, value) in fields(body) {
        if !KEPT.contains(&kind) {
            continue;
        }
        wrote_code |= kind == b'C';
        out.put_u8(kind);
        if kind == b'M' {
            out.put_slice(redact(&value).as_bytes());
        } else {
            out.put_slice(value.as_bytes());
        }
        out.put_u8(0);
    }
    if !wrote_code {
        out.put_slice(b"SERROR\0VERROR\0CXX000\0Mupstream error\0");
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The message field (`M`) of an ErrorResponse body.
pub fn message_field(body: &[u8]) -> Option<String> {
    fields(body)
        .find(|(kind, _)| *kind == b'M')
        .map(|(_, v)| v.to_string())
}

/// Whether a NoticeResponse body is a DEBUG or LOG line (never for
/// clients: those carry the database's internal names).
pub fn is_debug_or_log(body: &[u8]) -> bool {
    // `V` is never localized; servers before 9.6 send only `S`.
    let severity = fields(body)
        .find(|(kind, _)| *kind == b'V')
        .or_else(|| fields(body).find(|(kind, _)| *kind == b'S'));
    severity.is_some_and(|(_, v)| v.starts_with("DEBUG") || v == "LOG")
}

/// The SQLSTATE field (`C`) of an ErrorResponse body.
pub fn code_field(body: &[u8]) -> Option<String> {
    fields(body)
        .find(|(kind, _)| *kind == b'C')
        .map(|(_, v)| v.to_string())
}

fn fields(body: &[u8]) -> impl Iterator<Item = (u8, std::borrow::Cow<'_, str>)> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&kind, tail) = rest.split_first()?;
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        let value = String::from_utf8_lossy(&tail[..end]);
        rest = &tail[end + 1..];
        Some((kind, value))
    })
}

/// Cuts whatever follows the first `: ` (PostgreSQL puts the offending
/// value there: `date field value out of range: 2024-13-01`) and replaces
/// the inside of every remaining "…" and '…' quotation with `…`.
pub fn redact(message: &str) -> String {
    let (head, cut) = match message.find(": ") {
        Some(at) => (&message[..at], true),
        None => (message, false),
    };
    let mut out = String::with_capacity(head.len() + 4);
    let mut quote: Option<char> = None;
    for c in head.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '\'' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    if cut {
        out.push_str(": …");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in fields {
            b.push(*k);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn values_never_pass() {
        let raw = body(&[
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"123-45-6789\"",
            ),
            (b'D', "Key (ssn)=(123-45-6789) already exists."),
            (b'W', "SQL function \"f\" statement 1 'x'"),
            (b'q', "select '123-45-6789'"),
            (b'c', "ssn"),
            (b'P', "4242"),
        ]);
        let mut out = BytesMut::new();
        sanitized(b'E', &raw, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("6789"), "{text}");
        assert!(text.contains("22P02"));
        assert!(text.contains("invalid input syntax for type integer: …"));
        assert!(!text.contains("ssn"));
        assert!(
            !text.contains("4242"),
            "no position in esq's rewrite: {text}"
        );
    }

    #[test]
    fn unterminated_quotes_are_cut() {
        assert_eq!(redact("bad 'abc"), "bad '…");
        assert_eq!(redact("a \"b\" c 'd'"), "a \"…\" c '…'");
    }

    #[test]
    fn unquoted_values_after_a_colon_are_cut() {
        assert_eq!(
            redact("date field value out of range: 2024-13-01"),
            "date field value out of range: …"
        );
        assert_eq!(
            redact("invalid input syntax for type integer: \"a\"b\"c\""),
            "invalid input syntax for type integer: …"
        );
        assert_eq!(redact("division by zero"), "division by zero");
    }
}
