//! The token cache: fresh access tokens kept in memory, so handing out a valid token costs no
//! database round trip. It is never wrong, by construction:
//!
//! - an entry is used only while its token is valid beyond what the caller needs;
//! - every write is known by the row's `version`: on PostgreSQL every replica's write is
//!   announced with `NOTIFY` (trigger `connect.notify_token_change`, payload `<row id>:<version>`,
//!   or the row id alone for a delete), which [`listen`] turns into [`TokenCache::observe`]; an
//!   entry older than a version seen is dropped, and a read that returns an older version than
//!   one already seen is not stored. Local writes that change the user's connection as a whole
//!   (reconnect, disconnect, needs_reauth) [`invalidate`](TokenCache::invalidate) the key, which
//!   also refuses every read of that key that started before it;
//! - whenever the listener is not connected, nothing is served from memory on the normal path;
//!   the entries are kept, unconfirmed, for one purpose only: while the database itself cannot
//!   be reached, no replica can change a row, so a token still valid in memory is still the
//!   stored one ([`TokenCache::get_during_outage`]). When the listener reconnects, notifications
//!   may have been missed, and everything is dropped.
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

/// A version higher than any real one: the row was deleted.
const DELETED: i64 = i64::MAX;

#[derive(Default)]
struct Entries {
    by_key: HashMap<Key, Arc<FreshToken>>,
    /// Connection row id → key, for notifications that name a row.
    by_row: HashMap<Uuid, Key>,
    /// The newest version seen per row (from notifications and this process's writes).
    seen_versions: HashMap<Uuid, i64>,
    /// The epoch of each key's last local invalidation.
    invalidated_at: HashMap<Key, u64>,
    /// When a full cache last dropped its expired entries.
    last_sweep: Option<std::time::Instant>,
}

pub struct TokenCache {
    entries: Mutex<Entries>,
    /// Whether entries are confirmed by a live listener (always, on SQLite).
    enabled: AtomicBool,
    /// Counts invalidations; a read remembers the value it started at.
    epoch: AtomicU64,
    /// Reads that started before this epoch are never stored (set when the listener comes
    /// back, and when the bookkeeping maps are trimmed).
    floor: AtomicU64,
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
            floor: AtomicU64::new(0),
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

    /// The entry for `user` and `provider` whether or not a listener confirms it: only for
    /// when the database cannot be reached (see the module documentation).
    pub fn get_during_outage(&self, user: UserId, provider: ProviderId) -> Option<Arc<FreshToken>> {
        self.lock().by_key.get(&(user, provider)).cloned()
    }

    /// Stores `token`, read from the database at `read_epoch`, unless the cache is off, the
    /// key was invalidated since, or a newer version of the row is known or cached.
    pub fn put(&self, user: UserId, provider: ProviderId, token: Arc<FreshToken>, read_epoch: u64) {
        if !self.is_enabled() {
            return;
        }
        let key = (user, provider);
        let mut entries = self.lock();
        // Checked under the lock: the floor and invalidations change under the same lock.
        if read_epoch < self.floor.load(Ordering::Acquire)
            || entries
                .invalidated_at
                .get(&key)
                .is_some_and(|&at| at > read_epoch)
            || entries
                .seen_versions
                .get(&token.connection_id)
                .is_some_and(|&seen| seen > token.version)
            || entries
                .by_key
                .get(&key)
                .is_some_and(|old| old.version > token.version)
        {
            return;
        }
        if entries.by_key.len() >= self.capacity && !entries.by_key.contains_key(&key) {
            if self.capacity == 0 {
                return;
            }
            // Full: drop the expired entries (a pass over all of them, so at most once a
            // second), else one entry, whichever the map yields first. Never a pass per put: at
            // capacity every miss puts, and a full pass under the lock per request would
            // serialise every token fetch behind it.
            let now = time::OffsetDateTime::now_utc();
            let Entries {
                by_key,
                by_row,
                last_sweep,
                ..
            } = &mut *entries;
            if last_sweep.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                *last_sweep = Some(std::time::Instant::now());
                by_key.retain(|_, t| t.expires_at > now);
                by_row.retain(|_, k| by_key.contains_key(k));
            }
            if by_key.len() >= self.capacity
                && let Some(evicted) = by_key.keys().next().copied()
                && let Some(old) = by_key.remove(&evicted)
            {
                by_row.remove(&old.connection_id);
            }
        }
        if let Some(old) = entries.by_key.insert(key, token.clone())
            && old.connection_id != token.connection_id
        {
            entries.by_row.remove(&old.connection_id);
        }
        entries.by_row.insert(token.connection_id, key);
    }

    /// A local write changed the user's connection to `provider` (reconnect, disconnect,
    /// needs_reauth): drop the entry and refuse reads of it that started before now.
    pub fn invalidate(&self, user: UserId, provider: ProviderId) {
        let key = (user, provider);
        let mut entries = self.lock();
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        entries.invalidated_at.insert(key, now);
        if let Some(old) = entries.by_key.remove(&key) {
            entries.by_row.remove(&old.connection_id);
        }
        self.trim(&mut entries);
    }

    /// Row `id` is now at `version` (`None`: deleted): drop an older entry, and refuse older
    /// reads of it from now on.
    pub fn observe(&self, id: Uuid, version: Option<i64>) {
        let version = version.unwrap_or(DELETED);
        let mut entries = self.lock();
        let seen = entries.seen_versions.entry(id).or_insert(version);
        *seen = (*seen).max(version);
        if let Some(key) = entries.by_row.get(&id).copied()
            && entries.by_key.get(&key).is_none_or(|t| t.version < version)
        {
            entries.by_key.remove(&key);
            entries.by_row.remove(&id);
        }
        self.trim(&mut entries);
    }

    /// Bounds the bookkeeping: past a few times the capacity it is forgotten, and every read in
    /// flight is refused instead (safe, and rare).
    fn trim(&self, entries: &mut Entries) {
        let limit = self.capacity.saturating_mul(4).max(1024);
        if entries.seen_versions.len() > limit || entries.invalidated_at.len() > limit {
            entries.seen_versions.clear();
            entries.invalidated_at.clear();
            let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            self.floor.store(now, Ordering::Release);
        }
    }

    /// A read while the listener is down found the row at `version` (`None`: no row): an
    /// unconfirmed entry that is older is dropped, so what an outage serves is never older
    /// than the last read.
    pub fn confirm_read(&self, user: UserId, provider: ProviderId, version: Option<i64>) {
        let key = (user, provider);
        let mut entries = self.lock();
        if let Some(old) = entries.by_key.get(&key)
            && version.is_none_or(|v| old.version < v)
        {
            let id = old.connection_id;
            entries.by_key.remove(&key);
            entries.by_row.remove(&id);
        }
    }

    /// The listener is up (again): start empty, since notifications may have been missed, and
    /// refuse every read that started before.
    pub fn listener_up(&self) {
        let mut entries = self.lock();
        *entries = Entries::default();
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.floor.store(now, Ordering::Release);
        self.enabled.store(true, Ordering::Release);
    }

    /// The listener is down: serve nothing from memory on the normal path, keep the entries for
    /// an outage.
    pub fn listener_down(&self) {
        let _entries = self.lock();
        self.enabled.store(false, Ordering::Release);
    }

    /// Turns the cache off and empties it (shutdown, or no listener at all).
    pub fn clear_and_disable(&self) {
        let mut entries = self.lock();
        *entries = Entries::default();
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.floor.store(now, Ordering::Release);
        self.enabled.store(false, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a change notification (or this process's own write of a row) tells a cache: the token
/// cache and the status cache (`super::status_cache`) both follow them.
pub trait ChangeObserver: Send + Sync {
    /// Row `id` is now at `version` (`None`: deleted).
    fn observe(&self, id: Uuid, version: Option<i64>);
    /// The listener is up (again): notifications may have been missed before.
    fn listener_up(&self);
    /// The listener is down: other replicas' writes go unheard.
    fn listener_down(&self);
    /// Shutdown: empty, and serve nothing more.
    fn clear_and_disable(&self);
}

impl ChangeObserver for TokenCache {
    fn observe(&self, id: Uuid, version: Option<i64>) {
        TokenCache::observe(self, id, version);
    }

    fn listener_up(&self) {
        TokenCache::listener_up(self);
    }

    fn listener_down(&self) {
        TokenCache::listener_down(self);
    }

    fn clear_and_disable(&self) {
        TokenCache::clear_and_disable(self);
    }
}

/// Keeps the caches in step with every replica's writes until `stop` fires or its sender is
/// dropped: LISTEN on [`CHANNEL`], tell every cache of each notification, and have them bypass
/// (and later flush) what they hold whenever the connection is down.
pub async fn listen(
    caches: Vec<Arc<dyn ChangeObserver>>,
    pool: sqlx::PgPool,
    mut stop: watch::Receiver<bool>,
) {
    let each = |f: &dyn Fn(&dyn ChangeObserver)| caches.iter().for_each(|c| f(c.as_ref()));
    loop {
        each(&|c| c.listener_down());
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
                    tracing::warn!(error = %e, "cache listener cannot connect; caches bypassed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        };
        each(&|c| c.listener_up());
        tracing::debug!("caches listening for changes");
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match parse_change(notification.payload()) {
                        Some((id, version)) => each(&|c| c.observe(id, version)),
                        None => each(&|c| c.listener_up()), // unreadable: start over
                    },
                    // The connection dropped: notifications may have been missed.
                    Ok(None) | Err(_) => {
                        tracing::warn!("cache listener lost its connection; caches bypassed until it is back");
                        break;
                    }
                },
                _ = stop.changed() => {
                    each(&|c| c.clear_and_disable());
                    return;
                }
            }
        }
    }
}

/// `<row id>:<version>` (an insert or update) or `<row id>` (a delete).
fn parse_change(payload: &str) -> Option<(Uuid, Option<i64>)> {
    match payload.split_once(':') {
        Some((id, version)) => Some((Uuid::parse_str(id).ok()?, Some(version.parse().ok()?))),
        None => Some((Uuid::parse_str(payload).ok()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn token(version: i64, connection_id: Uuid) -> Arc<FreshToken> {
        Arc::new(FreshToken {
            access_token: format!("t{version}").into(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            answer_tail: bytes::Bytes::new(),
            version,
            connection_id,
        })
    }

    const MS: ProviderId = ProviderId::Microsoft;

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let cache = TokenCache::new(true, 10);
        let (user, row) = (UserId(Uuid::new_v4()), Uuid::new_v4());
        let epoch = cache.epoch();
        cache.invalidate(user, MS); // a disconnect lands during the read
        cache.put(user, MS, token(1, row), epoch);
        assert!(cache.get(user, MS).is_none());
        // A read that started after the invalidation is stored.
        cache.put(user, MS, token(1, row), cache.epoch());
        assert!(cache.get(user, MS).is_some());
    }

    #[test]
    fn an_invalidation_of_one_key_does_not_veto_reads_of_another() {
        let cache = TokenCache::new(true, 10);
        let (alice, bob) = (UserId(Uuid::new_v4()), UserId(Uuid::new_v4()));
        let epoch = cache.epoch();
        cache.invalidate(bob, MS);
        cache.observe(Uuid::new_v4(), Some(7)); // someone else's row changed
        cache.put(alice, MS, token(1, Uuid::new_v4()), epoch);
        assert!(cache.get(alice, MS).is_some());
    }

    #[test]
    fn a_version_seen_drops_older_entries_and_refuses_older_reads() {
        let cache = TokenCache::new(true, 10);
        let (user, row) = (UserId(Uuid::new_v4()), Uuid::new_v4());
        let epoch = cache.epoch();
        cache.put(user, MS, token(1, row), epoch);
        cache.observe(row, Some(2));
        assert!(cache.get(user, MS).is_none(), "version 1 is older than 2");
        cache.put(user, MS, token(1, row), epoch);
        assert!(
            cache.get(user, MS).is_none(),
            "a read of version 1 arrives late"
        );
        cache.put(user, MS, token(2, row), epoch);
        assert_eq!(cache.get(user, MS).unwrap().version, 2);
        cache.observe(row, Some(2)); // our own write's notification
        assert_eq!(
            cache.get(user, MS).unwrap().version,
            2,
            "the same version stays"
        );
        cache.observe(row, None);
        assert!(cache.get(user, MS).is_none(), "a delete drops it");
        cache.put(user, MS, token(3, row), cache.epoch());
        assert!(
            cache.get(user, MS).is_none(),
            "a deleted row is never stored again"
        );
    }

    #[test]
    fn while_the_listener_is_down_entries_serve_only_an_outage() {
        let cache = TokenCache::new(true, 10);
        let (user, row) = (UserId(Uuid::new_v4()), Uuid::new_v4());
        cache.put(user, MS, token(4, row), cache.epoch());
        cache.listener_down();
        assert!(cache.get(user, MS).is_none());
        assert_eq!(cache.get_during_outage(user, MS).unwrap().version, 4);
        cache.put(user, MS, token(5, row), cache.epoch());
        assert_eq!(
            cache.get_during_outage(user, MS).unwrap().version,
            4,
            "no puts while down"
        );
        cache.confirm_read(user, MS, Some(4));
        assert!(
            cache.get_during_outage(user, MS).is_some(),
            "the same version stays"
        );
        cache.confirm_read(user, MS, Some(5));
        assert!(
            cache.get_during_outage(user, MS).is_none(),
            "a newer row drops it"
        );
        cache.put(user, MS, token(1, row), cache.epoch());
        let before = cache.epoch();
        cache.listener_up();
        assert!(cache.is_empty());
        cache.put(user, MS, token(6, row), before);
        assert!(
            cache.is_empty(),
            "a read from before the listener came back is refused"
        );
        cache.clear_and_disable();
        cache.put(user, MS, token(7, row), cache.epoch());
        assert!(cache.is_empty(), "a disabled cache stores nothing");
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one_and_capacity_holds() {
        let cache = TokenCache::new(true, 2);
        let user = UserId(Uuid::new_v4());
        cache.put(user, MS, token(5, Uuid::new_v4()), cache.epoch());
        cache.put(user, MS, token(4, Uuid::new_v4()), cache.epoch());
        assert_eq!(cache.get(user, MS).unwrap().version, 5);
        for _ in 0..5 {
            cache.put(
                UserId(Uuid::new_v4()),
                MS,
                token(1, Uuid::new_v4()),
                cache.epoch(),
            );
        }
        assert_eq!(cache.len(), 2);
        // A full cache takes the newest token in (one old entry makes room).
        let newest = UserId(Uuid::new_v4());
        cache.put(newest, MS, token(1, Uuid::new_v4()), cache.epoch());
        assert!(cache.get(newest, MS).is_some());
        assert_eq!(cache.len(), 2);
        let off = TokenCache::new(true, 0);
        off.put(newest, MS, token(1, Uuid::new_v4()), off.epoch());
        assert!(off.is_empty(), "capacity 0 stores nothing");
    }

    #[test]
    fn notification_payloads_parse() {
        let id = Uuid::new_v4();
        assert_eq!(parse_change(&format!("{id}:12")), Some((id, Some(12))));
        assert_eq!(parse_change(&id.to_string()), Some((id, None)));
        assert_eq!(parse_change("nonsense"), None);
        assert_eq!(parse_change(&format!("{id}:x")), None);
    }
}
