//! The status cache: each signed-in user's connections (what `GET /v1/integrations` and
//! `GET /v1/integrations/{provider}/status` answer) kept in memory, so a settings page's reads
//! cost no database round trip. Like the token cache it is never wrong, by construction:
//!
//! - it is keyed by the user id of the verified JWT, and an entry is what the user-scoped read
//!   (row-level security on PostgreSQL) returned for that same user: it can only ever answer a
//!   user with what the database let that user see. A miss takes that read;
//! - an entry holds every row of the user, by row id. A change notification naming one of those
//!   rows drops the entry; one naming a row no entry holds is either another user's (nothing to
//!   do) or a row just inserted (`version` 1), which may belong to a cached user: then every
//!   entry is dropped (connects are rare next to reads). Each notification and local write is
//!   numbered (the epoch); a read that started before a change to one of its rows, or before an
//!   invalidation of its user, is not stored;
//! - local writes that change a user's connection invalidate the user at once (the notification
//!   of a write arrives a moment later). On SQLite the cache is off (see `Broker::new`): other
//!   programs may write the file, and nothing would say so;
//! - whenever the listener is not connected (PostgreSQL), nothing is served from memory, and
//!   everything is dropped when it reconnects, since notifications may have been missed.
//!
//! `updated_at` in a cached answer is the row's as read; refresh-lease bookkeeping, which
//! touches it without changing the connection, does not drop the entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use super::cache::ChangeObserver;
use crate::model::{ConnectionSummary, UserId};

/// A user's rows, as the user-scoped read returned them.
pub type UserRows = Arc<[ConnectionSummary]>;

#[derive(Default)]
struct Entries {
    by_user: HashMap<UserId, UserRows>,
    /// Row id → the user whose entry holds it.
    by_row: HashMap<Uuid, UserId>,
    /// The epoch of the last change seen per row (notification or local write).
    changed_at: HashMap<Uuid, u64>,
    /// The epoch of each user's last local invalidation.
    invalidated_at: HashMap<UserId, u64>,
}

impl Entries {
    fn remove_user(&mut self, user: UserId) {
        if let Some(rows) = self.by_user.remove(&user) {
            for row in rows.iter() {
                self.by_row.remove(&row.id);
            }
        }
    }
}

pub struct StatusCache {
    entries: Mutex<Entries>,
    /// Whether entries are confirmed by a live listener (always, on SQLite and in memory).
    enabled: AtomicBool,
    /// Counts changes and invalidations; a read remembers the value it started at.
    epoch: AtomicU64,
    /// Reads that started before this epoch are never stored.
    floor: AtomicU64,
    capacity: usize,
}

impl StatusCache {
    /// A cache that starts enabled (every writer is this process) or disabled until a listener
    /// is up (PostgreSQL). Capacity 0: nothing is ever stored.
    pub fn new(enabled: bool, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            enabled: AtomicBool::new(enabled && capacity > 0),
            epoch: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether reads are served from memory now.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The epoch to pass to [`put`](Self::put) for a read starting now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, user: UserId) -> Option<UserRows> {
        if !self.is_enabled() {
            return None;
        }
        self.lock().by_user.get(&user).cloned()
    }

    /// Stores `rows`, read for `user` at `read_epoch`, unless the cache is off, or the user was
    /// invalidated or one of the rows changed since the read started.
    pub fn put(&self, user: UserId, rows: UserRows, read_epoch: u64) {
        if !self.is_enabled() {
            return;
        }
        let mut entries = self.lock();
        // Checked under the lock: every change is recorded under the same lock.
        if read_epoch < self.floor.load(Ordering::Acquire)
            || entries
                .invalidated_at
                .get(&user)
                .is_some_and(|&at| at > read_epoch)
            || rows.iter().any(|row| {
                entries
                    .changed_at
                    .get(&row.id)
                    .is_some_and(|&at| at > read_epoch)
            })
        {
            return;
        }
        if entries.by_user.len() >= self.capacity && !entries.by_user.contains_key(&user) {
            // Full: make room by dropping one entry (whichever the map yields first).
            let Some(evicted) = entries.by_user.keys().next().copied() else {
                return;
            };
            entries.remove_user(evicted);
        }
        entries.remove_user(user);
        for row in rows.iter() {
            entries.by_row.insert(row.id, user);
        }
        entries.by_user.insert(user, rows);
    }

    /// A local write changed the user's connections: drop the entry and refuse reads of it that
    /// started before now.
    pub fn invalidate(&self, user: UserId) {
        let mut entries = self.lock();
        let now = self.next_epoch();
        entries.invalidated_at.insert(user, now);
        entries.remove_user(user);
        self.trim(&mut entries);
    }

    /// Row `id` changed (`version` 1: it may be a new row, of any user).
    fn changed(&self, id: Uuid, version: Option<i64>) {
        let mut entries = self.lock();
        let now = self.next_epoch();
        entries.changed_at.insert(id, now);
        if let Some(user) = entries.by_row.get(&id).copied() {
            entries.remove_user(user);
        } else if version == Some(1) {
            entries.by_user.clear();
            entries.by_row.clear();
            self.floor.store(now, Ordering::Release);
        }
        self.trim(&mut entries);
    }

    /// Bounds the bookkeeping: past a few times the capacity it is forgotten, and every read in
    /// flight is refused instead (safe, and rare).
    fn trim(&self, entries: &mut Entries) {
        let limit = self.capacity.saturating_mul(4).max(1024);
        if entries.changed_at.len() > limit || entries.invalidated_at.len() > limit {
            entries.changed_at.clear();
            entries.invalidated_at.clear();
            let now = self.next_epoch();
            self.floor.store(now, Ordering::Release);
        }
    }

    /// Empties the cache, refuses every read in flight, and turns serving on or off.
    fn reset(&self, enabled: bool) {
        let mut entries = self.lock();
        *entries = Entries::default();
        let now = self.next_epoch();
        self.floor.store(now, Ordering::Release);
        self.enabled
            .store(enabled && self.capacity > 0, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.lock().by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ChangeObserver for StatusCache {
    fn observe(&self, id: Uuid, version: Option<i64>) {
        self.changed(id, version);
    }

    /// The listener is up (again): start empty, since notifications may have been missed.
    fn listener_up(&self) {
        self.reset(true);
    }

    /// The listener is down: serve nothing from memory (a status read during an outage answers
    /// `storage_unavailable`, as without the cache).
    fn listener_down(&self) {
        self.reset(false);
    }

    fn clear_and_disable(&self) {
        self.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnectionState;
    use crate::provider::ProviderId;

    fn row(user: UserId, provider: ProviderId) -> ConnectionSummary {
        let now = time::OffsetDateTime::now_utc();
        ConnectionSummary {
            id: Uuid::new_v4(),
            user_id: user,
            provider,
            state: ConnectionState::Connected,
            provider_email: Some("a@example.com".into()),
            display_name: None,
            scopes: Vec::new(),
            created_at: now,
            updated_at: now,
            last_refreshed_at: None,
        }
    }

    fn user() -> UserId {
        UserId(Uuid::new_v4())
    }

    #[test]
    fn a_change_to_a_cached_row_drops_its_user_only() {
        let cache = StatusCache::new(true, 10);
        let (alice, bob) = (user(), user());
        let alices: UserRows = vec![row(alice, ProviderId::Microsoft)].into();
        cache.put(alice, alices.clone(), cache.epoch());
        cache.put(
            bob,
            vec![row(bob, ProviderId::Google)].into(),
            cache.epoch(),
        );
        cache.observe(alices[0].id, Some(2));
        assert!(cache.get(alice).is_none());
        assert!(cache.get(bob).is_some());
    }

    #[test]
    fn a_read_that_raced_a_change_or_an_invalidation_is_not_stored() {
        let cache = StatusCache::new(true, 10);
        let alice = user();
        let rows: UserRows = vec![row(alice, ProviderId::Microsoft)].into();
        let epoch = cache.epoch();
        cache.observe(rows[0].id, Some(3)); // a refresh lands during the read
        cache.put(alice, rows.clone(), epoch);
        assert!(cache.get(alice).is_none());
        let epoch = cache.epoch();
        cache.invalidate(alice); // a disconnect lands during the read
        cache.put(alice, rows.clone(), epoch);
        assert!(cache.get(alice).is_none());
        cache.put(alice, rows, cache.epoch());
        assert!(cache.get(alice).is_some(), "a read after both is stored");
    }

    #[test]
    fn a_new_row_anywhere_drops_everything_and_refuses_reads_in_flight() {
        let cache = StatusCache::new(true, 10);
        let (alice, bob) = (user(), user());
        cache.put(alice, Vec::new().into(), cache.epoch()); // alice: nothing connected
        let epoch = cache.epoch();
        cache.observe(Uuid::new_v4(), Some(1)); // a row inserted: whose, the payload does not say
        assert!(cache.get(alice).is_none());
        cache.put(bob, Vec::new().into(), epoch);
        assert!(cache.get(bob).is_none(), "a read from before the insert");
        // Another user's row changing (not new) leaves entries alone.
        cache.put(alice, Vec::new().into(), cache.epoch());
        cache.observe(Uuid::new_v4(), Some(7));
        cache.observe(Uuid::new_v4(), None);
        assert!(cache.get(alice).is_some());
    }

    #[test]
    fn nothing_is_served_while_the_listener_is_down_and_capacity_holds() {
        let cache = StatusCache::new(false, 2);
        let alice = user();
        cache.put(alice, Vec::new().into(), cache.epoch());
        assert!(
            cache.get(alice).is_none(),
            "disabled until a listener is up"
        );
        let before = cache.epoch();
        cache.listener_up();
        cache.put(alice, Vec::new().into(), before);
        assert!(cache.is_empty(), "a read from before the listener came up");
        for _ in 0..5 {
            cache.put(user(), Vec::new().into(), cache.epoch());
        }
        assert_eq!(cache.len(), 2);
        cache.listener_down();
        assert!(cache.is_empty() && !cache.is_enabled());
        let off = StatusCache::new(true, 0);
        off.put(alice, Vec::new().into(), off.epoch());
        assert!(off.get(alice).is_none(), "capacity 0 stores nothing");
    }
}
