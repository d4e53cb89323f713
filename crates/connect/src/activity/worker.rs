//! The activity log's background work: the flush (counts from memory to the database, every
//! [`FLUSH_EVERY`], and once more at shutdown) and the retention prune (rows older than the
//! retention, in batches, every [`PRUNE_EVERY`]). Both run in every replica: flushes add
//! counts, so replicas never overwrite each other; prunes of the same rows are idempotent.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::{ActivityKey, Recorder, Tally};
use crate::store::{Store, StoreError, UPSERT_BATCH};

/// How often the counts in memory are written: the most a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often old rows are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per prune statement, so a large backlog never holds long locks.
pub const PRUNE_BATCH: u32 = 5_000;

/// How long the shutdown flush keeps trying while the database refuses.
pub const SHUTDOWN_FLUSH_FOR: Duration = Duration::from_secs(5);

/// Writes everything counted so far, in batches of [`UPSERT_BATCH`] rows (sorted, so two
/// replicas upserting the same rows lock them in the same order). On a failure the batches not
/// written go back to the recorder for the next flush. Returns the rows written.
pub async fn flush(recorder: &Recorder, store: &Store) -> Result<usize, StoreError> {
    let mut rows = recorder.take();
    if rows.is_empty() {
        return Ok(0);
    }
    rows.sort_by(|(a, _), (b, _)| order(a).cmp(&order(b)));
    let total = rows.len();
    let mut written = 0;
    while written < total {
        let end = (written + UPSERT_BATCH).min(total);
        let batch = rows.get(written..end).unwrap_or_default();
        if let Err(e) = store.add_activity(batch).await {
            let unwritten: Vec<(ActivityKey, Tally)> = rows.drain(written..).collect();
            recorder.give_back(unwritten);
            return Err(e);
        }
        written = end;
    }
    metrics::counter!("activity_rows_written_total").increment(total as u64);
    Ok(total)
}

type Order<'a> = (
    i64,
    uuid::Uuid,
    &'static str,
    &'static str,
    &'a str,
    &'static str,
    &'a str,
    &'static str,
);

fn order(k: &ActivityKey) -> Order<'_> {
    (
        k.minute,
        k.user.0,
        k.provider.as_str(),
        k.kind.as_db(),
        k.actor.as_db(),
        k.method.unwrap_or(""),
        k.path.as_deref().unwrap_or(""),
        k.outcome,
    )
}

/// Flushes every `every` ([`FLUSH_EVERY`] unless a test says otherwise) until `stop`. A
/// failing database is logged once per outage; the counts wait in memory (bounded) for the
/// next try.
pub async fn run_flusher(
    recorder: Arc<Recorder>,
    store: Store,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match flush(&recorder, &store).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("activity log written again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, backlog = recorder.backlog(), "activity log not written; keeping the counts in memory and retrying");
            }
            Err(_) => {}
        }
        metrics::gauge!("activity_backlog_rows").set(recorder.backlog() as f64);
    }
}

/// The last flush, after the HTTP drain: tries for up to [`SHUTDOWN_FLUSH_FOR`], then says how
/// many events could not be written.
pub async fn flush_at_shutdown(recorder: &Recorder, store: &Store) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_FOR;
    loop {
        match flush(recorder, store).await {
            Ok(rows) => {
                if rows > 0 {
                    tracing::info!(rows, "activity log flushed at shutdown");
                }
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                let lost: u64 = recorder.take().iter().map(|(_, t)| t.count).sum();
                metrics::counter!("activity_dropped_total").increment(lost);
                tracing::error!(error = %e, events = lost, "activity log could not be written at shutdown; these counts are lost");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Deletes rows older than `retention`, [`PRUNE_BATCH`] at a time; returns how many.
pub async fn prune(store: &Store, retention: Duration) -> Result<u64, StoreError> {
    let cutoff = OffsetDateTime::now_utc() - retention;
    let mut total = 0;
    loop {
        let deleted = store.prune_activity(cutoff, PRUNE_BATCH).await?;
        total += deleted;
        if deleted < u64::from(PRUNE_BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        metrics::counter!("activity_rows_pruned_total").increment(total);
        tracing::info!(rows = total, "old activity pruned");
    }
    Ok(total)
}

/// Prunes at start and every [`PRUNE_EVERY`] until `stop`.
pub async fn run_pruner(store: Store, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = prune(&store, retention).await {
            tracing::warn!(error = %e, "pruning old activity failed; trying again later");
        }
    }
}
