//! The upstream side: connections to the backing PostgreSQL under esq's own
//! service role, in read-only sessions, kept in a pool.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Config(String),
}

pub struct UpstreamPool {
    _metrics: Arc<Metrics>,
}

impl UpstreamPool {
    pub fn new(_config: &Config, metrics: Arc<Metrics>) -> Result<UpstreamPool, UpstreamError> {
        Ok(UpstreamPool { _metrics: metrics })
    }
}
