//! The keep-alive worker: refreshes connections whose refresh token has not been used for a
//! while (default 7 days; Microsoft's die after 90 idle days), so a connection nobody reads does
//! not silently expire. Replicas share the work (rows are claimed with `FOR UPDATE SKIP LOCKED`
//! and a lease), concurrency is bounded, runs are jittered, a provider's `Retry-After` pauses
//! the worker, and it stops cleanly on shutdown.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::broker::tokens::{RefreshFailure, refresh_claimed};
use crate::error::Result;

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub refreshed: usize,
    /// The longest `Retry-After` the provider asked for, if any.
    pub back_off: Option<Duration>,
}

/// How many rows one pass claims: as many as `concurrency` workers refresh within one lease
/// when every provider call takes its whole timeout (with a second of margin each), at least
/// one per worker.
pub fn batch_size(concurrency: u32, lease: Duration, provider_timeout: Duration) -> u32 {
    let per_call = provider_timeout + Duration::from_secs(1);
    let rounds = (lease.as_millis() / per_call.as_millis().max(1)).max(1);
    concurrency
        .max(1)
        .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
}

/// Claims and refreshes one batch of idle connections; stops starting new ones once
/// `shutdown` turns true.
pub async fn run_once(broker: &Arc<Broker>, shutdown: &watch::Receiver<bool>) -> Result<Pass> {
    let settings = &broker.settings.refresh;
    let Some(idle) = settings.keepalive_idle else {
        return Ok(Pass::default());
    };
    let idle_since = time::Duration::try_from(idle)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_sub(d))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let batch = batch_size(
        settings.keepalive_concurrency,
        settings.lease,
        settings.provider_timeout,
    );
    let claimed_at = std::time::Instant::now();
    let rows = broker
        .store
        .claim_idle_connections(idle_since, batch, broker.tokens.owner, settings.lease)
        .await?;
    let mut pass = Pass {
        claimed: rows.len(),
        ..Pass::default()
    };
    metrics::gauge!("keepalive_backlog").set(rows.len() as f64);
    tracing::debug!(claimed = rows.len(), batch, "keep-alive claimed");
    let permits = Arc::new(Semaphore::new(settings.keepalive_concurrency as usize));
    let mut tasks = JoinSet::new();
    let mut not_started = Vec::new();
    for row in rows {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // Start only what can finish under the lease, and nothing once shutting down.
        let lease_left = settings.lease.saturating_sub(claimed_at.elapsed());
        if *shutdown.borrow() || lease_left < settings.provider_timeout {
            not_started.push(row);
            continue;
        }
        let broker = broker.clone();
        tasks.spawn(async move {
            let outcome = refresh_claimed(&broker, row, None).await;
            drop(permit);
            outcome
        });
    }
    for row in not_started {
        if let Err(e) = broker
            .store
            .release_refresh_lease(row.id, broker.tokens.owner, None, None)
            .await
        {
            tracing::warn!(error = %e, "could not give back a keep-alive lease; it expires on its own");
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(_)) => pass.refreshed += 1,
            Ok(Err(RefreshFailure::Unavailable { retry_after_secs })) => {
                let wait = Duration::from_secs(retry_after_secs);
                pass.back_off = Some(pass.back_off.map_or(wait, |w| w.max(wait)));
            }
            Ok(Err(_)) | Err(_) => {}
        }
    }
    Ok(pass)
}

/// Runs passes every `keepalive_interval` (with up to 10 % jitter) until `shutdown` turns true.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let interval = broker.settings.refresh.keepalive_interval;
    let mut pause = jittered(interval);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        pause = match run_once(&broker, &shutdown).await {
            Ok(pass) => {
                if pass.claimed > 0 {
                    tracing::info!(
                        claimed = pass.claimed,
                        refreshed = pass.refreshed,
                        "keep-alive pass"
                    );
                }
                // A full batch means more is waiting: go again soon, unless told to back off.
                match pass.back_off {
                    Some(wait) => wait.max(interval),
                    None if pass.claimed > 0 => Duration::from_secs(1),
                    None => jittered(interval),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "keep-alive pass failed");
                jittered(interval)
            }
        };
    }
}

fn jittered(interval: Duration) -> Duration {
    let spread = (interval.as_millis() / 10).max(1) as u64;
    interval + Duration::from_millis(rand::random_range(0..spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_fits_in_one_lease_even_when_every_call_times_out() {
        let s = Duration::from_secs;
        // Defaults: 4 workers, 30 s lease, 10 s provider timeout: two rounds of 11 s.
        assert_eq!(batch_size(4, s(30), s(10)), 8);
        assert_eq!(batch_size(1, s(3), s(1)), 1);
        // A lease shorter than one call still lets each worker take one row.
        assert_eq!(batch_size(4, s(5), s(10)), 4);
        assert_eq!(batch_size(0, s(30), s(10)), 2);
    }
}
