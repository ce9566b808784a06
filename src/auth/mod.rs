//! Who is asking: configured users become [`Principal`]s, the identity that
//! policies and the guard see. Passwords are kept only as SCRAM verifiers and
//! API tokens only as SHA-256 hashes.

pub use crate::credentials::{scram, token};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, UserConfig};
use crate::sensitivity::Sensitivity;

/// An authenticated user as policies see it (`input.user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub clearance: Sensitivity,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The configured users, looked up by name or by API token.
#[derive(Debug, Clone)]
pub struct UserDirectory {
    users: BTreeMap<String, UserEntry>,
}

#[derive(Debug, Clone)]
struct UserEntry {
    principal: Principal,
    scram: Option<scram::ScramVerifier>,
    token_hashes: Vec<[u8; 32]>,
}

impl UserDirectory {
    /// Builds the directory from a validated config (validation already
    /// checked every verifier and hash; anything unparsable is left out).
    pub fn from_config(config: &Config) -> UserDirectory {
        let users = config
            .users
            .iter()
            .map(|(name, user)| (name.clone(), UserEntry::new(name, user)))
            .collect();
        UserDirectory { users }
    }

    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.users.get(name).map(|u| &u.principal)
    }

    /// The user's roles, for audit records (none for an unknown user).
    pub fn roles(&self, name: &str) -> &[String] {
        self.principal(name)
            .map(|p| p.roles.as_slice())
            .unwrap_or_default()
    }

    pub fn scram_verifier(&self, name: &str) -> Option<&scram::ScramVerifier> {
        self.users.get(name).and_then(|u| u.scram.as_ref())
    }

    /// The user an HTTP bearer token belongs to. Every configured hash is
    /// compared (in constant time), so timing does not tell which user matched.
    pub fn authenticate_token(&self, bearer: &str) -> Option<&Principal> {
        let presented = token::hash(bearer);
        let mut found = None;
        for user in self.users.values() {
            for known in &user.token_hashes {
                if token::hashes_equal(known, &presented) {
                    found = Some(&user.principal);
                }
            }
        }
        found
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl UserEntry {
    fn new(name: &str, user: &UserConfig) -> UserEntry {
        UserEntry {
            principal: Principal {
                name: name.to_string(),
                roles: user.roles.clone(),
                attributes: user.attributes.clone(),
                clearance: user.clearance,
            },
            scram: user
                .scram_verifier
                .as_deref()
                .and_then(|v| scram::ScramVerifier::parse(v).ok()),
            token_hashes: user
                .api_token_sha256
                .iter()
                .filter_map(|h| token::parse_token_hash(h).ok())
                .collect(),
        }
    }
}
