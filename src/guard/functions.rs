//! Allowlists: the functions, operators and cast targets the guard knows to
//! be safe. Everything else is denied. `count` is the only function a PII
//! field may be passed to.

use sqlparser::ast::{BinaryOperator, DataType, UnaryOperator};

/// Scalar functions that compute on their arguments only: no I/O, no
/// settings, no SQL given as text, no sleeping.
const SCALAR: &[&str] = &[
    "lower",
    "upper",
    "length",
    "char_length",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "coalesce",
    "nullif",
    "date_trunc",
    "date_part",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "greatest",
    "least",
    "substring",
    "substr",
    "concat",
    "left",
    "right",
    "initcap",
    "now",
    "current_date",
    "to_char",
    "make_date",
];

/// Aggregates allowed on row-level tickets (on non-PII fields).
const AGGREGATE: &[&str] = &["count", "sum", "avg", "min", "max"];

/// Window-only functions allowed on row-level tickets.
const WINDOW: &[&str] = &["row_number", "rank", "dense_rank"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    Scalar,
    Aggregate,
    Window,
}

/// The kind of an allowlisted function, by its folded name (optionally
/// `pg_catalog.`-qualified by the caller, who strips that schema).
pub fn lookup(name: &str) -> Option<FunctionKind> {
    if SCALAR.contains(&name) {
        Some(FunctionKind::Scalar)
    } else if AGGREGATE.contains(&name) {
        Some(FunctionKind::Aggregate)
    } else if WINDOW.contains(&name) {
        Some(FunctionKind::Window)
    } else {
        None
    }
}

pub fn allowed_names() -> impl Iterator<Item = &'static str> {
    SCALAR.iter().chain(AGGREGATE).chain(WINDOW).copied()
}

pub fn binary_operator_allowed(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(
        op,
        Plus | Minus
            | Multiply
            | Divide
            | Modulo
            | StringConcat
            | Gt
            | Lt
            | GtEq
            | LtEq
            | Eq
            | NotEq
            | And
            | Or
    )
}

pub fn unary_operator_allowed(op: &UnaryOperator) -> bool {
    matches!(
        op,
        UnaryOperator::Not | UnaryOperator::Minus | UnaryOperator::Plus
    )
}

/// Cast targets: plain scalar types (never a row, array, regclass or JSON).
pub fn cast_target_allowed(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int(_)
            | Integer(_)
            | BigInt(_)
            | SmallInt(_)
            | Int2(_)
            | Int4(_)
            | Int8(_)
            | Numeric(_)
            | Decimal(_)
            | Real
            | Double(_)
            | DoublePrecision
            | Float(_)
            | Float4
            | Float8
            | Text
            | Varchar(_)
            | CharacterVarying(_)
            | Char(_)
            | Character(_)
            | Date
            | Timestamp(_, _)
            | Boolean
            | Bool
    )
}
