//! The refresh-token grant (RFC 6749 §6). Sends the scopes again only where the provider wants
//! them (Microsoft, as MSAL does; Google documents no `scope` on refresh). The answer may carry
//! a new refresh token (Microsoft rotates on every use) or none (Google, Dropbox: keep the old
//! one). One attempt with a bounded time: retries and cooldowns are the broker's business.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, TokenSet, token_request};
use crate::provider::ConfiguredProvider;

pub async fn refresh(
    http: &reqwest::Client,
    provider: &ConfiguredProvider,
    refresh_token: &SecretString,
    timeout: Duration,
) -> Result<TokenSet, ProviderError> {
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
    ];
    token_request(
        http,
        provider,
        &grant,
        provider.spec().scope_on_refresh,
        timeout,
    )
    .await
}
