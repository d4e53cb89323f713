//! The provider catalog: which providers exist, how a path names them, and the endpoints and
//! scopes each one uses. Providers are data plus a small amount of code in their own file, so
//! adding one touches that file, the catalog below and the emulator. Nothing here performs I/O.

pub mod microsoft;

use secrecy::SecretString;
use serde::Serialize;
use url::Url;

/// A provider the schema knows. The string form is what the database stores. Only Microsoft
/// can be configured so far; the others exist so rows and flows naming them are understood
/// (and refused where they do not belong) rather than read as corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderId {
    Microsoft,
    Google,
    Dropbox,
}

impl ProviderId {
    pub const ALL: [ProviderId; 3] = [
        ProviderId::Microsoft,
        ProviderId::Google,
        ProviderId::Dropbox,
    ];

    /// Canonical id, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "microsoft",
            ProviderId::Google => "google",
            ProviderId::Dropbox => "dropbox",
        }
    }

    /// The name used in the seed's paths (`/v1/integrations/outlook/...`).
    pub fn path_name(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "outlook",
            ProviderId::Google => "google",
            ProviderId::Dropbox => "dropbox",
        }
    }

    /// What people call it on a settings page.
    pub fn label(self) -> &'static str {
        match self {
            ProviderId::Microsoft => "Microsoft Outlook",
            ProviderId::Google => "Google",
            ProviderId::Dropbox => "Dropbox",
        }
    }

    /// Parses a path segment; `outlook` and `microsoft` name the same provider. Exact and
    /// case-sensitive, like every other path segment.
    pub fn from_path(segment: &str) -> Option<Self> {
        match segment {
            "outlook" | "microsoft" => Some(ProviderId::Microsoft),
            "google" => Some(ProviderId::Google),
            "dropbox" => Some(ProviderId::Dropbox),
            _ => None,
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        ProviderId::ALL.into_iter().find(|p| p.as_str() == value)
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured provider's client credentials and endpoints, resolved from the settings.
#[derive(Clone, Debug)]
pub struct ProviderEndpoints {
    pub id: ProviderId,
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: Url,
    pub token_url: Url,
    pub profile_url: Url,
    /// The API the proxy may reach (Graph for Microsoft); nothing else is reachable through it.
    pub api_base: Url,
    /// Space-separated scopes requested at authorize and token time.
    pub scope: String,
    /// Extra authorize parameters (e.g. `prompt=select_account`).
    pub authorize_extra: Vec<(&'static str, &'static str)>,
}

impl ProviderEndpoints {
    /// The URL the user's browser is sent to.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, code_challenge: &str) -> Url {
        let mut url = self.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", &self.scope)
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(self.authorize_extra.iter());
        url
    }
}

/// Whether a refused refresh means the grant is gone for good (the user must connect again).
pub fn means_reauth(provider: ProviderId, error: &str, codes: &[u64]) -> bool {
    match provider {
        ProviderId::Microsoft => microsoft::means_reauth(error, codes),
        ProviderId::Google | ProviderId::Dropbox => error == "invalid_grant",
    }
}

/// Joins `path` under `base`, keeping any path `base` already has.
pub(crate) fn join(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_a_base_path() {
        let base = Url::parse("http://127.0.0.1:8080/emulator").unwrap();
        assert_eq!(
            join(&base, "/common/oauth2/v2.0/token").unwrap().as_str(),
            "http://127.0.0.1:8080/emulator/common/oauth2/v2.0/token"
        );
        let root = Url::parse("https://graph.microsoft.com").unwrap();
        assert_eq!(
            join(&root, "v1.0/me").unwrap().as_str(),
            "https://graph.microsoft.com/v1.0/me"
        );
    }

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
