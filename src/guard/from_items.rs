//! Name resolution of FROM items: tables (the dataset, CTEs), derived
//! tables, LATERAL, and joins with their conditions. A reference to the
//! governed table is replaced by its derived table here.

use sqlparser::ast::{Join, JoinConstraint, JoinOperator, TableFactor, TableWithJoins};

use super::denial::{Checked, Denial};
use super::resolve::{fold, object_name_parts, rename, whole_row, Relation, Resolver};
use super::rewrite;
use crate::catalog::TableName;

impl Resolver<'_> {
    pub(super) fn table_with_joins(
        &mut self,
        item: &mut TableWithJoins,
        relations: &mut Vec<Relation>,
    ) -> Checked<()> {
        // An ON clause sees the two sides of its join only (this chain),
        // not the comma-separated FROM items before it: like PostgreSQL,
        // a name not found there is looked up in the enclosing queries.
        let chain_start = relations.len();
        self.table_factor(&mut item.relation, relations)?;
        for join in item.joins.iter_mut() {
            self.join(join, relations, chain_start)?;
        }
        Ok(())
    }

    fn join(
        &mut self,
        join: &mut Join,
        relations: &mut Vec<Relation>,
        chain_start: usize,
    ) -> Checked<()> {
        if join.global {
            return Err(Denial::unsupported("GLOBAL joins", "use a plain JOIN"));
        }
        self.table_factor(&mut join.relation, relations)?;
        let constraint = match &mut join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c)
            | JoinOperator::CrossJoin(c) => c,
            _ => {
                return Err(Denial::unsupported(
                    "this kind of join",
                    "use INNER, LEFT, RIGHT, FULL or CROSS JOIN … ON",
                ))
            }
        };
        match constraint {
            JoinConstraint::On(expr) => {
                self.scopes.push(relations[chain_start..].to_vec());
                let result = self.checked_expr(expr, "JOIN … ON");
                self.scopes.pop();
                result?;
                Ok(())
            }
            JoinConstraint::None => Ok(()),
            JoinConstraint::Using(_) | JoinConstraint::UsingAlias(..) => Err(Denial::unsupported(
                "JOIN … USING",
                "write JOIN … ON a.x = b.x",
            )),
            JoinConstraint::Natural => Err(Denial::unsupported(
                "NATURAL JOIN",
                "write JOIN … ON a.x = b.x",
            )),
        }
    }

    pub(super) fn table_factor(
        &mut self,
        factor: &mut TableFactor,
        relations: &mut Vec<Relation>,
    ) -> Checked<()> {
        super::grow_stack(|| self.table_factor_inner(factor, relations))
    }

    fn table_factor_inner(
        &mut self,
        factor: &mut TableFactor,
        relations: &mut Vec<Relation>,
    ) -> Checked<()> {
        match factor {
            TableFactor::Table { .. } => self.table(factor, relations),
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample,
            } => {
                if sample.is_some() {
                    return Err(Denial::unsupported("TABLESAMPLE", "remove TABLESAMPLE"));
                }
                // A LATERAL subquery sees the FROM items before it.
                if *lateral {
                    self.scopes.push(relations.clone());
                }
                let result = self.query(subquery);
                if *lateral {
                    self.scopes.pop();
                }
                let mut columns = result?;
                let name = match alias {
                    Some(alias) => {
                        let declared: Vec<String> =
                            alias.columns.iter().map(|c| fold(&c.name)).collect();
                        rename(&mut columns, &declared)?;
                        fold(&alias.name)
                    }
                    None => "unnamed_subquery".into(),
                };
                relations.push(Relation { name, columns });
                Ok(())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(Denial::unsupported(
                        "an alias on a parenthesised join",
                        "remove the alias",
                    ));
                }
                self.table_with_joins(table_with_joins, relations)
            }
            _ => Err(Denial::unsupported(
                "this kind of FROM item (table functions, UNNEST, JSON tables, PIVOT…)",
                format!("select from {}", self.ctx.dataset.table),
            )),
        }
    }

    /// A table name: a CTE, the governed table (substituted), or denied.
    fn table(&mut self, factor: &mut TableFactor, relations: &mut Vec<Relation>) -> Checked<()> {
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance,
        } = factor
        else {
            return Err(Denial::unsupported(
                "this FROM item",
                "select from the dataset's table",
            ));
        };
        if args.is_some()
            || !with_hints.is_empty()
            || version.is_some()
            || *with_ordinality
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_directives.is_empty()
            || inheritance.is_some()
        {
            return Err(Denial::unsupported(
                "table options (hints, versions, samples, functions)",
                "name the table plainly",
            ));
        }
        let parts = object_name_parts(name)?;
        if let [single] = parts.as_slice() {
            if self.forward_ctes.contains(single) {
                return Err(Denial::unsupported(
                    format!("a reference to {single:?}, defined later in the same WITH RECURSIVE"),
                    "define CTEs before they are used",
                ));
            }
            if let Some((_, columns)) = self.ctes.iter().rev().find(|(n, _)| n == single) {
                let columns = columns.clone();
                let relation_name = match alias {
                    Some(alias) => fold(&alias.name),
                    None => single.clone(),
                };
                let mut columns = columns;
                if let Some(alias) = alias {
                    let declared: Vec<String> =
                        alias.columns.iter().map(|c| fold(&c.name)).collect();
                    rename(&mut columns, &declared)?;
                }
                relations.push(Relation {
                    name: relation_name,
                    columns,
                });
                return Ok(());
            }
        }
        let table = match parts.as_slice() {
            [name] => TableName {
                schema: "public".into(),
                name: name.clone(),
            },
            [schema, name] => TableName {
                schema: schema.clone(),
                name: name.clone(),
            },
            _ => {
                return Err(Denial::unsupported(
                    "database-qualified names",
                    "write schema.table",
                ))
            }
        };
        if table != self.ctx.dataset.table {
            return Err(self.ctx.foreign_table(&table));
        }
        if let Some(alias) = alias.as_ref() {
            if !alias.columns.is_empty() {
                return Err(whole_row("a column list on the dataset's alias"));
            }
        }
        let relation_name = alias
            .as_ref()
            .map(|a| fold(&a.name))
            .unwrap_or_else(|| table.name.clone());
        self.relations.insert(table.to_string());
        relations.push(Relation::governed(self.ctx, relation_name.clone()));
        *factor = rewrite::governed_table(self.ctx, &relation_name)?;
        self.substitutions += 1;
        Ok(())
    }
}
