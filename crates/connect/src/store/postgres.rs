//! PostgreSQL (and Supabase) implementation of the store.
//!
//! Every pooled connection switches to the NOLOGIN role `connect_service` right after it is
//! opened, so the service runs with exactly the privileges the migrations grant, whatever role
//! `DATABASE_URL` names. Queries on behalf of a user switch to `connect_user_reader` (the
//! service's own read-only role, never Supabase's `authenticated`) and set `request.jwt.claims`
//! locally, as PostgREST does, so row-level security filters them even if a `WHERE user_id` were
//! forgotten; both settings end with the statement's transaction. The signed-in users' reads
//! (one statement, `connect.read_own_statuses`) use a small pool of their own
//! (`UserReadConnections`). Migrations (`postgres_migrate`) run on a separate connection as the
//! URL's own role (the owner).

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Backend, Flow, ListFilter, NewConnection, Refreshed, ReturnMode, SealedConnection, StoreError,
    StoreOptions, StoreResult, TokenRow, hash32, provider,
};
use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;
use crate::webhooks::event::{self, DisconnectedBy, Subject};

pub use super::postgres_migrate::{Advice, MigrationError, migration_checksums};

/// The role the service's pooled connections run as.
pub const SERVICE_ROLE: &str = "connect_service";

/// The role a signed-in user's reads run as, under row-level security with that user's claims.
/// A role of the service's own: it can read nothing outside schema `connect`.
pub const USER_READ_ROLE: &str = "connect_user_reader";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections for `LISTEN` (the caches' and the webhook worker's): each listener keeps its
    /// connection for its whole life, so they come from a pool of their own, not from `pool`.
    listeners: PgPool,
    /// How to open one connection of our own, to tell a busy pool from a database that is gone.
    probe: std::sync::Arc<PgConnectOptions>,
    user_reads: UserReads,
    health: std::sync::Arc<super::Health>,
    outbox: std::sync::Arc<super::Outbox>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// What every service connection runs right after it is opened.
const SESSION_SETUP: &str = "set role connect_service; \
                             set statement_timeout = '15s'; \
                             set lock_timeout = '5s'; \
                             set idle_in_transaction_session_timeout = '30s'";

/// Longest wait for a pooled connection. While the database is down every wait runs this long
/// (the pool keeps trying to connect), so it bounds how long the first requests of an outage
/// take before they answer `storage_unavailable`; later ones fail at once (`Health`).
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A connection idle at least this long is pinged before it is handed out; busier ones are not.
const IDLE_PING_AFTER: Duration = Duration::from_secs(5);

type UserReads = deadpool::managed::Pool<UserReadConnections>;

/// The connections for signed-in users' reads (status, connection lists): the one statement
/// such a request sends. They are handed out and taken back without a round trip of their own
/// (sqlx's pool pings each connection it takes back), so the read is exactly one round trip;
/// only a connection idle for [`IDLE_PING_AFTER`] is pinged first. A connection whose statement
/// failed is dropped, not reused.
struct UserReadConnections {
    connect: PgConnectOptions,
}

impl deadpool::managed::Manager for UserReadConnections {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.connect).await?;
        sqlx::raw_sql(SESSION_SETUP).execute(&mut conn).await?;
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        if metrics.last_used() >= IDLE_PING_AFTER {
            conn.ping().await?;
        }
        Ok(())
    }
}

fn pool_error(e: deadpool::managed::PoolError<sqlx::Error>) -> StoreError {
    use deadpool::managed::PoolError;
    StoreError::Database(match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            sqlx::Error::PoolClosed
        }
    })
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    user_id: Uuid,
    provider: String,
    status: String,
    provider_email: Option<String>,
    display_name: Option<String>,
    scopes: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    last_refreshed_at: Option<OffsetDateTime>,
}

impl TryFrom<SummaryRow> for ConnectionSummary {
    type Error = StoreError;

    fn try_from(r: SummaryRow) -> StoreResult<Self> {
        Ok(ConnectionSummary {
            id: r.id,
            user_id: UserId(r.user_id),
            provider: provider(&r.provider)?,
            state: ConnectionState::from_db(&r.status),
            provider_email: r.provider_email,
            display_name: r.display_name,
            scopes: r.scopes,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_refreshed_at: r.last_refreshed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ListingRow {
    id: Uuid,
    user_id: Uuid,
    provider: String,
    status: String,
    provider_email: Option<String>,
    display_name: Option<String>,
    scopes: Vec<String>,
    expires_at: OffsetDateTime,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    last_refreshed_at: Option<OffsetDateTime>,
}

impl TryFrom<ListingRow> for ConnectionListing {
    type Error = StoreError;

    fn try_from(r: ListingRow) -> StoreResult<Self> {
        Ok(ConnectionListing {
            id: r.id,
            user_id: r.user_id,
            provider: provider(&r.provider)?.as_str(),
            status: ConnectionState::from_db(&r.status),
            provider_email: r.provider_email,
            display_name: r.display_name,
            scopes: r.scopes,
            expires_at: r.expires_at,
            connected_at: r.created_at,
            updated_at: r.updated_at,
            last_refreshed_at: r.last_refreshed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FlowRow {
    state_hash: Vec<u8>,
    user_id: Uuid,
    provider: String,
    pkce_verifier: Vec<u8>,
    key_id: String,
    binding_hash: Vec<u8>,
    app_origin: String,
    return_mode: String,
    expires_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    id: Uuid,
    user_id: Uuid,
    provider: String,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    key_id: String,
    version: i64,
}

impl TryFrom<SealedRow> for SealedConnection {
    type Error = StoreError;

    fn try_from(r: SealedRow) -> StoreResult<Self> {
        Ok(SealedConnection {
            id: r.id,
            user_id: UserId(r.user_id),
            provider: provider(&r.provider)?,
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            key_id: r.key_id,
            version: r.version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TokenRowDb {
    id: Uuid,
    user_id: Uuid,
    provider: String,
    status: String,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    key_id: String,
    expires_at: OffsetDateTime,
    version: i64,
    provider_user_id: String,
    provider_email: Option<String>,
    scopes: Vec<String>,
    refresh_cooldown_until: Option<OffsetDateTime>,
}

impl TryFrom<TokenRowDb> for TokenRow {
    type Error = StoreError;

    fn try_from(r: TokenRowDb) -> StoreResult<Self> {
        Ok(TokenRow {
            id: r.id,
            user_id: UserId(r.user_id),
            provider: provider(&r.provider)?,
            state: ConnectionState::from_db(&r.status),
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            key_id: r.key_id,
            expires_at: r.expires_at,
            version: r.version,
            provider_user_id: r.provider_user_id,
            provider_email: r.provider_email,
            scopes: r.scopes,
            cooldown_until: r.refresh_cooldown_until,
        })
    }
}

/// A released lease's connection, to tell whether its failing spell is long enough to report.
#[derive(sqlx::FromRow)]
struct Released {
    user_id: Uuid,
    provider: String,
    status: String,
    refresh_failing_since: Option<OffsetDateTime>,
    refresh_failing_notified: bool,
    last_error: Option<String>,
    failing_long_enough: bool,
}

/// Listeners a process runs at most: the caches' and the webhook worker's.
const LISTENERS: u32 = 2;

const TOKEN_COLUMNS: &str = "id, user_id, provider, status, access_token, refresh_token, key_id, expires_at, version, provider_user_id, provider_email, scopes, refresh_cooldown_until";

impl PgStore {
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        if options.migrate {
            Self::migrate(url).await?;
        }
        let connect = PgConnectOptions::from_str(url)?.application_name("celeste-connect");
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SESSION_SETUP).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await?;
        // Opened when a listener starts; no session setup (LISTEN needs no role).
        let listeners = PgPoolOptions::new()
            .max_connections(LISTENERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(connect.clone().application_name("celeste-connect-listen"));
        let probe = std::sync::Arc::new(connect.clone().application_name("celeste-connect-probe"));
        let connect = connect.application_name("celeste-connect-reads");
        let user_reads = UserReads::builder(UserReadConnections { connect })
            .max_size(options.read_pool_size.max(1) as usize)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .recycle_timeout(Some(ACQUIRE_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(sqlx::Error::Configuration(e.into())))?;
        Ok(Self {
            pool,
            listeners,
            probe,
            user_reads,
            health: Default::default(),
            outbox: Default::default(),
        })
    }

    pub fn with_outbox(mut self, outbox: std::sync::Arc<super::Outbox>) -> Self {
        self.outbox = outbox;
        self
    }

    pub fn outbox(&self) -> &std::sync::Arc<super::Outbox> {
        &self.outbox
    }

    /// Whether a new connection to the database can be opened right now (within 1 s). A pool
    /// that timed out while this holds is busy, not cut off from its database.
    pub async fn reachable(&self) -> bool {
        let opened = tokio::time::timeout(
            Duration::from_secs(1),
            PgConnection::connect_with(&self.probe),
        )
        .await;
        match opened {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            _ => false,
        }
    }

    /// Whether the database answered the last statements (see [`super::Health`]).
    pub fn health(&self) -> &super::Health {
        &self.health
    }

    /// Applies the embedded migrations as the URL's role; see `postgres_migrate`.
    pub async fn migrate(url: &str) -> StoreResult<()> {
        super::postgres_migrate::migrate(url).await
    }

    /// The pool, for operations and tests that inspect connections directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool `LISTEN` connections come from (one per listener, held while it lives).
    pub fn listener_pool(&self) -> &PgPool {
        &self.listeners
    }

    /// Opens a transaction acting as `user`: role `connect_user_reader`, claims naming only the
    /// user. Row-level security applies to everything run in it.
    pub async fn begin_as_user(&self, user: UserId) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        let claims = serde_json::json!({ "sub": user.0, "role": "authenticated" }).to_string();
        sqlx::query(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
        )
        .bind(USER_READ_ROLE)
        .bind(claims)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    /// Reads the caller's rows in one prepared round trip through
    /// `connect.read_own_statuses`, which drops to role `connect_user_reader` with the
    /// caller's claims for that statement only, so row-level security decides what it sees.
    async fn read_as_user(
        &self,
        user: UserId,
        provider: Option<ProviderId>,
    ) -> StoreResult<Vec<ConnectionSummary>> {
        let rows: Vec<SummaryRow> = self
            .user_read(|conn| {
                Box::pin(
                    sqlx::query_as("select * from connect.read_own_statuses($1, $2)")
                        .bind(user.0)
                        .bind(provider.map(ProviderId::as_str))
                        .fetch_all(conn),
                )
            })
            .await?;
        rows.into_iter().map(ConnectionSummary::try_from).collect()
    }

    /// Runs one signed-in user's read (a call of a `connect.read_own_…` function) on the
    /// user-read pool. A connection the database closed while it sat idle (a restart, a
    /// terminated backend) fails at its first use; the read is retried on another, at most
    /// once per pooled connection plus one newly opened.
    pub(crate) async fn user_read<T, F>(&self, mut read: F) -> StoreResult<T>
    where
        F: for<'c> FnMut(
            &'c mut PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        let mut attempts = self.user_reads.status().max_size + 1;
        loop {
            let mut conn = self.user_reads.get().await.map_err(pool_error)?;
            match read(&mut conn).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    drop(deadpool::managed::Object::take(conn));
                    attempts -= 1;
                    if !super::connection_lost(&e) || attempts == 0 {
                        return Err(e.into());
                    }
                    tracing::info!(error = %e, "user-read connection was closed; retrying the read");
                }
            }
        }
    }

    /// A connection of the user-read pool, for tests that inspect what it carries.
    pub async fn user_read_connection(
        &self,
    ) -> StoreResult<impl std::ops::DerefMut<Target = PgConnection>> {
        self.user_reads.get().await.map_err(pool_error)
    }
}

impl Backend for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        self.read_as_user(user, None).await
    }

    async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        Ok(self
            .read_as_user(user, Some(provider))
            .await?
            .into_iter()
            .next())
    }

    async fn delete_connection(
        &self,
        user: UserId,
        provider: ProviderId,
        by: DisconnectedBy,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<Uuid> = sqlx::query_scalar(
            "delete from connect.integration_tokens where user_id = $1 and provider = $2 returning id",
        )
        .bind(user.0)
        .bind(provider.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(id), true) = (deleted, self.outbox.is_active()) {
            let event = event::disconnected(id, user, provider, by);
            super::postgres_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
        }
        tx.commit().await?;
        self.outbox.announce(deleted.is_some());
        Ok(deleted.is_some())
    }

    async fn upsert_connection(&self, c: &NewConnection) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // What was stored before decides the event: created, or reconnected (same account?).
        let before: Option<(String, String)> = if self.outbox.is_active() {
            sqlx::query_as(
                "select status, provider_user_id from connect.integration_tokens \
                 where user_id = $1 and provider = $2 for update",
            )
            .bind(c.user_id.0)
            .bind(c.provider.as_str())
            .fetch_optional(&mut *tx)
            .await?
        } else {
            None
        };
        let id: Uuid = sqlx::query_scalar(
            "insert into connect.integration_tokens \
               (user_id, provider, access_token, refresh_token, key_id, expires_at, \
                provider_user_id, provider_email, display_name, scopes, status, last_refreshed_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'connected', now()) \
             on conflict (user_id, provider) do update set \
               access_token = excluded.access_token, refresh_token = excluded.refresh_token, \
               key_id = excluded.key_id, expires_at = excluded.expires_at, \
               provider_user_id = excluded.provider_user_id, provider_email = excluded.provider_email, \
               display_name = excluded.display_name, scopes = excluded.scopes, status = 'connected', \
               last_refreshed_at = now(), last_error = null, refresh_lease_owner = null, \
               refresh_lease_until = null, refresh_cooldown_until = null, \
               refresh_failing_since = null, refresh_failing_notified = false, \
               version = connect.integration_tokens.version + 1 \
             returning id",
        )
        .bind(c.user_id.0)
        .bind(c.provider.as_str())
        .bind(&c.access_token)
        .bind(&c.refresh_token)
        .bind(&c.key_id)
        .bind(c.expires_at)
        .bind(&c.provider_user_id)
        .bind(&c.provider_email)
        .bind(&c.display_name)
        .bind(&c.scopes)
        .fetch_one(&mut *tx)
        .await?;
        if self.outbox.is_active() {
            let event = event::connected(
                id,
                c,
                before.as_ref().map(|(s, p)| (s.as_str(), p.as_str())),
            );
            super::postgres_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
        }
        tx.commit().await?;
        self.outbox.announce(true);
        Ok(())
    }

    async fn list_connections(&self, f: &ListFilter) -> StoreResult<Vec<ConnectionListing>> {
        let rows: Vec<ListingRow> = sqlx::query_as(
            "select id, user_id, provider, status, provider_email, display_name, scopes, expires_at, \
                    created_at, updated_at, last_refreshed_at \
             from connect.integration_tokens \
             where ($1::text is null or provider = $1) and ($2::text is null or status = $2) \
               and ($3::uuid is null or id > $3) \
             order by id limit $4",
        )
        .bind(f.provider.map(|p| p.as_str()))
        .bind(f.state.map(|s| s.as_db()))
        .bind(f.after)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ConnectionListing::try_from).collect()
    }

    async fn insert_flow(&self, f: &Flow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from connect.oauth_flows where expires_at < now() - interval '1 hour'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into connect.oauth_flows (state_hash, user_id, provider, pkce_verifier, key_id, \
               binding_hash, app_origin, return_mode, expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.state_hash[..])
        .bind(f.user_id.0)
        .bind(f.provider.as_str())
        .bind(&f.pkce_verifier)
        .bind(&f.key_id)
        .bind(&f.binding_hash[..])
        .bind(&f.app_origin)
        .bind(f.return_mode.as_db())
        .bind(f.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_flow(&self, state_hash: &[u8; 32]) -> StoreResult<Option<Flow>> {
        let row: Option<FlowRow> = sqlx::query_as(
            "delete from connect.oauth_flows where state_hash = $1 \
             returning state_hash, user_id, provider, pkce_verifier, key_id, binding_hash, app_origin, \
                       return_mode, expires_at",
        )
        .bind(&state_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Flow {
                state_hash: hash32(&r.state_hash)?,
                user_id: UserId(r.user_id),
                provider: provider(&r.provider)?,
                pkce_verifier: r.pkce_verifier,
                key_id: r.key_id,
                binding_hash: hash32(&r.binding_hash)?,
                app_origin: r.app_origin,
                return_mode: ReturnMode::from_db(&r.return_mode),
                expires_at: r.expires_at,
            })
        })
        .transpose()
    }

    async fn connections_not_on_key(
        &self,
        active_key: &str,
        limit: u32,
    ) -> StoreResult<Vec<SealedConnection>> {
        let rows: Vec<SealedRow> = sqlx::query_as(
            "select id, user_id, provider, access_token, refresh_token, key_id, version \
             from connect.integration_tokens where key_id <> $1 order by id limit $2",
        )
        .bind(active_key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SealedConnection::try_from).collect()
    }

    async fn account_shared(
        &self,
        provider: ProviderId,
        provider_user_id: &str,
        except: UserId,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "select exists (select 1 from connect.integration_tokens \
             where provider = $1 and provider_user_id = $2 and user_id <> $3)",
        )
        .bind(provider.as_str())
        .bind(provider_user_id)
        .bind(except.0)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn token_row(&self, user: UserId, provider: ProviderId) -> StoreResult<Option<TokenRow>> {
        let row: Option<TokenRowDb> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {TOKEN_COLUMNS} from connect.integration_tokens where user_id = $1 and provider = $2"
        )))
        .bind(user.0)
        .bind(provider.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRow::try_from).transpose()
    }

    async fn claim_refresh_lease(
        &self,
        id: Uuid,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Option<TokenRow>> {
        let row: Option<TokenRowDb> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update connect.integration_tokens \
             set refresh_lease_owner = $2, refresh_lease_until = now() + make_interval(secs => $3) \
             where id = $1 and status = 'connected' \
               and (refresh_lease_until is null or refresh_lease_until < now()) \
               and (refresh_cooldown_until is null or refresh_cooldown_until <= now()) \
             returning {TOKEN_COLUMNS}"
        )))
        .bind(id)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRow::try_from).transpose()
    }

    async fn store_refreshed(
        &self,
        id: Uuid,
        version: i64,
        owner: Uuid,
        r: &Refreshed,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // A refresh that ends a failing spell for which refresh_failing was sent: recovered.
        let failing: Option<(Uuid, String, Option<OffsetDateTime>, bool)> =
            if self.outbox.is_active() {
                sqlx::query_as(
                    "select user_id, provider, refresh_failing_since, refresh_failing_notified \
                 from connect.integration_tokens \
                 where id = $1 and version = $2 and refresh_lease_owner = $3 for update",
                )
                .bind(id)
                .bind(version)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                None
            };
        let result = sqlx::query(
            "update connect.integration_tokens set access_token = $4, refresh_token = $5, key_id = $6, \
               expires_at = $7, scopes = coalesce($8, scopes), last_refreshed_at = now(), last_error = null, \
               refresh_cooldown_until = null, refresh_lease_owner = null, refresh_lease_until = null, \
               refresh_failing_since = null, refresh_failing_notified = false, version = version + 1 \
             where id = $1 and version = $2 and refresh_lease_owner = $3",
        )
        .bind(id)
        .bind(version)
        .bind(owner)
        .bind(&r.access_token)
        .bind(&r.refresh_token)
        .bind(&r.key_id)
        .bind(r.expires_at)
        .bind(&r.scopes)
        .execute(&mut *tx)
        .await?;
        let stored = result.rows_affected() == 1;
        let mut written = false;
        if let (true, Some((user, provider, Some(since), true))) = (stored, failing) {
            let subject = Subject {
                connection_id: id,
                user: UserId(user),
                provider: super::provider(&provider)?,
                status: ConnectionState::Connected,
            };
            let event = event::recovered(subject, since);
            super::postgres_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
            written = true;
        }
        tx.commit().await?;
        self.outbox.announce(written);
        Ok(stored)
    }

    async fn mark_needs_reauth(
        &self,
        id: Uuid,
        version: i64,
        owner: Uuid,
        reason: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let marked: Option<(Uuid, String)> = sqlx::query_as(
            "update connect.integration_tokens set status = 'needs_reauth', last_error = $4, \
               refresh_lease_owner = null, refresh_lease_until = null, \
               refresh_failing_since = null, refresh_failing_notified = false, version = version + 1 \
             where id = $1 and version = $2 and refresh_lease_owner = $3 \
             returning user_id, provider",
        )
        .bind(id)
        .bind(version)
        .bind(owner)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let written = self.outbox.is_active() && marked.is_some();
        if let (Some((user, provider)), true) = (&marked, written) {
            let event = event::needs_reauth(id, UserId(*user), super::provider(provider)?, reason);
            super::postgres_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
        }
        tx.commit().await?;
        self.outbox.announce(written);
        Ok(marked.is_some())
    }

    async fn release_refresh_lease(
        &self,
        id: Uuid,
        owner: Uuid,
        cooldown_until: Option<OffsetDateTime>,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // A cooldown means the refresh failed: a failing spell starts (or goes on).
        let released: Option<Released> =
            sqlx::query_as(
                "update connect.integration_tokens set refresh_lease_owner = null, refresh_lease_until = null, \
                   refresh_cooldown_until = coalesce($3, refresh_cooldown_until), \
                   last_error = coalesce($4, last_error), \
                   refresh_failing_since = case when $3::timestamptz is null then refresh_failing_since \
                                                else coalesce(refresh_failing_since, now()) end \
                 where id = $1 and refresh_lease_owner = $2 \
                 returning user_id, provider, status, refresh_failing_since, refresh_failing_notified, last_error, \
                           coalesce(refresh_failing_since <= now() - make_interval(secs => $5), false) as failing_long_enough",
            )
            .bind(id)
            .bind(owner)
            .bind(cooldown_until)
            .bind(reason)
            .bind(self.outbox.failing_after.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?;
        let mut written = false;
        if let (
            Some(Released {
                user_id: user,
                provider,
                status,
                refresh_failing_since: Some(since),
                refresh_failing_notified: false,
                last_error,
                failing_long_enough: true,
            }),
            true,
            Some(_),
        ) = (released, self.outbox.is_active(), cooldown_until)
        {
            // Once per spell: the flag is cleared by the next successful refresh or reconnect.
            sqlx::query(
                "update connect.integration_tokens set refresh_failing_notified = true where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let subject = Subject {
                connection_id: id,
                user: UserId(user),
                provider: super::provider(&provider)?,
                status: ConnectionState::from_db(&status),
            };
            let event = event::refresh_failing(subject, last_error.as_deref(), since);
            super::postgres_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
            written = true;
        }
        tx.commit().await?;
        self.outbox.announce(written);
        Ok(())
    }

    async fn claim_idle_connections(
        &self,
        idle_since: OffsetDateTime,
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<TokenRow>> {
        let rows: Vec<TokenRowDb> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update connect.integration_tokens \
             set refresh_lease_owner = $3, refresh_lease_until = now() + make_interval(secs => $4) \
             where id in ( \
               select id from connect.integration_tokens \
               where status = 'connected' and coalesce(last_refreshed_at, created_at) < $1 \
                 and (refresh_lease_until is null or refresh_lease_until < now()) \
                 and (refresh_cooldown_until is null or refresh_cooldown_until < now()) \
               order by coalesce(last_refreshed_at, created_at) \
               limit $2 for update skip locked) \
             returning {TOKEN_COLUMNS}"
        )))
        .bind(idle_since)
        .bind(i64::from(limit))
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRow::try_from).collect()
    }

    async fn key_ids_in_use(&self) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "with recursive k(key_id) as ( \
               select min(key_id) from connect.integration_tokens \
               union all \
               select (select min(t.key_id) from connect.integration_tokens t where t.key_id > k.key_id) from k where k.key_id is not null) \
             select key_id from k where key_id is not null",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn one_sealed_with(&self, key_id: &str) -> StoreResult<Option<SealedConnection>> {
        let row: Option<SealedRow> = sqlx::query_as(
            "select id, user_id, provider, access_token, refresh_token, key_id, version \
             from connect.integration_tokens where key_id = $1 limit 1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(SealedConnection::try_from).transpose()
    }

    async fn reseal_connection(
        &self,
        old: &SealedConnection,
        access_token: &[u8],
        refresh_token: Option<&[u8]>,
        key_id: &str,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "update connect.integration_tokens set access_token = $1, refresh_token = $2, key_id = $3 \
             where id = $4 and version = $5 and key_id = $6",
        )
        .bind(access_token)
        .bind(refresh_token)
        .bind(key_id)
        .bind(old.id)
        .bind(old.version)
        .bind(&old.key_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_leases_of(&self, owner: Uuid) -> StoreResult<u64> {
        let result = sqlx::query(
            "update connect.integration_tokens set refresh_lease_owner = null, refresh_lease_until = null \
             where refresh_lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn close(&self) {
        self.user_reads.close();
        // A listener gives its connection back when its pool closes (sqlx cancels its wait).
        self.listeners.close().await;
        self.pool.close().await;
    }
}
