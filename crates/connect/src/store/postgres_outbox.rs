//! PostgreSQL side of the webhook outbox (see `outbox`): events written inside the state
//! change's transaction with a NOTIFY that wakes every replica's worker at commit, deliveries
//! claimed with `FOR UPDATE SKIP LOCKED` and a lease, attempts recorded only by the lease's
//! holder, and the delivery log.

use super::outbox::RECORD_COLUMNS;
use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{
    AttemptOutcome, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    DisabledEndpoint, OutboxBackend, Retried,
};
use super::postgres::PgStore;
use super::{StoreError, StoreResult};
use crate::webhooks::event::OutboxEvent;

/// The channel a committed event is announced on (the payload is empty).
pub const CHANNEL: &str = "connect_webhooks";

/// Writes `event` and one pending delivery per endpoint on `conn` (inside the caller's
/// transaction), and announces it at commit.
pub(super) async fn write_event(
    conn: &mut PgConnection,
    endpoints: &[String],
    event: &OutboxEvent,
) -> StoreResult<()> {
    sqlx::query("insert into connect.webhook_events (id, type, body) values ($1, $2, $3)")
        .bind(&event.id)
        .bind(event.event_type.as_str())
        .bind(&event.body)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into connect.webhook_deliveries (id, event_id, endpoint) \
         select d.id, $1, d.endpoint from unnest($2::uuid[], $3::text[]) as d(id, endpoint)",
    )
    .bind(&event.id)
    .bind(&ids)
    .bind(endpoints)
    .execute(&mut *conn)
    .await?;
    sqlx::query("select pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    id: Uuid,
    event_id: String,
    event_type: String,
    endpoint: String,
    status: String,
    attempts: i32,
    next_attempt_at: OffsetDateTime,
    last_attempt_at: Option<OffsetDateTime>,
    last_status: Option<i32>,
    last_error: Option<String>,
    last_response: Option<String>,
    created_at: OffsetDateTime,
    delivered_at: Option<OffsetDateTime>,
    body: String,
}

impl From<RecordRow> for DeliveryRecord {
    fn from(r: RecordRow) -> Self {
        let status = DeliveryStatus::from_db(&r.status);
        DeliveryRecord {
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            endpoint: r.endpoint,
            status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: (status == DeliveryStatus::Pending).then_some(r.next_attempt_at),
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            last_response: r.last_response,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            body: r.body,
        }
    }
}

impl OutboxBackend for PgStore {
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let rows: Vec<(Uuid, String, String, i32, String)> = sqlx::query_as(
            "with claimed as ( \
               update connect.webhook_deliveries \
               set lease_owner = $3, lease_until = now() + make_interval(secs => $4) \
               where id in ( \
                 select id from connect.webhook_deliveries \
                 where status = 'pending' and next_attempt_at <= now() and endpoint = any($1) \
                   and (lease_until is null or lease_until < now()) \
                 order by next_attempt_at limit $2 for update skip locked) \
               returning id, event_id, endpoint, attempts) \
             select c.id, c.event_id, c.endpoint, c.attempts, e.body \
             from claimed c join connect.webhook_events e on e.id = c.event_id",
        )
        .bind(endpoints)
        .bind(i64::from(limit))
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, event_id, endpoint, attempts, body)| ClaimedDelivery {
                id,
                event_id,
                endpoint,
                attempts: u32::try_from(attempts).unwrap_or(0),
                body,
            })
            .collect())
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        endpoint: &str,
        owner: Uuid,
        o: &AttemptOutcome,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "update connect.webhook_deliveries set status = $3, attempts = attempts + 1, \
               next_attempt_at = coalesce($4, next_attempt_at), last_attempt_at = now(), \
               last_status = $5, last_error = $6, last_response = $7, \
               delivered_at = case when $3 = 'delivered' then now() else delivered_at end, \
               lease_owner = null, lease_until = null \
             where id = $1 and lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(o.status.as_db())
        .bind(o.next_attempt_at)
        .bind(o.http_status.map(i32::from))
        .bind(&o.error)
        .bind(&o.response)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if updated && let Some(url_sha256) = &o.disable_endpoint {
            sqlx::query(
                "insert into connect.webhook_endpoints (name, disabled_at, disabled_reason, url_sha256) \
                 values ($1, now(), $2, $3) \
                 on conflict (name) do update set disabled_at = now(), \
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
        let rows: Vec<(String, Option<String>, OffsetDateTime, Option<String>)> = sqlx::query_as(
            "select name, url_sha256, disabled_at, disabled_reason from connect.webhook_endpoints \
             where disabled_at is not null order by name",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, url_sha256, disabled_at, reason)| DisabledEndpoint {
                name,
                url_sha256,
                disabled_at,
                reason,
            })
            .collect())
    }

    async fn enable_endpoint(&self, name: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "update connect.webhook_endpoints set disabled_at = null, disabled_reason = null, url_sha256 = null \
             where name = $1 and disabled_at is not null",
        )
        .bind(name)
        .execute(self.pool())
        .await?;
        if result.rows_affected() > 0 {
            sqlx::query("select pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(self.pool())
                .await?;
        }
        Ok(result.rows_affected() > 0)
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let rows: Vec<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RECORD_COLUMNS} from connect.webhook_deliveries d \
             join connect.webhook_events e on e.id = d.event_id \
             where ($1::text is null or d.endpoint = $1) and ($2::text is null or d.status = $2) \
               and ($3::timestamptz is null or d.created_at >= $3) \
               and ($4::timestamptz is null or d.created_at < $4) \
               and ($5::uuid is null or d.id < $5) \
             order by d.id desc limit $6"
        )))
        .bind(&f.endpoint)
        .bind(f.status.map(DeliveryStatus::as_db))
        .bind(f.since)
        .bind(f.until)
        .bind(f.before)
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(DeliveryRecord::from).collect())
    }

    async fn delivery(&self, id: Uuid) -> StoreResult<Option<DeliveryRecord>> {
        let row: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RECORD_COLUMNS} from connect.webhook_deliveries d \
             join connect.webhook_events e on e.id = d.event_id where d.id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(DeliveryRecord::from))
    }

    async fn retry_delivery(&self, id: Uuid) -> StoreResult<Option<Retried>> {
        let mut tx = self.pool().begin().await?;
        let queued = sqlx::query(
            "update connect.webhook_deliveries set status = 'pending', attempts = 0, \
               next_attempt_at = now(), delivered_at = null \
             where id = $1 and (lease_until is null or lease_until < now())",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // As queued: read before the commit wakes a worker that may deliver it at once.
        let row: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RECORD_COLUMNS} from connect.webhook_deliveries d \
             join connect.webhook_events e on e.id = d.event_id where d.id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|row| Retried {
            record: DeliveryRecord::from(row),
            queued,
        }))
    }

    async fn delivery_backlog(&self) -> StoreResult<Backlog> {
        let (pending, oldest): (i64, Option<OffsetDateTime>) = sqlx::query_as(
            "select count(*), min(created_at) from connect.webhook_deliveries where status = 'pending'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Backlog {
            pending: u64::try_from(pending).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            oldest_created_at: oldest,
        })
    }

    async fn release_deliveries_of(&self, owner: Uuid) -> StoreResult<u64> {
        let result = sqlx::query(
            "update connect.webhook_deliveries set lease_owner = null, lease_until = null \
             where lease_owner = $1",
        )
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
