//! What the guard tells the release step about one private statement: which
//! output column is the count, which are the group keys, the mechanism's
//! parameters, and what the release (not the database) must still do —
//! sort by the noisy count, cut to LIMIT/OFFSET — because doing it on
//! exact counts would leak them.

use serde::Serialize;

/// The guard's plan for releasing one private answer. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PrivatePlan {
    /// The dataset whose budget pays for the answer.
    pub dataset: String,
    /// Position of the count column in each row (an `int8`).
    pub count_column: usize,
    /// Positions of the group keys (passed through byte for byte).
    pub key_columns: Vec<usize>,
    /// Whether the answer has groups. An ungrouped count is always
    /// released (its one row exists whatever the data); groups are
    /// released only above a noisy threshold.
    pub grouped: bool,
    /// What one answer costs, in micro-epsilon (the noise's epsilon).
    pub epsilon_per_query_micro: u64,
    /// The budget per period, in micro-epsilon.
    pub epsilon_budget_micro: u64,
    pub budget_period_seconds: u64,
    /// L0: groups one privacy unit may count in (the SQL enforces it).
    pub max_groups_per_unit: u32,
    /// The ticket's k: the release threshold is never below it.
    pub min_group_size: u32,
    /// `ORDER BY count`: the release sorts by the noisy count (stable, so
    /// the database's order by the keys breaks ties).
    pub order_by_count: Option<SortDirection>,
    /// OFFSET and LIMIT, applied after thresholding and sorting.
    pub offset: u64,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    Asc,
    Desc,
}

impl PrivatePlan {
    /// The columns a row must have.
    pub fn width(&self) -> usize {
        self.key_columns
            .iter()
            .copied()
            .chain([self.count_column])
            .max()
            .map_or(0, |m| m + 1)
    }
}
