//! The `esq` command: parses the command line and hands over to `esq::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = esq::cli::Cli::parse();
    esq::cli::run(cli)
}

/// Exit status of a command whose reader went away, as a shell reports a
/// process killed by SIGPIPE (128 + 13): `set -o pipefail` still notices.
const EXIT_BROKEN_PIPE: i32 = 141;

/// `esq check | head -2`: once `head` has what it wants, the next
/// `println!` finds the pipe closed (Rust ignores SIGPIPE, so the write
/// fails with EPIPE) and panics. That is not an error of esq's: end
/// quietly, as `cat` does, instead of printing a panic. Every other panic
/// is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_stdout(message) {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        report(info);
    }));
}

/// The panic of `print!`/`println!` on a closed pipe: "failed printing to
/// stdout: Broken pipe (os error 32)".
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && message.to_ascii_lowercase().contains("broken pipe")
}
