//! Names as PostgreSQL reads them: identifier folding and truncation,
//! qualified names, the built-in functions esq may allow, and the name an
//! unaliased select item gets. Shared by name resolution and the checks.

use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart};

use super::denial::{Checked, Denial};

/// PostgreSQL's identifier folding: unquoted names are lower-cased (ASCII).
pub(super) fn fold(ident: &Ident) -> String {
    let folded = if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    };
    truncate_identifier(folded)
}

/// PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1),
/// cut on a character boundary: two names equal there are the same name.
pub(super) const MAX_IDENTIFIER_BYTES: usize = 63;

fn truncate_identifier(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// A function's folded name when it is unqualified or `pg_catalog.`-qualified
/// (the only schema whose functions esq may allow); `None` otherwise.
pub(super) fn builtin_function_name(function: &sqlparser::ast::Function) -> Option<String> {
    let parts: Vec<String> = function
        .name
        .0
        .iter()
        .map(|p| p.as_ident().map(fold))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [name] => Some(name.clone()),
        [schema, name] if schema == "pg_catalog" => Some(name.clone()),
        _ => None,
    }
}

pub(super) fn object_name_parts(name: &ObjectName) -> Checked<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(fold(ident)),
            ObjectNamePart::Function(_) => {
                Err(Denial::unsupported("computed names", "name the table"))
            }
        })
        .collect()
}

/// PostgreSQL's name for an unaliased select-list item (its
/// `FigureColname`), where esq can know it for certain.
pub(super) fn exact_output_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(fold(ident)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(fold),
        Expr::Nested(inner) => exact_output_name(inner),
        // A cast is named after a column it casts; otherwise after the type,
        // whose internal name esq does not model.
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Nested(_) => {
                exact_output_name(expr)
            }
            _ => None,
        },
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Extract { .. } => Some("extract".into()),
        // A scalar subquery is named after its column; typed literals and
        // the like after their type.
        Expr::Subquery(_) | Expr::TypedString(_) | Expr::Interval(_) => None,
        Expr::Value(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::Between { .. }
        | Expr::In { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. } => Some("?column?".into()),
        _ => None,
    }
}

/// As [`exact_output_name`], with PostgreSQL's fallback where unknown (for
/// messages and the outermost query, where names bind nothing).
pub(super) fn output_name(expr: &Expr) -> String {
    exact_output_name(expr).unwrap_or_else(|| "?column?".into())
}
