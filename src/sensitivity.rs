//! Sensitivity levels shared by the catalog (what a field is), users (what
//! they are cleared for) and results (what an answer is classified as).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `PUBLIC < INTERNAL < PII < PHI`. The derived ordering is the contract:
/// a result's classification is the maximum of what it read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Sensitivity {
    #[default]
    Public,
    Internal,
    Pii,
    Phi,
}

impl Sensitivity {
    pub const ALL: [Sensitivity; 4] = [
        Sensitivity::Public,
        Sensitivity::Internal,
        Sensitivity::Pii,
        Sensitivity::Phi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "PUBLIC",
            Sensitivity::Internal => "INTERNAL",
            Sensitivity::Pii => "PII",
            Sensitivity::Phi => "PHI",
        }
    }
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a sensitivity name that is not one of the four levels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sensitivity {0:?}: expected one of PUBLIC, INTERNAL, PII, PHI")]
pub struct UnknownSensitivity(pub String);

impl FromStr for Sensitivity {
    type Err = UnknownSensitivity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sensitivity::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSensitivity(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_as_the_contract_says() {
        assert!(Sensitivity::Public < Sensitivity::Internal);
        assert!(Sensitivity::Internal < Sensitivity::Pii);
        assert!(Sensitivity::Pii < Sensitivity::Phi);
    }

    #[test]
    fn parses_case_insensitively_and_rejects_others() {
        assert_eq!("phi".parse::<Sensitivity>(), Ok(Sensitivity::Phi));
        assert_eq!("Internal".parse::<Sensitivity>(), Ok(Sensitivity::Internal));
        assert!("SECRET".parse::<Sensitivity>().is_err());
    }
}
