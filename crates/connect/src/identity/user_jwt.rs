//! Verification of the host app's user tokens, as Supabase issues them: HS256 with the project's
//! JWT secret, and ES256/RS256 with keys from a JWKS URL (cached by `kid`, refetched on an
//! unknown `kid`, and before use when older than `jwks_max_age`; never more than once per
//! `jwks_min_refetch`, so a JWKS outage costs one attempt per interval, during which the keys
//! already held keep working).
//! The algorithm allowed is decided by the key, never by the token's header alone. The user is
//! the `sub` claim and nothing else. Tokens and keys are never logged.
//!
//! An HS256 token that passed is remembered by its SHA-256 digest until its `exp` plus the leeway
//! ([`Verified`]), so a page that sends the same token with each of its requests has it checked
//! once.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Seconds a token is still taken after its `exp` (clock skew between the issuer and here).
const LEEWAY_SECS: u64 = 30;

/// HS256 tokens that passed every check, by the SHA-256 digest of the whole token, with the user
/// they name and their `exp`: the same token presented again is taken until `exp` plus the
/// leeway, exactly as long as checking it again would take it. Nothing else about an HS256
/// token can change its verdict within a process: the secret, audience and issuer are fixed at
/// start, and `nbf` is not checked. Tokens checked against a JWKS are not remembered, as their
/// verdict follows the key set, which is refetched.
///
/// Only a token that passed gets in, so it fills only with tokens the issuer signed (anyone can
/// get those where anonymous sign-ins are on: a flood then makes shards start over, and the
/// cache stops helping, without changing a verdict or the bound). It is bounded
/// ([`Self::SHARD_CAPACITY`] per shard; a full shard keeps its live entries in a new table, or
/// starts over when none has expired), keeps no token (a digest cannot be presented as one), and
/// is never printed. With a secret configured every token up to 4 KB is digested, ES256 ones
/// included: one SHA-256 of the token, against the two base64 decodes, two JSON parses, HMAC and
/// claims of a check (bench/PROFILE.md, "At 690d245").
#[derive(Default)]
struct Verified([std::sync::Mutex<VerifiedShard>; VERIFIED_SHARDS]);

const VERIFIED_SHARDS: usize = 16;

type VerifiedShard = HashMap<[u8; 32], (VerifiedUser, u64), foldhash::fast::RandomState>;

impl Verified {
    /// 57 344 entries in all: seven eighths of 4 096 buckets, the most a shard fills before its
    /// table doubles, so at most 4 096 buckets of 65 bytes per shard, about 4.3 MB in all.
    const SHARD_CAPACITY: usize = 3584;

    /// Tokens longer than this are checked every time rather than digested (Supabase's are
    /// under 1 KB).
    const MAX_TOKEN_LEN: usize = 4096;

    fn digest(token: &str) -> Option<[u8; 32]> {
        (token.len() <= Self::MAX_TOKEN_LEN).then(|| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            key
        })
    }

    fn shard(&self, digest: &[u8; 32]) -> std::sync::MutexGuard<'_, VerifiedShard> {
        self.0[usize::from(digest[0]) % VERIFIED_SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The user of a token remembered under `digest`, if it has not expired at `now` (seconds
    /// since the epoch).
    fn find(&self, digest: &[u8; 32], now: u64) -> Option<VerifiedUser> {
        let shard = self.shard(digest);
        let (user, exp) = shard.get(digest)?;
        (exp.saturating_add(LEEWAY_SECS) >= now).then_some(*user)
    }

    fn remember(&self, digest: [u8; 32], user: VerifiedUser, exp: u64, now: u64) {
        let mut shard = self.shard(&digest);
        if shard.len() >= Self::SHARD_CAPACITY && !shard.contains_key(&digest) {
            // The live entries move to a new table rather than being kept by `retain`, whose
            // removals leave tombstones that can make the next inserts double the table.
            let live: VerifiedShard = shard
                .drain()
                .filter(|(_, (_, exp))| exp.saturating_add(LEEWAY_SECS) >= now)
                .collect();
            *shard = if live.len() >= Self::SHARD_CAPACITY {
                VerifiedShard::default()
            } else {
                live
            };
        }
        shard.insert(digest, (user, exp));
    }

    /// Each shard's entries and the most its table holds without growing.
    #[cfg(test)]
    fn shard_sizes(&self) -> Vec<(usize, usize)> {
        self.0
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
            .map(|s| (s.len(), s.capacity()))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shard_sizes().iter().map(|(len, _)| len).sum()
    }

    #[cfg(test)]
    fn largest_table(&self) -> usize {
        self.shard_sizes()
            .iter()
            .map(|(_, table)| *table)
            .max()
            .unwrap_or(0)
    }
}

/// Verifies user JWTs. Cheap to clone.
#[derive(Clone)]
pub struct UserVerifier {
    hs256: Option<Arc<DecodingKey>>,
    jwks: Option<Arc<Jwks>>,
    audience: String,
    issuer: Option<String>,
    verified: Arc<Verified>,
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
            verified: Arc::default(),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_audience(&[self.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        v.leeway = LEEWAY_SECS;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss.as_str()]);
        }
        v
    }

    /// Verifies `token` and returns the user it names.
    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, JwtRejection> {
        let now = jsonwebtoken::get_current_timestamp();
        // Only an HS256 token can be in there; without a secret, none is.
        let digest = self.hs256.as_ref().and_then(|_| Verified::digest(token));
        if let Some(user) = digest.and_then(|d| self.verified.find(&d, now)) {
            return Ok(user);
        }
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
        let user = VerifiedUser {
            id: UserId(id),
            is_anonymous: claims.is_anonymous,
        };
        if let Some(digest) = digest.filter(|_| alg == Algorithm::HS256) {
            self.verified.remember(digest, user, claims.exp, now);
        }
        Ok(user)
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
    async fn a_token_that_passed_is_remembered_and_one_that_failed_is_not() {
        let secret = "r-r-r-r-r-r-r-r-r-r-r-r-r-r-r-r";
        let v = verifier(secret);
        let sub = Uuid::new_v4();
        let good = token(
            secret,
            json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp(), "is_anonymous": true}),
        );
        let first = v.verify(&good).await.unwrap();
        assert_eq!(v.verified.len(), 1);
        assert_eq!(v.verify(&good).await.unwrap(), first);
        assert!(first.is_anonymous);
        assert_eq!(first.id, UserId(sub));

        // The same claims with a signature character changed, another secret, another role,
        // an expired token: each refused, none remembered.
        let at = good.len() - 5;
        let swapped = if &good[at..=at] == "A" { "B" } else { "A" };
        let altered = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
        let expired = jsonwebtoken::get_current_timestamp() - LEEWAY_SECS - 5;
        for (bad, why) in [
            (altered, JwtRejection::Invalid),
            (
                token(
                    "another-another-another-another",
                    json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp()}),
                ),
                JwtRejection::Invalid,
            ),
            (
                token(
                    secret,
                    json!({"sub": sub, "role": "anon", "aud": "authenticated", "exp": exp()}),
                ),
                JwtRejection::Role,
            ),
            (
                token(
                    secret,
                    json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": expired}),
                ),
                JwtRejection::Invalid,
            ),
        ] {
            assert_eq!(v.verify(&bad).await.unwrap_err(), why);
            assert_eq!(v.verify(&bad).await.unwrap_err(), why, "asked twice");
        }
        assert_eq!(v.verified.len(), 1);
    }

    #[tokio::test]
    async fn a_remembered_token_is_answered_from_memory_until_its_time_is_up() {
        let secret = "m-m-m-m-m-m-m-m-m-m-m-m-m-m-m-m";
        let mut v = verifier(secret);
        let sub = Uuid::new_v4();
        let t = token(
            secret,
            json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp()}),
        );
        let user = v.verify(&t).await.unwrap();
        // With another secret, only a remembered verdict can still take the token.
        v.hs256 = Some(Arc::new(DecodingKey::from_secret(
            b"not-the-secret-any-more",
        )));
        assert_eq!(v.verify(&t).await.unwrap(), user);
        // Remembered as expired at the clock `verify` reads: checked again, and refused.
        let now = jsonwebtoken::get_current_timestamp();
        let digest = Verified::digest(&t).unwrap();
        v.verified
            .remember(digest, user, now - LEEWAY_SECS - 2, now);
        assert_eq!(v.verify(&t).await.unwrap_err(), JwtRejection::Invalid);
    }

    fn some_user() -> VerifiedUser {
        VerifiedUser {
            id: UserId(Uuid::new_v4()),
            is_anonymous: false,
        }
    }

    #[test]
    fn a_remembered_token_expires_when_checking_it_would_refuse_it() {
        let (verified, user) = (Verified::default(), some_user());
        let digest = Verified::digest("header.payload.signature").unwrap();
        verified.remember(digest, user, 1_000, 900);
        assert_eq!(verified.find(&digest, 1_000 + LEEWAY_SECS), Some(user));
        assert_eq!(verified.find(&digest, 1_000 + LEEWAY_SECS + 1), None);
        assert_eq!(
            verified.find(&Verified::digest("other").unwrap(), 900),
            None
        );
        assert_eq!(
            Verified::digest(&"x".repeat(Verified::MAX_TOKEN_LEN + 1)),
            None
        );
    }

    #[test]
    fn a_full_shard_keeps_its_live_entries_and_never_outgrows_its_table() {
        let (verified, user) = (Verified::default(), some_user());
        // Digests that all fall into shard 0, half of them expired at `now`.
        let in_shard_0 = |i: usize| {
            let mut d = [0u8; 32];
            d[1..9].copy_from_slice(&(i as u64).to_le_bytes());
            d
        };
        let now = 10_000;
        for i in 0..Verified::SHARD_CAPACITY {
            let exp = if i % 2 == 0 {
                now - LEEWAY_SECS - 1
            } else {
                now
            };
            verified.remember(in_shard_0(i), user, exp, now);
        }
        assert_eq!(verified.len(), Verified::SHARD_CAPACITY);
        verified.remember(in_shard_0(usize::MAX), user, now, now);
        assert_eq!(verified.len(), Verified::SHARD_CAPACITY / 2 + 1);
        assert_eq!(verified.find(&in_shard_0(1), now), Some(user));
        assert_eq!(verified.find(&in_shard_0(0), now), None);

        // Full of live entries: it starts over.
        let mut i = Verified::SHARD_CAPACITY;
        while verified.len() < Verified::SHARD_CAPACITY {
            verified.remember(in_shard_0(i), user, now, now);
            i += 1;
        }
        verified.remember(in_shard_0(usize::MAX - 1), user, now, now);
        assert_eq!(verified.len(), 1);

        // Filled, half expired, refilled, many times over: the table never outgrows the bound
        // (a table of 4 096 buckets holds 3 584 entries).
        for round in 0..6 {
            let mut i = 0;
            while verified.len() < Verified::SHARD_CAPACITY {
                let exp = if i % 2 == 0 {
                    now - LEEWAY_SECS - 1
                } else {
                    now
                };
                verified.remember(in_shard_0(1_000_000 * (round + 1) + i), user, exp, now);
                i += 1;
            }
            assert!(
                verified.largest_table() <= Verified::SHARD_CAPACITY,
                "round {round}: {}",
                verified.largest_table()
            );
        }
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
