//! Microsoft identity platform v2.0 and Microsoft Graph (providers.md §1): the spec, the
//! `MICROSOFT_*` arguments, and the AADSTS codes that make an `invalid_grant` mean "the user
//! must connect again" — the one thing its data cannot say. Microsoft has no per-app
//! revocation endpoint: a disconnect deletes the stored tokens, and the user removes the app at
//! https://myapps.microsoft.com or https://account.live.com/consent/Manage.

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::{
    ClientAuth, ConfiguredProvider, ProfileCall, ProfileSpec, Provider, ProviderId, ProviderSpec,
    Revocation, join,
};
use super::{CredentialNames, client_credentials, scopes_or};
use crate::setting::{ConfigError, parse_secret};

/// The seed's delegated scopes, fully qualified as the seed wrote them, plus `offline_access`
/// (bare, as Microsoft requires) for a refresh token.
pub const SCOPES: [&str; 4] = [
    "https://graph.microsoft.com/Mail.Read",
    "https://graph.microsoft.com/User.Read",
    "https://graph.microsoft.com/MailboxSettings.Read",
    "offline_access",
];

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
pub const DEFAULT_TENANT: &str = "common";

/// AADSTS codes returned with `invalid_grant` that mean the grant is gone for good: the user
/// has to consent again (providers.md §1.5, §1.6).
pub const REAUTH_AADSTS_CODES: [u64; 10] = [
    70000, 70008, 700082, 700084, 50173, 70043, 65001, 50076, 50079,
    // A garbled or truncated refresh token: no retry can fix it (providers.md §1.6).
    9002313,
];

pub static SPEC: ProviderSpec = ProviderSpec {
    id: "microsoft",
    path_names: &["outlook", "microsoft"],
    label: "Microsoft Outlook",
    access_summary: "read your Outlook mail and mailbox settings",
    remove_access_at: "myapps.microsoft.com (work or school) or account.live.com/consent/Manage (personal)",
    env_prefix: "MICROSOFT_",
    scopes_variable: "MICROSOFT_SCOPES",
    default_scopes: &SCOPES,
    authorize_params: &[("response_mode", "query"), ("prompt", "select_account")],
    // MSAL sends the scopes with both grants; a refresh without them gets `.default`.
    scope_on_code_exchange: true,
    scope_on_refresh: true,
    client_auth: ClientAuth::FormBody,
    profile: ProfileSpec {
        call: ProfileCall::Get,
        id: "/id",
        email: &["/mail", "/userPrincipalName"],
        name: "/displayName",
    },
    revocation: Revocation::None,
    api_names: &["graph"],
    forwarded_headers: &[
        "prefer",
        "consistencylevel",
        "client-request-id",
        "return-client-request-id",
    ],
    // 60–90 minutes by the docs; recorded answers say 3599.
    shortest_token_secs: 3599,
    granular_consent: false,
    required_scopes: &[(
        "offline_access",
        "without it Microsoft issues no refresh token",
    )],
};

pub struct Microsoft;

impl Provider for Microsoft {
    fn spec(&self) -> &'static ProviderSpec {
        &SPEC
    }

    fn means_reauth(&self, error: &str, codes: &[u64]) -> bool {
        match error {
            // What MSAL calls "interaction required" when the server says it outright
            // (providers.md §1.6): only the user, signing in again, can answer it.
            "interaction_required" | "consent_required" | "login_required" => true,
            "invalid_grant" => {
                codes.is_empty() || codes.iter().any(|c| REAUTH_AADSTS_CODES.contains(c))
            }
            _ => false,
        }
    }
}

/// `MICROSOFT_*`: the app registration and its endpoints.
#[derive(clap::Args, Debug, Clone)]
pub struct MicrosoftArgs {
    /// Microsoft app registration: application (client) id.
    #[arg(long, env = "MICROSOFT_CLIENT_ID")]
    pub microsoft_client_id: Option<String>,
    /// Microsoft app registration: client secret (the secret's value, not its id).
    #[arg(long, env = "MICROSOFT_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub microsoft_client_secret: Option<SecretString>,
    /// File holding MICROSOFT_CLIENT_SECRET.
    #[arg(long, env = "MICROSOFT_CLIENT_SECRET_FILE")]
    pub microsoft_client_secret_file: Option<PathBuf>,
    /// Tenant segment: `common`, `organizations`, `consumers` or a tenant id.
    #[arg(long, env = "MICROSOFT_TENANT", default_value = DEFAULT_TENANT)]
    pub microsoft_tenant: String,
    /// Space-separated scopes to request instead of the default (keep `offline_access`).
    #[arg(long, env = "MICROSOFT_SCOPES")]
    pub microsoft_scopes: Option<String>,
    /// Identity platform base URL.
    #[arg(long, env = "MICROSOFT_AUTHORITY", default_value = DEFAULT_AUTHORITY)]
    pub microsoft_authority: Url,
    /// Microsoft Graph base URL.
    #[arg(long, env = "MICROSOFT_GRAPH_URL", default_value = DEFAULT_GRAPH_URL)]
    pub microsoft_graph_url: Url,
}

impl MicrosoftArgs {
    /// The configured provider, `None` when `MICROSOFT_CLIENT_ID` is not set.
    pub fn resolve(self) -> Result<Option<ConfiguredProvider>, ConfigError> {
        let names = CredentialNames {
            client_id: "MICROSOFT_CLIENT_ID",
            client_secret: "MICROSOFT_CLIENT_SECRET",
            client_id_hint: "Copy the Application (client) ID from Entra ID → App registrations.",
            client_secret_hint: "Create one under Entra ID → App registrations → Certificates & \
                                 secrets and copy its Value (not its Secret ID).",
        };
        let Some((client_id, client_secret)) = client_credentials(
            &names,
            self.microsoft_client_id,
            self.microsoft_client_secret,
            self.microsoft_client_secret_file.as_ref(),
        )?
        else {
            return Ok(None);
        };
        let invalid = |e: url::ParseError| ConfigError::Invalid {
            name: "MICROSOFT_AUTHORITY",
            why: e.to_string(),
        };
        let mut provider = configured(
            &self.microsoft_authority,
            &self.microsoft_graph_url,
            &self.microsoft_tenant,
            client_id,
            client_secret,
        )
        .map_err(invalid)?;
        provider.scope = scopes_or(self.microsoft_scopes, &SPEC)?;
        Ok(Some(provider))
    }
}

/// The endpoints of an app registration. The tenant segment is URL-encoded, so a configured
/// value cannot add path segments.
pub fn configured(
    authority: &Url,
    graph_url: &Url,
    tenant: &str,
    client_id: String,
    client_secret: SecretString,
) -> Result<ConfiguredProvider, url::ParseError> {
    let tenant: String = url::form_urlencoded::byte_serialize(tenant.as_bytes()).collect();
    Ok(ConfiguredProvider {
        id: ProviderId::Microsoft,
        client_id,
        client_secret,
        authorize_url: join(authority, &format!("{tenant}/oauth2/v2.0/authorize"))?,
        token_url: join(authority, &format!("{tenant}/oauth2/v2.0/token"))?,
        profile_url: join(
            graph_url,
            "v1.0/me?$select=id,mail,userPrincipalName,displayName",
        )?,
        revocation_url: None,
        api_bases: vec![join(graph_url, "")?],
        scope: SPEC.default_scopes.join(" "),
    })
}

/// Microsoft on the provider emulator mounted at `base`, tenant `common`.
pub fn on_emulator(
    base: &Url,
    client_id: &str,
    client_secret: SecretString,
) -> Result<ConfiguredProvider, url::ParseError> {
    configured(
        base,
        base,
        DEFAULT_TENANT,
        client_id.to_owned(),
        client_secret,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_only_the_user_can_answer_mean_reauth_and_the_rest_do_not() {
        for (error, codes, reauth) in [
            ("invalid_grant", &[50173][..], true),
            ("invalid_grant", &[700082][..], true),
            ("invalid_grant", &[9002313][..], true),
            ("invalid_grant", &[][..], true),
            ("interaction_required", &[50079][..], true),
            ("consent_required", &[][..], true),
            ("login_required", &[50058][..], true),
            // A code_verifier mismatch is a bug here, not something the user can fix.
            ("invalid_grant", &[501481][..], false),
            // The app's secret: an operator's problem.
            ("invalid_client", &[7000215][..], false),
            ("temporarily_unavailable", &[][..], false),
        ] {
            assert_eq!(
                Microsoft.means_reauth(error, codes),
                reauth,
                "{error} {codes:?}"
            );
        }
    }
}
