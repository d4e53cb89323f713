//! SQLite side of the webhook outbox (see `outbox`): the same tables and rules as PostgreSQL,
//! on one node. Claims run in `BEGIN IMMEDIATE` (SQLite has one writer, so no SKIP LOCKED is
//! needed); the worker is woken in-process.

use super::outbox::RECORD_COLUMNS;
use std::time::Duration;

use sqlx::SqliteConnection;
use uuid::Uuid;

use super::outbox::{
    AttemptOutcome, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    DisabledEndpoint, OutboxBackend, Retried,
};
use super::sqlite::{SqliteStore, to_time};
use super::{StoreError, StoreResult};
use crate::webhooks::event::OutboxEvent;

/// Writes `event` and one pending delivery per endpoint inside the caller's transaction.
pub(super) async fn write_event(
    conn: &mut SqliteConnection,
    endpoints: &[String],
    event: &OutboxEvent,
) -> StoreResult<()> {
    sqlx::query("insert into webhook_events (id, type, body) values ($1, $2, $3)")
        .bind(&event.id)
        .bind(event.event_type.as_str())
        .bind(&event.body)
        .execute(&mut *conn)
        .await?;
    for endpoint in endpoints {
        sqlx::query("insert into webhook_deliveries (id, event_id, endpoint) values ($1, $2, $3)")
            .bind(Uuid::now_v7().to_string())
            .bind(&event.id)
            .bind(endpoint)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn lease_secs(lease: Duration) -> i64 {
    i64::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0)).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    id: String,
    event_id: String,
    event_type: String,
    endpoint: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    last_response: Option<String>,
    created_at: i64,
    delivered_at: Option<i64>,
    body: String,
}

impl TryFrom<RecordRow> for DeliveryRecord {
    type Error = StoreError;

    fn try_from(r: RecordRow) -> StoreResult<Self> {
        let status = DeliveryStatus::from_db(&r.status);
        Ok(DeliveryRecord {
            id: Uuid::parse_str(&r.id).map_err(corrupt)?,
            event_id: r.event_id,
            event_type: r.event_type,
            endpoint: r.endpoint,
            status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: if status == DeliveryStatus::Pending {
                Some(to_time(r.next_attempt_at)?)
            } else {
                None
            },
            last_attempt_at: r.last_attempt_at.map(to_time).transpose()?,
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            last_response: r.last_response,
            created_at: to_time(r.created_at)?,
            delivered_at: r.delivered_at.map(to_time).transpose()?,
            body: r.body,
        })
    }
}

impl OutboxBackend for SqliteStore {
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let names = serde_json::to_string(endpoints).map_err(corrupt)?;
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let claimed: Vec<(String, String, String, i64)> = sqlx::query_as(
            "update webhook_deliveries set lease_owner = $3, lease_until = unixepoch() + $4 \
             where id in ( \
               select id from webhook_deliveries \
               where status = 'pending' and next_attempt_at <= unixepoch() \
                 and endpoint in (select value from json_each($1)) \
                 and (lease_until is null or lease_until <= unixepoch()) \
               order by next_attempt_at limit $2) \
             returning id, event_id, endpoint, attempts",
        )
        .bind(names)
        .bind(i64::from(limit))
        .bind(owner.to_string())
        .bind(lease_secs(lease))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for (id, event_id, endpoint, attempts) in claimed {
            let body: String = sqlx::query_scalar("select body from webhook_events where id = $1")
                .bind(&event_id)
                .fetch_one(&mut *tx)
                .await?;
            out.push(ClaimedDelivery {
                id: Uuid::parse_str(&id).map_err(corrupt)?,
                event_id,
                endpoint,
                attempts: u32::try_from(attempts).unwrap_or(0),
                body,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        endpoint: &str,
        owner: Uuid,
        o: &AttemptOutcome,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "update webhook_deliveries set status = $3, attempts = attempts + 1, \
               next_attempt_at = coalesce($4, next_attempt_at), last_attempt_at = unixepoch(), \
               last_status = $5, last_error = $6, last_response = $7, \
               delivered_at = case when $3 = 'delivered' then unixepoch() else delivered_at end, \
               lease_owner = null, lease_until = null \
             where id = $1 and lease_owner = $2",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(o.status.as_db())
        .bind(o.next_attempt_at.map(|t| t.unix_timestamp()))
        .bind(o.http_status.map(i64::from))
        .bind(&o.error)
        .bind(&o.response)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if updated && let Some(url_sha256) = &o.disable_endpoint {
            sqlx::query(
                "insert into webhook_endpoints (name, disabled_at, disabled_reason, url_sha256) \
                 values ($1, unixepoch(), $2, $3) \
                 on conflict (name) do update set disabled_at = unixepoch(), \
                   disabled_reason = excluded.disabled_reason, url_sha256 = excluded.url_sha256",
            )
            .bind(endpoint)
            .bind("410 Gone")
            .bind(url_sha256)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn disabled_endpoints(&self) -> StoreResult<Vec<DisabledEndpoint>> {
        let rows: Vec<(String, Option<String>, i64, Option<String>)> = sqlx::query_as(
            "select name, url_sha256, disabled_at, disabled_reason from webhook_endpoints \
             where disabled_at is not null order by name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(name, url_sha256, disabled_at, reason)| {
                Ok(DisabledEndpoint {
                    name,
                    url_sha256,
                    disabled_at: to_time(disabled_at)?,
                    reason,
                })
            })
            .collect()
    }

    async fn enable_endpoint(&self, name: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "update webhook_endpoints set disabled_at = null, disabled_reason = null, url_sha256 = null \
             where name = $1 and disabled_at is not null",
        )
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let rows: Vec<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RECORD_COLUMNS} from webhook_deliveries d \
             join webhook_events e on e.id = d.event_id \
             where ($1 is null or d.endpoint = $1) and ($2 is null or d.status = $2) \
               and ($3 is null or d.created_at >= $3) and ($4 is null or d.created_at < $4) \
               and ($5 is null or d.id < $5) \
             order by d.id desc limit $6"
        )))
        .bind(&f.endpoint)
        .bind(f.status.map(DeliveryStatus::as_db))
        .bind(f.since.map(|t| t.unix_timestamp()))
        .bind(f.until.map(|t| t.unix_timestamp()))
        .bind(f.before.map(|id| id.to_string()))
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(DeliveryRecord::try_from).collect()
    }

    async fn delivery(&self, id: Uuid) -> StoreResult<Option<DeliveryRecord>> {
        let row: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RECORD_COLUMNS} from webhook_deliveries d \
             join webhook_events e on e.id = d.event_id where d.id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(DeliveryRecord::try_from).transpose()
    }

    async fn retry_delivery(&self, id: Uuid) -> StoreResult<Option<Retried>> {
        let queued = sqlx::query(
            "update webhook_deliveries set status = 'pending', attempts = 0, \
               next_attempt_at = unixepoch(), delivered_at = null \
             where id = $1 and (lease_until is null or lease_until <= unixepoch())",
        )
        .bind(id.to_string())
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        // As queued: read before waking a worker that may deliver it at once.
        let record = self.delivery(id).await?;
        self.outbox().written.notify_one();
        Ok(record.map(|record| Retried { record, queued }))
    }

    async fn delivery_backlog(&self) -> StoreResult<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "select count(*), min(created_at) from webhook_deliveries where status = 'pending'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Backlog {
            pending: u64::try_from(pending).map_err(corrupt)?,
            oldest_created_at: oldest.map(to_time).transpose()?,
        })
    }

    async fn release_deliveries_of(&self, owner: Uuid) -> StoreResult<u64> {
        let result = sqlx::query(
            "update webhook_deliveries set lease_owner = null, lease_until = null where lease_owner = $1",
        )
        .bind(owner.to_string())
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
