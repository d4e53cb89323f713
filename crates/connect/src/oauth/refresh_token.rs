//! The refresh-token grant (RFC 6749 §6). Sends the stored scopes again, as MSAL does. The
//! answer may carry a new refresh token (Microsoft rotates on every use) or none (keep the old
//! one). One attempt with a bounded time: retries and cooldowns are the broker's business.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ProviderError, TokenSet};
use crate::provider::ProviderEndpoints;

pub async fn refresh(
    http: &reqwest::Client,
    provider: &ProviderEndpoints,
    refresh_token: &SecretString,
    timeout: Duration,
) -> Result<TokenSet, ProviderError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", provider.client_id.as_str()),
        ("client_secret", provider.client_secret.expose_secret()),
        ("refresh_token", refresh_token.expose_secret()),
        ("scope", provider.scope.as_str()),
    ];
    let response = http
        .post(provider.token_url.clone())
        .form(&form)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    if !response.status().is_success() {
        return Err(ProviderError::from_response(response).await);
    }
    response
        .json::<TokenSet>()
        .await
        .map_err(|_| ProviderError::Malformed("token response".into()))
}
