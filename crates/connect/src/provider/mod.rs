//! The provider catalog: which providers exist, how a path names them, and the endpoints and
//! scopes each one uses. Providers are data plus a small amount of code in their own file, so
//! adding one touches that file, the catalog below and the emulator. Nothing here performs I/O.

pub mod microsoft;

use serde::Serialize;

/// A provider the service knows. The string form is what the database stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderId {
    Microsoft,
}

impl ProviderId {
    pub const ALL: [ProviderId; 1] = [ProviderId::Microsoft];

    /// Canonical id, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "microsoft",
        }
    }

    /// The name used in the seed's paths (`/v1/integrations/outlook/...`).
    pub fn path_name(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "outlook",
        }
    }

    /// What people call it on a settings page.
    pub fn label(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "Microsoft Outlook",
        }
    }

    /// Parses a path segment; `outlook` and `microsoft` name the same provider. Exact and
    /// case-sensitive, like every other path segment.
    pub fn from_path(segment: &str) -> Option<Self> {
        match segment {
            "outlook" | "microsoft" => Some(ProviderId::Microsoft),
            _ => None,
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "microsoft" => Some(ProviderId::Microsoft),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlook_and_microsoft_name_the_same_provider() {
        assert_eq!(
            ProviderId::from_path("outlook"),
            Some(ProviderId::Microsoft)
        );
        assert_eq!(
            ProviderId::from_path("microsoft"),
            Some(ProviderId::Microsoft)
        );
        assert_eq!(ProviderId::from_path("Outlook"), None);
        assert_eq!(ProviderId::from_path("gmail"), None);
    }
}
