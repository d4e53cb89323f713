//! The webhook outbox's side of the store contract: what the state-changing operations need to
//! write events in their own transaction ([`Outbox`]), and what the delivery worker and the
//! service API read and write (claims with a lease, attempt outcomes, the delivery log,
//! endpoints disabled by a 410). Both backends implement it in `postgres_outbox.rs` and
//! `sqlite_outbox.rs`; nothing here sends HTTP or knows an endpoint's URL or secret.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{BUSY_POOL_WAITS, Store, StoreError, StoreResult};

/// The delivery log's columns, as both SQL backends select them (`d`: deliveries, `e`: events).
pub(super) const RECORD_COLUMNS: &str = "d.id, d.event_id, e.type as event_type, d.endpoint, d.status, d.attempts, \
     d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.last_response, \
     d.created_at, d.delivered_at, e.body";

/// What the state-changing operations need to write events: the configured endpoints (one
/// delivery each; none configured, no event written), when a failing refresh becomes
/// `refresh_failing`, and a wake-up for this process's worker once an event is committed.
#[derive(Debug, Default)]
pub struct Outbox {
    pub endpoints: Vec<String>,
    pub failing_after: Duration,
    pub written: tokio::sync::Notify,
}

impl Outbox {
    pub fn is_active(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Wakes this process's worker once an event is committed (other replicas hear
    /// PostgreSQL's NOTIFY).
    pub fn announce(&self, written: bool) {
        if written && self.is_active() {
            self.written.notify_one();
        }
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its next attempt (or for its endpoint to be enabled).
    Pending,
    Delivered,
    /// Given up: every attempt of the schedule failed, or the endpoint answered 410.
    Failed,
}

impl DeliveryStatus {
    pub fn as_db(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// A delivery the worker claimed: what to send, and how often it was tried before.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub event_id: String,
    pub endpoint: String,
    pub attempts: u32,
    pub body: String,
}

/// What one attempt found, to record.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    pub status: DeliveryStatus,
    /// For a pending delivery: when to try next.
    pub next_attempt_at: Option<OffsetDateTime>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the receiver's answer.
    pub response: Option<String>,
    /// A 410: disable the endpoint for this URL (its SHA-256).
    pub disable_endpoint: Option<String>,
}

/// An endpoint a 410 disabled, for the URL it had then.
#[derive(Clone, Debug)]
pub struct DisabledEndpoint {
    pub name: String,
    pub url_sha256: Option<String>,
    pub disabled_at: OffsetDateTime,
    pub reason: Option<String>,
}

/// What asking to send a delivery again did.
#[derive(Clone, Debug)]
pub struct Retried {
    /// The delivery as it now is.
    pub record: DeliveryRecord,
    /// Whether its schedule started over; `false`: an attempt holds its lease (it is being
    /// sent at this moment), and nothing changed.
    pub queued: bool,
}

/// One delivery as the delivery log shows it.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub body: String,
}

/// Which deliveries a listing wants, newest first.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub endpoint: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only deliveries older than this one (the previous page's last id).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// How much is waiting: pending deliveries and when the oldest was created.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub pending: u64,
    pub oldest_created_at: Option<OffsetDateTime>,
}

/// The outbox's half of the storage contract, kept by every backend: a claim is exclusive
/// while its lease lives; only the claim's owner records an attempt; a delivery to an endpoint
/// disabled for its URL is not claimed (the caller passes only enabled endpoints).
pub trait OutboxBackend {
    fn claim_deliveries(
        &self,
        endpoints: &[String],
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> impl Future<Output = StoreResult<Vec<ClaimedDelivery>>> + Send;

    fn finish_delivery(
        &self,
        id: Uuid,
        endpoint: &str,
        owner: Uuid,
        outcome: &AttemptOutcome,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    fn disabled_endpoints(&self)
    -> impl Future<Output = StoreResult<Vec<DisabledEndpoint>>> + Send;

    fn enable_endpoint(&self, name: &str) -> impl Future<Output = StoreResult<bool>> + Send;

    fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> impl Future<Output = StoreResult<Vec<DeliveryRecord>>> + Send;

    fn delivery(
        &self,
        id: Uuid,
    ) -> impl Future<Output = StoreResult<Option<DeliveryRecord>>> + Send;

    /// Starts delivery `id`'s schedule over, unless an attempt holds its lease; `None`: no
    /// such delivery.
    fn retry_delivery(&self, id: Uuid)
    -> impl Future<Output = StoreResult<Option<Retried>>> + Send;

    fn delivery_backlog(&self) -> impl Future<Output = StoreResult<Backlog>> + Send;

    fn release_deliveries_of(&self, owner: Uuid) -> impl Future<Output = StoreResult<u64>> + Send;
}

impl Store {
    /// Configures the events the state-changing operations write (see [`Outbox`]).
    pub fn with_outbox(self, outbox: std::sync::Arc<Outbox>) -> Self {
        match self {
            Store::Postgres(s) => Store::Postgres(s.with_outbox(outbox)),
            Store::Sqlite(s) => Store::Sqlite(s.with_outbox(outbox)),
            Store::Memory(s) => Store::Memory(s.with_outbox(outbox)),
        }
    }

    /// The outbox settings in use.
    pub fn outbox(&self) -> &std::sync::Arc<Outbox> {
        match self {
            Store::Postgres(s) => s.outbox(),
            Store::Sqlite(s) => s.outbox(),
            Store::Memory(s) => s.outbox(),
        }
    }

    /// Claims up to `limit` due pending deliveries to `endpoints` for `owner` until `lease`
    /// from now; replicas never claim the same delivery while a lease lives.
    pub async fn claim_deliveries(
        &self,
        endpoints: &[String],
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        dispatch!(self, s => s.claim_deliveries(endpoints, limit, owner, lease).await)
    }

    /// Records an attempt of a delivery `owner` holds (and gives the claim back); false when
    /// the lease was lost to another replica (nothing recorded).
    pub async fn finish_delivery(
        &self,
        id: Uuid,
        endpoint: &str,
        owner: Uuid,
        outcome: &AttemptOutcome,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.finish_delivery(id, endpoint, owner, outcome).await)
    }

    /// Endpoints a 410 disabled.
    pub async fn disabled_endpoints(&self) -> StoreResult<Vec<DisabledEndpoint>> {
        dispatch!(self, s => s.disabled_endpoints().await)
    }

    /// Enables an endpoint again; true when it was disabled.
    pub async fn enable_endpoint(&self, name: &str) -> StoreResult<bool> {
        dispatch!(self, s => s.enable_endpoint(name).await)
    }

    /// A page of the delivery log.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        dispatch!(self, s => s.list_deliveries(filter).await)
    }

    /// One delivery.
    pub async fn delivery(&self, id: Uuid) -> StoreResult<Option<DeliveryRecord>> {
        dispatch!(self, s => s.delivery(id).await)
    }

    /// Sends a delivery again: pending, due now, its schedule started over (not while another
    /// replica is sending it). The record as it is now, or `None` for an unknown id.
    pub async fn retry_delivery(&self, id: Uuid) -> StoreResult<Option<Retried>> {
        dispatch!(self, s => s.retry_delivery(id).await)
    }

    /// Pending deliveries and the age of the oldest.
    pub async fn delivery_backlog(&self) -> StoreResult<Backlog> {
        dispatch!(self, s => s.delivery_backlog().await)
    }

    /// Gives back every delivery claim `owner` holds (a process shutting down).
    pub async fn release_deliveries_of(&self, owner: Uuid) -> StoreResult<u64> {
        dispatch!(self, s => s.release_deliveries_of(owner).await)
    }
}
