//! The closed grammar of count-only answers. Under an aggregate ticket an
//! expression evaluated per row can leak: a `CASE`/division group key is an
//! error oracle on single rows, and `GROUP BY state IN ('TX','WY')` splits
//! groups by an arbitrary condition, so two allowed counts subtract to a
//! suppressed one. So group keys are plain columns or date buckets of a
//! column, the select list holds group keys and `count(*)` / `count(col)`,
//! and HAVING / ORDER BY only compare or sort those.

use sqlparser::ast::{
    BinaryOperator, DateTimeField, DuplicateTreatment, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, UnaryOperator, Value,
};

use super::denial::{Checked, Denial};
use super::resolve::builtin_function_name;

/// A column reference, possibly parenthesised.
pub(super) fn plain_column(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => plain_column(inner),
        _ => false,
    }
}

/// A function call without modifiers, returning its plain arguments.
fn plain_call(function: &Function) -> Option<(String, Vec<&FunctionArgExpr>, bool)> {
    if function.over.is_some()
        || function.filter.is_some()
        || function.null_treatment.is_some()
        || !function.within_group.is_empty()
        || !matches!(function.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    if !list.clauses.is_empty() {
        return None;
    }
    let distinct = match list.duplicate_treatment {
        None => false,
        Some(DuplicateTreatment::Distinct) => true,
        Some(DuplicateTreatment::All) => return None,
    };
    let args = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(expr) => Some(expr),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((builtin_function_name(function)?, args, distinct))
}

/// `count(*)`, `count(col)` or `count(DISTINCT col)`.
pub(super) fn is_count(expr: &Expr) -> bool {
    let Expr::Function(function) = expr else {
        return matches!(expr, Expr::Nested(inner) if is_count(inner));
    };
    match plain_call(function) {
        Some((name, args, distinct)) if name == "count" => match args.as_slice() {
            [FunctionArgExpr::Wildcard] => !distinct,
            [FunctionArgExpr::Expr(column)] => plain_column(column),
            _ => false,
        },
        _ => false,
    }
}

/// Date units valid for a date or timestamp at run time. A unit PostgreSQL
/// rejects only when it evaluates a row (`'bogus'`, `'timezone'`, `hour`
/// of a date) raises an error exactly when some row matches: an existence
/// oracle below k. So only these units pass.
/// (Checked against PostgreSQL 15 on a date column.)
const TRUNC_UNITS: &[&str] = &[
    "day",
    "week",
    "month",
    "quarter",
    "year",
    "decade",
    "century",
    "millennium",
];

/// `date_part` and `EXTRACT` also take these.
const PART_ONLY_UNITS: &[&str] = &["dow", "doy", "isodow", "isoyear"];

fn trunc_unit(text: &str) -> bool {
    TRUNC_UNITS.contains(&text.to_ascii_lowercase().as_str())
}

fn date_unit(text: &str) -> bool {
    trunc_unit(text) || PART_ONLY_UNITS.contains(&text.to_ascii_lowercase().as_str())
}

fn extract_field(field: &DateTimeField) -> bool {
    use DateTimeField::*;
    matches!(
        field,
        Year | Month | Week(None) | Day | Century | Decade | Dow | Doy | Isodow | Isoyear
    ) || matches!(field, DateTimeField::Custom(ident) if date_unit(&ident.value))
}

/// A plain column, or a date bucket of one: `date_trunc('month', col)`,
/// `date_part('year', col)`, `EXTRACT(YEAR FROM col)`, with a unit from
/// [`TRUNC_UNITS`] (and, for `date_part`/`EXTRACT`, [`PART_ONLY_UNITS`]).
pub(super) fn is_group_key(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_group_key(inner),
        Expr::Extract { field, expr, .. } => extract_field(field) && plain_column(expr),
        Expr::Function(function) => match plain_call(function) {
            Some((name, args, false)) if name == "date_trunc" || name == "date_part" => {
                let unit_ok = |u: &str| {
                    if name == "date_trunc" {
                        trunc_unit(u)
                    } else {
                        date_unit(u)
                    }
                };
                matches!(
                    args.as_slice(),
                    [FunctionArgExpr::Expr(Expr::Value(unit)), FunctionArgExpr::Expr(column)]
                        if matches!(&unit.value, Value::SingleQuotedString(u) if unit_ok(u))
                            && plain_column(column)
                )
            }
            _ => false,
        },
        _ => false,
    }
}

fn shape_denial(clause: &str) -> Denial {
    Denial::forbidden(
        format!("under an aggregate-only ticket {clause} may hold only grouping columns and count()"),
        "expressions evaluated row by row (CASE, arithmetic, comparisons, IN) can single out rows or split groups so that counts subtract to a suppressed one",
        "group by plain columns or date buckets (date_trunc('year', burial_date)) and count: SELECT state, count(*) … GROUP BY state",
    )
}

pub(super) fn check_select_item(expr: &Expr) -> Checked<()> {
    if is_count(expr) || is_group_key(expr) {
        Ok(())
    } else {
        Err(shape_denial("the select list"))
    }
}

pub(super) fn check_group_key(expr: &Expr) -> Checked<()> {
    let positional = matches!(expr, Expr::Value(v) if matches!(v.value, Value::Number(_, _)));
    if positional || is_group_key(expr) {
        Ok(())
    } else {
        Err(shape_denial("GROUP BY"))
    }
}

pub(super) fn check_order_item(expr: &Expr) -> Checked<()> {
    let positional = matches!(expr, Expr::Value(v) if matches!(v.value, Value::Number(_, _)));
    if positional || is_count(expr) || is_group_key(expr) {
        Ok(())
    } else {
        Err(shape_denial("ORDER BY"))
    }
}

/// HAVING: counts compared with numbers, joined by AND/OR/NOT. No
/// arithmetic: `1/(count(*)-9)` would turn a suppressed group's size into
/// an error whenever PostgreSQL evaluates it before the k condition.
pub(super) fn check_having(expr: &Expr) -> Checked<()> {
    let ok = match expr {
        Expr::Nested(inner) => return check_having(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => return check_having(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And | BinaryOperator::Or,
            right,
        } => {
            check_having(left)?;
            return check_having(right);
        }
        Expr::BinaryOp { left, op, right } => {
            let comparison = matches!(
                op,
                BinaryOperator::Gt
                    | BinaryOperator::Lt
                    | BinaryOperator::GtEq
                    | BinaryOperator::LtEq
                    | BinaryOperator::Eq
                    | BinaryOperator::NotEq
            );
            let number =
                |e: &Expr| matches!(e, Expr::Value(v) if matches!(v.value, Value::Number(_, _)));
            comparison && ((is_count(left) && number(right)) || (number(left) && is_count(right)))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Denial::forbidden(
            "under an aggregate-only ticket HAVING may only compare counts with numbers",
            "arithmetic or conditions on aggregates can reveal the size of a suppressed group",
            "write HAVING count(*) > 100",
        ))
    }
}
