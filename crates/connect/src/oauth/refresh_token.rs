//! The refresh-token grant (RFC 6749 §6). Sends the stored scopes again, as MSAL does. The
//! answer may carry a new refresh token (Microsoft rotates on every use) or none (keep the old
//! one). One attempt with a bounded time: retries and cooldowns are the broker's business.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, TokenSet, token_request};
use crate::provider::ProviderEndpoints;

pub async fn refresh(
    http: &reqwest::Client,
    provider: &ProviderEndpoints,
    refresh_token: &SecretString,
    timeout: Duration,
) -> Result<TokenSet, ProviderError> {
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
    ];
    token_request(http, provider, &grant, timeout).await
}
