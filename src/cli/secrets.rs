//! `esq passwd` and `esq token`: make the verifier and token hashes that the
//! config holds instead of secrets.

use std::io::{BufRead, IsTerminal};

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::auth::{scram::ScramVerifier, token};

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the password from the first line of standard input instead of
    /// prompting (for scripts).
    #[arg(long)]
    pub password_stdin: bool,
}

pub fn passwd(args: PasswdArgs) -> u8 {
    let password = if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        if let Err(err) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("esq passwd: cannot read standard input: {err}");
            return EXIT_FAILED;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("esq passwd: the passwords differ");
                return EXIT_BAD_INPUT;
            }
            (Err(err), _) | (_, Err(err)) => {
                eprintln!("esq passwd: cannot read the password: {err}");
                return EXIT_FAILED;
            }
        }
    };
    if password.is_empty() {
        eprintln!("esq passwd: the password is empty");
        return EXIT_BAD_INPUT;
    }
    println!("{}", ScramVerifier::generate(&password));
    0
}

pub fn token() -> u8 {
    match token::generate() {
        Ok((token, hash)) => {
            println!("token:  {token}");
            println!("sha256: {hash}");
            eprintln!(
                "Give the token to the user; put only the sha256 in the user's api_token_sha256."
            );
            0
        }
        Err(err) => {
            eprintln!("esq token: no secure random source: {err}");
            EXIT_FAILED
        }
    }
}
