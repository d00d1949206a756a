//! Identifier newtypes: service names and replica ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of a supervised service, as written in the config (`[service.NAME]`).
///
/// Valid names are 1 to 63 characters of lowercase ASCII letters, digits, `-` and `_`, starting with a
/// letter or digit, so that they are safe in file names, URLs and metric labels without escaping.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(Arc<str>);

/// Why a string is not a valid [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    /// The rejected name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid service name {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for InvalidName {}

impl ServiceName {
    /// Longest accepted name; long enough for humans, short enough for a DNS label.
    pub const MAX_LEN: usize = 63;

    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let invalid = |reason| InvalidName { name: name.to_owned(), reason };
        let first = name.chars().next().ok_or_else(|| invalid("it is empty"))?;
        if name.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 63 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid("it must start with a lowercase letter or a digit"));
        }
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            return Err(invalid("only lowercase letters, digits, '-' and '_' are allowed"));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The name of one release of a service (`[service.NAME.release.RELEASE]`), e.g. `v2`: what a replica
/// runs is a release, whatever its index. Same character rules as [`ServiceName`] plus `.` (versions),
/// so that it is safe in file names, URLs and metric labels.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ReleaseName(Arc<str>);

impl ReleaseName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let invalid = |reason| InvalidName { name: name.to_owned(), reason };
        let first = name.chars().next().ok_or_else(|| invalid("it is empty"))?;
        if name.len() > ServiceName::MAX_LEN {
            return Err(invalid("it is longer than 63 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid("it must start with a lowercase letter or a digit"));
        }
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')) {
            return Err(invalid("only lowercase letters, digits, '-', '_' and '.' are allowed"));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The release a service without `[service.NAME.release.*]` tables runs: its own command.
    pub fn implicit_stable() -> Self {
        Self(Arc::from("stable"))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ReleaseName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(|invalid| {
            serde::de::Error::custom(format!("invalid release name {:?}: {}", invalid.name, invalid.reason))
        })
    }
}

impl fmt::Display for ReleaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ReleaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The part a release plays in a service right now: the one serving, or the one on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseRole {
    /// The release that serves by default.
    Stable,
    /// The release tried on a share of the traffic.
    Canary,
}

impl ReleaseRole {
    /// `stable` or `canary`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
        }
    }
}

/// One replica of a service: the service name and the replica's index (0-based, stable across restarts).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    /// The service the replica belongs to.
    pub service: ServiceName,
    /// Index of the replica within its service; it keeps its index (and its port) across restarts.
    pub index: u32,
}

impl ReplicaId {
    /// Builds the id of replica `index` of `service`.
    pub fn new(service: ServiceName, index: u32) -> Self {
        Self { service, index }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.service, self.index)
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_allow_versions() {
        assert_eq!(ReleaseName::new("v1.2.3").map(|n| n.to_string()), Ok("v1.2.3".to_owned()));
        assert!(ReleaseName::new("V2").is_err());
        assert!(ReleaseName::new("").is_err());
        assert!(ReleaseName::new("a/b").is_err());
    }

    #[test]
    fn accepts_plain_names() {
        for name in ["web", "api-2", "a", "db_primary", "9lives"] {
            assert_eq!(ServiceName::new(name).map(|n| n.to_string()), Ok(name.to_owned()));
        }
    }

    #[test]
    fn rejects_names_unsafe_in_paths_and_labels() {
        let long = "a".repeat(64);
        for (name, reason) in [
            ("", "it is empty"),
            ("Web", "it must start with a lowercase letter or a digit"),
            ("-web", "it must start with a lowercase letter or a digit"),
            ("we b", "only lowercase letters, digits, '-' and '_' are allowed"),
            ("../etc", "it must start with a lowercase letter or a digit"),
            ("web/x", "only lowercase letters, digits, '-' and '_' are allowed"),
            (long.as_str(), "it is longer than 63 characters"),
        ] {
            assert_eq!(ServiceName::new(name).map_err(|e| e.reason), Err(reason), "{name:?}");
        }
    }
}
