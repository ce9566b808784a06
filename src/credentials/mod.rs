//! The credential formats esq keeps: SCRAM-SHA-256 verifiers for the
//! PostgreSQL door and SHA-256 hashes of API tokens for the HTTP door. A
//! leaf: the config validates them at load time and [`crate::auth`] uses
//! them to authenticate, so neither depends on the other for the formats.

pub mod scram;
pub mod token;
