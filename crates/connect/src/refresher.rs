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

use crate::app::AppState;
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

/// Claims and refreshes one batch of idle connections.
pub async fn run_once(app: &AppState) -> Result<Pass> {
    let settings = &app.settings.refresh;
    let Some(idle) = settings.keepalive_idle else {
        return Ok(Pass::default());
    };
    let idle_since =
        OffsetDateTime::now_utc() - time::Duration::try_from(idle).unwrap_or(time::Duration::MAX);
    let batch = settings.keepalive_concurrency.saturating_mul(8);
    let rows = app
        .store
        .claim_idle_connections(idle_since, batch, app.tokens.owner, settings.lease)
        .await?;
    let mut pass = Pass {
        claimed: rows.len(),
        ..Pass::default()
    };
    metrics::gauge!("keepalive_backlog").set(rows.len() as f64);
    let permits = Arc::new(Semaphore::new(settings.keepalive_concurrency as usize));
    let mut tasks = JoinSet::new();
    for row in rows {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let app = app.clone();
        tasks.spawn(async move {
            let outcome = refresh_claimed(&app, row).await;
            drop(permit);
            outcome
        });
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
pub async fn run(app: AppState, mut shutdown: watch::Receiver<bool>) {
    let interval = app.settings.refresh.keepalive_interval;
    let mut pause = jittered(interval);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        pause = match run_once(&app).await {
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
