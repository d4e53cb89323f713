//! Microsoft identity platform v2.0 and Microsoft Graph: endpoints, the seed's scopes, and the
//! token error codes that mean "the user must connect again". Data only; the OAuth flow code
//! reads it.

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
