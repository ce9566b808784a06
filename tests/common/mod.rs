//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod postgres;

use std::path::PathBuf;

/// The repository root (where `config/`, `catalog/` and `policies/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped demo configuration.
pub fn shipped_config() -> PathBuf {
    repo().join("config/esq.toml")
}

/// Loads the shipped config, catalog and policies.
pub fn shipped_app() -> esq::app::App {
    esq::app::App::load(&shipped_config()).expect("the shipped configuration loads")
}
