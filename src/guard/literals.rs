//! String constants in PostgreSQL's other spellings: `E'…'` escape
//! strings, `$$…$$` / `$tag$…$tag$` dollar quotes, `U&'…'` Unicode strings
//! (with `UESCAPE`) and `N'…'` national strings. Their value is what
//! PostgreSQL's own scanner makes of them, so libpg_query's parse tree is
//! the authority: every such constant sqlparser read must sit where
//! PostgreSQL has a string constant of the same spelling and the same
//! value, and every one PostgreSQL read must be one sqlparser read too.
//! Any difference is a denial (two lexers disagreeing is how a quote or a
//! backslash turns data into code).
//!
//! Once settled, escape, dollar-quoted and Unicode strings become ordinary
//! `'…'` constants in the tree, so every later stage reads them as it
//! reads any literal, and what is forwarded spells them plainly: quotes
//! doubled, backslashes literal (esq's upstream sessions run with
//! `standard_conforming_strings = on`, which no session may change).
//! `N'…'` stays as written: PostgreSQL reads it as a `bpchar` constant,
//! whose comparisons ignore trailing blanks, and the same spelling keeps
//! that meaning.
//!
//! Rendering: sqlparser prints a quote after a backslash, or two quotes in
//! a row, as they are (it guesses they were escaped already), so the value
//! `\' UNION SELECT …` would print as `'\' UNION SELECT …'`, which
//! PostgreSQL reads as a string and a UNION. So before printing, a string
//! whose plain spelling would not read back as its value is spelled as a
//! dollar quote with a tag it does not contain, and after printing the
//! text must parse back into the very tree that was analysed (names too,
//! which cannot be re-spelled: an ambiguous one is refused).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    DollarQuotedString, Ident, Statement, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::denial::{Checked, Denial};

/// How a string constant was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Form {
    Escape,
    Dollar,
    Unicode,
    National,
}

/// One string constant in a non-plain spelling: its form and value, keyed
/// by the byte offset where its spelling starts.
type Constants = BTreeMap<usize, (Form, String)>;

/// Verifies every non-plain string constant of `statements` (parsed from
/// `sql`) against PostgreSQL's reading of `sql`, then spells escape,
/// dollar-quoted and Unicode strings as plain constants.
pub(super) fn settle(sql: &str, statements: &mut [Statement]) -> Checked<()> {
    if !may_hold_special(sql) {
        return Ok(());
    }
    let lines = LineStarts::new(sql);
    let mut collector = Collector {
        lines: &lines,
        found: Constants::new(),
        unlocated: false,
        conflict: false,
    };
    // sqlparser's visitor recurses as deep as the tree.
    super::deep_walk(|| {
        for statement in statements.iter_mut() {
            let _ = statement.visit(&mut collector);
        }
    });
    if collector.unlocated || collector.conflict {
        return Err(mismatch());
    }
    let postgres = postgres_constants(sql)?;
    agree(&collector.found, &postgres)
}

/// The two readings agree exactly: same places, spellings and values.
pub(super) fn agree(ours: &Constants, postgres: &Constants) -> Checked<()> {
    if ours == postgres {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// Spells every string constant whose plain `'…'` print would not read
/// back as its value as a dollar quote (see the module comment).
pub(super) fn spell_unambiguously(statements: &mut [Statement]) -> Checked<()> {
    let mut speller = Speller;
    let flow = super::deep_walk(|| {
        statements
            .iter_mut()
            .try_for_each(|statement| statement.visit(&mut speller))
    });
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(Denial::unsupported(
            "an N'…' string holding a backslash before a quote, or two quotes in a row",
            "write it as a plain 'quoted' string",
        )),
    }
}

/// The printed text `sql` parsed back into `reparsed`, which must print
/// as `sql` again: the text is read the way it was printed (together with
/// [`spell_unambiguously`] and the parser's refusal of ambiguous quoted
/// names, see [`name_reads_back`]).
pub(super) fn reads_back(sql: &str, reparsed: &[Statement]) -> Checked<()> {
    let again = super::deep_walk(|| {
        reparsed
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    });
    if again == sql {
        Ok(())
    } else {
        Err(Denial::syntax(
            "esq's rewrite does not read back as the statement it analysed",
        ))
    }
}

struct Speller;

impl VisitorMut for Speller {
    type Break = ();

    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        match &value.value {
            Value::SingleQuotedString(text) if !plain_reads_back(text) => {
                let tag = dollar_tag(text);
                value.value = Value::DollarQuotedString(DollarQuotedString {
                    value: text.clone(),
                    tag: Some(tag),
                });
            }
            // Its type (bpchar) needs its spelling: it cannot be re-spelled.
            Value::NationalStringLiteral(text) if !plain_reads_back(text) => {
                return ControlFlow::Break(());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Whether sqlparser's `'…'` print of `text` reads back, as PostgreSQL
/// reads a standard string (`''` is a quote, nothing else is special), as
/// `text`.
pub(super) fn plain_reads_back(text: &str) -> bool {
    !text.contains('\'')
        || reads_back_quoted(
            &Value::SingleQuotedString(text.to_string()).to_string(),
            '\'',
            text,
        )
}

/// Whether sqlparser's `"…"` print of the quoted name `name` reads back,
/// as PostgreSQL reads a quoted identifier, as `name`. A name that does
/// not cannot be printed faithfully: the parser refuses it.
pub(super) fn name_reads_back(name: &str) -> bool {
    !name.contains('"') || reads_back_quoted(&Ident::with_quote('"', name).to_string(), '"', name)
}

/// `printed` is `quote`, the text with each quote doubled, `quote`.
fn reads_back_quoted(printed: &str, quote: char, text: &str) -> bool {
    let Some(inner) = printed
        .strip_prefix(quote)
        .and_then(|rest| rest.strip_suffix(quote))
    else {
        return false;
    };
    let mut read = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        // A quote is read only as half of a pair: a lone one ends it.
        if c == quote && chars.next() != Some(quote) {
            return false;
        }
        read.push(c);
    }
    read == text
}

/// A dollar-quote tag that `text` does not contain.
fn dollar_tag(text: &str) -> String {
    (0..)
        .map(|n| {
            if n == 0 {
                "esq".to_string()
            } else {
                format!("esq{n}")
            }
        })
        .find(|tag| !text.contains(&format!("${tag}")))
        .unwrap_or_default()
}

fn mismatch() -> Denial {
    Denial::syntax("PostgreSQL and esq read a string constant differently")
}

/// No `$`, no quote after `E`, `N` or `&`: no special spelling can be
/// there (a cheap test before parsing again).
fn may_hold_special(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    bytes.contains(&b'$')
        || bytes
            .windows(2)
            .any(|pair| pair[1] == b'\'' && matches!(pair[0], b'e' | b'E' | b'n' | b'N' | b'&'))
}

struct Collector<'a> {
    lines: &'a LineStarts<'a>,
    found: Constants,
    /// A special constant without a usable position.
    unlocated: bool,
    /// Two different constants at one position.
    conflict: bool,
}

impl VisitorMut for Collector<'_> {
    type Break = ();

    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        let (form, text) = match &value.value {
            Value::EscapedStringLiteral(s) => (Form::Escape, s.clone()),
            Value::UnicodeStringLiteral(s) => (Form::Unicode, s.clone()),
            Value::DollarQuotedString(d) => (Form::Dollar, d.value.clone()),
            Value::NationalStringLiteral(s) => (Form::National, s.clone()),
            _ => return ControlFlow::Continue(()),
        };
        match self.lines.offset(value.span.start) {
            None => self.unlocated = true,
            Some(at) => {
                let entry = (form, text.clone());
                if let Some(existing) = self.found.insert(at, entry.clone()) {
                    self.conflict |= existing != entry;
                }
            }
        }
        if form != Form::National {
            value.value = Value::SingleQuotedString(text);
        }
        ControlFlow::Continue(())
    }
}

/// Byte offsets of line starts, to turn sqlparser's line and column
/// (counted in characters, lines split at `\n` only) into byte offsets, as
/// PostgreSQL gives its locations.
struct LineStarts<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineStarts<'a> {
    fn new(sql: &'a str) -> LineStarts<'a> {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(at, _)| at + 1));
        LineStarts { sql, starts }
    }

    fn offset(&self, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
        let start = *self.starts.get(line)?;
        let rest = self.sql.get(start..)?;
        match rest.char_indices().nth(column) {
            Some((at, _)) => Some(start + at),
            None if rest.chars().count() == column => Some(self.sql.len()),
            None => None,
        }
    }
}

/// PostgreSQL's string constants in a non-plain spelling, from its parse
/// tree (every node, whatever the statement: the tree is walked as data).
fn postgres_constants(sql: &str) -> Checked<Constants> {
    let parsed = pg_query::parse(sql, 0)
        .map_err(|_| Denial::syntax("PostgreSQL's parser rejects the statement"))?;
    let tree = serde_json::to_value(&parsed.protobuf).map_err(|_| mismatch())?;
    let mut found = Constants::new();
    let mut conflict = false;
    let mut pending = vec![&tree];
    while let Some(node) = pending.pop() {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(constant) = map.get("AConst") {
                    if let Some((at, entry)) = spelled_constant(sql, constant) {
                        if let Some(existing) = found.insert(at, entry.clone()) {
                            conflict |= existing != entry;
                        }
                    }
                }
                pending.extend(map.values());
            }
            serde_json::Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    if conflict {
        return Err(mismatch());
    }
    Ok(found)
}

/// An `A_Const` holding a string, if its spelling in `sql` is a special one.
fn spelled_constant(sql: &str, constant: &serde_json::Value) -> Option<(usize, (Form, String))> {
    let value = constant.get("val")?.get("Sval")?.get("sval")?.as_str()?;
    let at = usize::try_from(constant.get("location")?.as_i64()?).ok()?;
    let (start, form) = form_at(sql, at)?;
    Some((start, (form, value.to_string())))
}

/// The special spelling of the string constant PostgreSQL located at byte
/// `at`, with the offset where that spelling starts.
pub(super) fn form_at(sql: &str, at: usize) -> Option<(usize, Form)> {
    let bytes = sql.as_bytes();
    let rest = bytes.get(at..)?;
    match rest {
        [b'$', ..] => Some((at, Form::Dollar)),
        [b'e' | b'E', b'\'', ..] => Some((at, Form::Escape)),
        [b'u' | b'U', b'&', b'\'', ..] => Some((at, Form::Unicode)),
        // N'…' is read as the keyword NCHAR and a plain string after it.
        [b'\'', ..] if at >= 1 && matches!(bytes[at - 1], b'n' | b'N') => {
            let standalone = at < 2 || !identifier_byte(bytes[at - 2]);
            standalone.then_some((at - 1, Form::National))
        }
        _ => None,
    }
}

fn identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Applies `UESCAPE 'c'` after a `U&'…'` string, which sqlparser's
/// tokenizer does not know: the string is decoded again from its source
/// text with `c` as the escape character, and the `UESCAPE 'c'` tokens are
/// dropped. (A string that sqlparser already failed to read with `\` as the
/// escape never gets here: that is a parse error, so a denial.)
pub(super) fn apply_uescape(sql: &str, tokens: &mut Vec<TokenWithSpan>) -> Result<(), String> {
    if !tokens
        .iter()
        .any(|t| matches!(t.token, Token::UnicodeStringLiteral(_)))
    {
        return Ok(());
    }
    let lines = LineStarts::new(sql);
    let mut i = 0;
    while i < tokens.len() {
        if !matches!(tokens[i].token, Token::UnicodeStringLiteral(_)) {
            i += 1;
            continue;
        }
        let Some(keyword) = next_significant(tokens, i + 1) else {
            break;
        };
        let is_uescape = matches!(&tokens[keyword].token,
            Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("uescape"));
        if !is_uescape {
            i += 1;
            continue;
        }
        let escape = next_significant(tokens, keyword + 1)
            .and_then(|at| match &tokens[at].token {
                Token::SingleQuotedString(s) => Some((at, s.clone())),
                _ => None,
            })
            .ok_or("UESCAPE must be followed by a quoted character")?;
        let escape_char = uescape_char(&escape.1)?;
        let start = lines
            .offset(tokens[i].span.start)
            .ok_or("a Unicode string without a position")?;
        let end = lines
            .offset(tokens[i + 1].span.start)
            .ok_or("a Unicode string without a position")?;
        let source = sql.get(start..end).ok_or("a Unicode string's text")?;
        let body = source
            .get(3..source.len().saturating_sub(1))
            .filter(|_| source.len() >= 4 && source.ends_with('\''))
            .ok_or("a Unicode string's quotes")?;
        let value = decode_unicode(body, escape_char)?;
        let span = tokens[i].span.union(&tokens[escape.0].span);
        tokens.splice(
            i..=escape.0,
            [TokenWithSpan {
                token: Token::UnicodeStringLiteral(value),
                span,
            }],
        );
        i += 1;
    }
    Ok(())
}

fn next_significant(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&at| !matches!(tokens[at].token, Token::Whitespace(_)))
}

/// PostgreSQL: any single character but a hex digit, `+`, a quote or
/// white space.
fn uescape_char(text: &str) -> Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None)
            if !c.is_ascii_hexdigit() && !matches!(c, '+' | '\'' | '"') && !c.is_whitespace() =>
        {
            Ok(c)
        }
        _ => Err("invalid Unicode escape character".into()),
    }
}

/// The body of a `U&'…'` string (between its quotes, quotes still doubled)
/// with `escape` as the escape character: `cc` is `c`, `cXXXX` and
/// `c+XXXXXX` are code points. Surrogate pairs are refused (PostgreSQL
/// combines them; esq does not analyse them).
pub(super) fn decode_unicode(body: &str, escape: char) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // A doubled quote inside the string.
            match chars.next() {
                Some('\'') => out.push('\''),
                _ => return Err("a lone quote inside a Unicode string".into()),
            }
        } else if c != escape {
            out.push(c);
        } else if chars.peek() == Some(&escape) {
            chars.next();
            out.push(escape);
        } else {
            let digits = if chars.peek() == Some(&'+') {
                chars.next();
                6
            } else {
                4
            };
            let hex: String = chars.by_ref().take(digits).collect();
            if hex.len() != digits || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                return Err("invalid Unicode escape".into());
            }
            let code = u32::from_str_radix(&hex, 16).map_err(|_| "invalid Unicode escape")?;
            match char::from_u32(code) {
                Some(ch) if ch != '\0' => out.push(ch),
                _ => return Err("invalid Unicode escape value".into()),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constants(entries: &[(usize, Form, &str)]) -> Constants {
        entries
            .iter()
            .map(|(at, form, value)| (*at, (*form, value.to_string())))
            .collect()
    }

    #[test]
    fn the_readings_must_agree_on_place_spelling_and_value() {
        let postgres = constants(&[(10, Form::Escape, "a\\b")]);
        assert!(agree(&constants(&[(10, Form::Escape, "a\\b")]), &postgres).is_ok());
        // A forged disagreement on the value, the place, the spelling, or
        // a constant only one parser saw: each is a denial.
        for ours in [
            constants(&[(10, Form::Escape, "ab")]),
            constants(&[(11, Form::Escape, "a\\b")]),
            constants(&[(10, Form::Dollar, "a\\b")]),
            constants(&[]),
            constants(&[(10, Form::Escape, "a\\b"), (20, Form::Dollar, "x")]),
        ] {
            let denial = agree(&ours, &postgres).expect_err("a mismatch");
            assert_eq!(denial.code, super::super::denial::sqlstate::SYNTAX);
        }
    }

    #[test]
    fn postgres_locates_each_spelling() {
        let sql = "SELECT E'a', $$b$$, U&'c', N'd', 'e', an'f'";
        let found = postgres_constants(sql).unwrap();
        let forms: Vec<(Form, &str)> = found.values().map(|(f, v)| (*f, v.as_str())).collect();
        assert_eq!(
            forms,
            vec![
                (Form::Escape, "a"),
                (Form::Dollar, "b"),
                (Form::Unicode, "c"),
                (Form::National, "d"),
            ]
        );
    }

    #[test]
    fn unicode_bodies_decode_like_postgres() {
        assert_eq!(decode_unicode("d!0061t!+000061", '!').unwrap(), "data");
        assert_eq!(decode_unicode("a!!b\\c", '!').unwrap(), "a!b\\c");
        assert_eq!(decode_unicode("it''s", '!').unwrap(), "it's");
        assert!(decode_unicode("!00", '!').is_err());
        assert!(decode_unicode("!0000", '!').is_err());
        assert!(decode_unicode("!D800", '!').is_err());
        assert!(uescape_char("a").is_err());
        assert!(uescape_char("+").is_err());
        assert!(uescape_char("!!").is_err());
        assert_eq!(uescape_char("!").unwrap(), '!');
    }

    #[test]
    fn ambiguous_plain_spellings_are_detected() {
        assert!(plain_reads_back("O'Brien"));
        assert!(plain_reads_back("a\\b"));
        assert!(plain_reads_back("' OR ssn = '1"));
        assert!(!plain_reads_back("\\' UNION SELECT ssn FROM t --"));
        assert!(!plain_reads_back("a''b"));
        assert!(name_reads_back("plain"));
        assert!(name_reads_back("say \"hi\""));
        assert!(!name_reads_back("\\\" UNION SELECT ssn FROM t --"));
        assert!(!name_reads_back("a\"\"b"));
        assert_eq!(dollar_tag("x"), "esq");
        assert_eq!(dollar_tag("a $esq b"), "esq1");
    }

    #[test]
    fn line_and_column_become_byte_offsets() {
        let sql = "SELECT 'é',\n  E'x'";
        let lines = LineStarts::new(sql);
        let at = lines.offset(Location { line: 2, column: 3 }).unwrap();
        assert_eq!(&sql[at..at + 2], "E'");
        assert_eq!(lines.offset(Location { line: 0, column: 0 }), None);
    }
}
