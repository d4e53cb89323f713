//! Verification of the host app's user tokens, as Supabase issues them: HS256 with the project's
//! JWT secret, and ES256/RS256 with keys from a JWKS URL (cached by `kid`, refetched on an
//! unknown `kid`, and before use when older than `jwks_max_age`; never more than once per
//! `jwks_min_refetch`, so a JWKS outage costs one attempt per interval, during which the keys
//! already held keep working).
//! The algorithm allowed is decided by the key, never by the token's header alone. The user is
//! the `sub` claim and nothing else. Tokens and keys are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use url::Url;
use uuid::Uuid;

use crate::config::JwtSettings;
use crate::model::UserId;

/// Why a token was refused; logged, never sent (the client sees a plain 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    #[error("malformed token or header")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown key id")]
    UnknownKey,
    #[error("signature, expiry, audience or issuer check failed")]
    Invalid,
    #[error("role is not authenticated")]
    Role,
    #[error("sub is not a user id")]
    Subject,
}

/// The claims the service uses from a verified token.
#[derive(Clone, Debug, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    pub role: Option<String>,
    #[serde(default)]
    pub is_anonymous: bool,
    pub exp: u64,
}

/// A verified user.
#[derive(Clone, Debug)]
pub struct VerifiedUser {
    pub id: UserId,
    pub is_anonymous: bool,
}

struct CachedJwks {
    keys: HashMap<String, (Arc<DecodingKey>, Algorithm)>,
    /// The last fetch that succeeded.
    fetched_at: Option<Instant>,
    /// The last fetch started, whatever its outcome.
    tried_at: Option<Instant>,
}

impl CachedJwks {
    /// Whether a fetch was started after the last one that succeeded, within `min_refetch`: it
    /// is in flight, or it failed and the keys held are kept until the next try.
    fn trying(&self, jwks: &Jwks) -> bool {
        self.tried_at.is_some_and(|tried| {
            self.fetched_at.is_none_or(|fetched| tried > fetched)
                && tried.elapsed() < jwks.min_refetch
        })
    }

    /// The key for `kid` if the set may be used as it is: fetched within `max_age`, or being
    /// refetched (see [`Self::trying`]).
    fn usable(&self, kid: &str, jwks: &Jwks) -> Option<(Arc<DecodingKey>, Algorithm)> {
        let fresh = self.fetched_at.is_some_and(|t| t.elapsed() < jwks.max_age);
        let (key, alg) = self.keys.get(kid).filter(|_| fresh || self.trying(jwks))?;
        Some((key.clone(), *alg))
    }
}

struct Jwks {
    url: Url,
    min_refetch: Duration,
    max_age: Duration,
    http: reqwest::Client,
    cache: RwLock<CachedJwks>,
    refetch: Mutex<()>,
}

/// Verifies user JWTs. Cheap to clone.
#[derive(Clone)]
pub struct UserVerifier {
    hs256: Option<Arc<DecodingKey>>,
    jwks: Option<Arc<Jwks>>,
    audience: String,
    issuer: Option<String>,
}

impl std::fmt::Debug for UserVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks.as_ref().map(|j| j.url.as_str()))
            .finish()
    }
}

impl UserVerifier {
    pub fn new(settings: &JwtSettings, http: reqwest::Client) -> Self {
        Self {
            hs256: settings
                .hs256_secret
                .as_ref()
                .map(|s| Arc::new(DecodingKey::from_secret(s.expose_secret().as_bytes()))),
            jwks: settings.jwks_url.clone().map(|url| {
                Arc::new(Jwks {
                    url,
                    min_refetch: settings.jwks_min_refetch,
                    max_age: settings.jwks_max_age,
                    http,
                    cache: RwLock::new(CachedJwks {
                        keys: HashMap::new(),
                        fetched_at: None,
                        tried_at: None,
                    }),
                    refetch: Mutex::new(()),
                })
            }),
            audience: settings.audience.clone(),
            issuer: settings.issuer.clone(),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_audience(&[self.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        v.leeway = 30;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss.as_str()]);
        }
        v
    }

    /// Verifies `token` and returns the user it names.
    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, JwtRejection> {
        let header = decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.clone().ok_or(JwtRejection::Algorithm)?;
                (key, Algorithm::HS256)
            }
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(JwtRejection::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(JwtRejection::UnknownKey)?;
                let (key, key_alg) = jwks.key(kid).await.ok_or(JwtRejection::UnknownKey)?;
                if key_alg != header.alg {
                    return Err(JwtRejection::Algorithm);
                }
                (key, key_alg)
            }
            _ => return Err(JwtRejection::Algorithm),
        };
        let data = decode::<UserClaims>(token, &key, &self.validation(alg))
            .map_err(|_| JwtRejection::Invalid)?;
        let claims = data.claims;
        if claims.role.as_deref() != Some("authenticated") {
            return Err(JwtRejection::Role);
        }
        let id = Uuid::parse_str(&claims.sub).map_err(|_| JwtRejection::Subject)?;
        Ok(VerifiedUser {
            id: UserId(id),
            is_anonymous: claims.is_anonymous,
        })
    }
}

impl Jwks {
    async fn key(&self, kid: &str) -> Option<(Arc<DecodingKey>, Algorithm)> {
        if let Some(found) = self.cache.read().await.usable(kid, self) {
            return Some(found);
        }
        // One refetch at a time; callers that queued behind it re-read the cache it filled.
        let _guard = self.refetch.lock().await;
        let due = {
            let mut cache = self.cache.write().await;
            if let Some(found) = cache.usable(kid, self) {
                return Some(found);
            }
            // A held key here is stale and not being refetched; an unknown one is looked for
            // at most once per `min_refetch`.
            let due = cache.keys.contains_key(kid)
                || cache
                    .tried_at
                    .is_none_or(|t| t.elapsed() >= self.min_refetch);
            if due {
                // Marked before the request: while it is in flight (or after it fails), callers
                // whose key is held keep using it instead of queueing behind the fetch.
                cache.tried_at = Some(Instant::now());
            }
            due
        };
        if due {
            // Boxed: the request's future is kilobytes, and every verification's future would
            // otherwise carry (and copy) it.
            match Box::pin(self.fetch()).await {
                Ok(keys) => {
                    let mut cache = self.cache.write().await;
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS fetch failed; keeping cached keys");
                }
            }
        }
        let cache = self.cache.read().await;
        cache.keys.get(kid).map(|(key, alg)| (key.clone(), *alg))
    }

    async fn fetch(&self) -> Result<HashMap<String, (Arc<DecodingKey>, Algorithm)>, String> {
        let response = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let set: JwkSet = response.json().await.map_err(|e| format!("body: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (Arc::new(key), alg));
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use secrecy::SecretString;
    use serde_json::json;

    fn verifier(secret: &str) -> UserVerifier {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        UserVerifier::new(
            &JwtSettings {
                hs256_secret: Some(SecretString::from(secret.to_owned())),
                jwks_url: None,
                audience: "authenticated".into(),
                issuer: None,
                jwks_min_refetch: JwtSettings::DEFAULT_JWKS_MIN_REFETCH,
                jwks_max_age: JwtSettings::DEFAULT_JWKS_MAX_AGE,
            },
            reqwest::Client::new(),
        )
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[tokio::test]
    async fn hs256_token_names_its_sub() {
        let sub = Uuid::new_v4();
        let t = token(
            "s3cret-s3cret-s3cret-s3cret-s3cret",
            json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp()}),
        );
        let user = verifier("s3cret-s3cret-s3cret-s3cret-s3cret")
            .verify(&t)
            .await
            .unwrap();
        assert_eq!(user.id, UserId(sub));
    }

    #[tokio::test]
    async fn service_role_and_anon_tokens_are_refused() {
        let v = verifier("k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k");
        for role in ["service_role", "anon"] {
            let t = token(
                "k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k",
                json!({"sub": Uuid::new_v4(), "role": role, "aud": "authenticated", "exp": exp()}),
            );
            assert_eq!(v.verify(&t).await.unwrap_err(), JwtRejection::Role);
        }
    }
}
