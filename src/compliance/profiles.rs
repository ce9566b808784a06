//! Compliance profiles: which controls each one requires of esq. Profiles
//! combine (`HIPAA,FedRAMP-Moderate`): a control is required when any
//! requested profile requires it.
//!
//! The lists hold the controls esq reports that the profile's baseline
//! contains: NIST SP 800-53B's low baseline (FISMA-Low), FedRAMP's
//! moderate baseline, and the HIPAA Security Rule's technical safeguards
//! (45 CFR 164.312, plus incident procedures and activity review from
//! 164.308) mapped to 800-53 as in NIST SP 800-66r2. Deliberate omissions:
//! - AU-10 (non-repudiation) is in the high baseline only;
//! - CM-14 (signed components) is in no baseline: reported, required by none;
//! - AC-6 and SC-8 are not in the low baseline; SC-28 is not either;
//! - MP-6: the baselines' MP-6 is sanitizing storage media before reuse or
//!   disposal, a duty of the hosts that store the data (esq streams and
//!   stores no governed rows). esq's own MP-6 entry reports the
//!   right-to-delete (`esq forget`), which no shipped profile demands; it
//!   is reported in every SSP, required by none.
//! - SI-12 (information retention) is in every baseline, but for the whole
//!   organisation's records schedules; esq reports its part (governed
//!   datasets hidden past retention and purged on schedule) and no shipped
//!   profile requires it of esq, so a profile check does not fail on a
//!   deployment that keeps its retention elsewhere.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Profile {
    #[serde(rename = "HIPAA")]
    Hipaa,
    #[serde(rename = "FISMA-Low")]
    FismaLow,
    #[serde(rename = "FedRAMP-Moderate")]
    FedrampModerate,
}

const FISMA_LOW: &[&str] = &[
    "AC-3", "AU-2", "AU-3", "AU-9", "IA-2", "IR-4", "SC-13", "SI-4",
];
const FEDRAMP_MODERATE: &[&str] = &[
    "AC-3", "AC-6", "AU-2", "AU-3", "AU-9", "IA-2", "IR-4", "SC-8", "SC-13", "SC-28", "SI-4",
];
const HIPAA: &[&str] = &[
    "AC-3", "AC-6", "AU-2", "AU-3", "AU-9", "IA-2", "IR-4", "SC-8", "SC-13", "SC-28", "SI-4",
];

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Hipaa, Profile::FismaLow, Profile::FedrampModerate];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Hipaa => "HIPAA",
            Profile::FismaLow => "FISMA-Low",
            Profile::FedrampModerate => "FedRAMP-Moderate",
        }
    }

    /// The control ids this profile requires of esq.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            Profile::Hipaa => HIPAA,
            Profile::FismaLow => FISMA_LOW,
            Profile::FedrampModerate => FEDRAMP_MODERATE,
        }
    }

    pub fn requires(self, control: &str) -> bool {
        self.required().contains(&control)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compliance profile {0:?}: expected HIPAA, FISMA-Low or FedRAMP-Moderate (comma-separated to combine)")]
pub struct UnknownProfile(pub String);

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(text: &str) -> Result<Profile, UnknownProfile> {
        let wanted = text.trim();
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownProfile(wanted.to_string()))
    }
}

/// `HIPAA,FedRAMP-Moderate` (case-insensitive, duplicates dropped).
pub fn parse_profiles(list: &str) -> Result<Vec<Profile>, UnknownProfile> {
    let mut profiles: Vec<Profile> = list
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    profiles.sort();
    profiles.dedup();
    if profiles.is_empty() {
        return Err(UnknownProfile(list.to_string()));
    }
    Ok(profiles)
}
