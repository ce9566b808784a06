//! The select list: wildcards expand to the allowed fields of each FROM
//! item, and at the outermost level an item that reads only forbidden
//! fields is dropped (and reported) instead of denying the statement.

use std::collections::BTreeSet;

use sqlparser::ast::{Expr, Ident, Select, SelectItem, SelectItemQualifiedWildcardKind};

use super::denial::{Checked, Denial};
use super::resolve::{
    exact_output_name, fold, object_name_parts, output_name, unknown_relation, whole_row, Column,
    Relation, Resolver,
};

impl Resolver<'_> {
    /// Resolves the select list: expands wildcards to allowed fields, drops
    /// items that read only forbidden fields (outermost query only).
    pub(super) fn projection(
        &mut self,
        select: &mut Select,
        outermost: bool,
    ) -> Checked<Vec<Column>> {
        let items = std::mem::take(&mut select.projection);
        let mut kept = Vec::new();
        let mut columns = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(mut expr) => {
                    // Inside a derived table or CTE the name binds outer
                    // references: it must be the name PostgreSQL gives.
                    let name = match exact_output_name(&expr) {
                        Some(name) => name,
                        None if outermost => output_name(&expr),
                        None => {
                            return Err(Denial::unsupported(
                                "an unnamed computed column inside a subquery",
                                "give it a name: … AS name",
                            ))
                        }
                    };
                    if let Some(fields) = self.projection_expr(&mut expr, outermost)? {
                        columns.push(Column { name, fields });
                        kept.push(SelectItem::UnnamedExpr(expr));
                    }
                }
                SelectItem::ExprWithAlias { mut expr, alias } => {
                    if let Some(fields) = self.projection_expr(&mut expr, outermost)? {
                        columns.push(Column {
                            name: fold(&alias),
                            fields,
                        });
                        kept.push(SelectItem::ExprWithAlias { expr, alias });
                    }
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(Denial::unsupported("multiple aliases", "use one alias"))
                }
                SelectItem::Wildcard(options) => {
                    if options != Default::default() {
                        return Err(Denial::unsupported("wildcard options", "list the columns"));
                    }
                    let relations = self.scopes.last().cloned().unwrap_or_default();
                    if relations.is_empty() {
                        return Err(Denial::syntax("SELECT * with no FROM clause"));
                    }
                    for relation in &relations {
                        self.expand(relation, &mut kept, &mut columns);
                    }
                }
                SelectItem::QualifiedWildcard(kind, options) => {
                    if options != Default::default() {
                        return Err(Denial::unsupported("wildcard options", "list the columns"));
                    }
                    let relation = match &kind {
                        SelectItemQualifiedWildcardKind::ObjectName(name) => {
                            let parts = object_name_parts(name)?;
                            let [alias] = parts.as_slice() else {
                                return Err(Denial::unsupported(
                                    "schema-qualified wildcards",
                                    "use the table's alias: t.*",
                                ));
                            };
                            self.scopes
                                .last()
                                .and_then(|rels| rels.iter().find(|r| &r.name == alias))
                                .cloned()
                                .ok_or_else(|| unknown_relation(alias))?
                        }
                        SelectItemQualifiedWildcardKind::Expr(_) => {
                            return Err(whole_row("(expression).*"));
                        }
                    };
                    self.expand(&relation, &mut kept, &mut columns);
                }
            }
        }
        if kept.is_empty() {
            return Err(Denial::forbidden(
                "none of the selected columns is allowed by your ticket",
                format!(
                    "dropped: {}; allowed fields: {}",
                    self.dropped.join(", "),
                    self.ctx.scope.fields.join(", ")
                ),
                format!(
                    "select allowed fields, e.g. SELECT {} FROM {}",
                    self.ctx.scope.fields.join(", "),
                    self.ctx.dataset.table
                ),
            ));
        }
        select.projection = kept;
        Ok(columns)
    }

    /// `Some(fields)` keeps the item; `None` drops it (outermost only).
    fn projection_expr(
        &mut self,
        expr: &mut Expr,
        outermost: bool,
    ) -> Checked<Option<BTreeSet<String>>> {
        let facts = self.expr(expr)?;
        let forbidden: Vec<&String> = facts
            .fields
            .iter()
            .filter(|f| !self.ctx.allows(f))
            .collect();
        if forbidden.is_empty() {
            self.fields_read.extend(facts.fields.iter().cloned());
            return Ok(Some(facts.fields));
        }
        let all_forbidden = forbidden.len() == facts.fields.len();
        if outermost && all_forbidden && !facts.has_subquery {
            self.dropped.push(expr.to_string());
            return Ok(None);
        }
        Err(self.ctx.forbidden_field(forbidden[0], "the select list"))
    }

    /// Expands `*` / `t.*` of one relation into its allowed columns.
    fn expand(
        &mut self,
        relation: &Relation,
        kept: &mut Vec<SelectItem>,
        columns: &mut Vec<Column>,
    ) {
        for column in &relation.columns {
            let allowed = column.fields.iter().all(|f| self.ctx.allows(f));
            if !allowed {
                self.dropped
                    .push(format!("{}.{}", relation.name, column.name));
                continue;
            }
            self.fields_read.extend(column.fields.iter().cloned());
            kept.push(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(vec![
                Ident::with_quote('"', relation.name.clone()),
                Ident::with_quote('"', column.name.clone()),
            ])));
            columns.push(column.clone());
        }
    }
}
