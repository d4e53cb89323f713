//! Microsoft identity platform v2.0 and Microsoft Graph: endpoints, the seed's scopes, and the
//! token error codes that mean "the user must connect again". Data only; the OAuth flow code
//! reads it.

use super::{ProviderEndpoints, ProviderId, join};
use crate::config::MicrosoftSettings;

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
pub const REAUTH_AADSTS_CODES: [u64; 9] = [
    70000, 70008, 700082, 700084, 50173, 70043, 65001, 50076, 50079,
];

/// The endpoints of an app registration (tenant `common` by default). The tenant segment is
/// URL-encoded, so a configured value cannot add path segments.
pub fn endpoints(settings: &MicrosoftSettings) -> Result<ProviderEndpoints, url::ParseError> {
    let tenant: String = url::form_urlencoded::byte_serialize(settings.tenant.as_bytes()).collect();
    Ok(ProviderEndpoints {
        id: ProviderId::Microsoft,
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.clone(),
        authorize_url: join(
            &settings.authority,
            &format!("{tenant}/oauth2/v2.0/authorize"),
        )?,
        token_url: join(&settings.authority, &format!("{tenant}/oauth2/v2.0/token"))?,
        profile_url: join(
            &settings.graph_url,
            "v1.0/me?$select=id,mail,userPrincipalName,displayName",
        )?,
        api_base: join(&settings.graph_url, "")?,
        scope: SCOPES.join(" "),
        authorize_extra: vec![("prompt", "select_account")],
    })
}

/// Whether a refused token request means the grant is gone (the user must connect again).
pub fn means_reauth(error: &str, codes: &[u64]) -> bool {
    error == "invalid_grant"
        && (codes.is_empty() || codes.iter().any(|c| REAUTH_AADSTS_CODES.contains(c)))
}
