//! `esq kek generate`, `esq kek rotate` and `esq export decrypt`: the
//! operator's side of sealed export bundles (see [`crate::exports::envelope`]).
//! Rotation re-wraps each bundle's data key and is safe to run again after
//! a kill: a bundle already under the new KEK is reported, not touched.
//! Decryption verifies the ZIP before it lets the output appear.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::exports::envelope::{self, Rewrapped};
use crate::exports::kek::{FileKek, Kek};
use crate::exports::package;

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Write a new key-encryption key (mode 0600) and print its id.
    Generate(GenerateArgs),
    /// Re-wrap the data key of every bundle in the exports directory from
    /// the current KEK to a new one. Prints a JSON summary; exit status 0
    /// only when no bundle failed.
    Rotate(RotateArgs),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Decrypt a bundle and verify the ZIP inside (manifest, every file's
    /// SHA-256 and rows). Prints a JSON summary; on any failure exit 1 and
    /// no output file.
    Decrypt(DecryptArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the key. An existing file is never replaced.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The new KEK (`esq kek generate --out FILE`).
    #[arg(long, value_name = "FILE")]
    pub new_kek_file: PathBuf,
    /// The bundles' directory, instead of the config's `exports.dir`.
    #[arg(long, value_name = "DIR", requires = "kek_file")]
    pub dir: Option<PathBuf>,
    /// The current KEK, instead of the config's `exports.kek_file`.
    #[arg(long, value_name = "FILE", requires = "dir")]
    pub kek_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The sealed bundle (`<job>.enc`).
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the ZIP (mode 0600). An existing file is never replaced.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The KEK, instead of the config's `exports.kek_file`.
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
}

pub fn kek(config_path: &Path, command: KekCommand) -> u8 {
    match command {
        KekCommand::Generate(args) => generate(args),
        KekCommand::Rotate(args) => rotate(config_path, args),
    }
}

pub fn export(config_path: &Path, command: ExportCommand) -> u8 {
    match command {
        ExportCommand::Decrypt(args) => decrypt(config_path, args),
    }
}

fn generate(args: GenerateArgs) -> u8 {
    match FileKek::generate(&args.out) {
        Ok(kek) => {
            eprintln!(
                "wrote {} (keep it secret, mode 0600); set `[exports] kek_file` to it",
                args.out.display()
            );
            println!("{}", kek.id());
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_BAD_INPUT
        }
    }
}

fn rotate(config_path: &Path, args: RotateArgs) -> u8 {
    let (dir, old_path) = match (args.dir, args.kek_file) {
        (Some(dir), Some(kek)) => (dir, kek),
        _ => match exports_config(config_path) {
            Ok((Some(dir), Some(kek))) => (dir, kek),
            Ok(_) => {
                eprintln!(
                    "error: {}: set exports.dir and exports.kek_file, or give --dir and --kek-file",
                    config_path.display()
                );
                return EXIT_BAD_INPUT;
            }
            Err(status) => return status,
        },
    };
    let (old, new) = match (load_kek(&old_path), load_kek(&args.new_kek_file)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(status), _) | (_, Err(status)) => return status,
    };
    let mut bundles = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.is_file()
                    && path.extension().is_some_and(|ext| ext == "enc")
                    && !path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect::<Vec<_>>(),
        Err(err) => {
            eprintln!(
                "error: cannot read the exports directory {}: {err}",
                dir.display()
            );
            return EXIT_BAD_INPUT;
        }
    };
    bundles.sort();
    let (mut rewrapped, mut current, mut failed) = (0u64, 0u64, Vec::new());
    for path in &bundles {
        match envelope::rewrap(&old, &new, path) {
            Ok(Rewrapped::Done) => rewrapped += 1,
            Ok(Rewrapped::AlreadyCurrent) => current += 1,
            Err(err) => {
                failed.push(json!({"file": path.display().to_string(), "error": err.to_string()}))
            }
        }
    }
    let summary = json!({
        "old_kek": old.id(),
        "new_kek": new.id(),
        "rewrapped": rewrapped,
        "already_current": current,
        "failed": failed,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    if failed.is_empty() {
        eprintln!(
            "every bundle in {} is under KEK {}: point exports.kek_file at {} and restart esq, \
             then run this again to catch bundles sealed in the meantime; keep the old KEK \
             until then",
            dir.display(),
            new.id(),
            args.new_kek_file.display()
        );
        0
    } else {
        eprintln!(
            "error: {} bundle(s) could not be re-wrapped (see \"failed\"); the others are done, \
             and running this again is safe",
            failed.len()
        );
        EXIT_FAILED
    }
}

fn decrypt(config_path: &Path, args: DecryptArgs) -> u8 {
    let kek_path = match args.kek_file {
        Some(path) => path,
        None => match exports_config(config_path) {
            Ok((_, Some(kek))) => kek,
            Ok(_) => {
                eprintln!(
                    "error: {}: set exports.kek_file, or give --kek-file",
                    config_path.display()
                );
                return EXIT_BAD_INPUT;
            }
            Err(status) => return status,
        },
    };
    let kek = match load_kek(&kek_path) {
        Ok(kek) => kek,
        Err(status) => return status,
    };
    if args.out.symlink_metadata().is_ok() {
        eprintln!(
            "error: {} exists; esq does not overwrite it",
            args.out.display()
        );
        return EXIT_BAD_INPUT;
    }
    // Decrypt to a hidden name beside --out, verify, then rename: --out
    // appears only once the bundle has proved intact.
    let staging = match staging_path(&args.out) {
        Some(path) => path,
        None => {
            eprintln!("error: {} does not name a file", args.out.display());
            return EXIT_BAD_INPUT;
        }
    };
    let result = envelope::open(&kek, &args.input, &staging).and_then(|opened| {
        let manifest = package::verify(&staging)?;
        std::fs::rename(&staging, &args.out)
            .map_err(|e| crate::exports::envelope::BundleError::io("rename into", &args.out, e))?;
        Ok((opened, manifest))
    });
    match result {
        Ok((opened, manifest)) => {
            let files: Vec<_> = manifest
                .files
                .iter()
                .map(|f| json!({"name": f.name, "rows": f.rows, "sha256": f.sha256}))
                .collect();
            let summary = json!({
                "job": opened.job,
                "bundle_sha256": opened.sha256,
                "files": files,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            0
        }
        Err(err) => {
            let _ = std::fs::remove_file(&staging);
            eprintln!("error: {err}");
            EXIT_FAILED
        }
    }
}

/// `.<name>.<random>.decrypting` beside `out`.
fn staging_path(out: &Path) -> Option<PathBuf> {
    use rand_core::RngCore;
    let name = out.file_name()?.to_string_lossy();
    let mut random = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut random);
    Some(out.with_file_name(format!(".{name}.{}.decrypting", hex::encode(random))))
}

fn load_kek(path: &Path) -> Result<FileKek, u8> {
    FileKek::load(path).map_err(|err| {
        eprintln!("error: {err}");
        EXIT_BAD_INPUT
    })
}

/// `exports.dir` and `exports.kek_file` of the config.
fn exports_config(config_path: &Path) -> Result<(Option<PathBuf>, Option<PathBuf>), u8> {
    match crate::config::Config::load(config_path) {
        Ok(config) => Ok((config.exports.dir, config.exports.kek_file)),
        Err(err) => {
            eprintln!("error: {err}");
            Err(EXIT_BAD_INPUT)
        }
    }
}
