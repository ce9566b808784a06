//! esq — a transparent data-access guard proxy in front of PostgreSQL.
//!
//! ```text
//!  psql / BI / drivers ──► pg door ─┐
//!                                   ├─► guard ──► upstream ──► PostgreSQL
//!  curl / apps ─────────► http door ┘     │
//!                                         ├─ catalog  (catalog/*.yaml)
//!                                         ├─ policy   (policies/*.rego)
//!                                         ├─ tickets  (memory | Redis)
//!                                         └─ audit    (hash-chained log)
//! ```
//!
//! Users obtain a time-limited *ticket* for one dataset; Rego policies decide
//! what it allows (fields, aggregation, `k`, row filters, lifetime) and the
//! result is a [`tickets::Scope`]. Every statement is then checked against
//! that scope, rewritten so that only what it allows can come back, and
//! audited. This crate is the library; `src/main.rs` is a thin CLI over it.

pub mod app;
pub mod audit;
pub mod auth;
pub mod bundle;
pub mod catalog;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod credentials;
pub mod decide;
pub mod digest;
pub mod exceptions;
pub mod exports;
pub mod guard;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod per_user;
pub mod pgdoor;
pub mod policy;
pub mod privacy;
pub mod sample_data;
pub mod sensitivity;
pub mod sentinel;
pub mod serve;
pub mod shared;
pub mod signing;
pub mod sqlstate;
pub mod stream;
pub mod telemetry;
pub mod tickets;
pub mod tls;
pub mod upstream;
