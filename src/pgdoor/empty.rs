//! Empty statement texts: `""`, `;`, `  ;  `, `;;`, a text of nothing but
//! comments. PostgreSQL answers them with `EmptyQueryResponse` (drivers
//! send `;` as a connection check), not with an error, so the door answers
//! them the same way — without asking the guard, which refuses what it
//! cannot parse into a statement.
//!
//! Fail closed: an empty text is never forwarded as written. The door
//! forwards empty text (`""`) in its place, so the worst a mistake here
//! can do is answer `EmptyQueryResponse` where PostgreSQL would have
//! refused the text; it can never let a statement through.

/// Whether PostgreSQL reads `sql` as no statement at all: only whitespace,
/// semicolons, `--` line comments and (nested) `/* */` block comments.
/// An unterminated block comment is not empty (PostgreSQL refuses it).
pub fn is_empty(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            // The scanner's whitespace (scan.l: space [ \t\n\r\f\v]).
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b | b';' => at += 1,
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                at += 2;
                while at < bytes.len() && !matches!(bytes[at], b'\n' | b'\r') {
                    at += 1;
                }
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => match block_comment_end(bytes, at) {
                Some(end) => at = end,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// The index just past the block comment opening at `start`, whose
/// comments nest as PostgreSQL's do; `None` when it never closes.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    while at + 1 < bytes.len() {
        match (bytes[at], bytes[at + 1]) {
            (b'/', b'*') => {
                depth += 1;
                at += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::is_empty;

    #[test]
    fn no_statement_is_empty() {
        for sql in [
            "",
            ";",
            "  ;  ",
            ";;",
            "\n\t;\r\n",
            "-- a check",
            "-- a check\n;",
            "/* a check */",
            "/* a /* nested */ comment */ ;",
            "; -- trailing",
            "/**/;/**/",
        ] {
            assert!(is_empty(sql), "{sql:?} is empty");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for sql in [
            "SELECT 1",
            "; SELECT 1",
            "/* unterminated",
            "/* a /* nested */ but unterminated",
            "-- comment\nSELECT 1",
            "/*/ SELECT 1",
            "- - ;",
            "/",
            "-",
            "*/",
            "'';",
            "\u{a0};",
        ] {
            assert!(!is_empty(sql), "{sql:?} is not empty");
        }
    }
}
