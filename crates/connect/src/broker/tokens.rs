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
//! Callers in other replicas serve the stored token while it is valid for at least
//! [`SERVE_WHILE_LEASED`] (or the caller's `min_ttl`, if longer), and otherwise wait for the
//! version to change, so a replica that died holding a lease stalls nobody who has a usable
//! token. `invalid_grant` becomes one transition to `needs_reauth`; timeouts, 5xx and 429 keep
//! everything, start a cooldown (checked by the claim itself, so no replica skips it), and
//! answer with the current token while it is valid, else 503 with `Retry-After`.
//!
//! While the database cannot be reached, a token still valid in memory is served (nobody can
//! change the row then; see `cache`), and everything else answers `storage_unavailable`.
//! Writes after the provider answered are retried while the database is unreachable; the
//! lease is released on every path, and all leases of the process at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::Broker;
use super::access_token::{AccessToken, needs_no_escaping};
use super::sealed::{Sealed, token_place};
use crate::error::Error;
use crate::model::{ConnectionState, UserId};
use crate::oauth::{ProviderError, refresh_token};
use crate::provider::ProviderId;
use crate::store::{Refreshed, StoreError, StoreResult, TokenRow};

/// While another replica holds the refresh lease, the stored token is served if it lives at
/// least this long (or the caller's `min_ttl`); the same floor applies to tokens served from
/// memory while the database is unreachable.
pub const SERVE_WHILE_LEASED: Duration = Duration::from_secs(30);

/// A usable access token and what callers need to know about it. `Debug` shows no token.
pub struct FreshToken {
    pub access_token: AccessToken,
    pub expires_at: OffsetDateTime,
    /// The token API's answer after the token, written once ([`answer_tail`]).
    pub answer_tail: Bytes,
    /// The stored row's version this token belongs to.
    pub version: i64,
    /// The connection's row id (what change notifications name).
    pub connection_id: Uuid,
}

/// The token API's JSON answer after the token: the token's closing quote, then
/// `"token_type":"Bearer","expires_at":"…","scopes":[…],"provider_user_id":"…",
/// "provider_email":…}`. Written when a token is opened or refreshed, and shared by every answer
/// that hands the token out, so an answer from memory writes nothing; one buffer is also
/// smaller than the scopes and account kept as strings of their own. Each string is checked in
/// one vectorised pass and copied, or escaped by serde when it needs it.
pub fn answer_tail(
    expires_at: OffsetDateTime,
    scopes: &[String],
    provider_user_id: &str,
    provider_email: Option<&str>,
) -> serde_json::Result<Bytes> {
    let mut out = Vec::with_capacity(tail_size(scopes, provider_user_id, provider_email));
    out.extend_from_slice(br#"","token_type":"Bearer","expires_at":""#);
    expires_at
        .format_into(&mut out, &time::format_description::well_known::Rfc3339)
        .map_err(<serde_json::Error as serde::ser::Error>::custom)?;
    out.extend_from_slice(br#"","scopes":["#);
    for (i, scope) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, scope)?;
    }
    out.extend_from_slice(br#"],"provider_user_id":"#);
    push_json_str(&mut out, provider_user_id)?;
    out.extend_from_slice(br#","provider_email":"#);
    match provider_email {
        Some(email) => push_json_str(&mut out, email)?,
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    // Copied into a block of its own size: shrinking the estimate in place would leave a small
    // free fragment behind for every cached token, and glibc then sorts those fragments on the
    // next large allocation (a request's 8 KB read buffer) again and again.
    Ok(Bytes::copy_from_slice(&out))
}

/// Room for the tail unless a value needs escaping: member names, punctuation and the
/// timestamp take about 130 bytes.
fn tail_size(scopes: &[String], provider_user_id: &str, provider_email: Option<&str>) -> usize {
    160 + scopes.iter().map(|s| s.len() + 3).sum::<usize>()
        + provider_user_id.len()
        + provider_email.map_or(0, str::len)
}

/// `value` as a JSON string: copied between quotes when it needs no escaping, else by serde.
fn push_json_str(out: &mut Vec<u8>, value: &str) -> serde_json::Result<()> {
    if needs_no_escaping(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, value)
    }
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
    Unavailable {
        retry_after_secs: u64,
    },
    /// The database could not be reached.
    Storage,
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
            RefreshFailure::Storage => Error::Storage(StoreError::Unavailable),
            RefreshFailure::Internal(detail) => Error::Internal(detail),
        }
    }
}

impl From<StoreError> for RefreshFailure {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            RefreshFailure::Storage
        } else {
            RefreshFailure::Internal(e.to_string())
        }
    }
}

type Outcome = Result<Arc<FreshToken>, RefreshFailure>;
type Flight = Shared<BoxFuture<'static, Outcome>>;

/// The process's refresh coordination: its lease owner id and the refreshes in flight.
pub struct TokenBroker {
    /// Names this process in `refresh_lease_owner`.
    pub owner: Uuid,
    flights: Mutex<HashMap<(UserId, ProviderId), Flight>>,
    /// Every refresh task and keep-alive pass, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Default for TokenBroker {
    fn default() -> Self {
        Self {
            owner: Uuid::new_v4(),
            flights: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        }
    }
}

/// A token from memory while the database cannot be reached, if one lives long enough.
fn served_during_outage(
    broker: &Broker,
    user: UserId,
    provider: ProviderId,
    min_ttl: Duration,
    rejected_version: Option<i64>,
) -> Option<Arc<FreshToken>> {
    let token = broker
        .cache
        .get_during_outage(user, provider)
        .filter(|t| usable_token(t, min_ttl.max(SERVE_WHILE_LEASED), rejected_version))?;
    metrics::counter!("token_served_during_outage_total").increment(1);
    Some(token)
}

/// A token for `user` and `provider` valid for at least `min_ttl` (and the configured skew).
/// `rejected_version`: the version of a token the provider just refused; a newer one is needed.
pub async fn fresh_token(
    broker: &Arc<Broker>,
    user: UserId,
    provider: ProviderId,
    min_ttl: Duration,
    rejected_version: Option<i64>,
) -> Result<Arc<FreshToken>, Error> {
    // An unknown provider answers like an unknown user: nothing to enumerate.
    let Some(configured) = broker.provider(provider) else {
        return Err(Error::NotConnected);
    };
    // A `min_ttl` no fresh token could meet would cost a refresh on every call: capped at the
    // provider's shortest token lifetime less a minute.
    let reachable = Duration::from_secs(configured.spec().shortest_token_secs.saturating_sub(60));
    let need = min_ttl.min(reachable).max(broker.settings.refresh.skew);
    let cached = broker.cache.get(user, provider);
    if let Some(token) = cached.filter(|t| usable_token(t, need, rejected_version)) {
        return Ok(token);
    }
    let epoch = broker.cache.epoch();
    let row = match broker.store.token_row(user, provider).await {
        Ok(row) => row,
        Err(e) if e.is_unavailable() => {
            return served_during_outage(broker, user, provider, min_ttl, rejected_version)
                .ok_or(Error::Storage(e));
        }
        Err(e) => return Err(e.into()),
    };
    if !broker.cache.is_enabled() {
        broker
            .cache
            .confirm_read(user, provider, row.as_ref().map(|r| r.version));
    }
    let row = row.ok_or(Error::NotConnected)?;
    if row.state == ConnectionState::NeedsReauth {
        return Err(Error::ReauthRequired);
    }
    if usable(&row, need, rejected_version) {
        let token = Arc::new(open(broker, &row).map_err(Error::from)?);
        broker.cache.put(user, provider, token.clone(), epoch);
        return Ok(token);
    }
    let flight = {
        let mut flights = broker
            .tokens
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (user, provider);
        match flights.get(&key).filter(|f| f.peek().is_none()) {
            Some(running) => running.clone(),
            None => {
                // A task, so the refresh completes (and releases its lease) even if every
                // caller gives up waiting; tracked, so shutdown waits for it; in the span of
                // the request that started it, so its log lines carry that request's id.
                let task = broker.tokens.tasks.spawn(
                    refresh_flight(
                        broker.clone(),
                        user,
                        provider,
                        need,
                        min_ttl.max(SERVE_WHILE_LEASED),
                        rejected_version,
                    )
                    .instrument(tracing::Span::current()),
                );
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
        broker.cache.put(user, provider, token.clone(), epoch);
    }
    {
        let mut flights = broker
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
    match outcome {
        Err(RefreshFailure::Storage) => {
            served_during_outage(broker, user, provider, min_ttl, rejected_version)
                .ok_or(Error::Storage(StoreError::Unavailable))
        }
        other => other.map_err(Error::from),
    }
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

fn open(broker: &Broker, row: &TokenRow) -> Result<FreshToken, RefreshFailure> {
    let access_token = broker
        .keyring
        .open_string(
            &token_place("access_token", row.user_id, row.provider),
            &row.access_token,
        )
        .map_err(|e| RefreshFailure::Internal(format!("connection {}: {e}", row.id)))?;
    let answer_tail = answer_tail(
        row.expires_at,
        &row.scopes,
        &row.provider_user_id,
        row.provider_email.as_deref(),
    )
    .map_err(|e| RefreshFailure::Internal(format!("connection {}: {e}", row.id)))?;
    Ok(FreshToken {
        access_token: AccessToken::new(access_token.expose_secret()),
        expires_at: row.expires_at,
        answer_tail,
        version: row.version,
        connection_id: row.id,
    })
}

/// The current token while it still works, else "try again later".
fn fallback(
    broker: &Broker,
    row: &TokenRow,
    retry_after: Duration,
    rejected_version: Option<i64>,
) -> Outcome {
    if usable(row, Duration::from_secs(5), rejected_version) {
        return open(broker, row).map(Arc::new);
    }
    Err(RefreshFailure::Unavailable {
        retry_after_secs: retry_after.as_secs().max(1),
    })
}

/// `need`: how long the token must live to be served without a refresh; `enough_while_leased`:
/// how long it must live to be served while another replica holds the lease.
async fn refresh_flight(
    broker: Arc<Broker>,
    user: UserId,
    provider: ProviderId,
    need: Duration,
    enough_while_leased: Duration,
    rejected_version: Option<i64>,
) -> Outcome {
    let settings = &broker.settings.refresh;
    let deadline =
        Instant::now() + settings.lease + settings.provider_timeout + Duration::from_secs(5);
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let row = broker
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
            return open(&broker, &row).map(Arc::new);
        }
        let now = OffsetDateTime::now_utc();
        if let Some(until) = row.cooldown_until.filter(|until| *until > now) {
            let wait = Duration::try_from(until - now).unwrap_or(settings.cooldown);
            return fallback(&broker, &row, wait, rejected_version);
        }
        match broker
            .store
            .claim_refresh_lease(row.id, broker.tokens.owner, settings.lease)
            .await?
        {
            Some(claimed) => {
                // Someone may have refreshed between our read and the claim.
                if usable(&claimed, need, rejected_version) {
                    release(&broker, &claimed, None, None).await;
                    return open(&broker, &claimed).map(Arc::new);
                }
                return refresh_claimed(&broker, claimed, rejected_version).await;
            }
            // Another replica holds the lease (maybe one that died): no need to wait for it
            // while the stored token still works.
            None if usable(&row, enough_while_leased, rejected_version) => {
                metrics::counter!("token_served_while_leased_total").increment(1);
                return open(&broker, &row).map(Arc::new);
            }
            None if Instant::now() > deadline => {
                return fallback(&broker, &row, Duration::from_secs(5), rejected_version);
            }
            None => {
                // Another replica holds the lease: wait for its write.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Runs a write that must land after the provider answered, trying again while the database
/// is unreachable (a restart takes seconds); other errors are final.
async fn write_with_retries<T, F, Fut>(what: &str, mut write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    const PAUSES_MS: [u64; 4] = [250, 500, 1000, 2000];
    let mut pauses = PAUSES_MS.iter();
    loop {
        match write().await {
            Err(e) if e.is_unavailable() => match pauses.next() {
                Some(&ms) => {
                    tracing::warn!(error = %e, what, "database unreachable after the provider answered; retrying the write");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Gives the lease back (with a cooldown, when given). The caller's answer does not depend on
/// it: while the database is unreachable it is given back in the background, as soon as the
/// database answers (until the lease would have expired anyway).
async fn release(
    broker: &Arc<Broker>,
    claimed: &TokenRow,
    cooldown_until: Option<OffsetDateTime>,
    reason: Option<&str>,
) {
    let owner = broker.tokens.owner;
    let id = claimed.id;
    let first = broker
        .store
        .release_refresh_lease(id, owner, cooldown_until, reason)
        .await;
    match first {
        Ok(()) => {}
        Err(e) if e.is_unavailable() => {
            let broker = broker.clone();
            let reason = reason.map(str::to_owned);
            let until = Instant::now() + broker.settings.refresh.lease;
            broker.tokens.tasks.clone().spawn(async move {
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let released = broker
                        .store
                        .release_refresh_lease(id, owner, cooldown_until, reason.as_deref())
                        .await;
                    match released {
                        Err(e) if e.is_unavailable() => continue,
                        Err(e) => {
                            tracing::error!(error = %e, connection_id = %id, "could not release the refresh lease");
                            return;
                        }
                        Ok(()) => return,
                    }
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, connection_id = %id, "could not release the refresh lease; it expires on its own");
        }
    }
}

/// Refreshes a connection whose lease this process holds, and stores the outcome. Takes the
/// broker's `Arc` (like everything here that may spawn: a lease is given back in the
/// background while the database is unreachable).
/// `rejected_version`: the version of a token the provider refused (not to be served again).
pub async fn refresh_claimed(
    broker: &Arc<Broker>,
    claimed: TokenRow,
    rejected_version: Option<i64>,
) -> Outcome {
    let owner = broker.tokens.owner;
    let provider = claimed.provider;
    let Some(endpoints) = broker.provider(provider) else {
        release(broker, &claimed, None, None).await;
        return Err(RefreshFailure::NotConnected);
    };
    let Some(sealed_refresh) = claimed.refresh_token.as_deref() else {
        return needs_reauth(broker, &claimed, "no_refresh_token").await;
    };
    let place = |column| token_place(column, claimed.user_id, provider);
    let refresh = match broker
        .keyring
        .open_string(&place("refresh_token"), sealed_refresh)
    {
        Ok(token) => token,
        Err(e) => {
            release(broker, &claimed, None, None).await;
            return Err(RefreshFailure::Internal(format!(
                "connection {}: {e}",
                claimed.id
            )));
        }
    };
    let settings = &broker.settings.refresh;
    match refresh_token::refresh(&broker.http, endpoints, &refresh, settings.provider_timeout).await
    {
        Ok(tokens) => {
            let sealed = Sealed::from_response(
                &broker.keyring,
                claimed.user_id,
                provider,
                &tokens,
                Some(&refresh),
            )
            .map_err(|e| RefreshFailure::Internal(e.to_string()))?;
            let scopes = sealed.scopes;
            let refreshed = Refreshed {
                access_token: sealed.access_token,
                // Never none: the refresh token just used is kept when no new one came.
                refresh_token: sealed
                    .refresh_token
                    .ok_or_else(|| RefreshFailure::Internal("no refresh token to store".into()))?,
                key_id: sealed.key_id,
                expires_at: sealed.expires_at,
                scopes: scopes.clone(),
            };
            let stored = write_with_retries("store the refreshed tokens", || {
                broker
                    .store
                    .store_refreshed(claimed.id, claimed.version, owner, &refreshed)
            })
            .await;
            let access_token = AccessToken::new(tokens.access_token.expose_secret());
            let tail = answer_tail(
                refreshed.expires_at,
                scopes.as_deref().unwrap_or(claimed.scopes.as_slice()),
                &claimed.provider_user_id,
                claimed.provider_email.as_deref(),
            )
            .map_err(|e| RefreshFailure::Internal(format!("connection {}: {e}", claimed.id)))?;
            let token = |version| {
                Arc::new(FreshToken {
                    access_token: access_token.clone(),
                    expires_at: refreshed.expires_at,
                    answer_tail: tail.clone(),
                    version,
                    connection_id: claimed.id,
                })
            };
            match stored {
                Ok(true) => {
                    // Our own write: older entries go, and the new token may be cached (the
                    // notification of this write will not drop it).
                    broker.row_written(claimed.id, claimed.version + 1);
                    metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "refreshed").increment(1);
                    tracing::info!(user_id = %claimed.user_id, provider = %provider, "token refreshed");
                    Ok(token(claimed.version + 1))
                }
                Ok(false) => {
                    // Our lease ran out and another writer got there first: theirs is the token now.
                    metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "lost_lease").increment(1);
                    tracing::warn!(user_id = %claimed.user_id, provider = %provider, "refresh lease lost before the write");
                    let row = broker
                        .store
                        .token_row(claimed.user_id, provider)
                        .await?
                        .ok_or(RefreshFailure::NotConnected)?;
                    fallback(broker, &row, Duration::from_secs(1), rejected_version)
                }
                Err(e) => {
                    // The provider issued a token we could not store. It works all the same, so
                    // the caller gets it (under the stored version: what the database still
                    // holds); the stored refresh token stays the one we used.
                    metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "not_stored").increment(1);
                    tracing::error!(error = %e, user_id = %claimed.user_id, provider = %provider, "refreshed token could not be stored");
                    release(broker, &claimed, None, None).await;
                    Ok(token(claimed.version))
                }
            }
        }
        Err(ProviderError::Refused { error, codes, .. })
            if crate::provider::means_reauth(provider, &error, &codes) =>
        {
            needs_reauth(broker, &claimed, &reauth_reason(provider, &error, &codes)).await
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
            // Checked: the cooldown comes from configuration and the provider's Retry-After.
            let until = time::Duration::try_from(cooldown)
                .ok()
                .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
                .unwrap_or(OffsetDateTime::now_utc() + time::Duration::days(1));
            let reason = match &e {
                ProviderError::Unavailable { reason, .. } => format!("unavailable: {reason}"),
                ProviderError::Refused { error, codes, .. } => {
                    format!("refused: {error} {codes:?}")
                }
                ProviderError::Malformed(what) => format!("malformed {what}"),
            };
            release(broker, &claimed, Some(until), Some(&reason)).await;
            metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "unavailable").increment(1);
            tracing::warn!(user_id = %claimed.user_id, provider = %provider, reason = %reason, cooldown_secs = cooldown.as_secs(), "refresh failed; cooling down");
            fallback(broker, &claimed, cooldown, rejected_version)
        }
    }
}

/// The stored reason of a refused grant: the OAuth error code, then the provider's own code
/// when it sent one (`invalid_grant AADSTS70008`); both are codes, never a description.
fn reauth_reason(provider: ProviderId, error: &str, codes: &[u64]) -> String {
    let error = crate::oauth::sanitize_code(error);
    match (provider, codes.first()) {
        (ProviderId::Microsoft, Some(code)) => format!("{error} AADSTS{code}"),
        (_, Some(code)) => format!("{error} {code}"),
        (_, None) => error,
    }
}

/// The provider refused the grant (or there is none): one transition to `needs_reauth`.
async fn needs_reauth(broker: &Arc<Broker>, claimed: &TokenRow, reason: &str) -> Outcome {
    let owner = broker.tokens.owner;
    let provider = claimed.provider;
    let marked = write_with_retries("mark the connection needs_reauth", || {
        broker
            .store
            .mark_needs_reauth(claimed.id, claimed.version, owner, reason)
    })
    .await;
    match marked {
        Ok(true) => broker.activity.record(
            claimed.user_id,
            provider,
            crate::activity::Kind::NeedsReauth,
            crate::activity::Actor::Service,
            None,
            "reauth_required",
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, connection_id = %claimed.id, "could not mark the connection needs_reauth");
            release(broker, claimed, None, None).await;
        }
    }
    broker.connection_changed(claimed.user_id, provider);
    metrics::counter!("refresh_total", "provider" => provider.as_str(), "outcome" => "reauth")
        .increment(1);
    tracing::info!(user_id = %claimed.user_id, provider = %provider, reason = %reason, "provider refused the grant: needs reauth");
    Err(RefreshFailure::Reauth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_tail_fits_the_buffer_it_is_written_into() {
        let scopes = [
            "Mail.Read",
            "offline_access",
            "User.Read",
            "Calendars.ReadWrite",
        ]
        .map(str::to_owned);
        let account = "00000000-0000-0000-0000-00000000abcd";
        let email = Some("adele.vance@contoso.onmicrosoft.com");
        let expires_at = time::macros::datetime!(2026-12-01 08:46:06.123456789 +05:30);
        let tail = answer_tail(expires_at, &scopes, account, email).unwrap();
        assert!(tail.len() <= tail_size(&scopes, account, email));
        assert_eq!(
            std::str::from_utf8(&tail).unwrap(),
            r#"","token_type":"Bearer","expires_at":"2026-12-01T08:46:06.123456789+05:30","scopes":["Mail.Read","offline_access","User.Read","Calendars.ReadWrite"],"provider_user_id":"00000000-0000-0000-0000-00000000abcd","provider_email":"adele.vance@contoso.onmicrosoft.com"}"#
        );
    }
}
