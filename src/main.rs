//! The `esq` command: parses the command line and hands over to `esq::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = esq::cli::Cli::parse();
    esq::cli::run(cli)
}
