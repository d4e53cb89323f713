//! The activity log's background work: the flush (counts from memory to the database, every
//! [`FLUSH_EVERY`], and once more at shutdown), the fold (on PostgreSQL the flush appends to a
//! journal, which is added to the log every [`FOLD_EVERY`], at start and at shutdown) and the
//! retention prune (rows older than the retention, in batches, every [`PRUNE_EVERY`]). All run
//! in every replica: flushes and folds add counts, so replicas never overwrite each other, and a
//! journal row is folded exactly once; prunes of the same rows are idempotent.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::{ActivityKey, Recorder, Tally};
use crate::store::{JOURNAL_BATCH, Store, StoreError};

/// How often the counts in memory are written: the most a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often the journal is added to the log (PostgreSQL): how late a count can show in reads.
pub const FOLD_EVERY: Duration = Duration::from_secs(5);

/// Journal rows per fold statement (each holds up to [`JOURNAL_BATCH`] counted rows).
pub const FOLD_BATCH: u32 = 10;

/// How often old rows are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per prune statement, so a large backlog never holds long locks.
pub const PRUNE_BATCH: u32 = 5_000;

/// How long the shutdown flush keeps trying while the database refuses.
pub const SHUTDOWN_FLUSH_FOR: Duration = Duration::from_secs(5);

/// Makes everything counted so far durable, in batches of [`JOURNAL_BATCH`] rows. On a failure
/// the batches not written go back to the recorder for the next flush. Returns the rows written.
pub async fn flush(recorder: &Recorder, store: &Store) -> Result<usize, StoreError> {
    let mut rows = recorder.take();
    if rows.is_empty() {
        return Ok(0);
    }
    let total = rows.len();
    let mut written = 0;
    while written < total {
        let end = (written + JOURNAL_BATCH).min(total);
        let batch = rows.get(written..end).unwrap_or_default();
        if let Err(e) = store.journal_activity(batch).await {
            let unwritten: Vec<(ActivityKey, Tally)> = rows.drain(written..).collect();
            recorder.give_back(unwritten);
            return Err(e);
        }
        written = end;
    }
    metrics::counter!("activity_rows_written_total").increment(total as u64);
    Ok(total)
}

/// Adds the whole journal to the log (PostgreSQL; nothing to do elsewhere), [`FOLD_BATCH`]
/// journal rows per statement. Returns the journal rows folded.
pub async fn fold(store: &Store) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let folded = store.fold_activity(FOLD_BATCH).await?;
        total += folded;
        if folded < u64::from(FOLD_BATCH) {
            break;
        }
    }
    if total > 0 {
        metrics::counter!("activity_journal_rows_folded_total").increment(total);
    }
    Ok(total)
}

/// Flushes every `every` ([`FLUSH_EVERY`] unless a test says otherwise) and folds every
/// `fold_every` ([`FOLD_EVERY`]; first at start, which adds what a crashed process journaled)
/// until `stop`. A failing database is logged once per outage; the counts wait in memory
/// (bounded), the journal in the database, for the next try.
pub async fn run_flusher(
    recorder: Arc<Recorder>,
    store: Store,
    every: Duration,
    fold_every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fold_tick = tokio::time::interval(fold_every);
    fold_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let folding = tokio::select! {
            _ = tick.tick() => false,
            _ = fold_tick.tick() => true,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let result = if folding {
            fold(&store).await.map(drop)
        } else {
            flush(&recorder, &store).await.map(drop)
        };
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("activity log written again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, backlog = recorder.backlog(), "activity log not written; keeping the counts and retrying");
            }
            Err(_) => {}
        }
        metrics::gauge!("activity_backlog_rows").set(recorder.backlog() as f64);
    }
}

/// The last flush and fold, after the HTTP drain: tries for up to [`SHUTDOWN_FLUSH_FOR`], then
/// says how many events could not be written. What reached the journal and could not be folded
/// is folded by the next start of any replica.
pub async fn flush_at_shutdown(recorder: &Recorder, store: &Store) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_FOR;
    loop {
        match flush(recorder, store).await {
            Ok(rows) => {
                if rows > 0 {
                    tracing::info!(rows, "activity log flushed at shutdown");
                }
                break;
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
    loop {
        match fold(store).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "activity journal not folded at shutdown; the next start folds it");
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
