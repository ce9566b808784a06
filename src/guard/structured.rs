//! The structured query body of `POST /api/dta/query` (`groupBy`, `select`,
//! `where`, `orderBy`, `limit`), compiled to a sqlparser AST. User values
//! only ever become AST literals and field names are checked against the
//! catalog first: nothing the user sends is pasted into SQL text. The
//! rendered statement then goes through the guard like any other. It lives
//! in the guard because it is SQL knowledge; the HTTP door only reads the
//! JSON body and reports a [`BadQuery`] as a bad request.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;
use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, InTarget, LimitClause, OrderBy, OrderByExpr,
    OrderByKind, OrderBySort, Query, SelectItem, SetExpr, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::Dataset;
use crate::tickets::Scope;

/// Why a structured body cannot be compiled: the offending key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("{message}")]
    Field {
        field: Option<String>,
        message: String,
    },
    /// A bug in esq's own skeleton (logged, never shown).
    #[error("structured query: {0}")]
    Internal(String),
}

impl BadQuery {
    fn bad_request(field: Option<&str>, message: impl Into<String>) -> BadQuery {
        BadQuery::Field {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

/// The largest `limit` accepted.
pub const MAX_LIMIT: u64 = 10_000_000;
/// The output column that carries `count(*)` in grouped answers.
pub const COUNT_COLUMN: &str = "count";

/// The query body: either `sql` or the structured keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryBody {
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub group_by: Option<Json>,
    #[serde(default)]
    pub select: Option<Json>,
    #[serde(default, rename = "where")]
    pub where_: Option<BTreeMap<String, Json>>,
    #[serde(default)]
    pub order_by: Option<Json>,
    #[serde(default)]
    pub limit: Option<u64>,
}

impl QueryBody {
    fn is_structured(&self) -> bool {
        self.group_by.is_some()
            || self.select.is_some()
            || self.where_.is_some()
            || self.order_by.is_some()
            || self.limit.is_some()
    }

    /// The statement text to give the guard.
    pub fn statement(&self, dataset: &Dataset, scope: &Scope) -> Result<String, BadQuery> {
        match &self.sql {
            Some(_) if self.is_structured() => Err(BadQuery::bad_request(
                Some("sql"),
                "send either \"sql\" or the structured keys (groupBy, select, where, orderBy, limit), not both",
            )),
            Some(sql) if sql.trim().is_empty() => {
                Err(BadQuery::bad_request(Some("sql"), "is empty"))
            }
            Some(sql) => Ok(sql.clone()),
            None => compile(self, dataset, scope),
        }
    }
}

/// Compiles a structured body to SQL over the scope's dataset.
pub fn compile(body: &QueryBody, dataset: &Dataset, scope: &Scope) -> Result<String, BadQuery> {
    let group_by = names(dataset, "groupBy", body.group_by.as_ref())?;
    let select = names(dataset, "select", body.select.as_ref())?;
    let grouped = group_by.is_some() || scope.aggregate.is_some();

    let columns: Vec<String> = if grouped {
        let columns = select.unwrap_or_else(|| group_by.clone().unwrap_or_default());
        if let Some(stray) = columns
            .iter()
            .find(|c| !group_by.iter().flatten().any(|g| g == *c))
        {
            return Err(BadQuery::bad_request(
                Some("select"),
                format!("{stray:?} is not in groupBy: a grouped answer shows only its groupBy fields and the count"),
            ));
        }
        columns
    } else {
        select.unwrap_or_else(|| scope.fields.clone())
    };
    let group_by = group_by.unwrap_or_default();

    let mut query = skeleton(dataset)?;
    let (count_item, order_template) = templates(&query)?;
    let SetExpr::Select(select_node) = query.body.as_mut() else {
        return Err(BadQuery::Internal("skeleton is not a SELECT".into()));
    };
    let mut projection: Vec<SelectItem> = columns
        .iter()
        .map(|c| SelectItem::UnnamedExpr(column(c)))
        .collect();
    if grouped {
        projection.push(count_item);
    }
    select_node.projection = projection;
    select_node.group_by =
        GroupByExpr::Expressions(group_by.iter().map(|g| column(g)).collect(), vec![]);
    select_node.selection = match &body.where_ {
        None => None,
        Some(filters) => where_clause(dataset, filters)?,
    };

    let mut outputs = columns.clone();
    if grouped {
        outputs.push(COUNT_COLUMN.to_string());
    }
    let order = order_by(body.order_by.as_ref(), &outputs, &order_template)?;
    query.order_by = if order.is_empty() {
        None
    } else {
        Some(OrderBy {
            kind: OrderByKind::Expressions(order),
            interpolate: None,
        })
    };
    query.limit_clause = match body.limit {
        None => None,
        Some(0) => return Err(BadQuery::bad_request(Some("limit"), "must be at least 1")),
        Some(n) if n > MAX_LIMIT => {
            return Err(BadQuery::bad_request(
                Some("limit"),
                format!("at most {MAX_LIMIT}"),
            ))
        }
        Some(n) => Some(LimitClause::LimitOffset {
            limit: Some(Expr::Value(Value::Number(n.to_string(), false).into())),
            offset: None,
            limit_by: vec![],
        }),
    };
    Ok(Statement::Query(Box::new(query)).to_string())
}

/// `SELECT x, count(*) AS count FROM <table> ORDER BY x ASC`, with the
/// table name from the catalog (trusted configuration, quoted).
fn skeleton(dataset: &Dataset) -> Result<Query, BadQuery> {
    let table = format!(
        "{}.{}",
        Ident::with_quote('"', &dataset.table.schema),
        Ident::with_quote('"', &dataset.table.name)
    );
    let text = format!("SELECT x, count(*) AS {COUNT_COLUMN} FROM {table} ORDER BY x ASC");
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &text)
        .map_err(|err| BadQuery::Internal(format!("structured query skeleton: {err}")))?;
    match statements.pop() {
        Some(Statement::Query(query)) if statements.is_empty() => Ok(*query),
        _ => Err(BadQuery::Internal(
            "structured query skeleton is not one query".into(),
        )),
    }
}

fn templates(query: &Query) -> Result<(SelectItem, OrderByExpr), BadQuery> {
    let missing = || BadQuery::Internal("structured query skeleton lacks a part".into());
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(missing());
    };
    let count = select.projection.get(1).cloned().ok_or_else(missing)?;
    let order = match query.order_by.as_ref().map(|o| &o.kind) {
        Some(OrderByKind::Expressions(list)) => list.first().cloned().ok_or_else(missing)?,
        _ => return Err(missing()),
    };
    Ok((count, order))
}

fn column(name: &str) -> Expr {
    Expr::Identifier(Ident::new(name))
}

/// A field name or a list of them, each a field of the dataset.
fn names(
    dataset: &Dataset,
    key: &str,
    value: Option<&Json>,
) -> Result<Option<Vec<String>>, BadQuery> {
    let Some(value) = value else { return Ok(None) };
    let items: Vec<&Json> = match value {
        Json::String(_) => vec![value],
        Json::Array(items) if !items.is_empty() => items.iter().collect(),
        Json::Array(_) => return Err(BadQuery::bad_request(Some(key), "name at least one field")),
        _ => {
            return Err(BadQuery::bad_request(
                Some(key),
                "must be a field name or a list of field names",
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Json::String(name) = item else {
            return Err(BadQuery::bad_request(
                Some(key),
                "field names must be strings",
            ));
        };
        out.push(field(dataset, key, name)?);
    }
    Ok(Some(out))
}

/// Checks that `name` is a field of the dataset (its catalog spelling).
fn field(dataset: &Dataset, key: &str, name: &str) -> Result<String, BadQuery> {
    dataset.field(name).map(|f| f.name.clone()).ok_or_else(|| {
        let known: Vec<&str> = dataset.fields.iter().map(|f| f.name.as_str()).collect();
        BadQuery::bad_request(
            Some(key),
            format!(
                "{name:?} is not a field of {}; its fields are: {}",
                dataset.id,
                known.join(", ")
            ),
        )
    })
}

/// `where`: `{"state":"CA"}` (equality), `{"state":["CA","NY"]}` (IN), or
/// `{"burial_date":{"gte":"2024-01-01","lt":"2024-07-01"}}` (ranges; also
/// `eq` and `in`). All conditions are joined with AND.
fn where_clause(
    dataset: &Dataset,
    filters: &BTreeMap<String, Json>,
) -> Result<Option<Expr>, BadQuery> {
    let mut conditions = Vec::new();
    for (name, condition) in filters {
        let key = format!("where.{name}");
        let column = column(&field(dataset, &key, name)?);
        match condition {
            Json::Array(values) => conditions.push(in_list(&key, &column, values)?),
            Json::Object(ops) => {
                if ops.is_empty() {
                    return Err(BadQuery::bad_request(
                        Some(&key),
                        "name at least one of eq, gt, gte, lt, lte, in",
                    ));
                }
                for (op, value) in ops {
                    let op_key = format!("{key}.{op}");
                    let binary = match op.as_str() {
                        "eq" => BinaryOperator::Eq,
                        "gt" => BinaryOperator::Gt,
                        "gte" => BinaryOperator::GtEq,
                        "lt" => BinaryOperator::Lt,
                        "lte" => BinaryOperator::LtEq,
                        "in" => {
                            let Json::Array(values) = value else {
                                return Err(BadQuery::bad_request(Some(&op_key), "must be a list"));
                            };
                            conditions.push(in_list(&op_key, &column, values)?);
                            continue;
                        }
                        _ => {
                            return Err(BadQuery::bad_request(
                                Some(&op_key),
                                "unknown operator; use eq, gt, gte, lt, lte or in",
                            ))
                        }
                    };
                    conditions.push(Expr::BinaryOp {
                        left: Box::new(column.clone()),
                        op: binary,
                        right: Box::new(literal(&op_key, value)?),
                    });
                }
            }
            scalar => conditions.push(Expr::BinaryOp {
                left: Box::new(column.clone()),
                op: BinaryOperator::Eq,
                right: Box::new(literal(&key, scalar)?),
            }),
        }
    }
    Ok(conditions.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    }))
}

fn in_list(key: &str, column: &Expr, values: &[Json]) -> Result<Expr, BadQuery> {
    if values.is_empty() {
        return Err(BadQuery::bad_request(
            Some(key),
            "an IN list needs at least one value",
        ));
    }
    let list = values
        .iter()
        .map(|v| literal(key, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Expr::In {
        expr: Box::new(column.clone()),
        target: InTarget::List(list),
        negated: false,
        global: false,
    })
}

/// A JSON scalar as a SQL literal node (never as text).
fn literal(key: &str, value: &Json) -> Result<Expr, BadQuery> {
    let value = match value {
        Json::String(s) => Value::SingleQuotedString(s.clone()),
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.to_string(), false),
        Json::Null => {
            return Err(BadQuery::bad_request(
                Some(key),
                "null is not a comparable value",
            ))
        }
        _ => {
            return Err(BadQuery::bad_request(
                Some(key),
                "must be a string, number or boolean",
            ))
        }
    };
    Ok(Expr::Value(value.into()))
}

/// `orderBy`: `"state"`, `"count desc"`, `"-count"` or a list of them; each
/// names an output column.
fn order_by(
    value: Option<&Json>,
    outputs: &[String],
    template: &OrderByExpr,
) -> Result<Vec<OrderByExpr>, BadQuery> {
    let key = "orderBy";
    let items: Vec<&Json> = match value {
        None => return Ok(vec![]),
        Some(Json::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    let mut out = Vec::new();
    for item in items {
        let Json::String(text) = item else {
            return Err(BadQuery::bad_request(
                Some(key),
                "items must be strings like \"state\" or \"count desc\"",
            ));
        };
        let text = text.trim();
        let (name, descending) = if let Some(rest) = text.strip_prefix('-') {
            (rest.trim(), true)
        } else {
            let mut words = text.split_whitespace();
            let name = words.next().unwrap_or("");
            let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(_) => {
                    return Err(BadQuery::bad_request(
                        Some(key),
                        format!("{text:?}: direction must be asc or desc"),
                    ))
                }
            };
            if words.next().is_some() {
                return Err(BadQuery::bad_request(
                    Some(key),
                    format!("{text:?}: use \"field\" or \"field desc\""),
                ));
            }
            (name, descending)
        };
        let Some(output) = outputs.iter().find(|o| o.eq_ignore_ascii_case(name)) else {
            return Err(BadQuery::bad_request(
                Some(key),
                format!(
                    "{name:?} is not an output column; the answer's columns are: {}",
                    outputs.join(", ")
                ),
            ));
        };
        let mut expr = template.clone();
        expr.expr = column(output);
        expr.options.sort = Some(if descending {
            OrderBySort::Desc
        } else {
            OrderBySort::Asc
        });
        out.push(expr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::tickets::Aggregate;

    fn dataset() -> std::sync::Arc<Dataset> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
        let catalog = Catalog::load_dir(&dir).expect("catalog loads");
        catalog.dataset("burial_2024").expect("dataset").clone()
    }

    fn scope(aggregate: Option<Aggregate>) -> Scope {
        let now = chrono::Utc::now();
        Scope {
            id: "S-test".into(),
            dataset: "burial_2024".into(),
            fields: vec!["state".into(), "county".into()],
            aggregate,
            min_group_size: 11,
            row_filters: Default::default(),
            retention_cutoff: None,
            privacy: None,
            purpose: "tests".into(),
            user: "tester".into(),
            policy_ids: vec![],
            issued_at: now,
            expires_at: now,
            exception: None,
        }
    }

    fn sql(body: serde_json::Value, aggregate: Option<Aggregate>) -> Result<String, String> {
        let body: QueryBody = serde_json::from_value(body).map_err(|e| e.to_string())?;
        body.statement(&dataset(), &scope(aggregate))
            .map_err(|e| match e {
                BadQuery::Field { field, message } => {
                    serde_json::json!({"field": field, "message": message}).to_string()
                }
                BadQuery::Internal(detail) => detail,
            })
    }

    #[test]
    fn group_by_compiles_to_a_grouped_count() {
        assert_eq!(
            sql(
                serde_json::json!({"groupBy": "state"}),
                Some(Aggregate::Count)
            )
            .as_deref(),
            Ok("SELECT state, count(*) AS count FROM \"public\".\"burial_2024\" GROUP BY state")
        );
        assert_eq!(
            sql(serde_json::json!({}), Some(Aggregate::Count)).as_deref(),
            Ok("SELECT count(*) AS count FROM \"public\".\"burial_2024\"")
        );
    }

    #[test]
    fn filters_order_and_limit_become_ast_nodes() {
        let text = sql(
            serde_json::json!({
                "select": ["state", "burial_date"],
                "where": {"state": ["CA", "NY"], "burial_date": {"gte": "2024-01-01", "lt": "2024-07-01"}},
                "orderBy": ["burial_date desc", "-state"],
                "limit": 10
            }),
            None,
        )
        .expect("compiles");
        assert_eq!(
            text,
            "SELECT state, burial_date FROM \"public\".\"burial_2024\" \
             WHERE burial_date >= '2024-01-01' AND burial_date < '2024-07-01' AND state IN ('CA', 'NY') \
             ORDER BY burial_date DESC, state DESC LIMIT 10"
        );
    }

    #[test]
    fn values_stay_literals_and_names_must_be_fields() {
        let text = sql(
            serde_json::json!({"groupBy": "state", "where": {"state": "CA' OR '1'='1"}}),
            Some(Aggregate::Count),
        )
        .expect("compiles");
        assert!(text.contains("state = 'CA'' OR ''1''=''1'"), "{text}");
        for (body, field) in [
            (
                serde_json::json!({"groupBy": "state; DROP TABLE x"}),
                "groupBy",
            ),
            (serde_json::json!({"select": ["\"ssn\""]}), "select"),
            (
                serde_json::json!({"where": {"1=1 OR state": "CA"}}),
                "where.1=1 OR state",
            ),
            (
                serde_json::json!({"groupBy": "state", "orderBy": "name"}),
                "orderBy",
            ),
            (
                serde_json::json!({"groupBy": "state", "select": "county"}),
                "select",
            ),
            (serde_json::json!({"limit": 0}), "limit"),
            (serde_json::json!({"where": {"state": null}}), "where.state"),
            (
                serde_json::json!({"where": {"state": {"like": "C%"}}}),
                "where.state.like",
            ),
            (serde_json::json!({"where": {"state": []}}), "where.state"),
            (serde_json::json!({"sql": "SELECT 1", "limit": 1}), "sql"),
        ] {
            let err = sql(body.clone(), None).expect_err(&body.to_string());
            assert!(
                err.contains(&format!("\"field\":{}", serde_json::json!(field))),
                "{body}: {err}"
            );
        }
    }
}
