//! Giving a grant back at disconnect: RFC 7009's form `token=…` (Google) or Dropbox's bearer
//! RPC `POST /2/auth/token/revoke`. One attempt, bounded in time; what to do when it fails is
//! the broker's business (it deletes locally all the same).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::ProviderError;
use crate::provider::{ConfiguredProvider, Revocation};

/// Revokes the grant `token` belongs to. `token` is the refresh token for RFC 7009 (it revokes
/// the whole grant) and a valid access token for the bearer RPC. `timeout`: how long the
/// disconnect waits before it goes on without the provider.
pub async fn revoke(
    http: &reqwest::Client,
    provider: &ConfiguredProvider,
    token: &SecretString,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let Some(url) = provider.revocation_url.clone() else {
        return Ok(());
    };
    let request = match provider.spec().revocation {
        Revocation::None => return Ok(()),
        Revocation::Rfc7009Form => http.post(url).form(&[("token", token.expose_secret())]),
        Revocation::BearerRpc => http
            .post(url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("null"),
    };
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ProviderError::from_response(response).await)
    }
}
