//! The activity log: who used a user's connection, and when. Every token handed out and every
//! proxied call is counted per minute per (service key, user, provider, kind, method, path
//! template, outcome), beside the connection's lifecycle (connected, reconnected,
//! disconnected, needs_reauth), so operators can audit their backends and users can see which
//! backend used their account.
//!
//! The hot path ([`Recorder::record`]) is synchronous and cheap: one lock of one of
//! [`SHARDS`] small maps, no await, no database, no allocation but a proxied call's path
//! template. A worker ([`worker`]) takes the counts at least every second and adds them to the
//! database in multi-row upserts; a failed write keeps them for the next try, up to
//! [`MAX_PENDING_ROWS`] distinct rows (what does not fit is dropped and counted in
//! `activity_dropped_total`). A crash loses at most what was counted since the last flush; a
//! graceful shutdown flushes everything. This module knows nothing of HTTP or SQL.

pub mod path_template;
pub mod read;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::model::UserId;
use crate::provider::ProviderId;

pub use path_template::path_template;

/// Independent maps the hot path spreads over (by user), so concurrent callers rarely wait.
pub const SHARDS: usize = 16;

/// Most distinct rows kept in memory while the database refuses writes (about 200 bytes
/// each: some 10 MB). Counts beyond are dropped and counted in `activity_dropped_total`.
pub const MAX_PENDING_ROWS: usize = 50_000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An access token handed out by the service token endpoint.
    Token,
    /// A call made through the proxy.
    Proxy,
    Connected,
    /// Connected again (the same or another account) while a connection existed.
    Reconnected,
    Disconnected,
    /// The provider refused the grant; the user must connect again.
    NeedsReauth,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Token,
        Kind::Proxy,
        Kind::Connected,
        Kind::Reconnected,
        Kind::Disconnected,
        Kind::NeedsReauth,
    ];

    pub fn as_db(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::Proxy => "proxy",
            Kind::Connected => "connected",
            Kind::Reconnected => "reconnected",
            Kind::Disconnected => "disconnected",
            Kind::NeedsReauth => "needs_reauth",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.as_db() == value)
    }

    /// Whether a backend used the connection (as opposed to a lifecycle event).
    pub fn is_use(self) -> bool {
        matches!(self, Kind::Token | Kind::Proxy)
    }
}

/// Who acted: a service key (by name), the user themselves, or the service (a refresh the
/// provider refused).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    Key(Arc<str>),
    User,
    Service,
}

impl Actor {
    /// The stored form: the key's name, or `user:` / `service:` (key names cannot hold `:`).
    pub fn as_db(&self) -> &str {
        match self {
            Actor::Key(name) => name,
            Actor::User => "user:",
            Actor::Service => "service:",
        }
    }

    pub fn key_name(&self) -> Option<&str> {
        match self {
            Actor::Key(name) => Some(name),
            _ => None,
        }
    }
}

/// How a call ended: `ok`, this service's error code (`not_connected`, `reauth_required`,
/// `rate_limited`, …), or for a proxied call the provider's status class (`2xx` … `5xx`).
pub type Outcome = &'static str;

/// How a call of ours ended: `ok`, or the error's stable code.
pub fn outcome_of<T>(result: &Result<T, crate::error::Error>) -> Outcome {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// The provider's answer to a proxied call, as an outcome.
pub fn status_class(status: u16) -> Outcome {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// An HTTP method as a static string (`OTHER` for extension methods).
pub fn method_name(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// What one row of the log counts: everything but the counts and times.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActivityKey {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub user: UserId,
    pub provider: ProviderId,
    pub kind: Kind,
    pub actor: Actor,
    /// Proxied calls only.
    pub method: Option<&'static str>,
    /// Proxied calls only: the path template.
    pub path: Option<Box<str>>,
    pub outcome: Outcome,
}

/// How often, and when first and last (unix milliseconds), within the row's minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.count = self.count.saturating_add(other.count);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }
}

/// foldhash rather than SipHash: every token handed out hashes one key here, and the keys come
/// from this service and its trusted callers (a service key's name, a user id, a provider).
pub(super) type Counts = HashMap<ActivityKey, Tally, foldhash::fast::RandomState>;

pub(super) fn counts(capacity: usize) -> Counts {
    HashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

/// The in-memory side of the log: counts not yet written.
pub struct Recorder {
    enabled: bool,
    shards: [Mutex<Counts>; SHARDS],
    /// One empty map per shard, swapped in by [`Recorder::take_into`] for the one it takes: the
    /// maps are allocated once and reused every second, and a shard is locked only for the swap.
    spares: Mutex<[Counts; SHARDS]>,
    /// Counts a failed flush gave back, written first next time (bounded).
    pending: Mutex<Counts>,
}

impl Recorder {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            shards: std::array::from_fn(|_| Mutex::new(counts(0))),
            spares: Mutex::new(std::array::from_fn(|_| counts(0))),
            pending: Mutex::new(counts(0)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one event now. Never waits for I/O.
    pub fn record(
        &self,
        user: UserId,
        provider: ProviderId,
        kind: Kind,
        actor: Actor,
        call: Option<(&'static str, String)>,
        outcome: Outcome,
    ) {
        if !self.enabled {
            return;
        }
        let now_ms = now_ms();
        let (method, path) = match call {
            Some((method, path)) => (Some(method), Some(path.into_boxed_str())),
            None => (None, None),
        };
        let key = ActivityKey {
            minute: now_ms.div_euclid(60_000) * 60,
            user,
            provider,
            kind,
            actor,
            method,
            path,
            outcome,
        };
        self.add(key, now_ms);
    }

    fn add(&self, key: ActivityKey, now_ms: i64) {
        let tally = Tally {
            count: 1,
            first_ms: now_ms,
            last_ms: now_ms,
        };
        let shard = &self.shards[shard_of(key.user)];
        let mut counts = shard.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .entry(key)
            .and_modify(|t| t.add(tally))
            .or_insert(tally);
    }

    /// Everything counted so far and not yet written (what failed before first), leaving the
    /// maps empty, each key once.
    pub fn take(&self) -> Vec<(ActivityKey, Tally)> {
        let mut all = Vec::new();
        self.take_into(&mut all);
        all
    }

    /// [`Recorder::take`] into `all` (cleared first), so a flusher reuses one buffer. Each
    /// shard is swapped with an empty map under its lock and drained outside it, so a steady
    /// load neither waits for the drain nor allocates maps anew. The drained map becomes the
    /// shard's next spare, keeping its room unless that is far more than it held (a burst).
    pub fn take_into(&self, all: &mut Vec<(ActivityKey, Tally)>) {
        all.clear();
        let mut pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        for (shard, spare) in self.shards.iter().zip(spares.iter_mut()) {
            std::mem::swap(
                &mut *shard.lock().unwrap_or_else(PoisonError::into_inner),
                spare,
            );
            let held = spare.len();
            // Shards hold disjoint users: only counts given back can share a key with them.
            if pending.is_empty() {
                all.reserve(held);
                all.extend(spare.drain());
            } else {
                for (key, tally) in spare.drain() {
                    add(&mut pending, key, tally);
                }
            }
            shrink_after_burst(spare, held);
        }
        drop(spares);
        all.extend(pending);
    }

    /// Gives back counts a flush could not write, to be tried again. Keeps at most
    /// [`MAX_PENDING_ROWS`] rows; returns the events dropped for lack of room.
    pub fn give_back(&self, rows: Vec<(ActivityKey, Tally)>) -> u64 {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0u64;
        for (key, tally) in rows {
            let room = pending.len() < MAX_PENDING_ROWS;
            match pending.get_mut(&key) {
                Some(existing) => existing.add(tally),
                None if room => {
                    pending.insert(key, tally);
                }
                None => dropped = dropped.saturating_add(tally.count),
            }
        }
        drop(pending);
        if dropped > 0 {
            metrics::counter!("activity_dropped_total").increment(dropped);
        }
        dropped
    }

    /// Distinct rows waiting to be written (counted and given back).
    pub fn backlog(&self) -> usize {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.shards.iter().fold(pending, |sum, shard| {
            sum + shard.lock().unwrap_or_else(PoisonError::into_inner).len()
        })
    }
}

/// Gives back the room of an emptied map that held `held` rows if it has far more (kept after
/// a burst or an outage's backlog, it would stay in the process for good).
pub(super) fn shrink_after_burst(map: &mut Counts, held: usize) {
    if oversized(map.capacity(), held) {
        map.shrink_to(held);
    }
}

/// Whether room for `capacity` rows is far more than the `held` rows it last held: the one
/// rule for when the flusher's maps and buffer give room back.
pub(super) fn oversized(capacity: usize, held: usize) -> bool {
    capacity > 4 * held + 64
}

pub(super) fn add(into: &mut Counts, key: ActivityKey, tally: Tally) {
    into.entry(key)
        .and_modify(|t| t.add(tally))
        .or_insert(tally);
}

fn shard_of(user: UserId) -> usize {
    use std::hash::BuildHasher;
    static BY_USER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0);
    (BY_USER.hash_one(user) as usize) % SHARDS
}

/// Unix milliseconds, from the system clock without a calendar conversion (every token handed
/// out reads it).
fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// One row of the log as stored and read back.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ActivityEntry {
    /// Start of the minute the row counts.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub minute: OffsetDateTime,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: uuid::Uuid,
    #[schema(value_type = String, example = "microsoft")]
    pub provider: &'static str,
    pub kind: Kind,
    /// The service key's name for `token` and `proxy` (and an operator's disconnect); null when
    /// the user or the service itself acted.
    pub key_name: Option<String>,
    /// `user` (the user themselves), `service` (this service: a refresh the provider refused)
    /// or `key` (a service key, named in `key_name`).
    #[schema(example = "key")]
    pub actor: &'static str,
    /// Proxied calls: the HTTP method.
    pub method: Option<String>,
    /// Proxied calls: the path template (ids replaced, never the query).
    #[schema(example = "/v1.0/me/messages/{id}")]
    pub path: Option<String>,
    /// `ok`, this service's error code, or the provider's status class (`2xx` … `5xx`).
    #[schema(example = "ok")]
    pub outcome: String,
    /// Events this row counts.
    pub count: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    /// Orders rows within a minute (for paging); not shown.
    #[serde(skip)]
    pub id: i64,
}

impl ActivityEntry {
    /// Reads the stored actor column back.
    pub fn actor_from_db(actor: &str) -> (&'static str, Option<String>) {
        match actor {
            "user:" => ("user", None),
            "service:" => ("service", None),
            name => ("key", Some(name.to_owned())),
        }
    }
}

/// Which rows an operator query wants, newest first.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    pub user: Option<UserId>,
    pub key_name: Option<String>,
    pub provider: Option<ProviderId>,
    /// Rows whose minute is at or after this.
    pub from: Option<OffsetDateTime>,
    /// Rows whose minute is before this.
    pub to: Option<OffsetDateTime>,
    /// Only rows that sort after this one: (minute in unix seconds, id), newest first.
    pub before: Option<(i64, i64)>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u128) -> UserId {
        UserId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_same_event_in_the_same_minute_is_one_row_with_a_count() {
        let r = Recorder::new(true);
        let key: Arc<str> = Arc::from("n8n");
        for _ in 0..3 {
            r.record(
                user(1),
                ProviderId::Microsoft,
                Kind::Token,
                Actor::Key(key.clone()),
                None,
                "ok",
            );
        }
        r.record(
            user(1),
            ProviderId::Microsoft,
            Kind::Token,
            Actor::Key(key.clone()),
            None,
            "not_connected",
        );
        r.record(
            user(2),
            ProviderId::Microsoft,
            Kind::Proxy,
            Actor::Key(key),
            Some(("GET", "/v1.0/me".into())),
            "2xx",
        );
        let mut rows = r.take();
        rows.sort_by_key(|(k, t)| (k.user, k.outcome, t.count));
        let counts: Vec<(u64, &str)> = rows.iter().map(|(k, t)| (t.count, k.outcome)).collect();
        // The minute may turn between two records; then the three "ok" are two rows.
        assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), 5);
        assert!(rows.iter().all(|(_, t)| t.first_ms <= t.last_ms));
        assert!(r.take().is_empty(), "taken counts are gone");
    }

    #[test]
    fn off_records_nothing() {
        let r = Recorder::new(false);
        r.record(
            user(1),
            ProviderId::Google,
            Kind::Token,
            Actor::User,
            None,
            "ok",
        );
        assert!(r.take().is_empty());
    }

    #[test]
    fn given_back_counts_merge_and_are_bounded() {
        let r = Recorder::new(true);
        r.record(
            user(1),
            ProviderId::Google,
            Kind::Token,
            Actor::User,
            None,
            "ok",
        );
        let rows = r.take();
        assert_eq!(r.give_back(rows.clone()), 0);
        assert_eq!(r.give_back(rows), 0);
        let again = r.take();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.count, 2);

        let many: Vec<(ActivityKey, Tally)> = (0..MAX_PENDING_ROWS as u128 + 10)
            .map(|n| {
                let key = ActivityKey {
                    minute: 0,
                    user: user(n),
                    provider: ProviderId::Google,
                    kind: Kind::Token,
                    actor: Actor::User,
                    method: None,
                    path: None,
                    outcome: "ok",
                };
                (
                    key,
                    Tally {
                        count: 2,
                        first_ms: 0,
                        last_ms: 0,
                    },
                )
            })
            .collect();
        assert_eq!(r.give_back(many), 20, "ten rows of two events did not fit");
        assert_eq!(r.backlog(), MAX_PENDING_ROWS);
    }

    #[test]
    fn maps_reused_across_takes_lose_and_repeat_nothing() {
        let r = Recorder::new(true);
        let record = |n: u128| {
            r.record(
                user(n),
                ProviderId::Microsoft,
                Kind::Token,
                Actor::User,
                None,
                "ok",
            )
        };
        let total = |rows: &[(ActivityKey, Tally)], n: u128| -> u64 {
            rows.iter()
                .filter(|(k, _)| k.user == user(n))
                .map(|(_, t)| t.count)
                .sum()
        };
        let mut buffer = Vec::new();
        for round in 0..3 {
            for n in 0..64 {
                record(n);
            }
            r.take_into(&mut buffer);
            assert_eq!(buffer.len(), 64, "round {round}");
            assert!((0..64).all(|n| total(&buffer, n) == 1), "round {round}");
        }
        // Counts given back merge with the next second's, through the same maps.
        r.give_back(std::mem::take(&mut buffer));
        record(1);
        record(1);
        r.take_into(&mut buffer);
        assert_eq!(total(&buffer, 1), 3);
        assert_eq!(total(&buffer, 2), 1);
        assert_eq!(buffer.iter().map(|(_, t)| t.count).sum::<u64>(), 66);
        r.take_into(&mut buffer);
        assert!(buffer.is_empty(), "a take clears the buffer and the maps");
    }

    #[test]
    fn a_bursts_room_is_given_back_once_the_load_is_small_again() {
        let r = Recorder::new(true);
        let record = |n: u128| {
            r.record(
                user(n),
                ProviderId::Google,
                Kind::Token,
                Actor::User,
                None,
                "ok",
            )
        };
        let room = |r: &Recorder| -> usize {
            let spares: usize = r.spares.lock().unwrap().iter().map(|m| m.capacity()).sum();
            let shards: usize = r.shards.iter().map(|m| m.lock().unwrap().capacity()).sum();
            spares + shards
        };
        let mut buffer = Vec::new();
        for n in 0..20_000 {
            record(n);
        }
        r.take_into(&mut buffer);
        assert!(
            room(&r) >= 20_000,
            "the burst's room is kept for the next second"
        );
        // Two quiet seconds: each map has been drained once holding next to nothing.
        for _ in 0..2 {
            for n in 0..16 {
                record(n);
            }
            r.take_into(&mut buffer);
            assert_eq!(buffer.len(), 16);
        }
        assert!(room(&r) < 2_000, "room left: {}", room(&r));
    }

    #[test]
    fn actors_round_trip_through_their_stored_form() {
        assert_eq!(
            ActivityEntry::actor_from_db(Actor::User.as_db()),
            ("user", None)
        );
        assert_eq!(
            ActivityEntry::actor_from_db(Actor::Service.as_db()),
            ("service", None)
        );
        assert_eq!(
            ActivityEntry::actor_from_db(Actor::Key(Arc::from("n8n")).as_db()),
            ("key", Some("n8n".to_owned()))
        );
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
    }
}
