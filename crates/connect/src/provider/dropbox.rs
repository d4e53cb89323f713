//! Dropbox (providers.md §3): `token_access_type=offline` for a refresh token, the profile
//! from `POST /2/users/get_current_account`, refresh without a new refresh token (the stored
//! one is kept). Disconnect revokes with `POST /2/auth/token/revoke` and a valid access token,
//! which kills the refresh token too. The proxy reaches `api.dropboxapi.com` by default and
//! `content.dropboxapi.com` (uploads, downloads) with `X-Connect-Api: content`.

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::{
    ClientAuth, ConfiguredProvider, ProfileCall, ProfileSpec, Provider, ProviderId, ProviderSpec,
    Revocation, join,
};
use super::{CredentialNames, client_credentials, scopes_or};
use crate::setting::{ConfigError, parse_secret};

pub const SCOPES: [&str; 3] = [
    "account_info.read",
    "files.metadata.read",
    "files.content.read",
];

pub const DEFAULT_AUTHORIZE_URL: &str = "https://www.dropbox.com/oauth2/authorize";
pub const DEFAULT_API_URL: &str = "https://api.dropboxapi.com/";
pub const DEFAULT_CONTENT_URL: &str = "https://content.dropboxapi.com/";

pub static SPEC: ProviderSpec = ProviderSpec {
    id: "dropbox",
    path_names: &["dropbox"],
    label: "Dropbox",
    access_summary: "read your Dropbox files",
    remove_access_at: "dropbox.com/account/connected_apps",
    env_prefix: "DROPBOX_",
    scopes_variable: "DROPBOX_SCOPES",
    default_scopes: &SCOPES,
    authorize_params: &[("token_access_type", "offline")],
    scope_on_code_exchange: false,
    scope_on_refresh: false,
    client_auth: ClientAuth::Basic,
    profile: ProfileSpec {
        call: ProfileCall::PostNull,
        id: "/account_id",
        email: &["/email"],
        name: "/name/display_name",
    },
    revocation: Revocation::BearerRpc,
    api_names: &["api", "content"],
    forwarded_headers: &[
        "dropbox-api-arg",
        "dropbox-api-path-root",
        "dropbox-api-select-user",
        "range",
    ],
    shortest_token_secs: 14_400,
    granular_consent: false,
    required_scopes: &[(
        "account_info.read",
        "the account's id and email come from get_current_account",
    )],
};

pub struct Dropbox;

impl Provider for Dropbox {
    fn spec(&self) -> &'static ProviderSpec {
        &SPEC
    }
}

/// `DROPBOX_*`: the app and its endpoints.
#[derive(clap::Args, Debug, Clone)]
pub struct DropboxArgs {
    /// Dropbox app key (App Console → Settings).
    #[arg(long, env = "DROPBOX_CLIENT_ID")]
    pub dropbox_client_id: Option<String>,
    /// Dropbox app secret.
    #[arg(long, env = "DROPBOX_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub dropbox_client_secret: Option<SecretString>,
    /// File holding DROPBOX_CLIENT_SECRET.
    #[arg(long, env = "DROPBOX_CLIENT_SECRET_FILE")]
    pub dropbox_client_secret_file: Option<PathBuf>,
    /// Space-separated scopes to request instead of the default
    /// (`account_info.read files.metadata.read files.content.read`).
    #[arg(long, env = "DROPBOX_SCOPES")]
    pub dropbox_scopes: Option<String>,
    /// Authorization page.
    #[arg(long, env = "DROPBOX_AUTHORIZE_URL", default_value = DEFAULT_AUTHORIZE_URL)]
    pub dropbox_authorize_url: Url,
    /// RPC API base (token, revoke and profile endpoints live here too); the proxy's default.
    #[arg(long, env = "DROPBOX_API_URL", default_value = DEFAULT_API_URL)]
    pub dropbox_api_url: Url,
    /// Content API base, reached through the proxy with `X-Connect-Api: content`.
    #[arg(long, env = "DROPBOX_CONTENT_URL", default_value = DEFAULT_CONTENT_URL)]
    pub dropbox_content_url: Url,
}

impl DropboxArgs {
    /// The configured provider, `None` when `DROPBOX_CLIENT_ID` is not set.
    pub fn resolve(self) -> Result<Option<ConfiguredProvider>, ConfigError> {
        let names = CredentialNames {
            client_id: "DROPBOX_CLIENT_ID",
            client_secret: "DROPBOX_CLIENT_SECRET",
            client_id_hint: "Copy the App key from the Dropbox App Console → your app → Settings.",
            client_secret_hint: "Copy the App secret from the same page.",
        };
        let Some((client_id, client_secret)) = client_credentials(
            &names,
            self.dropbox_client_id,
            self.dropbox_client_secret,
            self.dropbox_client_secret_file.as_ref(),
        )?
        else {
            return Ok(None);
        };
        let mut provider = configured(
            self.dropbox_authorize_url,
            &self.dropbox_api_url,
            self.dropbox_content_url,
            client_id,
            client_secret,
        )
        .map_err(|e| ConfigError::Invalid {
            name: "DROPBOX_API_URL",
            why: e.to_string(),
        })?;
        provider.scope = scopes_or(self.dropbox_scopes, &SPEC)?;
        Ok(Some(provider))
    }
}

fn configured(
    authorize_url: Url,
    api: &Url,
    content: Url,
    client_id: String,
    client_secret: SecretString,
) -> Result<ConfiguredProvider, url::ParseError> {
    Ok(ConfiguredProvider {
        id: ProviderId::Dropbox,
        client_id,
        client_secret,
        authorize_url,
        token_url: join(api, "oauth2/token")?,
        profile_url: join(api, "2/users/get_current_account")?,
        revocation_url: Some(join(api, "2/auth/token/revoke")?),
        api_bases: vec![join(api, "")?, content],
        scope: SPEC.default_scopes.join(" "),
    })
}

/// Dropbox on the provider emulator mounted at `base` (its stand-in lives under `dropbox/`).
pub fn on_emulator(
    base: &Url,
    client_id: &str,
    client_secret: SecretString,
) -> Result<ConfiguredProvider, url::ParseError> {
    let root = join(base, "dropbox/")?;
    configured(
        join(&root, "oauth2/authorize")?,
        &root,
        root.clone(),
        client_id.to_owned(),
        client_secret,
    )
}
