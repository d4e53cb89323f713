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

use super::{ActivityKey, Counts, Recorder, Tally, add, oversized, shrink_after_burst};
use crate::store::activity_batch::RowRef;
use crate::store::{JOURNAL_BATCH, Store, StoreError};

/// How often the counts in memory are written: the most a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often the journal is added to the log (PostgreSQL): how late a count can show in reads.
pub const FOLD_EVERY: Duration = Duration::from_secs(15);

/// Journal rows per fold transaction (each holds up to [`JOURNAL_BATCH`] counted rows).
pub const FOLD_BATCH: u32 = 10;

/// How often old rows are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per prune statement, so a large backlog never holds long locks.
pub const PRUNE_BATCH: u32 = 5_000;

/// How long the shutdown flush keeps trying while the database refuses.
pub const SHUTDOWN_FLUSH_FOR: Duration = Duration::from_secs(5);

/// How old a journal row must be before any replica folds it: its writer normally folds its
/// own rows within [`FOLD_EVERY`], so an older row is most likely a dead process's.
pub fn orphaned_after(fold_every: Duration) -> Duration {
    fold_every * 2 + Duration::from_secs(5)
}

/// A flusher's own journal (PostgreSQL): the ids of the rows it appended and not yet folded,
/// and their counts summed, so its fold upserts each log row once rather than reading the
/// journal back. Empty on SQLite and memory, which write the log at once.
#[derive(Default)]
pub struct Journal {
    /// The summed counts of exactly the rows `ids`.
    open: Counts,
    ids: Vec<i64>,
    /// Rows of this flusher's that another replica folded in part: what is left of them is
    /// folded from the journal itself.
    stray: Vec<i64>,
    /// The rows being flushed or folded: kept between calls so a steady load reuses it.
    buffer: Vec<(ActivityKey, Tally)>,
}

impl Journal {
    /// Makes everything counted so far durable, in batches of [`JOURNAL_BATCH`] rows. On a
    /// failure the batches not written go back to the recorder for the next flush. Returns the
    /// rows written.
    pub async fn flush(&mut self, recorder: &Recorder, store: &Store) -> Result<usize, StoreError> {
        let mut rows = std::mem::take(&mut self.buffer);
        recorder.take_into(&mut rows);
        let total = rows.len();
        // Batches from the end, so each one written is drained without moving the rest.
        while !rows.is_empty() {
            let start = rows.len().saturating_sub(JOURNAL_BATCH);
            match store.journal_activity(&rows[start..]).await {
                Ok(Some(id)) => {
                    self.ids.push(id);
                    for (key, tally) in rows.drain(start..) {
                        add(&mut self.open, key, tally);
                    }
                }
                Ok(None) => rows.truncate(start),
                Err(e) => {
                    recorder.give_back(rows);
                    return Err(e);
                }
            }
        }
        shrink_buffer_after_burst(&mut rows, total);
        self.buffer = rows;
        if total == 0 {
            return Ok(0);
        }
        metrics::counter!("activity_rows_written_total").increment(total as u64);
        Ok(total)
    }

    /// Adds this flusher's journal to the log: its summed counts, upserted in key order (so two
    /// replicas lock log rows in the same order) in the transaction that deletes its journal
    /// rows. If another replica took any of them for a dead process's, the summed counts are
    /// dropped and what is left of those rows is folded from the journal itself. Then folds
    /// rows older than `orphaned`, if given (a dead process's). Returns the journal rows folded.
    pub async fn fold(
        &mut self,
        store: &Store,
        orphaned: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        if !self.ids.is_empty() {
            let mut rows = std::mem::take(&mut self.buffer);
            rows.clear();
            rows.extend(self.open.drain());
            shrink_after_burst(&mut self.open, rows.len());
            rows.sort_unstable_by(|(ka, ta), (kb, tb)| {
                RowRef::new(ka, ta).key().cmp(&RowRef::new(kb, tb).key())
            });
            match store.fold_own_activity(&rows, &self.ids).await {
                Ok(true) => total += self.ids.len() as u64,
                Ok(false) => {
                    tracing::warn!(
                        rows = self.ids.len(),
                        "another replica folded part of this one's activity journal; folding the rest from the journal"
                    );
                    self.stray.append(&mut self.ids);
                }
                Err(e) => {
                    // Nothing was committed (or, if the answer was lost, all of it was: then
                    // the next try finds the rows gone and folds nothing twice).
                    self.open.extend(rows.drain(..));
                    self.buffer = rows;
                    return Err(e);
                }
            }
            let held = rows.len();
            rows.clear();
            shrink_buffer_after_burst(&mut rows, held);
            self.buffer = rows;
            self.ids.clear();
        }
        if !self.stray.is_empty() {
            total += fold_rows(store, &self.stray, None).await?;
            self.stray.clear();
        }
        if let Some(orphaned) = orphaned {
            total += fold_rows(store, &[], Some(orphaned)).await?;
        }
        if total > 0 {
            metrics::counter!("activity_journal_rows_folded_total").increment(total);
        }
        Ok(total)
    }
}

/// Gives back the room of the emptied flush buffer if it is far more than the `held` rows it
/// last held (after a burst or an outage's backlog).
fn shrink_buffer_after_burst(rows: &mut Vec<(ActivityKey, Tally)>, held: usize) {
    if oversized(rows.capacity(), held) {
        rows.shrink_to(held);
    }
}

/// Folds journal rows among `ids` or older than `older_than` from the journal itself,
/// [`FOLD_BATCH`] per statement; returns how many.
async fn fold_rows(
    store: &Store,
    ids: &[i64],
    older_than: Option<Duration>,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let folded = store.fold_activity(FOLD_BATCH, ids, older_than).await?;
        total += folded;
        if folded < u64::from(FOLD_BATCH) {
            return Ok(total);
        }
    }
}

/// Folds every journal row, whoever wrote it: for tests and tools; a running service folds
/// its own with [`Journal::fold`] and others' once they are [`orphaned_after`].
pub async fn fold_all(store: &Store) -> Result<u64, StoreError> {
    fold_rows(store, &[], Some(Duration::ZERO)).await
}

/// Flushes every `every` ([`FLUSH_EVERY`] unless a test says otherwise) and folds every
/// `fold_every` ([`FOLD_EVERY`]; first at start, which adds what a crashed process journaled
/// once it is [`orphaned_after`]) until `stop`; returns its journal for the shutdown. A failing
/// database is logged once per outage; the counts wait in memory (bounded), the journal in the
/// database, for the next try.
pub async fn run_flusher(
    recorder: Arc<Recorder>,
    store: Store,
    every: Duration,
    fold_every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Journal {
    let mut journal = Journal::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fold_tick = tokio::time::interval(fold_every);
    fold_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // The fold at start goes first, before any flush of this process: it adds only what others
    // left. (Both intervals are due at once; left to `select!`, a start under load could
    // journal its first requests and then fold them, a fold the start was not meant to make.)
    let mut starting = true;
    loop {
        let folding = if std::mem::take(&mut starting) {
            fold_tick.tick().await;
            true
        } else {
            tokio::select! {
                _ = tick.tick() => false,
                _ = fold_tick.tick() => true,
                _ = stop.wait_for(|stop| *stop) => return journal,
            }
        };
        let result = if folding {
            journal
                .fold(&store, Some(orphaned_after(fold_every)))
                .await
                .map(drop)
        } else {
            journal.flush(&recorder, &store).await.map(drop)
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
/// is folded by another replica or the next start once it is [`orphaned_after`].
pub async fn flush_at_shutdown(mut journal: Journal, recorder: &Recorder, store: &Store) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_FOR;
    loop {
        match journal.flush(recorder, store).await {
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
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    loop {
        // Only its own rows: another replica's wait for that replica's own fold.
        match journal.fold(store, None).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "activity journal not folded at shutdown; another replica or the next start folds it");
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
