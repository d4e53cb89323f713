//! Google (providers.md §2): OpenID userinfo for the profile, Gmail read-only by default.
//! `access_type=offline` asks for a refresh token, which Google gives only on a consent screen
//! — so `prompt=consent` is sent on every connect: a reconnect may pick another account that
//! consented before (for another connection), and without it that account would come back
//! with no refresh token. A reconnect that gets none anyway keeps the stored one of the same
//! account. Refresh sends no `scope` and returns no new refresh token. Disconnect
//! revokes the grant (RFC 7009 form at `oauth2.googleapis.com/revoke`).

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::{
    ClientAuth, ConfiguredProvider, ProfileCall, ProfileSpec, Provider, ProviderId, ProviderSpec,
    Revocation, join,
};
use super::{CredentialNames, client_credentials, scopes_or};
use crate::setting::{ConfigError, parse_secret};

pub const SCOPES: [&str; 4] = [
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/gmail.readonly",
];

pub const DEFAULT_AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const DEFAULT_REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";
pub const DEFAULT_USERINFO_URL: &str = "https://openidconnect.googleapis.com/v1/userinfo";
pub const DEFAULT_GMAIL_URL: &str = "https://gmail.googleapis.com/";
pub const DEFAULT_APIS_URL: &str = "https://www.googleapis.com/";

pub static SPEC: ProviderSpec = ProviderSpec {
    id: "google",
    path_names: &["google"],
    label: "Gmail",
    access_summary: "read your Gmail messages",
    remove_access_at: "myaccount.google.com/connections",
    env_prefix: "GOOGLE_",
    scopes_variable: "GOOGLE_SCOPES",
    default_scopes: &SCOPES,
    authorize_params: &[
        ("access_type", "offline"),
        ("include_granted_scopes", "true"),
        ("prompt", "consent"),
    ],
    scope_on_code_exchange: false,
    scope_on_refresh: false,
    client_auth: ClientAuth::FormBody,
    profile: ProfileSpec {
        call: ProfileCall::Get,
        id: "/sub",
        email: &["/email"],
        name: "/name",
    },
    revocation: Revocation::Rfc7009Form,
    api_names: &["gmail", "www"],
    forwarded_headers: &["x-goog-user-project", "range"],
    shortest_token_secs: 3599,
    granular_consent: true,
    required_scopes: &[
        ("openid", "the account's id comes from the OpenID userinfo"),
        ("email", "the account's email address"),
    ],
};

pub struct Google;

impl Provider for Google {
    fn spec(&self) -> &'static ProviderSpec {
        &SPEC
    }
}

/// `GOOGLE_*`: the OAuth client and its endpoints.
#[derive(clap::Args, Debug, Clone)]
pub struct GoogleArgs {
    /// Google OAuth client id (`….apps.googleusercontent.com`, type "Web application").
    #[arg(long, env = "GOOGLE_CLIENT_ID")]
    pub google_client_id: Option<String>,
    /// Google OAuth client secret.
    #[arg(long, env = "GOOGLE_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub google_client_secret: Option<SecretString>,
    /// File holding GOOGLE_CLIENT_SECRET.
    #[arg(long, env = "GOOGLE_CLIENT_SECRET_FILE")]
    pub google_client_secret_file: Option<PathBuf>,
    /// Space-separated scopes to request instead of the default
    /// (`openid email profile https://www.googleapis.com/auth/gmail.readonly`).
    #[arg(long, env = "GOOGLE_SCOPES")]
    pub google_scopes: Option<String>,
    /// Authorization endpoint.
    #[arg(long, env = "GOOGLE_AUTHORIZE_URL", default_value = DEFAULT_AUTHORIZE_URL)]
    pub google_authorize_url: Url,
    /// Token endpoint.
    #[arg(long, env = "GOOGLE_TOKEN_URL", default_value = DEFAULT_TOKEN_URL)]
    pub google_token_url: Url,
    /// Revocation endpoint.
    #[arg(long, env = "GOOGLE_REVOKE_URL", default_value = DEFAULT_REVOKE_URL)]
    pub google_revoke_url: Url,
    /// OpenID userinfo endpoint.
    #[arg(long, env = "GOOGLE_USERINFO_URL", default_value = DEFAULT_USERINFO_URL)]
    pub google_userinfo_url: Url,
    /// Gmail API base: the proxy's default for Google.
    #[arg(long, env = "GOOGLE_GMAIL_URL", default_value = DEFAULT_GMAIL_URL)]
    pub google_gmail_url: Url,
    /// `www.googleapis.com` base, reached through the proxy with `X-Connect-Api: www`.
    #[arg(long, env = "GOOGLE_APIS_URL", default_value = DEFAULT_APIS_URL)]
    pub google_apis_url: Url,
}

impl GoogleArgs {
    /// The configured provider, `None` when `GOOGLE_CLIENT_ID` is not set.
    pub fn resolve(self) -> Result<Option<ConfiguredProvider>, ConfigError> {
        let names = CredentialNames {
            client_id: "GOOGLE_CLIENT_ID",
            client_secret: "GOOGLE_CLIENT_SECRET",
            client_id_hint: "Copy the client ID of a \"Web application\" OAuth client from \
                             Google Cloud console → APIs & Services → Credentials.",
            client_secret_hint: "Copy the client secret of the same OAuth client.",
        };
        let Some((client_id, client_secret)) = client_credentials(
            &names,
            self.google_client_id,
            self.google_client_secret,
            self.google_client_secret_file.as_ref(),
        )?
        else {
            return Ok(None);
        };
        Ok(Some(ConfiguredProvider {
            id: ProviderId::Google,
            client_id,
            client_secret,
            authorize_url: self.google_authorize_url,
            token_url: self.google_token_url,
            profile_url: self.google_userinfo_url,
            revocation_url: Some(self.google_revoke_url),
            api_bases: vec![self.google_gmail_url, self.google_apis_url],
            scope: scopes_or(self.google_scopes, &SPEC)?,
        }))
    }
}

/// Google on the provider emulator mounted at `base` (its stand-in lives under `google/`).
pub fn on_emulator(
    base: &Url,
    client_id: &str,
    client_secret: SecretString,
) -> Result<ConfiguredProvider, url::ParseError> {
    let at = |path: &str| join(base, &format!("google/{path}"));
    Ok(ConfiguredProvider {
        id: ProviderId::Google,
        client_id: client_id.to_owned(),
        client_secret,
        authorize_url: at("o/oauth2/v2/auth")?,
        token_url: at("token")?,
        profile_url: at("v1/userinfo")?,
        revocation_url: Some(at("revoke")?),
        api_bases: vec![at("")?, at("")?],
        scope: SPEC.default_scopes.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        google: GoogleArgs,
    }

    fn resolve(args: &[&str]) -> Result<Option<ConfiguredProvider>, ConfigError> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Command::try_parse_from(argv).unwrap().google.resolve()
    }

    #[test]
    fn a_placeholder_secret_refuses_to_start_naming_the_variable() {
        let error = resolve(&[
            "--google-client-id",
            "123-abc.apps.googleusercontent.com",
            "--google-client-secret",
            "<your-google-client-secret>",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("GOOGLE_CLIENT_SECRET"), "{error}");
        let missing = resolve(&["--google-client-id", "123-abc.apps.googleusercontent.com"])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("GOOGLE_CLIENT_SECRET"), "{missing}");
    }

    #[test]
    fn without_a_client_id_google_is_off_and_scopes_can_be_overridden() {
        assert!(resolve(&[]).unwrap().is_none());
        let google = resolve(&[
            "--google-client-id",
            "123-abc.apps.googleusercontent.com",
            "--google-client-secret",
            "GOCSPX-realistic-looking-secret",
            "--google-scopes",
            "openid email",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(google.scope, "openid email");
        assert_eq!(google.revocation_url.unwrap().as_str(), DEFAULT_REVOKE_URL);
    }
}
