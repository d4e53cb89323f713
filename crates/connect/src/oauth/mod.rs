//! OAuth 2.0 client side, laid out like the spec: `pkce` and `state` (the secrets a flow
//! carries), `authorization_code` (the code grant at the token endpoint), `profile` (who the
//! tokens belong to), `revocation` (giving a grant back). Provider differences come from `provider::`; nothing here stores
//! anything or knows HTTP routes. Tokens are [`SecretString`]s from the moment they are parsed.
//!
//! Every number a provider sends is clamped here, where it is parsed (`Retry-After` to at most
//! [`MAX_RETRY_AFTER_SECS`], `expires_in` to [`MAX_TOKEN_LIFETIME_SECS`]), so no caller adds an
//! absurd duration to a clock. Arithmetic and indexing on provider data are linted away.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

pub mod authorization_code;
pub mod pkce;
pub mod profile;
pub mod refresh_token;
pub mod revocation;
pub mod state;

use crate::provider::{ClientAuth, ConfiguredProvider};

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// Longest wait a provider's `Retry-After` can impose (seconds); a larger value is read as this.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// Longest access-token lifetime believed (seconds); Microsoft's live 60–90 minutes.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;

/// A successful token response. `Debug` prints no token.
#[derive(Deserialize)]
pub struct TokenSet {
    pub access_token: SecretString,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// Seconds, clamped to `0..=MAX_TOKEN_LIFETIME_SECS`; Microsoft gives 60–90 minutes, never
    /// assume 3600. A number or a numeric string (some endpoints send `"3599"`).
    #[serde(deserialize_with = "clamped_lifetime")]
    pub expires_in: u64,
    /// Space-separated scopes granted (can be a superset of those requested).
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// `expires_in` as a provider may send it: an integer, a float or a numeric string, of any size
/// or sign; the result is always within `0..=MAX_TOKEN_LIFETIME_SECS`.
fn clamped_lifetime<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lifetime {
        Whole(i128),
        Fraction(f64),
        Text(String),
    }
    let secs = match Lifetime::deserialize(deserializer)? {
        Lifetime::Whole(n) => clamp_secs(n, MAX_TOKEN_LIFETIME_SECS),
        Lifetime::Fraction(f) => clamp_float_secs(f, MAX_TOKEN_LIFETIME_SECS),
        Lifetime::Text(text) => parse_secs(&text, MAX_TOKEN_LIFETIME_SECS)
            .ok_or_else(|| serde::de::Error::custom("expires_in is not a number"))?,
    };
    Ok(secs)
}

fn clamp_secs(value: i128, max: u64) -> u64 {
    u64::try_from(value.clamp(0, i128::from(max))).unwrap_or(max)
}

fn clamp_float_secs(value: f64, max: u64) -> u64 {
    if value.is_nan() || value <= 0.0 {
        return 0;
    }
    // Compared as floats first, so the conversion below is in range and exact.
    if value.ceil() >= max as f64 {
        return max;
    }
    value.ceil() as u64
}

/// Seconds as a provider writes them in a header or a string (`120`, `2.128`, `-5`,
/// `10000000000000`), clamped to `0..=max`; `None` for anything else (an HTTP date included:
/// the caller's default cooldown applies).
pub fn parse_secs(text: &str, max: u64) -> Option<u64> {
    let text = text.trim();
    if let Ok(whole) = text.parse::<i128>() {
        return Some(clamp_secs(whole, max));
    }
    let looks_numeric = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
    looks_numeric
        .then(|| text.parse::<f64>().ok())
        .flatten()
        .map(|f| clamp_float_secs(f, max))
}

/// An OAuth error body (RFC 6749 §5.2, with Microsoft's `error_codes` and `suberror`). Only the
/// codes are kept: descriptions are free text that may echo input.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProviderErrorBody {
    pub error: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub suberror: Option<String>,
}

/// Why a call to the provider failed, by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an OAuth error (4xx); retrying the same request will not help.
    #[error("provider refused: {error} {codes:?} {suberror:?} (HTTP {status})")]
    Refused {
        status: u16,
        error: String,
        codes: Vec<u64>,
        suberror: Option<String>,
    },
    /// Timeout, connection failure, 5xx or 429: try again later.
    #[error("provider unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after_secs: Option<u64>,
    },
    /// A 2xx answer we could not read.
    #[error("provider answer malformed: {0}")]
    Malformed(String),
}

impl ProviderError {
    pub(crate) fn from_transport(e: &reqwest::Error) -> Self {
        // reqwest's Display can include the URL; ours carry no secrets in URLs, but keep it terse.
        let reason = if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "transport error".to_owned()
        };
        ProviderError::Unavailable {
            reason,
            retry_after_secs: None,
        }
    }

    /// Reads a non-2xx answer without keeping its body text.
    pub(crate) async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status();
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_secs(v, MAX_RETRY_AFTER_SECS));
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return ProviderError::Unavailable {
                reason: format!("HTTP {}", status.as_u16()),
                retry_after_secs,
            };
        }
        let body = response
            .json::<ProviderErrorBody>()
            .await
            .unwrap_or_default();
        ProviderError::Refused {
            status: status.as_u16(),
            error: if body.error.is_empty() {
                "unknown".into()
            } else {
                sanitize_code(&body.error)
            },
            codes: body.error_codes,
            suberror: body.suberror.map(|s| sanitize_code(&s)),
        }
    }
}

/// Posts a form to the provider's token endpoint (either grant) and reads the answer. The
/// client authenticates as its spec says (form body or HTTP Basic); `scope` goes along when
/// `with_scope`.
pub(crate) async fn token_request(
    http: &reqwest::Client,
    provider: &ConfiguredProvider,
    grant: &[(&str, &str)],
    with_scope: bool,
    timeout: std::time::Duration,
) -> Result<TokenSet, ProviderError> {
    use secrecy::ExposeSecret;
    let mut form: Vec<(&str, &str)> = grant.to_vec();
    if with_scope {
        form.push(("scope", provider.scope.as_str()));
    }
    let mut request = http.post(provider.token_url.clone()).timeout(timeout);
    match provider.spec().client_auth {
        ClientAuth::FormBody => {
            form.push(("client_id", provider.client_id.as_str()));
            form.push(("client_secret", provider.client_secret.expose_secret()));
        }
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: each part form-encoded before Base64.
            let encode = |v: &str| -> String {
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
            };
            request = request.basic_auth(
                encode(&provider.client_id),
                Some(encode(provider.client_secret.expose_secret())),
            );
        }
    }
    let response = request
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

/// Keeps an error code that came from outside safe to log and echo: lower-case letters, digits
/// and `_`, at most 40 characters; anything else becomes `provider_error`.
pub fn sanitize_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 40
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        code.to_owned()
    } else {
        "provider_error".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    use super::*;

    #[test]
    fn retry_after_values_are_clamped_to_an_hour() {
        let hour = MAX_RETRY_AFTER_SECS;
        for (text, expected) in [
            ("120", Some(120)),
            (" 2.128 ", Some(3)),
            ("0", Some(0)),
            ("-5", Some(0)),
            ("10000000000000", Some(hour)),
            ("99999999999999999999999999999999999999999", Some(hour)),
            ("1e400", None),
            ("inf", None),
            ("NaN", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("", None),
        ] {
            assert_eq!(parse_secs(text, hour), expected, "{text:?}");
        }
    }

    #[test]
    fn token_lifetimes_are_clamped_to_a_day() {
        for (json, expected) in [
            ("3599", 3599),
            ("\"3599\"", 3599),
            ("4000.5", 4001),
            ("-1", 0),
            ("10000000000000", MAX_TOKEN_LIFETIME_SECS),
            ("1e300", MAX_TOKEN_LIFETIME_SECS),
            (
                "340282366920938463463374607431768211455",
                MAX_TOKEN_LIFETIME_SECS,
            ),
        ] {
            let body = format!(r#"{{"access_token":"a","expires_in":{json}}}"#);
            let tokens: TokenSet = serde_json::from_str(&body).unwrap();
            assert_eq!(tokens.expires_in, expected, "{json}");
        }
        assert!(
            serde_json::from_str::<TokenSet>(r#"{"access_token":"a","expires_in":"soon"}"#)
                .is_err()
        );
    }
}
