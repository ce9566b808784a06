//! Governed exports (DESIGN 3.9): an answer materialised through the guard,
//! validated, packaged as a ZIP with a manifest, sealed with AES-256-GCM
//! under a fresh data key wrapped by the key-encryption key, recorded in
//! the consent ledger (hashed subject keys only), kept for its retention
//! window and then purged.
//!
//! The bundle format: [`csv_sink`] writes the CSVs, [`package`] zips them
//! with `manifest.json` and `manifest.sha256`, [`envelope`] seals and opens
//! the ZIP, [`kek`] wraps data keys. The jobs: [`job`] is their state in
//! schema `esq`, [`runner`] claims and runs them, [`materialise`] asks the
//! guard and streams its answer to disk, [`ledger`] records what left,
//! [`retention`] deletes expired bundles, [`metrics`] counts.

pub mod csv_sink;
pub mod envelope;
pub mod job;
pub mod kek;
pub mod ledger;
pub mod materialise;
pub mod metrics;
pub mod package;
pub mod retention;
pub mod runner;
