//! The authorization-code grant at the token endpoint (RFC 6749 §4.1.3, with PKCE): trades the
//! code the callback received, plus the verifier, for tokens. The client secret goes in the
//! form body, URL-encoded, as Microsoft documents. No retry: a code is single-use.

use secrecy::ExposeSecret;

use super::{ProviderError, TokenSet};
use crate::provider::ProviderEndpoints;

pub async fn exchange(
    http: &reqwest::Client,
    provider: &ProviderEndpoints,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenSet, ProviderError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", provider.client_id.as_str()),
        ("client_secret", provider.client_secret.expose_secret()),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
        ("scope", provider.scope.as_str()),
    ];
    let response = http
        .post(provider.token_url.clone())
        .form(&form)
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
