//! The activity log's storage (table `activity`, see `crate::activity`): the
//! [`ActivityBackend`] contract — adding a batch of per-minute counts in one multi-row upsert,
//! the operator's filtered and paged query, a signed-in user's own rows (through row-level
//! security on PostgreSQL, as the status read), the retention prune — and its PostgreSQL,
//! SQLite and in-memory implementations. Nothing here knows HTTP; nothing here is a secret.

use std::future::Future;
use std::sync::PoisonError;

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, QueryBuilder, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use super::activity_batch::{self, RowRef};
use super::memory::MemoryStore;
use super::postgres::PgStore;
use super::sqlite::{SqliteStore, to_time};
use super::{BUSY_POOL_WAITS, Store, StoreError, StoreResult, provider};
use crate::activity::{ActivityEntry, ActivityFilter, ActivityKey, Kind, Tally};
use crate::model::UserId;
use crate::provider::ProviderId;

/// Rows per upsert statement (SQLite binds 11 values a row, well under its limit).
pub const UPSERT_BATCH: usize = 500;

/// Most counted rows in one PostgreSQL journal row (about 60 bytes each in its arrays).
pub const JOURNAL_BATCH: usize = 10_000;

fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn events(tally: &Tally) -> i64 {
    i64::try_from(tally.count).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
struct PgRow {
    id: i64,
    minute: OffsetDateTime,
    user_id: Uuid,
    provider: String,
    kind: String,
    actor: String,
    method: String,
    path: String,
    outcome: String,
    events: i64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SqliteRow {
    id: i64,
    minute: i64,
    user_id: String,
    provider: String,
    kind: String,
    actor: String,
    method: String,
    path: String,
    outcome: String,
    events: i64,
    first_seen: i64,
    last_seen: i64,
}

struct Columns {
    id: i64,
    minute: OffsetDateTime,
    user_id: Uuid,
    provider: String,
    kind: String,
    actor: String,
    method: String,
    path: String,
    outcome: String,
    events: i64,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
}

impl TryFrom<Columns> for ActivityEntry {
    type Error = StoreError;

    fn try_from(r: Columns) -> StoreResult<Self> {
        let (actor, key_name) = ActivityEntry::actor_from_db(&r.actor);
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok(ActivityEntry {
            id: r.id,
            minute: r.minute,
            user_id: r.user_id,
            provider: provider(&r.provider)?.as_str(),
            kind: Kind::from_db(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("activity kind {:?}", r.kind)))?,
            key_name,
            actor,
            method: non_empty(r.method),
            path: non_empty(r.path),
            outcome: r.outcome,
            count: r.events,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        })
    }
}

impl TryFrom<PgRow> for ActivityEntry {
    type Error = StoreError;

    fn try_from(r: PgRow) -> StoreResult<Self> {
        Columns {
            id: r.id,
            minute: r.minute,
            user_id: r.user_id,
            provider: r.provider,
            kind: r.kind,
            actor: r.actor,
            method: r.method,
            path: r.path,
            outcome: r.outcome,
            events: r.events,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        }
        .try_into()
    }
}

impl TryFrom<SqliteRow> for ActivityEntry {
    type Error = StoreError;

    fn try_from(r: SqliteRow) -> StoreResult<Self> {
        Columns {
            id: r.id,
            minute: to_time(r.minute)?,
            user_id: Uuid::parse_str(&r.user_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            provider: r.provider,
            kind: r.kind,
            actor: r.actor,
            method: r.method,
            path: r.path,
            outcome: r.outcome,
            events: r.events,
            first_seen: to_time(r.first_seen)?,
            last_seen: to_time(r.last_seen)?,
        }
        .try_into()
    }
}

/// What every backend offers the activity log. Adding counts for a (minute, user, provider,
/// kind, actor, method, path, outcome) already stored adds them to that row (first and last
/// seen widen); reads come newest first.
pub trait ActivityBackend {
    /// Adds per-minute counts (at most [`UPSERT_BATCH`] rows) in one statement.
    fn add_activity(
        &self,
        rows: &[(ActivityKey, Tally)],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Makes counts durable the cheapest way the backend has (at most [`JOURNAL_BATCH`] rows):
    /// PostgreSQL appends them to the journal as one row and returns its id; SQLite and memory
    /// add them to the log at once and return `None`.
    fn journal_activity(
        &self,
        rows: &[(ActivityKey, Tally)],
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send;

    /// In one transaction: deletes the journal rows `ids` and adds `rows` (their counts, summed
    /// by the caller, in key order) to the log. If another replica already folded any of them,
    /// changes nothing and returns `false`. Only PostgreSQL journals; elsewhere nothing to do.
    fn fold_own_activity(
        &self,
        _rows: &[(ActivityKey, Tally)],
        _ids: &[i64],
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        std::future::ready(Ok(true))
    }

    /// Adds up to `limit` journal rows (oldest first, none another replica is folding) that are
    /// among `ids` or older than `older_than` (if given) to the log and deletes them, in one statement;
    /// returns how many. Only PostgreSQL journals; elsewhere nothing to do.
    fn fold_activity(
        &self,
        _limit: u32,
        _ids: &[i64],
        _older_than: Option<std::time::Duration>,
    ) -> impl Future<Output = StoreResult<u64>> + Send {
        std::future::ready(Ok(0))
    }

    /// The operator's query: rows matching `filter`, newest minute (then newest id) first.
    fn query_activity(
        &self,
        filter: &ActivityFilter,
    ) -> impl Future<Output = StoreResult<Vec<ActivityEntry>>> + Send;

    /// The user's own newest `limit` rows for `provider` (as the user: RLS on PostgreSQL), plus
    /// their newest use by a backend when it is older.
    fn user_activity(
        &self,
        user: UserId,
        provider: ProviderId,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<ActivityEntry>>> + Send;

    /// Deletes up to `limit` rows of minutes before `before`; returns how many.
    fn prune_activity(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
}

const COLUMNS: &str = "id, minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen";

/// Counted rows as the eleven parallel arrays PostgreSQL takes them in (binds `$1`–`$11`).
fn pg_columns<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: impl ExactSizeIterator<Item = RowRef<'q>>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let n = rows.len();
    let (mut minute, mut user, mut prov, mut kind, mut actor) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut method, mut path, mut outcome, mut count, mut first, mut last) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in rows {
        minute.push(ms_to_time(r.minute.saturating_mul(1000)));
        user.push(r.user);
        prov.push(r.provider);
        kind.push(r.kind);
        actor.push(r.actor);
        method.push(r.method);
        path.push(r.path);
        outcome.push(r.outcome);
        count.push(r.events);
        first.push(ms_to_time(r.first_ms));
        last.push(ms_to_time(r.last_ms));
    }
    query
        .bind(minute)
        .bind(user)
        .bind(prov)
        .bind(kind)
        .bind(actor)
        .bind(method)
        .bind(path)
        .bind(outcome)
        .bind(count)
        .bind(first)
        .bind(last)
}

/// What adding counts to a stored row does (the log's one upsert rule).
const PG_ADD_COUNTS: &str = "on conflict on constraint activity_one_row_per_minute do update set \
       events = connect.activity.events + excluded.events, \
       first_seen = least(connect.activity.first_seen, excluded.first_seen), \
       last_seen = greatest(connect.activity.last_seen, excluded.last_seen)";

/// The one upsert of counted rows into the log. The rows must be of distinct keys, in key order
/// ([`RowRef::key`]), so two folds lock log rows in the same order.
fn pg_add_rows<'q>(
    rows: impl ExactSizeIterator<Item = RowRef<'q>>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    pg_columns(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into connect.activity \
               (minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen) \
             select * from unnest($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                                  $6::text[], $7::text[], $8::text[], $9::int8[], $10::timestamptz[], \
                                  $11::timestamptz[]) {PG_ADD_COUNTS}"
        ))),
        rows,
    )
}

fn row_refs(rows: &[(ActivityKey, Tally)]) -> impl ExactSizeIterator<Item = RowRef<'_>> {
    rows.iter().map(|(k, t)| RowRef::new(k, t))
}

impl ActivityBackend for PgStore {
    async fn add_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<()> {
        pg_add_rows(row_refs(rows)).execute(self.pool()).await?;
        Ok(())
    }

    async fn journal_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<Option<i64>> {
        let value = activity_batch::encode(rows)?;
        let mut conn = self.pool().acquire().await?;
        let id = sqlx::query_scalar(
            "insert into connect.activity_batches (counts) values ($1) returning id",
        )
        .bind(value)
        .fetch_one(&mut *conn)
        .await;
        // sqlx keeps a connection's buffers at the largest size they grew to: a second's batch
        // (and a fold, below) would leave megabytes in every pooled connection it ran on.
        conn.shrink_buffers();
        Ok(Some(id?))
    }

    async fn fold_own_activity(
        &self,
        rows: &[(ActivityKey, Tally)],
        ids: &[i64],
    ) -> StoreResult<bool> {
        let mut conn = self.pool().acquire().await?;
        let folded = fold_own(&mut conn, rows, ids).await;
        conn.shrink_buffers();
        folded
    }

    async fn fold_activity(
        &self,
        limit: u32,
        ids: &[i64],
        older_than: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        // The first form's table is folded apart: a failure there (it holds only rows an older
        // replica wrote) must not keep this form's rows from being folded.
        let mut folded = 0;
        if let Some(older_than) = older_than {
            match self.fold_activity_journal(limit, older_than).await {
                Ok(n) => folded += n,
                Err(e) => {
                    tracing::warn!(error = %e, "folding the activity journal's first form failed")
                }
            }
        }
        let mut conn = self.pool().acquire().await?;
        let taken = fold_batches(&mut conn, limit, ids, older_than).await;
        conn.shrink_buffers();
        Ok(folded + taken?)
    }

    async fn query_activity(&self, f: &ActivityFilter) -> StoreResult<Vec<ActivityEntry>> {
        let (before_minute, before_id) = match f.before {
            Some((minute, id)) => (Some(ms_to_time(minute.saturating_mul(1000))), Some(id)),
            None => (None, None),
        };
        let rows: Vec<PgRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from connect.activity \
             where ($1::uuid is null or user_id = $1) and ($2::text is null or actor = $2) \
               and ($3::text is null or provider = $3) \
               and ($4::timestamptz is null or minute >= $4) and ($5::timestamptz is null or minute < $5) \
               and ($6::timestamptz is null or (minute, id) < ($6, $7::int8)) \
             order by minute desc, id desc limit $8"
        )))
        .bind(f.user.map(|u| u.0))
        .bind(f.key_name.as_deref())
        .bind(f.provider.map(ProviderId::as_str))
        .bind(f.from)
        .bind(f.to)
        .bind(before_minute)
        .bind(before_id)
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ActivityEntry::try_from).collect()
    }

    async fn user_activity(
        &self,
        user: UserId,
        provider: ProviderId,
        limit: u32,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<PgRow> = self
            .user_read(|conn| {
                Box::pin(
                    sqlx::query_as("select * from connect.read_own_activity($1, $2, $3)")
                        .bind(user.0)
                        .bind(provider.as_str())
                        .bind(limit)
                        .fetch_all(conn),
                )
            })
            .await?;
        newest_first(rows.into_iter().map(ActivityEntry::try_from).collect())
    }

    async fn prune_activity(&self, before: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let result = sqlx::query(
            "delete from connect.activity where id in \
               (select id from connect.activity where minute < $1 limit $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}

/// [`ActivityBackend::fold_own_activity`] on one connection.
async fn fold_own(
    conn: &mut PgConnection,
    rows: &[(ActivityKey, Tally)],
    ids: &[i64],
) -> StoreResult<bool> {
    let mut tx = conn.begin().await?;
    let deleted = sqlx::query("delete from connect.activity_batches where id = any($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted != ids.len() as u64 {
        tx.rollback().await?;
        return Ok(false);
    }
    for batch in rows.chunks(JOURNAL_BATCH) {
        pg_add_rows(row_refs(batch)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Folds up to `limit` journal rows among `ids` or older than `older_than`, on one connection;
/// returns how many.
async fn fold_batches(
    conn: &mut PgConnection,
    limit: u32,
    ids: &[i64],
    older_than: Option<std::time::Duration>,
) -> StoreResult<u64> {
    // One transaction: the rows taken are deleted if and only if their counts are added.
    // SKIP LOCKED lets replicas fold at once without taking the same rows. Values of
    // another version are not taken (a newer replica's, left for one that reads them);
    // a damaged value is skipped, so it never holds back the rows after it.
    let mut tx = conn.begin().await?;
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut readable = Vec::new();
    // Every row taken so far, readable or not: SKIP LOCKED does not skip this transaction's own
    // locks, so without this a second pass would take the first pass's rows again.
    let mut taken_ids: Vec<i64> = Vec::new();
    while readable.len() < limit as usize {
        let wanted = limit as usize - readable.len();
        let taken: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "select id, counts from connect.activity_batches \
                 where (id = any($2) or written_at < now() - make_interval(secs => $3::float8)) \
                   and substring(counts from 1 for 1) = $4 and id <> all($5) \
                 order by id limit $1 for update skip locked",
        )
        .bind(wanted as i64)
        .bind(ids)
        .bind(older_than.map(|d| d.as_secs_f64()))
        .bind([activity_batch::VERSION].as_slice())
        .bind(&taken_ids)
        .fetch_all(&mut *tx)
        .await?;
        let exhausted = taken.len() < wanted;
        for (id, value) in taken {
            taken_ids.push(id);
            match activity_batch::Batch::decode(&value) {
                Ok(_) => {
                    readable.push(id);
                    values.push(value);
                }
                Err(e) => {
                    metrics::counter!("activity_journal_rows_unreadable_total").increment(1);
                    tracing::error!(
                        id,
                        error = %e,
                        "an activity journal row is damaged and cannot be folded; it is left in connect.activity_batches"
                    );
                }
            }
        }
        if exhausted {
            break;
        }
    }
    if readable.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let batches = values
        .iter()
        .map(|value| activity_batch::Batch::decode(value))
        .collect::<StoreResult<Vec<_>>>()?;
    sqlx::query("delete from connect.activity_batches where id = any($1)")
        .bind(&readable)
        .execute(&mut *tx)
        .await?;
    let rows = activity_batch::summed(&batches);
    for batch in rows.chunks(JOURNAL_BATCH) {
        pg_add_rows(batch.iter().copied()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(readable.len() as u64)
}

impl PgStore {
    /// Folds up to `limit` rows older than `older_than` from `connect.activity_journal`, the
    /// journal's first form (counts as parallel arrays), which replicas of an older version
    /// may still write during an upgrade; returns how many. One statement: the rows taken are
    /// deleted if and only if their counts are added.
    async fn fold_activity_journal(
        &self,
        limit: u32,
        older_than: std::time::Duration,
    ) -> StoreResult<u64> {
        let (taken, _added): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "with taken as ( \
               delete from connect.activity_journal where id in \
                 (select id from connect.activity_journal \
                  where written_at < now() - make_interval(secs => $2::float8) \
                  order by id limit $1 for update skip locked) \
               returning * \
             ), counted as ( \
               select u.* from taken, unnest(taken.minute, taken.user_id, taken.provider, taken.kind, \
                 taken.actor, taken.method, taken.path, taken.outcome, taken.events, taken.first_seen, \
                 taken.last_seen) as u(minute, user_id, provider, kind, actor, method, path, outcome, \
                                      events, first_seen, last_seen) \
             ), added as ( \
               insert into connect.activity \
                 (minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen) \
               select minute, user_id, provider, kind, actor, method, path, outcome, sum(events)::int8, \
                      min(first_seen), max(last_seen) \
               from counted group by 1, 2, 3, 4, 5, 6, 7, 8 \
               order by minute, user_id, provider collate \"C\", kind collate \"C\", \
                        actor collate \"C\", method collate \"C\", path collate \"C\", \
                        outcome collate \"C\" \
               {PG_ADD_COUNTS} returning 1 \
             ) \
             select (select count(*) from taken), (select count(*) from added)"
        )))
        .bind(i64::from(limit))
        .bind(older_than.as_secs_f64())
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(taken).unwrap_or(0))
    }
}

fn newest_first(entries: StoreResult<Vec<ActivityEntry>>) -> StoreResult<Vec<ActivityEntry>> {
    let mut entries = entries?;
    entries.sort_by_key(|e| std::cmp::Reverse((e.minute, e.last_seen, e.id)));
    Ok(entries)
}

/// One SQLite upsert of `rows` (at most [`UPSERT_BATCH`]) into the log.
fn sqlite_add_rows(rows: &[(ActivityKey, Tally)]) -> QueryBuilder<Sqlite> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "insert into activity \
               (minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen) ",
    );
    insert.push_values(rows, |mut row, (k, t)| {
        row.push_bind(k.minute)
            .push_bind(k.user.0.to_string())
            .push_bind(k.provider.as_str())
            .push_bind(k.kind.as_db())
            .push_bind(k.actor.as_db().to_owned())
            .push_bind(k.method.unwrap_or(""))
            .push_bind(k.path.as_deref().unwrap_or("").to_owned())
            .push_bind(k.outcome)
            .push_bind(events(t))
            .push_bind(t.first_ms.div_euclid(1000))
            .push_bind(t.last_ms.div_euclid(1000));
    });
    insert.push(
            " on conflict (minute, user_id, provider, kind, actor, method, path, outcome) do update set \
               events = events + excluded.events, \
               first_seen = min(first_seen, excluded.first_seen), \
               last_seen = max(last_seen, excluded.last_seen)",
        );
    insert
}

impl ActivityBackend for SqliteStore {
    async fn add_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<()> {
        sqlite_add_rows(rows).build().execute(self.pool()).await?;
        Ok(())
    }

    async fn journal_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<Option<i64>> {
        // One transaction: a failure part way writes nothing, so the flush may give every row
        // back without counting the written part twice.
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for batch in rows.chunks(UPSERT_BATCH) {
            sqlite_add_rows(batch).build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(None)
    }

    async fn query_activity(&self, f: &ActivityFilter) -> StoreResult<Vec<ActivityEntry>> {
        let (before_minute, before_id) = f.before.unzip();
        let rows: Vec<SqliteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from activity \
             where ($1 is null or user_id = $1) and ($2 is null or actor = $2) \
               and ($3 is null or provider = $3) \
               and ($4 is null or minute >= $4) and ($5 is null or minute < $5) \
               and ($6 is null or minute < $6 or (minute = $6 and id < $7)) \
             order by minute desc, id desc limit $8"
        )))
        .bind(f.user.map(|u| u.0.to_string()))
        .bind(f.key_name.as_deref())
        .bind(f.provider.map(ProviderId::as_str))
        .bind(f.from.map(OffsetDateTime::unix_timestamp))
        .bind(f.to.map(OffsetDateTime::unix_timestamp))
        .bind(before_minute)
        .bind(before_id)
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(ActivityEntry::try_from).collect()
    }

    async fn user_activity(
        &self,
        user: UserId,
        provider: ProviderId,
        limit: u32,
    ) -> StoreResult<Vec<ActivityEntry>> {
        // No row-level security here: the caller's id filters explicitly.
        let rows: Vec<SqliteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select * from (select {COLUMNS} from activity where user_id = $1 and provider = $2 \
                            order by minute desc, last_seen desc limit $3) \
             union \
             select * from (select {COLUMNS} from activity where user_id = $1 and provider = $2 \
                              and kind in ('token', 'proxy') \
                            order by minute desc, last_seen desc limit 1)"
        )))
        .bind(user.0.to_string())
        .bind(provider.as_str())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        newest_first(rows.into_iter().map(ActivityEntry::try_from).collect())
    }

    async fn prune_activity(&self, before: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let result = sqlx::query(
            "delete from activity where id in (select id from activity where minute < $1 limit $2)",
        )
        .bind(before.unix_timestamp())
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}

impl ActivityBackend for MemoryStore {
    async fn add_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<()> {
        let mut stored = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, t) in rows {
            let minute = ms_to_time(k.minute.saturating_mul(1000));
            let (actor, key_name) = ActivityEntry::actor_from_db(k.actor.as_db());
            let method = k.method.map(str::to_owned);
            let path = k.path.as_deref().map(str::to_owned);
            let same = |e: &&mut ActivityEntry| {
                e.minute == minute
                    && e.user_id == k.user.0
                    && e.provider == k.provider.as_str()
                    && e.kind == k.kind
                    && (e.actor, &e.key_name) == (actor, &key_name)
                    && (&e.method, &e.path) == (&method, &path)
                    && e.outcome == k.outcome
            };
            let (first, last) = (ms_to_time(t.first_ms), ms_to_time(t.last_ms));
            if let Some(e) = stored.iter_mut().find(same) {
                e.count = e.count.saturating_add(events(t));
                e.first_seen = e.first_seen.min(first);
                e.last_seen = e.last_seen.max(last);
                continue;
            }
            let id = stored.iter().map(|e| e.id).max().unwrap_or(0) + 1;
            stored.push(ActivityEntry {
                id,
                minute,
                user_id: k.user.0,
                provider: k.provider.as_str(),
                kind: k.kind,
                key_name,
                actor,
                method,
                path,
                outcome: k.outcome.to_owned(),
                count: events(t),
                first_seen: first,
                last_seen: last,
            });
        }
        Ok(())
    }

    async fn journal_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<Option<i64>> {
        self.add_activity(rows).await.map(|()| None)
    }

    async fn query_activity(&self, f: &ActivityFilter) -> StoreResult<Vec<ActivityEntry>> {
        let stored = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<ActivityEntry> = stored
            .iter()
            .filter(|e| f.user.is_none_or(|u| e.user_id == u.0))
            .filter(|e| {
                f.key_name
                    .as_deref()
                    .is_none_or(|k| e.key_name.as_deref() == Some(k))
            })
            .filter(|e| f.provider.is_none_or(|p| e.provider == p.as_str()))
            .filter(|e| f.from.is_none_or(|from| e.minute >= from))
            .filter(|e| f.to.is_none_or(|to| e.minute < to))
            .filter(|e| {
                f.before
                    .is_none_or(|(minute, id)| (e.minute.unix_timestamp(), e.id) < (minute, id))
            })
            .cloned()
            .collect();
        rows.sort_by_key(|e| std::cmp::Reverse((e.minute, e.id)));
        rows.truncate(f.limit as usize);
        Ok(rows)
    }

    async fn user_activity(
        &self,
        user: UserId,
        provider: ProviderId,
        limit: u32,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let stored = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        let mut own: Vec<ActivityEntry> = stored
            .iter()
            .filter(|e| e.user_id == user.0 && e.provider == provider.as_str())
            .cloned()
            .collect();
        own.sort_by_key(|e| std::cmp::Reverse((e.minute, e.last_seen, e.id)));
        let last_use = own.iter().find(|e| e.kind.is_use()).cloned();
        own.truncate(limit as usize);
        if let Some(last_use) = last_use.filter(|u| !own.iter().any(|e| e.id == u.id)) {
            own.push(last_use);
        }
        Ok(own)
    }

    async fn prune_activity(&self, before: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut stored = self.activity.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pruned = 0u64;
        stored.retain(|e| {
            let old = e.minute < before && pruned < u64::from(limit);
            pruned += u64::from(old);
            !old
        });
        Ok(pruned)
    }
}

impl Store {
    /// Adds per-minute counts (at most [`UPSERT_BATCH`] rows) in one statement: a row already
    /// stored for the same minute and key gets the counts added.
    pub async fn add_activity(&self, rows: &[(ActivityKey, Tally)]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.add_activity(rows).await)
    }

    /// Makes counts durable (at most [`JOURNAL_BATCH`] rows): PostgreSQL appends them to the
    /// journal as one row and returns its id; SQLite and memory add them to the log at once.
    pub async fn journal_activity(
        &self,
        rows: &[(ActivityKey, Tally)],
    ) -> StoreResult<Option<i64>> {
        if rows.is_empty() {
            return Ok(None);
        }
        dispatch!(self, s => s.journal_activity(rows).await)
    }

    /// Deletes the journal rows `ids` and adds `rows` (their summed counts) to the log, in one
    /// transaction; `false` (and nothing changed) if another replica folded any of them.
    pub async fn fold_own_activity(
        &self,
        rows: &[(ActivityKey, Tally)],
        ids: &[i64],
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.fold_own_activity(rows, ids).await)
    }

    /// Adds up to `limit` journal rows among `ids` or older than `older_than` to the log, in
    /// one statement (PostgreSQL); returns how many.
    pub async fn fold_activity(
        &self,
        limit: u32,
        ids: &[i64],
        older_than: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        dispatch!(self, s => s.fold_activity(limit, ids, older_than).await)
    }

    /// The operator's query: rows matching `filter`, newest minute first.
    pub async fn query_activity(&self, filter: &ActivityFilter) -> StoreResult<Vec<ActivityEntry>> {
        dispatch!(self, s => s.query_activity(filter).await)
    }

    /// The user's own newest rows for `provider` (read as the user: RLS on PostgreSQL), plus
    /// their newest use by a backend when it is older; newest first.
    pub async fn user_activity(
        &self,
        user: UserId,
        provider: ProviderId,
        limit: u32,
    ) -> StoreResult<Vec<ActivityEntry>> {
        dispatch!(self, s => s.user_activity(user, provider, limit).await)
    }

    /// Deletes up to `limit` rows of minutes before `before`; returns how many.
    pub async fn prune_activity(&self, before: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        dispatch!(self, s => s.prune_activity(before, limit).await)
    }
}
