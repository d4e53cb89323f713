//! The token cache: fresh access tokens kept in memory, so handing out a valid token costs no
//! database round trip. It is never wrong, by construction:
//!
//! - an entry is used only while its token is valid beyond what the caller needs;
//! - every local write (reconnect, refresh, needs_reauth, disconnect) invalidates it at once,
//!   and on PostgreSQL every write by any replica is announced with `NOTIFY` (trigger
//!   `connect.notify_token_change`, payload: the connection's random row id), which
//!   [`listen`] turns into an invalidation;
//! - whenever the listener is not connected, the cache is flushed and bypassed;
//! - a read that raced an invalidation is not stored (an epoch counter guards every put).
//!
//! The cache holds tokens as [`SecretString`](secrecy::SecretString)s inside `FreshToken`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::tokens::FreshToken;
use crate::model::UserId;
use crate::provider::ProviderId;

/// The channel the trigger notifies on.
pub const CHANNEL: &str = "connect_token_changes";

type Key = (UserId, ProviderId);

#[derive(Default)]
struct Entries {
    by_key: HashMap<Key, Arc<FreshToken>>,
    /// Connection row id → key, for invalidations that name a row.
    by_row: HashMap<Uuid, Key>,
}

pub struct TokenCache {
    entries: Mutex<Entries>,
    enabled: AtomicBool,
    /// Bumped by every invalidation; a put carries the epoch its read started in.
    epoch: AtomicU64,
    capacity: usize,
}

impl TokenCache {
    /// A cache that starts enabled (SQLite: every writer is this process) or disabled until a
    /// listener is up (PostgreSQL).
    pub fn new(enabled: bool, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            enabled: AtomicBool::new(enabled),
            epoch: AtomicU64::new(0),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The epoch to pass to [`put`](Self::put) for a read starting now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, user: UserId, provider: ProviderId) -> Option<Arc<FreshToken>> {
        if !self.is_enabled() {
            return None;
        }
        self.lock().by_key.get(&(user, provider)).cloned()
    }

    /// Stores `token` unless the cache is off, an invalidation happened since `read_epoch`, or
    /// the cache holds a newer version already.
    pub fn put(&self, user: UserId, provider: ProviderId, token: Arc<FreshToken>, read_epoch: u64) {
        if !self.is_enabled() {
            return;
        }
        let mut entries = self.lock();
        // Checked under the lock: invalidations bump the epoch under the same lock.
        if self.epoch() != read_epoch {
            return;
        }
        let key = (user, provider);
        if entries
            .by_key
            .get(&key)
            .is_some_and(|old| old.version > token.version)
        {
            return;
        }
        if entries.by_key.len() >= self.capacity && !entries.by_key.contains_key(&key) {
            let now = time::OffsetDateTime::now_utc();
            let Entries { by_key, by_row } = &mut *entries;
            by_key.retain(|_, t| t.expires_at > now);
            by_row.retain(|_, k| by_key.contains_key(k));
            if by_key.len() >= self.capacity {
                return;
            }
        }
        entries.by_row.insert(token.connection_id, key);
        entries.by_key.insert(key, token);
    }

    pub fn invalidate(&self, user: UserId, provider: ProviderId) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(old) = entries.by_key.remove(&(user, provider)) {
            entries.by_row.remove(&old.connection_id);
        }
    }

    /// Invalidates the entry of connection row `id`, if cached.
    pub fn invalidate_row(&self, id: Uuid) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(key) = entries.by_row.remove(&id) {
            entries.by_key.remove(&key);
        }
    }

    /// Turns the cache on or off; either way it starts empty.
    pub fn set_enabled(&self, enabled: bool) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.enabled.store(enabled, Ordering::Release);
        entries.by_key.clear();
        entries.by_row.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps the cache in step with every replica's writes until `stop` fires or its sender is
/// dropped: LISTEN on [`CHANNEL`], invalidate per notification, and flush and bypass the cache
/// whenever the connection is down.
pub async fn listen(cache: Arc<TokenCache>, pool: sqlx::PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        cache.set_enabled(false);
        if *stop.borrow() || pool.is_closed() {
            return;
        }
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            result = connected => match result {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "token cache listener cannot connect; cache bypassed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        };
        cache.set_enabled(true);
        tracing::debug!("token cache listening for changes");
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match Uuid::parse_str(notification.payload()) {
                        Ok(id) => cache.invalidate_row(id),
                        Err(_) => cache.set_enabled(true), // unreadable: flush everything
                    },
                    // The connection dropped: notifications may have been missed.
                    Ok(None) | Err(_) => {
                        tracing::warn!("token cache listener lost its connection; cache flushed and bypassed");
                        break;
                    }
                },
                _ = stop.changed() => {
                    cache.set_enabled(false);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn token(version: i64, connection_id: Uuid) -> Arc<FreshToken> {
        Arc::new(FreshToken {
            access_token: SecretString::from(format!("t{version}")),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            scopes: Vec::new(),
            provider_user_id: "p".into(),
            provider_email: None,
            version,
            connection_id,
        })
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let cache = TokenCache::new(true, 10);
        let (user, row) = (UserId(Uuid::new_v4()), Uuid::new_v4());
        let epoch = cache.epoch();
        cache.invalidate(user, ProviderId::Microsoft); // a disconnect lands during the read
        cache.put(user, ProviderId::Microsoft, token(1, row), epoch);
        assert!(cache.get(user, ProviderId::Microsoft).is_none());
    }

    #[test]
    fn row_invalidation_and_disabling_empty_the_cache() {
        let cache = TokenCache::new(true, 10);
        let (user, row) = (UserId(Uuid::new_v4()), Uuid::new_v4());
        cache.put(user, ProviderId::Microsoft, token(1, row), cache.epoch());
        assert!(cache.get(user, ProviderId::Microsoft).is_some());
        cache.invalidate_row(row);
        assert!(cache.get(user, ProviderId::Microsoft).is_none());
        cache.put(user, ProviderId::Microsoft, token(2, row), cache.epoch());
        cache.set_enabled(false);
        assert!(cache.get(user, ProviderId::Microsoft).is_none());
        cache.put(user, ProviderId::Microsoft, token(3, row), cache.epoch());
        assert!(cache.is_empty(), "a disabled cache stores nothing");
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one_and_capacity_holds() {
        let cache = TokenCache::new(true, 2);
        let user = UserId(Uuid::new_v4());
        cache.put(
            user,
            ProviderId::Microsoft,
            token(5, Uuid::new_v4()),
            cache.epoch(),
        );
        cache.put(
            user,
            ProviderId::Microsoft,
            token(4, Uuid::new_v4()),
            cache.epoch(),
        );
        assert_eq!(cache.get(user, ProviderId::Microsoft).unwrap().version, 5);
        for _ in 0..5 {
            cache.put(
                UserId(Uuid::new_v4()),
                ProviderId::Microsoft,
                token(1, Uuid::new_v4()),
                cache.epoch(),
            );
        }
        assert_eq!(cache.len(), 2);
    }
}
