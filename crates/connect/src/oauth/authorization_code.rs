//! The authorization-code grant at the token endpoint (RFC 6749 §4.1.3, with PKCE): trades the
//! code the callback received, plus the verifier, for tokens; `scope` only for providers that
//! want it (Microsoft). No retry: a code is single-use.

use std::time::Duration;

use super::{ProviderError, TokenSet, token_request};
use crate::provider::ConfiguredProvider;

pub async fn exchange(
    http: &reqwest::Client,
    provider: &ConfiguredProvider,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenSet, ProviderError> {
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    token_request(
        http,
        provider,
        &grant,
        provider.spec().scope_on_code_exchange,
        Duration::from_secs(15),
    )
    .await
}
