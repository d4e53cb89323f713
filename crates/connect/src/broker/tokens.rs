//! Fresh tokens for trusted callers: `fresh_token` answers from the stored token while it is
//! valid beyond the skew (or the caller's `min_ttl`), and otherwise refreshes it at most once
//! across every replica:
//!
//! 1. in-process single flight per connection (one refresh task; callers share its result),
//! 2. a lease in the database claimed by a conditional update, re-checked after claiming,
//! 3. the provider call with a timeout and no transaction or pooled connection held,
//! 4. a compare-and-swap write on `version` storing the new access and refresh tokens together
//!    (the old refresh token, re-sealed, when the provider sent none).
//!
//! Callers in other replicas wait for the version to change. `invalid_grant` becomes one
//! transition to `needs_reauth`; timeouts, 5xx and 429 keep everything, start a cooldown, and
//! answer with the current token while it is valid, else 503 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use super::connect::token_place;
use crate::app::AppState;
use crate::error::Error;
use crate::model::{ConnectionState, UserId};
use crate::oauth::{ProviderError, refresh_token};
use crate::provider::ProviderId;
use crate::store::{Refreshed, TokenRow};

/// A usable access token and what callers need to know about it. `Debug` shows no token.
pub struct FreshToken {
    pub access_token: SecretString,
    pub expires_at: OffsetDateTime,
    pub scopes: Vec<String>,
    pub provider_user_id: String,
    pub provider_email: Option<String>,
    /// The stored row's version this token belongs to.
    pub version: i64,
    /// The connection's row id (what change notifications name).
    pub connection_id: Uuid,
}

impl std::fmt::Debug for FreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshToken")
            .field("expires_at", &self.expires_at)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why no token could be handed out (cloneable: one refresh answers many callers).
#[derive(Clone, Debug)]
pub enum RefreshFailure {
    NotConnected,
    Reauth,
    Unavailable { retry_after_secs: u64 },
    Internal(String),
}

impl From<RefreshFailure> for Error {
    fn from(f: RefreshFailure) -> Self {
        match f {
            RefreshFailure::NotConnected => Error::NotConnected,
            RefreshFailure::Reauth => Error::ReauthRequired,
            RefreshFailure::Unavailable { retry_after_secs } => Error::ProviderUnavailable {
                retry_after_secs,
                detail: "refresh not possible now".into(),
            },
            RefreshFailure::Internal(detail) => Error::Internal(detail),
        }
    }
}

impl From<crate::store::StoreError> for RefreshFailure {
    fn from(e: crate::store::StoreError) -> Self {
        RefreshFailure::Internal(e.to_string())
    }
}

type Outcome = Result<Arc<FreshToken>, RefreshFailure>;
type Flight = Shared<BoxFuture<'static, Outcome>>;

/// The process's refresh coordination: its lease owner id and the refreshes in flight.
pub struct TokenBroker {
    /// Names this process in `refresh_lease_owner`.
    pub owner: Uuid,
    flights: Mutex<HashMap<(UserId, ProviderId), Flight>>,
}

impl Default for TokenBroker {
    fn default() -> Self {
        Self {
            owner: Uuid::new_v4(),
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// A token for `user` and `provider` valid for at least `min_ttl` (and the configured skew).
/// `rejected_version`: the version of a token the provider just refused; a newer one is needed.
pub async fn fresh_token(
    app: &AppState,
    user: UserId,
    provider: ProviderId,
    min_ttl: Duration,
    rejected_version: Option<i64>,
) -> Result<Arc<FreshToken>, Error> {
    // An unknown provider answers like an unknown user: nothing to enumerate.
    if app.provider(provider).is_none() {
        return Err(Error::NotConnected);
    }
    let need = min_ttl.max(app.settings.refresh.skew);
    let cached = app.cache.get(user, provider);
    if let Some(token) = cached.filter(|t| usable_token(t, need, rejected_version)) {
        return Ok(token);
    }
    let epoch = app.cache.epoch();
    let row = app
        .store
        .token_row(user, provider)
        .await?
        .ok_or(Error::NotConnected)?;
    if row.state == ConnectionState::NeedsReauth {
        return Err(Error::ReauthRequired);
    }
    if usable(&row, need, rejected_version) {
        let token = Arc::new(open(app, &row).map_err(Error::from)?);
        app.cache.put(user, provider, token.clone(), epoch);
        return Ok(token);
    }
    let flight = {
        let mut flights = app
            .tokens
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (user, provider);
        match flights.get(&key).filter(|f| f.peek().is_none()) {
            Some(running) => running.clone(),
            None => {
                // A task, so the refresh completes (and releases its lease) even if every
                // caller gives up waiting.
                let task = tokio::spawn(refresh_flight(
                    app.clone(),
                    user,
                    provider,
                    need,
                    rejected_version,
                ));
                let flight = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(RefreshFailure::Internal(format!("refresh task: {e}")))
                    })
                }
                .boxed()
                .shared();
                flights.insert(key, flight.clone());
                flight
            }
        }
    };
    let outcome = flight.await;
    if let Ok(token) = &outcome {
        app.cache.put(user, provider, token.clone(), epoch);
    }
    {
        let mut flights = app
            .tokens
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(&(user, provider))
            .is_some_and(|f| f.peek().is_some())
        {
            flights.remove(&(user, provider));
        }
    }
    outcome.map_err(Error::from)
}

fn usable(row: &TokenRow, need: Duration, rejected_version: Option<i64>) -> bool {
    lives(row.version, row.expires_at, need, rejected_version)
}

fn usable_token(token: &FreshToken, need: Duration, rejected_version: Option<i64>) -> bool {
    lives(token.version, token.expires_at, need, rejected_version)
}

fn lives(version: i64, expires_at: OffsetDateTime, need: Duration, rejected: Option<i64>) -> bool {
    rejected != Some(version)
        && expires_at - OffsetDateTime::now_utc()
            > time::Duration::try_from(need).unwrap_or(time::Duration::MAX)
}

fn open(app: &AppState, row: &TokenRow) -> Result<FreshToken, RefreshFailure> {
    let access_token = app
        .keyring
        .open_string(
            &token_place("access_token", row.user_id, row.provider),
            &row.access_token,
        )
        .map_err(|e| RefreshFailure::Internal(format!("connection {}: {e}", row.id)))?;
    Ok(FreshToken {
        access_token,
        expires_at: row.expires_at,
        scopes: row.scopes.clone(),
        provider_user_id: row.provider_user_id.clone(),
        provider_email: row.provider_email.clone(),
        version: row.version,
        connection_id: row.id,
    })
}

/// The current token while it still works, else "try again later".
fn fallback(
    app: &AppState,
    row: &TokenRow,
    retry_after: Duration,
    rejected_version: Option<i64>,
) -> Outcome {
    if usable(row, Duration::from_secs(5), rejected_version) {
        return open(app, row).map(Arc::new);
    }
    Err(RefreshFailure::Unavailable {
        retry_after_secs: retry_after.as_secs().max(1),
    })
}

async fn refresh_flight(
    app: AppState,
    user: UserId,
    provider: ProviderId,
    need: Duration,
    rejected_version: Option<i64>,
) -> Outcome {
    let settings = &app.settings.refresh;
    let deadline =
        Instant::now() + settings.lease + settings.provider_timeout + Duration::from_secs(5);
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let row = app
            .store
            .token_row(user, provider)
            .await?
            .ok_or(RefreshFailure::NotConnected)?;
        if row.state == ConnectionState::NeedsReauth {
            return Err(RefreshFailure::Reauth);
        }
        if usable(&row, need, rejected_version) {
            metrics::histogram!("refresh_lease_wait_seconds")
                .record(started.elapsed().as_secs_f64());
            return open(&app, &row).map(Arc::new);
        }
        let now = OffsetDateTime::now_utc();
        if let Some(until) = row.cooldown_until.filter(|until| *until > now) {
            let wait = Duration::try_from(until - now).unwrap_or(settings.cooldown);
            return fallback(&app, &row, wait, rejected_version);
        }
        match app
            .store
            .claim_refresh_lease(row.id, app.tokens.owner, settings.lease)
            .await?
        {
            Some(claimed) => {
                // Someone may have refreshed between our read and the claim.
                if usable(&claimed, need, rejected_version) {
                    app.store
                        .release_refresh_lease(claimed.id, app.tokens.owner, None, None)
                        .await?;
                    return open(&app, &claimed).map(Arc::new);
                }
                return refresh_claimed(&app, claimed).await;
            }
            None if Instant::now() > deadline => {
                return fallback(&app, &row, Duration::from_secs(5), rejected_version);
            }
            None => {
                // Another replica holds the lease: wait for its write.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Refreshes a connection whose lease this process holds, and stores the outcome.
pub async fn refresh_claimed(app: &AppState, claimed: TokenRow) -> Outcome {
    let owner = app.tokens.owner;
    let provider = claimed.provider;
    let Some(endpoints) = app.provider(provider) else {
        app.store
            .release_refresh_lease(claimed.id, owner, None, None)
            .await?;
        return Err(RefreshFailure::NotConnected);
    };
    let Some(sealed_refresh) = claimed.refresh_token.as_deref() else {
        app.store
            .mark_needs_reauth(claimed.id, claimed.version, owner, "no_refresh_token")
            .await?;
        app.cache.invalidate(claimed.user_id, provider);
        metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "reauth")
            .increment(1);
        return Err(RefreshFailure::Reauth);
    };
    let place = |column| token_place(column, claimed.user_id, provider);
    let refresh = match app
        .keyring
        .open_string(&place("refresh_token"), sealed_refresh)
    {
        Ok(token) => token,
        Err(e) => {
            app.store
                .release_refresh_lease(claimed.id, owner, None, None)
                .await?;
            return Err(RefreshFailure::Internal(format!(
                "connection {}: {e}",
                claimed.id
            )));
        }
    };
    let settings = &app.settings.refresh;
    match refresh_token::refresh(&app.http, endpoints, &refresh, settings.provider_timeout).await {
        Ok(tokens) => {
            let seal = |column, secret: &SecretString| {
                app.keyring
                    .seal(&place(column), secret.expose_secret().as_bytes())
                    .map_err(|e| RefreshFailure::Internal(e.to_string()))
            };
            let expires_in = i64::try_from(tokens.expires_in)
                .unwrap_or(0)
                .clamp(0, 86_400);
            let scopes = tokens
                .scope
                .as_deref()
                .map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
            let refreshed = Refreshed {
                access_token: seal("access_token", &tokens.access_token)?,
                refresh_token: seal(
                    "refresh_token",
                    tokens.refresh_token.as_ref().unwrap_or(&refresh),
                )?,
                key_id: app.keyring.active_key_id().to_owned(),
                expires_at: OffsetDateTime::now_utc() + time::Duration::seconds(expires_in),
                scopes: scopes.clone(),
            };
            let stored = app
                .store
                .store_refreshed(claimed.id, claimed.version, owner, &refreshed)
                .await?;
            app.cache.invalidate(claimed.user_id, provider);
            if stored {
                metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "refreshed").increment(1);
                tracing::info!(user_id = %claimed.user_id, provider = %provider, "token refreshed");
                return Ok(Arc::new(FreshToken {
                    access_token: tokens.access_token,
                    expires_at: refreshed.expires_at,
                    scopes: scopes.unwrap_or(claimed.scopes),
                    provider_user_id: claimed.provider_user_id,
                    provider_email: claimed.provider_email,
                    version: claimed.version + 1,
                    connection_id: claimed.id,
                }));
            }
            // Our lease ran out and another writer got there first: theirs is the token now.
            metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "lost_lease").increment(1);
            tracing::warn!(user_id = %claimed.user_id, provider = %provider, "refresh lease lost before the write");
            let row = app
                .store
                .token_row(claimed.user_id, provider)
                .await?
                .ok_or(RefreshFailure::NotConnected)?;
            fallback(app, &row, Duration::from_secs(1), None)
        }
        Err(ProviderError::Refused { error, codes, .. })
            if crate::provider::means_reauth(provider, &error, &codes) =>
        {
            let reason = format!("{error} {codes:?}");
            app.store
                .mark_needs_reauth(claimed.id, claimed.version, owner, &reason)
                .await?;
            app.cache.invalidate(claimed.user_id, provider);
            metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "reauth").increment(1);
            tracing::info!(user_id = %claimed.user_id, provider = %provider, reason = %reason, "provider refused the grant: needs reauth");
            Err(RefreshFailure::Reauth)
        }
        Err(e) => {
            let retry_after = match &e {
                ProviderError::Unavailable {
                    retry_after_secs: Some(secs),
                    ..
                } => Duration::from_secs(*secs),
                _ => Duration::ZERO,
            };
            let cooldown = retry_after.max(settings.cooldown);
            let until = OffsetDateTime::now_utc()
                + time::Duration::try_from(cooldown).unwrap_or(time::Duration::MAX);
            let reason = match &e {
                ProviderError::Unavailable { reason, .. } => format!("unavailable: {reason}"),
                ProviderError::Refused { error, codes, .. } => {
                    format!("refused: {error} {codes:?}")
                }
                ProviderError::Malformed(what) => format!("malformed {what}"),
            };
            app.store
                .release_refresh_lease(claimed.id, owner, Some(until), Some(&reason))
                .await?;
            metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "unavailable").increment(1);
            tracing::warn!(user_id = %claimed.user_id, provider = %provider, reason = %reason, cooldown_secs = cooldown.as_secs(), "refresh failed; cooling down");
            fallback(app, &claimed, cooldown, None)
        }
    }
}
