//! `esq serve` (both doors until SIGINT/SIGTERM) and `esq certs dev`
//! (development TLS certificates).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{load_app, EXIT_BAD_INPUT, EXIT_FAILED};

#[derive(Debug, Args)]
pub struct CertsDevArgs {
    /// Directory to write ca.crt, server.crt and server.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
}

pub fn serve(config_path: &Path) -> u8 {
    crate::tls::install_crypto_provider();
    let app = match load_app(config_path) {
        Ok(app) => Arc::new(app),
        Err(status) => return status,
    };
    super::init_serve_logging(&app.config.log);
    if !app.config.audit.enabled {
        tracing::warn!("THE AUDIT LOG IS DISABLED (audit.enabled = false): decisions are not recorded; use this for benchmarks only");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return EXIT_FAILED;
        }
    };
    match runtime.block_on(crate::serve::run_until_signalled(app)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_BAD_INPUT
        }
    }
}

pub fn certs_dev(args: CertsDevArgs) -> u8 {
    match crate::tls::make_dev_certs(&args.out) {
        Ok(files) => {
            println!(
                "wrote {}, {} and {} (development only: never use these in production)",
                files.ca_cert.display(),
                files.server_cert.display(),
                files.server_key.display()
            );
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_FAILED
        }
    }
}
