//! Rate limits and the cap on pending connect flows, kept in this process's memory: replicas do
//! not share counts, so N replicas let through up to N times a limit (docs/operations.md says
//! so). Each limit is a GCRA limiter keyed by who is asking (`governor`, sharded maps: one
//! keyed lookup per check, no global lock on the token hot path). A refusal is
//! [`Error::RateLimited`] (429 `rate_limited` with `Retry-After`) and counts in
//! `rate_limited_total{limit}`. Nothing here touches the database or knows routes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{Rate, RateLimitSettings};
use crate::error::Error;
use crate::model::UserId;

/// How often idle keys are forgotten, so the maps hold only recent callers.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The hasher of the limits whose keys the caller cannot choose freely: a service key's name
/// (configured by the operator) and a user id sent by that key's holder, or taken from a
/// verified JWT. foldhash is a few times cheaper than SipHash on these short keys, and these
/// limits run on every token and proxy request. A limit keyed by something anyone can pick (the
/// callback's client address) keeps the standard library's SipHash.
type TrustedKeys = foldhash::fast::RandomState;

/// One named, keyed limit; `None` inside when it is off.
pub struct Limit<K: Hash + Eq + Clone, S: BuildHasher + Clone = RandomState> {
    name: &'static str,
    limiter: Option<RateLimiter<K, DefaultKeyedStateStore<K, S>, DefaultClock>>,
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Clone + Default> Limit<K, S> {
    fn new(name: &'static str, rate: Rate) -> Self {
        let limiter = rate.0.and_then(|(count, per)| {
            let quota = Quota::with_period(per / count.get())?.allow_burst(count);
            Some(RateLimiter::dashmap_with_hasher(quota, S::default()))
        });
        Self { name, limiter }
    }

    /// Counts one request for `key`; refuses it when the key is over its rate.
    pub fn check(&self, key: &K) -> Result<(), Error> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            metrics::counter!("rate_limited_total", "limit" => self.name).increment(1);
            Error::RateLimited {
                retry_after_secs: retry_after_secs(wait),
            }
        })
    }

    fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1 (a `Retry-After: 0` invites a hot loop).
fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    whole.max(1)
}

/// One user's started flows, oldest first: when each started, and its state hash.
type StartedFlows = VecDeque<(Instant, [u8; 32])>;

/// The newest started flows of each user (by state hash), so that starting one more than the
/// cap drops the oldest.
pub struct PendingFlows {
    cap: usize,
    lifetime: Duration,
    by_user: Mutex<HashMap<UserId, StartedFlows>>,
}

impl PendingFlows {
    pub fn new(cap: usize, lifetime: Duration) -> Self {
        Self {
            cap,
            lifetime,
            by_user: Mutex::new(HashMap::new()),
        }
    }

    /// Records a started flow; returns the state hashes of the user's flows it pushes over the
    /// cap, oldest first, for the caller to delete.
    pub fn record(&self, user: UserId, state_hash: [u8; 32]) -> Vec<[u8; 32]> {
        if self.cap == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let Ok(mut by_user) = self.by_user.lock() else {
            return Vec::new();
        };
        let flows = by_user.entry(user).or_default();
        // Flows past their lifetime cannot complete any more; they do not count.
        while flows
            .front()
            .is_some_and(|(started, _)| now.duration_since(*started) > self.lifetime)
        {
            flows.pop_front();
        }
        flows.push_back((now, state_hash));
        let excess = flows.len().saturating_sub(self.cap);
        flows.drain(..excess).map(|(_, hash)| hash).collect()
    }

    fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut by_user) = self.by_user.lock() {
            by_user.retain(|_, flows| {
                flows
                    .back()
                    .is_some_and(|(started, _)| now.duration_since(*started) <= self.lifetime)
            });
            by_user.shrink_to_fit();
        }
    }
}

/// Every limit of the service, built from [`RateLimitSettings`].
pub struct RateLimits {
    pub pending_flows: Arc<PendingFlows>,
    pub auth_url_per_user: Limit<UserId, TrustedKeys>,
    pub token_per_key: Limit<Arc<str>, TrustedKeys>,
    pub token_per_user: Limit<(Arc<str>, UserId), TrustedKeys>,
    pub proxy_per_key: Limit<Arc<str>, TrustedKeys>,
    pub proxy_per_user: Limit<(Arc<str>, UserId), TrustedKeys>,
    pub callback_per_ip: Limit<IpAddr, RandomState>,
}

impl RateLimits {
    /// Builds the limits and, inside a Tokio runtime, a task that forgets idle keys every
    /// minute; it ends when the limits are dropped.
    pub fn start(settings: &RateLimitSettings, flow_lifetime: Duration) -> Arc<Self> {
        let limits = Arc::new(Self {
            pending_flows: Arc::new(PendingFlows::new(
                settings.pending_flows_per_user,
                flow_lifetime,
            )),
            auth_url_per_user: Limit::new("auth_url_per_user", settings.auth_url_per_user),
            token_per_key: Limit::new("token_per_key", settings.token_per_key),
            token_per_user: Limit::new("token_per_user", settings.token_per_user),
            proxy_per_key: Limit::new("proxy_per_key", settings.proxy_per_key),
            proxy_per_user: Limit::new("proxy_per_user", settings.proxy_per_user),
            callback_per_ip: Limit::new("callback_per_ip", settings.callback_per_ip),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_while_alive(Arc::downgrade(&limits)));
        }
        limits
    }

    /// A service key's request for one user's token: per key, then per user within the key.
    pub fn check_token(&self, key_name: &Arc<str>, user: UserId) -> Result<(), Error> {
        check_key_then_user(&self.token_per_key, &self.token_per_user, key_name, user)
    }

    /// A service key's proxied request for one user: per key, then per user within the key.
    pub fn check_proxy(&self, key_name: &Arc<str>, user: UserId) -> Result<(), Error> {
        check_key_then_user(&self.proxy_per_key, &self.proxy_per_user, key_name, user)
    }

    fn sweep(&self) {
        self.pending_flows.sweep();
        self.auth_url_per_user.sweep();
        self.token_per_key.sweep();
        self.token_per_user.sweep();
        self.proxy_per_key.sweep();
        self.proxy_per_user.sweep();
        self.callback_per_ip.sweep();
    }
}

/// The key name is the service key's shared name, so neither lookup allocates: a limiter
/// clones its key (a reference count) only the first time it sees it.
fn check_key_then_user(
    per_key: &Limit<Arc<str>, TrustedKeys>,
    per_user: &Limit<(Arc<str>, UserId), TrustedKeys>,
    key_name: &Arc<str>,
    user: UserId,
) -> Result<(), Error> {
    if per_key.limiter.is_none() && per_user.limiter.is_none() {
        return Ok(());
    }
    per_user.check(&(key_name.clone(), user))?;
    per_key.check(key_name)
}

async fn sweep_while_alive(limits: Weak<RateLimits>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match limits.upgrade() {
            Some(limits) => limits.sweep(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst_then_refusal<S: BuildHasher + Clone + Default>() {
        let limit: Limit<UserId, S> = Limit::new("test", Rate::new(3, Duration::from_secs(60)));
        let user = UserId(uuid::Uuid::new_v4());
        for _ in 0..3 {
            assert!(limit.check(&user).is_ok());
        }
        match limit.check(&user) {
            Err(Error::RateLimited { retry_after_secs }) => {
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            limit.check(&UserId(uuid::Uuid::new_v4())).is_ok(),
            "another key has its own count"
        );
        let off: Limit<UserId, S> = Limit::new("off", Rate::OFF);
        for _ in 0..1000 {
            assert!(off.check(&user).is_ok());
        }
    }

    #[test]
    fn a_limit_lets_its_burst_through_then_says_how_long_to_wait() {
        burst_then_refusal::<RandomState>();
        burst_then_refusal::<TrustedKeys>();
    }

    #[test]
    fn the_pending_flow_cap_drops_the_oldest() {
        let flows = PendingFlows::new(2, Duration::from_secs(600));
        let user = UserId(uuid::Uuid::new_v4());
        assert!(flows.record(user, [1; 32]).is_empty());
        assert!(flows.record(user, [2; 32]).is_empty());
        assert_eq!(flows.record(user, [3; 32]), vec![[1; 32]]);
        assert_eq!(flows.record(user, [4; 32]), vec![[2; 32]]);
        assert!(
            flows
                .record(UserId(uuid::Uuid::new_v4()), [5; 32])
                .is_empty()
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(6)), 6);
    }
}
