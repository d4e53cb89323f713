//! Storage: one contract, two thin implementations. [`Store`] picks PostgreSQL (production,
//! Supabase-compatible, with roles and row-level security) or SQLite (the embedded default) from
//! the URL scheme, applies that backend's embedded migrations, and offers the operations the use
//! cases need, each a method of the [`Backend`] contract. An in-memory backend keeps the same
//! contract for tests of the use cases. The store sees only ciphertext for tokens and knows
//! nothing of HTTP.

pub mod memory;
pub mod postgres;
mod postgres_migrate;
mod postgres_outbox;
pub mod sqlite;
mod sqlite_outbox;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Migration(#[from] postgres_migrate::MigrationError),
    #[error("row does not decode: {0}")]
    Corrupt(String),
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// The database did not answer a moment ago; not tried again yet (see [`Health`]).
    #[error("the database is unreachable")]
    Unavailable,
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing a statement): the
    /// connection was lost or refused, no connection could be had in time, or the server is
    /// shutting down or starting up (SQLSTATE classes 08 and 57P).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable => true,
            StoreError::Database(
                sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Database(e) => connection_lost(e),
            _ => false,
        }
    }
}

/// Whether `e` means the connection itself is gone (closed socket, broken protocol, or the
/// server ending the session: SQLSTATE classes 08 and 57P), not that the statement failed.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Whether the database is reachable, as the last statements found. While it is not, callers
/// fail at once with [`StoreError::Unavailable`] instead of each waiting for a connection, and
/// one statement every [`Health::PROBE_EVERY`] goes through to find out whether it is back.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since `origin` at which the next probe may go; 0 while healthy.
    next_probe_ms: AtomicU64,
    origin: OnceLock<Instant>,
}

impl Health {
    pub const PROBE_EVERY: Duration = Duration::from_millis(250);

    fn now_ms(&self) -> u64 {
        let origin = *self.origin.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_down(&self) -> bool {
        self.next_probe_ms.load(Ordering::Acquire) != 0
    }

    /// Lets a statement through while healthy, and one per [`Self::PROBE_EVERY`] while down.
    pub fn admit(&self) -> StoreResult<()> {
        let next = self.next_probe_ms.load(Ordering::Acquire);
        if next == 0 {
            return Ok(());
        }
        let now = self.now_ms().max(1);
        let after = now.saturating_add(Self::PROBE_EVERY.as_millis() as u64);
        if now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, after, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        Err(StoreError::Unavailable)
    }

    /// Records what a statement found.
    pub fn observe<T>(&self, result: &StoreResult<T>) {
        match result {
            Ok(_) => {
                if self.next_probe_ms.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!("database reachable again");
                    metrics::gauge!("database_up").set(1.0);
                }
            }
            Err(StoreError::Unavailable) => {}
            Err(e) if e.is_unavailable() => {
                let after = self
                    .now_ms()
                    .saturating_add(Self::PROBE_EVERY.as_millis() as u64);
                if self.next_probe_ms.swap(after, Ordering::AcqRel) == 0 {
                    tracing::warn!(error = %e, "database unreachable; failing fast until it answers");
                    metrics::gauge!("database_up").set(0.0);
                }
            }
            Err(_) => {}
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub(crate) fn hash32(bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash length".into()))
}

pub(crate) fn provider(value: &str) -> StoreResult<ProviderId> {
    ProviderId::from_db(value).ok_or_else(|| StoreError::Corrupt(format!("provider {value:?}")))
}

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Connections for the service's own work (PostgreSQL; SQLite uses at most 8).
    pub pool_size: u32,
    /// Connections for signed-in users' reads (PostgreSQL only): status and connection lists.
    pub read_pool_size: u32,
    pub migrate: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            read_pool_size: 4,
            migrate: true,
        }
    }
}

/// A connection as the connect flow stores it: tokens already sealed by the vault.
#[derive(Clone, Debug)]
pub struct NewConnection {
    pub user_id: UserId,
    pub provider: ProviderId,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub key_id: String,
    pub expires_at: OffsetDateTime,
    pub provider_user_id: String,
    pub provider_email: Option<String>,
    pub display_name: Option<String>,
    pub scopes: Vec<String>,
}

/// How the browser came to the provider, and so how the callback answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnMode {
    /// A popup: the callback page tells the opener and closes.
    Popup,
    /// The app's own window: the callback redirects back to the app's settings page.
    Redirect,
}

impl ReturnMode {
    pub fn as_db(self) -> &'static str {
        match self {
            ReturnMode::Popup => "popup",
            ReturnMode::Redirect => "redirect",
        }
    }

    pub fn from_db(value: &str) -> Self {
        if value == "redirect" {
            ReturnMode::Redirect
        } else {
            ReturnMode::Popup
        }
    }
}

/// One started connect flow. The state and the browser-binding secret are stored only as
/// SHA-256 hashes; the PKCE verifier is sealed.
#[derive(Clone, Debug)]
pub struct Flow {
    pub state_hash: [u8; 32],
    pub user_id: UserId,
    pub provider: ProviderId,
    pub pkce_verifier: Vec<u8>,
    pub key_id: String,
    pub binding_hash: [u8; 32],
    pub app_origin: String,
    pub return_mode: ReturnMode,
    pub expires_at: OffsetDateTime,
}

/// Everything the token path needs about a connection (tokens still sealed).
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub state: ConnectionState,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub key_id: String,
    pub expires_at: OffsetDateTime,
    pub version: i64,
    pub provider_user_id: String,
    pub provider_email: Option<String>,
    pub scopes: Vec<String>,
    pub cooldown_until: Option<OffsetDateTime>,
}

/// A refresh's result, sealed, for the compare-and-swap write.
#[derive(Clone, Debug)]
pub struct Refreshed {
    pub access_token: Vec<u8>,
    /// Always written: the new refresh token, or the old one re-sealed when the provider sent
    /// none (never null).
    pub refresh_token: Vec<u8>,
    pub key_id: String,
    pub expires_at: OffsetDateTime,
    /// Granted scopes, when the provider said.
    pub scopes: Option<Vec<String>>,
}

/// A connection's ciphertexts, for re-encryption under a new key.
#[derive(Clone, Debug)]
pub struct SealedConnection {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub key_id: String,
    pub version: i64,
}

/// Which connections a service listing wants, and where the page starts.
#[derive(Clone, Debug)]
pub struct ListFilter {
    pub provider: Option<ProviderId>,
    pub state: Option<ConnectionState>,
    /// Only connections whose id sorts after this one.
    pub after: Option<uuid::Uuid>,
    pub limit: u32,
}

/// The storage contract: what every backend offers, and the rules each keeps. Rows are
/// versioned (every write that changes tokens or state bumps `version`); a refresh writes only
/// while it holds the row's lease at the version it claimed (compare-and-swap); a lease has an
/// owner and an expiry, and a claim is refused while a live lease or a cooldown stands; a flow
/// can be taken once; idle claims of two owners never overlap; re-sealing loses to any write in
/// between. PostgreSQL and SQLite implement it, and [`memory::MemoryStore`] for tests of the
/// use cases; one suite of contract tests runs against all three. Dispatch is static, through
/// [`Store`].
pub trait Backend {
    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// The caller's connections, read as the caller (RLS on PostgreSQL).
    fn user_connections(
        &self,
        user: UserId,
    ) -> impl Future<Output = StoreResult<Vec<ConnectionSummary>>> + Send;

    /// The caller's connection to `provider`, read as the caller (RLS on PostgreSQL).
    fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> impl Future<Output = StoreResult<Option<ConnectionSummary>>> + Send;

    /// Deletes the user's connection to `provider`, with its `connection.disconnected` event
    /// (`by` whom) when webhooks are configured; true when a row was deleted.
    fn delete_connection(
        &self,
        user: UserId,
        provider: ProviderId,
        by: crate::webhooks::event::DisconnectedBy,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Inserts or atomically replaces the user's connection to the provider (with its
    /// `connection.created` or `connection.reconnected` event when webhooks are configured).
    /// The state-changing operations below write their events in their own transaction too:
    /// `store_refreshed` (`recovered`), `mark_needs_reauth`, `release_refresh_lease` with a
    /// cooldown (`refresh_failing`, once a spell is long enough); see [`Outbox`].
    fn upsert_connection(
        &self,
        new: &NewConnection,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Connections across users, for trusted backends; ordered by id.
    fn list_connections(
        &self,
        filter: &ListFilter,
    ) -> impl Future<Output = StoreResult<Vec<ConnectionListing>>> + Send;

    /// Records a started flow (and forgets flows that expired long ago).
    fn insert_flow(&self, flow: &Flow) -> impl Future<Output = StoreResult<()>> + Send;

    /// Removes and returns the flow with this state hash, if any: a state can be used once.
    fn take_flow(
        &self,
        state_hash: &[u8; 32],
    ) -> impl Future<Output = StoreResult<Option<Flow>>> + Send;

    /// Up to `limit` connections sealed with a key other than `active_key`.
    fn connections_not_on_key(
        &self,
        active_key: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<SealedConnection>>> + Send;

    /// The connection the token path serves (as the service: no user scoping).
    fn token_row(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> impl Future<Output = StoreResult<Option<TokenRow>>> + Send;

    /// Whether another user of the app has a connection to the same account at `provider`
    /// (`provider_user_id`). A scan (no index on the account): called only by a disconnect
    /// about to revoke a whole grant.
    fn account_shared(
        &self,
        provider: ProviderId,
        provider_user_id: &str,
        except: UserId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Claims the refresh lease of connection `id` for `owner` until `lease` from now, if no
    /// live lease is held and the connection is still connected. Returns the row as claimed.
    fn claim_refresh_lease(
        &self,
        id: uuid::Uuid,
        owner: uuid::Uuid,
        lease: std::time::Duration,
    ) -> impl Future<Output = StoreResult<Option<TokenRow>>> + Send;

    /// Stores a refresh's tokens if the row is still at `version` and `owner` holds the lease
    /// (compare-and-swap); bumps the version and releases the lease. True when written.
    fn store_refreshed(
        &self,
        id: uuid::Uuid,
        version: i64,
        owner: uuid::Uuid,
        refreshed: &Refreshed,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The provider refused the grant: one transition to `needs_reauth` (same CAS rule).
    fn mark_needs_reauth(
        &self,
        id: uuid::Uuid,
        version: i64,
        owner: uuid::Uuid,
        reason: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Gives the lease back; with a cooldown, no refresh is tried before it ends.
    fn release_refresh_lease(
        &self,
        id: uuid::Uuid,
        owner: uuid::Uuid,
        cooldown_until: Option<OffsetDateTime>,
        reason: Option<&str>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Claims (with a lease) up to `limit` connected rows not refreshed since `idle_since`, not
    /// leased and not cooling down; replicas share the work without overlap.
    fn claim_idle_connections(
        &self,
        idle_since: OffsetDateTime,
        limit: u32,
        owner: uuid::Uuid,
        lease: std::time::Duration,
    ) -> impl Future<Output = StoreResult<Vec<TokenRow>>> + Send;

    /// The distinct encryption key ids stored rows name (an index skip-scan, cheap at any size).
    fn key_ids_in_use(&self) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// One connection sealed with `key_id`, to check that the key opens it.
    fn one_sealed_with(
        &self,
        key_id: &str,
    ) -> impl Future<Output = StoreResult<Option<SealedConnection>>> + Send;

    /// Replaces a connection's ciphertexts if it is still at `old.version` and `old.key_id`
    /// (a refresh in between wins); true when written.
    fn reseal_connection(
        &self,
        old: &SealedConnection,
        access_token: &[u8],
        refresh_token: Option<&[u8]>,
        key_id: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Gives back every refresh lease `owner` holds (a process shutting down).
    fn release_leases_of(&self, owner: uuid::Uuid)
    -> impl Future<Output = StoreResult<u64>> + Send;

    /// Closes the connection pools (at shutdown).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The storage backend in use.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
    /// In memory, for tests of the use cases; never a user-facing database option.
    Memory(memory::MemoryStore),
}

/// How many more times a statement waits for a pooled connection when the pool timed out but
/// the database can be reached (a burst of load, not an outage): about 1.5 s each.
const BUSY_POOL_WAITS: u32 = 6;

/// Calls the backend. On PostgreSQL the call passes [`Health`] first (failing fast while the
/// database is known to be unreachable) and reports what it found.
///
/// The call is boxed: callers' futures then hold a pointer instead of the backends' statement
/// futures, which are kilobytes each. Requests answered from memory, which only might reach the
/// database, would otherwise copy them whole every time their future moves (one allocation per
/// store call instead; a round trip costs far more).
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        Box::pin(async {
            match $self {
                Store::Postgres($s) => {
                    $s.health().admit()?;
                    let mut result = $call;
                    // No connection in time: a busy pool waits longer (the statement never ran, so
                    // running it again is safe); only a database we cannot reach is an outage.
                    let mut waits = 0;
                    while waits < BUSY_POOL_WAITS
                        && matches!(result, Err(StoreError::Database(sqlx::Error::PoolTimedOut)))
                        && $s.reachable().await
                    {
                        metrics::counter!("database_pool_busy_total").increment(1);
                        waits += 1;
                        result = $call;
                    }
                    $s.health().observe(&result);
                    result
                }
                Store::Sqlite($s) => $call,
                Store::Memory($s) => $call,
            }
        })
        .await
    };
}

mod outbox;
pub use outbox::{
    AttemptOutcome, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    DisabledEndpoint, Outbox, OutboxBackend, Retried,
};
pub use postgres_outbox::CHANNEL as WEBHOOK_CHANNEL;
mod activity;
pub mod activity_batch;
pub use activity::{ActivityBackend, JOURNAL_BATCH, UPSERT_BATCH};

impl Store {
    /// Opens the database `url` names, applying migrations first when `options.migrate`.
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                postgres::PgStore::connect(url, options).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(url, options).await?,
            ))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Applies the migrations of the database `url` names, as the role the URL names.
    pub async fn migrate(url: &str) -> StoreResult<()> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::PgStore::migrate(url).await
        } else if url.starts_with("sqlite:") {
            sqlite::SqliteStore::connect(
                url,
                StoreOptions {
                    pool_size: 1,
                    read_pool_size: 1,
                    migrate: true,
                },
            )
            .await
            .map(|_| ())
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
            Store::Memory(_) => "memory",
        }
    }

    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, s => s.ping().await)
    }

    pub async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        dispatch!(self, s => s.user_connections(user).await)
    }

    pub async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        dispatch!(self, s => s.user_connection(user, provider).await)
    }

    /// Deletes the user's connection to `provider` (with its `connection.disconnected` event);
    /// true when a row was deleted.
    pub async fn delete_connection(
        &self,
        user: UserId,
        provider: ProviderId,
        by: crate::webhooks::event::DisconnectedBy,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.delete_connection(user, provider, by).await)
    }

    pub async fn upsert_connection(&self, new: &NewConnection) -> StoreResult<()> {
        dispatch!(self, s => s.upsert_connection(new).await)
    }

    pub async fn list_connections(
        &self,
        filter: &ListFilter,
    ) -> StoreResult<Vec<ConnectionListing>> {
        dispatch!(self, s => s.list_connections(filter).await)
    }

    pub async fn insert_flow(&self, flow: &Flow) -> StoreResult<()> {
        dispatch!(self, s => s.insert_flow(flow).await)
    }

    pub async fn take_flow(&self, state_hash: &[u8; 32]) -> StoreResult<Option<Flow>> {
        dispatch!(self, s => s.take_flow(state_hash).await)
    }

    pub async fn connections_not_on_key(
        &self,
        active_key: &str,
        limit: u32,
    ) -> StoreResult<Vec<SealedConnection>> {
        dispatch!(self, s => s.connections_not_on_key(active_key, limit).await)
    }

    pub async fn token_row(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<TokenRow>> {
        dispatch!(self, s => s.token_row(user, provider).await)
    }

    pub async fn account_shared(
        &self,
        provider: ProviderId,
        provider_user_id: &str,
        except: UserId,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.account_shared(provider, provider_user_id, except).await)
    }

    pub async fn claim_refresh_lease(
        &self,
        id: uuid::Uuid,
        owner: uuid::Uuid,
        lease: std::time::Duration,
    ) -> StoreResult<Option<TokenRow>> {
        dispatch!(self, s => s.claim_refresh_lease(id, owner, lease).await)
    }

    pub async fn store_refreshed(
        &self,
        id: uuid::Uuid,
        version: i64,
        owner: uuid::Uuid,
        refreshed: &Refreshed,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.store_refreshed(id, version, owner, refreshed).await)
    }

    pub async fn mark_needs_reauth(
        &self,
        id: uuid::Uuid,
        version: i64,
        owner: uuid::Uuid,
        reason: &str,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.mark_needs_reauth(id, version, owner, reason).await)
    }

    pub async fn release_refresh_lease(
        &self,
        id: uuid::Uuid,
        owner: uuid::Uuid,
        cooldown_until: Option<OffsetDateTime>,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.release_refresh_lease(id, owner, cooldown_until, reason).await)
    }

    pub async fn claim_idle_connections(
        &self,
        idle_since: OffsetDateTime,
        limit: u32,
        owner: uuid::Uuid,
        lease: std::time::Duration,
    ) -> StoreResult<Vec<TokenRow>> {
        dispatch!(self, s => s.claim_idle_connections(idle_since, limit, owner, lease).await)
    }

    pub async fn key_ids_in_use(&self) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.key_ids_in_use().await)
    }

    pub async fn one_sealed_with(&self, key_id: &str) -> StoreResult<Option<SealedConnection>> {
        dispatch!(self, s => s.one_sealed_with(key_id).await)
    }

    pub async fn reseal_connection(
        &self,
        old: &SealedConnection,
        access_token: &[u8],
        refresh_token: Option<&[u8]>,
        key_id: &str,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.reseal_connection(old, access_token, refresh_token, key_id).await)
    }

    pub async fn release_leases_of(&self, owner: uuid::Uuid) -> StoreResult<u64> {
        dispatch!(self, s => s.release_leases_of(owner).await)
    }

    /// Whether the database is known to be unreachable right now.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Store::Postgres(s) => s.health().is_down(),
            Store::Sqlite(_) | Store::Memory(_) => false,
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.close().await,
            Store::Sqlite(s) => s.close().await,
            Store::Memory(s) => s.close().await,
        }
    }

    /// A new, empty store in memory (tests of the use cases; not offered to users).
    pub fn memory() -> Self {
        Store::Memory(memory::MemoryStore::default())
    }
}
