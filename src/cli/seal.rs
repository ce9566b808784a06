//! `esq keys generate` (the `[signing]` key) and `esq seal` (sign the
//! bundle of config, catalog and policies; `--check` verifies the seal
//! against the files on disk, as production `esq serve` does).

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::bundle::seal;
use crate::signing::SigningKey;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the private key (mode 0600); the public key goes to
    /// the same path with `.pub` added. An existing file is never replaced.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn generate(args: GenerateArgs) -> u8 {
    let key = SigningKey::generate();
    match key.write(&args.out) {
        Ok(public_path) => {
            eprintln!(
                "wrote {} (private, keep it secret) and {} (public); key id {}",
                args.out.display(),
                public_path.display(),
                key.public().id()
            );
            print!("{}", key.public().to_pem());
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_BAD_INPUT
        }
    }
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// Only check the existing seal against the files on disk (exit 1 when
    /// it does not verify or they differ), with the key in ESQ_SEAL_KEY
    /// (else the public half of signing.key_file).
    #[arg(long)]
    pub check: bool,
    /// Seal with this private key (a release key kept off the serving
    /// host) instead of signing.key_file.
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub key: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: SealArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let bundle = app.bundle();
    let path = seal::seal_path(&app.config);
    if args.check {
        return match seal::check(&app.config, &bundle.parts) {
            Ok(key_id) => {
                println!(
                    "sealed    {}: bundle {} verifies with key {key_id}",
                    path.display(),
                    bundle.hash
                );
                0
            }
            Err(err) => {
                eprintln!("error: {err}");
                EXIT_FAILED
            }
        };
    }
    let report = bundle.policies.run_tests();
    if report.outcomes.is_empty() || report.failed().next().is_some() {
        eprintln!("error: the policy tests must exist and pass before a bundle is sealed (run `esq check`)");
        return EXIT_FAILED;
    }
    let key = match (&args.key, &app.signing) {
        (Some(path), _) => match SigningKey::load(path) {
            Ok(key) => std::sync::Arc::new(key),
            Err(err) => {
                eprintln!("error: --key: {err}");
                return EXIT_BAD_INPUT;
            }
        },
        (None, Some(key)) => key.clone(),
        (None, None) => {
            eprintln!("error: no key to seal with: give --key FILE or set signing.key_file (make one with `esq keys generate --out FILE`)");
            return EXIT_BAD_INPUT;
        }
    };
    if let Some(trusted) = &app.config.seal_key {
        match crate::signing::PublicKey::load(trusted) {
            Ok(public) if public.id() != key.public().id() => eprintln!(
                "warning: ESQ_SEAL_KEY is key {}, and this seal is made with key {}: esq will not serve it",
                public.id(),
                key.public().id()
            ),
            _ => {}
        }
    }
    match seal::write(&app.config, &bundle.parts, &key) {
        Ok(sealed) => {
            println!(
                "sealed    {}: bundle {} (config {}, catalog {}, policies {}) with key {}",
                path.display(),
                sealed.bundle,
                short(&sealed.parts.config),
                short(&sealed.parts.catalog),
                short(&sealed.parts.policies),
                sealed.key_id
            );
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_FAILED
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
