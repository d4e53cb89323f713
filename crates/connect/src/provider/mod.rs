//! The provider catalog. A provider is data — a [`ProviderSpec`]: its paths and label, default
//! scopes, authorize parameters, how the token endpoint wants the client authenticated and
//! whether it wants `scope`, where the profile is and what in it names the account, how a
//! grant is revoked, which API hosts the proxy may reach and which headers it forwards — plus
//! the little a table cannot say, behind the [`Provider`] trait (Microsoft's reading of
//! `invalid_grant`). Each provider lives in one file that also owns its command-line arguments.
//! A deployment's credentials and URLs make a [`ConfiguredProvider`]; the [`Catalog`] finds one
//! by id without allocating. Nothing here performs I/O.
//!
//! Adding a fourth provider: a variant in [`ProviderId`] (and in the table's `check`
//! constraint), a file like `dropbox.rs` with its spec, its `Args` and `on_emulator`, one line
//! in [`ProviderId::provider`] and in `config::ProviderArgs`, and its routes in the emulator.

pub mod dropbox;
pub mod google;
pub mod microsoft;

use secrecy::SecretString;
use serde::Serialize;
use url::Url;

use crate::setting::{ConfigError, placeholder_reason, require_real, resolve_secret};

/// A provider the schema knows. The string form is what the database stores.
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

    /// The provider's behaviour and data.
    pub fn provider(self) -> &'static dyn Provider {
        match self {
            ProviderId::Microsoft => &microsoft::Microsoft,
            ProviderId::Google => &google::Google,
            ProviderId::Dropbox => &dropbox::Dropbox,
        }
    }

    pub fn spec(self) -> &'static ProviderSpec {
        self.provider().spec()
    }

    /// Canonical id, as stored and returned.
    pub fn as_str(self) -> &'static str {
        self.spec().id
    }

    /// The name used in paths (`/v1/integrations/outlook/...`).
    pub fn path_name(self) -> &'static str {
        self.spec().path_names[0]
    }

    /// What people call it on a settings page.
    pub fn label(self) -> &'static str {
        self.spec().label
    }

    /// Parses a path segment; `outlook` and `microsoft` name the same provider. Exact and
    /// case-sensitive, like every other path segment.
    pub fn from_path(segment: &str) -> Option<Self> {
        ProviderId::ALL
            .into_iter()
            .find(|p| p.spec().path_names.contains(&segment))
    }

    pub fn from_db(value: &str) -> Option<Self> {
        ProviderId::ALL.into_iter().find(|p| p.as_str() == value)
    }

    /// Position in [`ProviderId::ALL`], for look-ups without hashing.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the token endpoint wants the client to prove itself (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    FormBody,
    /// `Authorization: Basic` with the URL-encoded id and secret.
    Basic,
}

/// How the profile is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileCall {
    Get,
    /// `POST` with the JSON body `null` (Dropbox's RPC style).
    PostNull,
}

/// Where the account's id, email and name are in the profile answer (JSON pointers; the
/// first non-empty email wins).
#[derive(Debug)]
pub struct ProfileSpec {
    pub call: ProfileCall,
    pub id: &'static str,
    pub email: &'static [&'static str],
    pub name: &'static str,
}

/// How a grant is given back at disconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// No per-app revocation endpoint: the user removes the app at the provider.
    None,
    /// RFC 7009: `POST` a form `token=<refresh token>`; revokes the whole grant.
    Rfc7009Form,
    /// `POST` with `Authorization: Bearer <access token>` and no argument; revokes the access
    /// token and its refresh token.
    BearerRpc,
}

/// Everything about a provider that does not depend on the deployment.
#[derive(Debug)]
pub struct ProviderSpec {
    /// Canonical id, as stored.
    pub id: &'static str,
    /// Path segments naming it; the first is the canonical one.
    pub path_names: &'static [&'static str],
    /// Company and product, for settings pages ("Microsoft Outlook").
    pub label: &'static str,
    /// What the connection gives access to, for settings pages ("your mail").
    pub access_summary: &'static str,
    /// Where users remove the app's access themselves, in words for a settings page.
    pub remove_access_at: &'static str,
    /// Prefix of its environment variables (`GOOGLE_`).
    pub env_prefix: &'static str,
    /// The variable that overrides its scopes (`GOOGLE_SCOPES`).
    pub scopes_variable: &'static str,
    pub default_scopes: &'static [&'static str],
    /// Sent on every authorize request.
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// Whether `scope` is sent with the code exchange.
    pub scope_on_code_exchange: bool,
    /// Whether `scope` is sent with a refresh.
    pub scope_on_refresh: bool,
    pub client_auth: ClientAuth,
    pub profile: ProfileSpec,
    pub revocation: Revocation,
    /// Names of the API bases the proxy may reach, first the default (`X-Connect-Api` picks
    /// another).
    pub api_names: &'static [&'static str],
    /// Request headers the proxy forwards beyond the common ones.
    pub forwarded_headers: &'static [&'static str],
    /// The shortest access-token lifetime the provider issues (its `expires_in`, providers.md
    /// §0): a `min_ttl` beyond it less a minute is capped there, as no refresh could meet it.
    pub shortest_token_secs: u64,
    /// Whether the user may grant only some of the scopes asked for (Google): a connect whose
    /// grant leaves out an API scope is refused (`scope_denied`) instead of stored.
    pub granular_consent: bool,
    /// Scopes a configured list must keep, and why: what the connect flow itself needs (a
    /// refresh token, the account's profile).
    pub required_scopes: &'static [(&'static str, &'static str)],
}

/// What data cannot say. Everything has a default; a provider overrides what differs.
pub trait Provider: Sync {
    fn spec(&self) -> &'static ProviderSpec;

    /// Whether a refused refresh means the grant is gone for good (the user must connect
    /// again).
    fn means_reauth(&self, error: &str, _codes: &[u64]) -> bool {
        error == "invalid_grant"
    }
}

/// Whether a refused refresh means the grant is gone for good (the user must connect again).
pub fn means_reauth(provider: ProviderId, error: &str, codes: &[u64]) -> bool {
    provider.provider().means_reauth(error, codes)
}

/// A provider as this deployment configured it: credentials, scopes and URLs.
#[derive(Clone, Debug)]
pub struct ConfiguredProvider {
    pub id: ProviderId,
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: Url,
    pub token_url: Url,
    pub profile_url: Url,
    /// `None` when the provider has no revocation endpoint.
    pub revocation_url: Option<Url>,
    /// The API bases the proxy may reach, in the order of [`ProviderSpec::api_names`].
    pub api_bases: Vec<Url>,
    /// Space-separated scopes requested.
    pub scope: String,
}

impl ConfiguredProvider {
    pub fn spec(&self) -> &'static ProviderSpec {
        self.id.spec()
    }

    /// The URL the user's browser is sent to.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, code_challenge: &str) -> Url {
        let spec = self.spec();
        let mut url = self.authorize_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.scope)
                .append_pair("state", state)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256")
                .extend_pairs(spec.authorize_params.iter());
        }
        url
    }

    /// The API base named `name` (the default when `None`).
    pub fn api_base(&self, name: Option<&str>) -> Option<&Url> {
        match name {
            None => self.api_bases.first(),
            Some(name) => {
                let i = self.spec().api_names.iter().position(|n| *n == name)?;
                self.api_bases.get(i)
            }
        }
    }
}

/// The configured providers, found by id in constant time.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    slots: [Option<ConfiguredProvider>; ProviderId::ALL.len()],
}

impl Catalog {
    pub fn new(providers: impl IntoIterator<Item = ConfiguredProvider>) -> Self {
        let mut catalog = Catalog::default();
        for provider in providers {
            let i = provider.id.index();
            catalog.slots[i] = Some(provider);
        }
        catalog
    }

    pub fn get(&self, id: ProviderId) -> Option<&ConfiguredProvider> {
        self.slots[id.index()].as_ref()
    }

    /// Configured providers, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfiguredProvider> {
        self.slots.iter().flatten()
    }

    pub fn ids(&self) -> Vec<ProviderId> {
        self.iter().map(|p| p.id).collect()
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

/// The variable names of a provider's client credentials, and how to get real values.
pub struct CredentialNames {
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub client_id_hint: &'static str,
    pub client_secret_hint: &'static str,
}

/// A provider's client id and secret: `None` when the id is not set (the provider is off);
/// an error naming the variable when either is a placeholder or the secret is missing.
pub fn client_credentials(
    names: &CredentialNames,
    client_id: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<&std::path::PathBuf>,
) -> Result<Option<(String, SecretString)>, ConfigError> {
    let Some(client_id) = client_id else {
        return Ok(None);
    };
    if let Some(why) = placeholder_reason(&client_id) {
        return Err(ConfigError::Placeholder {
            name: names.client_id,
            why,
            hint: names.client_id_hint.into(),
        });
    }
    let secret = resolve_secret(names.client_secret, secret, secret_file)?;
    let secret = require_real(names.client_secret, secret, || {
        names.client_secret_hint.into()
    })?;
    Ok(Some((client_id, secret)))
}

/// The configured scopes (space- or comma-separated, in `<PREFIX>SCOPES`), or the provider's
/// defaults. A list that leaves out one the connect flow needs is refused, naming it: every
/// connect would fail (no refresh token, no profile) long after the service started.
pub fn scopes_or(configured: Option<String>, spec: &ProviderSpec) -> Result<String, ConfigError> {
    let words: Vec<&str> = configured
        .as_deref()
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Ok(spec.default_scopes.join(" "));
    }
    if let Some((scope, why)) = spec
        .required_scopes
        .iter()
        .find(|(scope, _)| !words.contains(scope))
    {
        return Err(ConfigError::Invalid {
            name: spec.scopes_variable,
            why: format!("it must include {scope} ({why})"),
        });
    }
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_scopes_must_keep_what_the_connect_flow_needs() {
        assert_eq!(
            scopes_or(None, &microsoft::SPEC).unwrap(),
            microsoft::SCOPES.join(" ")
        );
        assert_eq!(
            scopes_or(
                Some("offline_access, Mail.ReadWrite".into()),
                &microsoft::SPEC
            )
            .unwrap(),
            "offline_access Mail.ReadWrite"
        );
        for (configured, spec, name, missing) in [
            (
                "Mail.Read User.Read",
                &microsoft::SPEC,
                "MICROSOFT_SCOPES",
                "offline_access",
            ),
            (
                "openid https://www.googleapis.com/auth/gmail.readonly",
                &google::SPEC,
                "GOOGLE_SCOPES",
                "email",
            ),
            (
                "files.content.read",
                &dropbox::SPEC,
                "DROPBOX_SCOPES",
                "account_info.read",
            ),
        ] {
            let err = scopes_or(Some(configured.into()), spec)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(name), "{err}");
            assert!(err.contains(&format!("must include {missing}")), "{err}");
        }
    }

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
        assert_eq!(ProviderId::from_path("google"), Some(ProviderId::Google));
        assert_eq!(ProviderId::from_path("dropbox"), Some(ProviderId::Dropbox));
        assert_eq!(ProviderId::from_path("Outlook"), None);
        assert_eq!(ProviderId::from_path("gmail"), None);
    }

    #[test]
    fn every_provider_knows_its_own_id() {
        for id in ProviderId::ALL {
            assert_eq!(ProviderId::from_db(id.spec().id), Some(id));
            assert_eq!(ProviderId::ALL[id.index()], id);
            assert!(!id.spec().api_names.is_empty());
        }
    }

    #[test]
    fn google_asks_for_offline_access_and_forced_consent() {
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        let google =
            google::on_emulator(&base, "id", SecretString::from("secret".to_owned())).unwrap();
        let query: Vec<(String, String)> = google
            .authorize_url("http://cb", "st", "ch")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert!(query.contains(&("prompt".into(), "consent".into())));
        assert!(query.contains(&("access_type".into(), "offline".into())));
        assert!(query.contains(&("include_granted_scopes".into(), "true".into())));
    }
}
