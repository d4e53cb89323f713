//! SQLite implementation of the store: the embedded default for `demo` and single-node use.
//! Same tables as PostgreSQL without roles or row-level security, so every user-scoped query
//! filters by the caller's id explicitly. WAL mode, a busy timeout, and `BEGIN IMMEDIATE` for
//! read-then-write transactions (a deferred one fails at once with SQLITE_BUSY).

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

use super::provider as provider_of;
use super::{
    Backend, Flow, ListFilter, NewConnection, Refreshed, ReturnMode, SealedConnection, StoreError,
    StoreOptions, StoreResult, TokenRow, hash32, provider,
};
use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;
use crate::webhooks::event::{self, DisconnectedBy, Subject};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    outbox: std::sync::Arc<super::Outbox>,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    user_id: String,
    provider: String,
    status: String,
    provider_email: Option<String>,
    display_name: Option<String>,
    scopes: String,
    created_at: i64,
    updated_at: i64,
    last_refreshed_at: Option<i64>,
}

pub(crate) fn to_time(secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl TryFrom<SummaryRow> for ConnectionSummary {
    type Error = StoreError;

    fn try_from(r: SummaryRow) -> StoreResult<Self> {
        Ok(ConnectionSummary {
            id: Uuid::parse_str(&r.id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            user_id: UserId(
                Uuid::parse_str(&r.user_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            provider: provider(&r.provider)?,
            state: ConnectionState::from_db(&r.status),
            provider_email: r.provider_email,
            display_name: r.display_name,
            scopes: serde_json::from_str(&r.scopes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: to_time(r.created_at)?,
            updated_at: to_time(r.updated_at)?,
            last_refreshed_at: r.last_refreshed_at.map(to_time).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ListingRow {
    id: String,
    user_id: String,
    provider: String,
    status: String,
    provider_email: Option<String>,
    display_name: Option<String>,
    scopes: String,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    last_refreshed_at: Option<i64>,
}

fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl TryFrom<ListingRow> for ConnectionListing {
    type Error = StoreError;

    fn try_from(r: ListingRow) -> StoreResult<Self> {
        Ok(ConnectionListing {
            id: parse_uuid(&r.id)?,
            user_id: parse_uuid(&r.user_id)?,
            provider: provider(&r.provider)?.as_str(),
            status: ConnectionState::from_db(&r.status),
            provider_email: r.provider_email,
            display_name: r.display_name,
            scopes: serde_json::from_str(&r.scopes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            expires_at: to_time(r.expires_at)?,
            connected_at: to_time(r.created_at)?,
            updated_at: to_time(r.updated_at)?,
            last_refreshed_at: r.last_refreshed_at.map(to_time).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FlowRow {
    state_hash: Vec<u8>,
    user_id: String,
    provider: String,
    pkce_verifier: Vec<u8>,
    key_id: String,
    binding_hash: Vec<u8>,
    app_origin: String,
    return_mode: String,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    id: String,
    user_id: String,
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
            id: parse_uuid(&r.id)?,
            user_id: UserId(parse_uuid(&r.user_id)?),
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
    id: String,
    user_id: String,
    provider: String,
    status: String,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    key_id: String,
    expires_at: i64,
    version: i64,
    provider_user_id: String,
    provider_email: Option<String>,
    scopes: String,
    refresh_cooldown_until: Option<i64>,
}

impl TryFrom<TokenRowDb> for TokenRow {
    type Error = StoreError;

    fn try_from(r: TokenRowDb) -> StoreResult<Self> {
        Ok(TokenRow {
            id: parse_uuid(&r.id)?,
            user_id: UserId(parse_uuid(&r.user_id)?),
            provider: provider(&r.provider)?,
            state: ConnectionState::from_db(&r.status),
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            key_id: r.key_id,
            expires_at: to_time(r.expires_at)?,
            version: r.version,
            provider_user_id: r.provider_user_id,
            provider_email: r.provider_email,
            scopes: serde_json::from_str(&r.scopes)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            cooldown_until: r.refresh_cooldown_until.map(to_time).transpose()?,
        })
    }
}

/// Whole seconds for SQLite's second-resolution times, rounded up so a lease never ends early.
fn lease_secs(lease: Duration) -> i64 {
    i64::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0)).unwrap_or(i64::MAX)
}

/// A released lease's connection, to tell whether its failing spell is long enough to report.
#[derive(sqlx::FromRow)]
struct Released {
    user_id: String,
    provider: String,
    status: String,
    refresh_failing_since: Option<i64>,
    refresh_failing_notified: bool,
    last_error: Option<String>,
    failing_long_enough: bool,
}

const TOKEN_COLUMNS: &str = "id, user_id, provider, status, access_token, refresh_token, key_id, expires_at, version, provider_user_id, provider_email, scopes, refresh_cooldown_until";

const SUMMARY_COLUMNS: &str = "id, user_id, provider, status, provider_email, display_name, scopes, \
                               created_at, updated_at, last_refreshed_at";

impl SqliteStore {
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.pool_size.clamp(1, 8))
            // An in-memory database vanishes with its last connection.
            .min_connections(1)
            .connect_with(connect)
            .await?;
        if options.migrate {
            MIGRATOR.run(&pool).await?;
        }
        Ok(Self {
            pool,
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

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Backend for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SUMMARY_COLUMNS} from integration_tokens where user_id = $1 order by provider"
        )))
        .bind(user.0.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ConnectionSummary::try_from).collect()
    }

    async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        let row: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SUMMARY_COLUMNS} from integration_tokens where user_id = $1 and provider = $2"
        )))
        .bind(user.0.to_string())
        .bind(provider.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(ConnectionSummary::try_from).transpose()
    }

    async fn delete_connection(
        &self,
        user: UserId,
        provider: ProviderId,
        by: DisconnectedBy,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted: Option<String> = sqlx::query_scalar(
            "delete from integration_tokens where user_id = $1 and provider = $2 returning id",
        )
        .bind(user.0.to_string())
        .bind(provider.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let written = deleted.is_some() && self.outbox.is_active();
        if let (Some(id), true) = (&deleted, written) {
            let event = event::disconnected(parse_uuid(id)?, user, provider, by);
            super::sqlite_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
        }
        tx.commit().await?;
        self.outbox.announce(written);
        Ok(deleted.is_some())
    }

    async fn upsert_connection(&self, c: &NewConnection) -> StoreResult<()> {
        let scopes =
            serde_json::to_string(&c.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before: Option<(String, String)> = if self.outbox.is_active() {
            sqlx::query_as(
                "select status, provider_user_id from integration_tokens where user_id = $1 and provider = $2",
            )
            .bind(c.user_id.0.to_string())
            .bind(c.provider.as_str())
            .fetch_optional(&mut *tx)
            .await?
        } else {
            None
        };
        let id: String = sqlx::query_scalar(
            "insert into integration_tokens \
               (id, user_id, provider, access_token, refresh_token, key_id, expires_at, \
                provider_user_id, provider_email, display_name, scopes, status, last_refreshed_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'connected', unixepoch()) \
             on conflict (user_id, provider) do update set \
               access_token = excluded.access_token, refresh_token = excluded.refresh_token, \
               key_id = excluded.key_id, expires_at = excluded.expires_at, \
               provider_user_id = excluded.provider_user_id, provider_email = excluded.provider_email, \
               display_name = excluded.display_name, scopes = excluded.scopes, status = 'connected', \
               last_refreshed_at = unixepoch(), last_error = null, refresh_lease_owner = null, \
               refresh_lease_until = null, refresh_cooldown_until = null, \
               refresh_failing_since = null, refresh_failing_notified = 0, \
               version = integration_tokens.version + 1, updated_at = unixepoch() \
             returning id",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(c.user_id.0.to_string())
        .bind(c.provider.as_str())
        .bind(&c.access_token)
        .bind(&c.refresh_token)
        .bind(&c.key_id)
        .bind(c.expires_at.unix_timestamp())
        .bind(&c.provider_user_id)
        .bind(&c.provider_email)
        .bind(&c.display_name)
        .bind(scopes)
        .fetch_one(&mut *tx)
        .await?;
        if self.outbox.is_active() {
            let event = event::connected(
                parse_uuid(&id)?,
                c,
                before.as_ref().map(|(s, p)| (s.as_str(), p.as_str())),
            );
            super::sqlite_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
        }
        tx.commit().await?;
        self.outbox.announce(true);
        Ok(())
    }

    async fn list_connections(&self, f: &ListFilter) -> StoreResult<Vec<ConnectionListing>> {
        let rows: Vec<ListingRow> = sqlx::query_as(
            "select id, user_id, provider, status, provider_email, display_name, scopes, expires_at, \
                    created_at, updated_at, last_refreshed_at \
             from integration_tokens \
             where ($1 is null or provider = $1) and ($2 is null or status = $2) \
               and ($3 is null or id > $3) \
             order by id limit $4",
        )
        .bind(f.provider.map(|p| p.as_str()))
        .bind(f.state.map(|s| s.as_db()))
        .bind(f.after.map(|id| id.to_string()))
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ConnectionListing::try_from).collect()
    }

    async fn insert_flow(&self, f: &Flow) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("delete from oauth_flows where expires_at < unixepoch() - 3600")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into oauth_flows (state_hash, user_id, provider, pkce_verifier, key_id, \
               binding_hash, app_origin, return_mode, expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.state_hash[..])
        .bind(f.user_id.0.to_string())
        .bind(f.provider.as_str())
        .bind(&f.pkce_verifier)
        .bind(&f.key_id)
        .bind(&f.binding_hash[..])
        .bind(&f.app_origin)
        .bind(f.return_mode.as_db())
        .bind(f.expires_at.unix_timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_flow(&self, state_hash: &[u8; 32]) -> StoreResult<Option<Flow>> {
        let row: Option<FlowRow> = sqlx::query_as(
            "delete from oauth_flows where state_hash = $1 \
             returning state_hash, user_id, provider, pkce_verifier, key_id, binding_hash, app_origin, \
                       return_mode, expires_at",
        )
        .bind(&state_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Flow {
                state_hash: hash32(&r.state_hash)?,
                user_id: UserId(parse_uuid(&r.user_id)?),
                provider: provider(&r.provider)?,
                pkce_verifier: r.pkce_verifier,
                key_id: r.key_id,
                binding_hash: hash32(&r.binding_hash)?,
                app_origin: r.app_origin,
                return_mode: ReturnMode::from_db(&r.return_mode),
                expires_at: to_time(r.expires_at)?,
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
             from integration_tokens where key_id <> $1 order by id limit $2",
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
            "select exists (select 1 from integration_tokens \
             where provider = $1 and provider_user_id = $2 and user_id <> $3)",
        )
        .bind(provider.as_str())
        .bind(provider_user_id)
        .bind(except.0.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn token_row(&self, user: UserId, provider: ProviderId) -> StoreResult<Option<TokenRow>> {
        let row: Option<TokenRowDb> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {TOKEN_COLUMNS} from integration_tokens where user_id = $1 and provider = $2"
        )))
        .bind(user.0.to_string())
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
            "update integration_tokens \
             set refresh_lease_owner = $2, refresh_lease_until = unixepoch() + $3 \
             where id = $1 and status = 'connected' \
               and (refresh_lease_until is null or refresh_lease_until <= unixepoch()) \
               and (refresh_cooldown_until is null or refresh_cooldown_until <= unixepoch()) \
             returning {TOKEN_COLUMNS}"
        )))
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(lease_secs(lease))
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
        let scopes = r
            .scopes
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let failing: Option<(String, String, Option<i64>, bool)> = if self.outbox.is_active() {
            sqlx::query_as(
                "select user_id, provider, refresh_failing_since, refresh_failing_notified \
                 from integration_tokens where id = $1 and version = $2 and refresh_lease_owner = $3",
            )
            .bind(id.to_string())
            .bind(version)
            .bind(owner.to_string())
            .fetch_optional(&mut *tx)
            .await?
        } else {
            None
        };
        let result = sqlx::query(
            "update integration_tokens set access_token = $4, refresh_token = $5, key_id = $6, \
               expires_at = $7, scopes = coalesce($8, scopes), last_refreshed_at = unixepoch(), last_error = null, \
               refresh_cooldown_until = null, refresh_lease_owner = null, refresh_lease_until = null, \
               refresh_failing_since = null, refresh_failing_notified = 0, \
               version = version + 1, updated_at = unixepoch() \
             where id = $1 and version = $2 and refresh_lease_owner = $3",
        )
        .bind(id.to_string())
        .bind(version)
        .bind(owner.to_string())
        .bind(&r.access_token)
        .bind(&r.refresh_token)
        .bind(&r.key_id)
        .bind(r.expires_at.unix_timestamp())
        .bind(scopes)
        .execute(&mut *tx)
        .await?;
        let stored = result.rows_affected() == 1;
        let mut written = false;
        if let (true, Some((user, provider, Some(since), true))) = (stored, failing) {
            let subject = Subject {
                connection_id: id,
                user: UserId(parse_uuid(&user)?),
                provider: provider_of(&provider)?,
                status: ConnectionState::Connected,
            };
            let event = event::recovered(subject, to_time(since)?);
            super::sqlite_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let marked: Option<(String, String)> = sqlx::query_as(
            "update integration_tokens set status = 'needs_reauth', last_error = $4, \
               refresh_lease_owner = null, refresh_lease_until = null, \
               refresh_failing_since = null, refresh_failing_notified = 0, version = version + 1, \
               updated_at = unixepoch() \
             where id = $1 and version = $2 and refresh_lease_owner = $3 \
             returning user_id, provider",
        )
        .bind(id.to_string())
        .bind(version)
        .bind(owner.to_string())
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let written = self.outbox.is_active() && marked.is_some();
        if let (Some((user, provider)), true) = (&marked, written) {
            let event = event::needs_reauth(
                id,
                UserId(parse_uuid(user)?),
                provider_of(provider)?,
                reason,
            );
            super::sqlite_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let released: Option<Released> =
            sqlx::query_as(
                "update integration_tokens set refresh_lease_owner = null, refresh_lease_until = null, \
                   refresh_cooldown_until = coalesce($3, refresh_cooldown_until), \
                   last_error = coalesce($4, last_error), \
                   refresh_failing_since = case when $3 is null then refresh_failing_since \
                                                else coalesce(refresh_failing_since, unixepoch()) end \
                 where id = $1 and refresh_lease_owner = $2 \
                 returning user_id, provider, status, refresh_failing_since, refresh_failing_notified, last_error, \
                           coalesce(refresh_failing_since <= unixepoch() - $5, 0) as failing_long_enough",
            )
            .bind(id.to_string())
            .bind(owner.to_string())
            .bind(cooldown_until.map(|t| t.unix_timestamp()))
            .bind(reason)
            .bind(i64::try_from(self.outbox.failing_after.as_secs()).unwrap_or(i64::MAX))
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
            sqlx::query("update integration_tokens set refresh_failing_notified = 1 where id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let subject = Subject {
                connection_id: id,
                user: UserId(parse_uuid(&user)?),
                provider: provider_of(&provider)?,
                status: ConnectionState::from_db(&status),
            };
            let event = event::refresh_failing(subject, last_error.as_deref(), to_time(since)?);
            super::sqlite_outbox::write_event(&mut tx, &self.outbox.endpoints, &event).await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<TokenRowDb> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "update integration_tokens \
             set refresh_lease_owner = $3, refresh_lease_until = unixepoch() + $4 \
             where id in ( \
               select id from integration_tokens \
               where status = 'connected' and coalesce(last_refreshed_at, created_at) < $1 \
                 and (refresh_lease_until is null or refresh_lease_until <= unixepoch()) \
                 and (refresh_cooldown_until is null or refresh_cooldown_until <= unixepoch()) \
               order by coalesce(last_refreshed_at, created_at) limit $2) \
             returning {TOKEN_COLUMNS}"
        )))
        .bind(idle_since.unix_timestamp())
        .bind(i64::from(limit))
        .bind(owner.to_string())
        .bind(lease_secs(lease))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(TokenRow::try_from).collect()
    }

    async fn key_ids_in_use(&self) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "with recursive k(key_id) as ( \
               select min(key_id) from integration_tokens \
               union all \
               select (select min(t.key_id) from integration_tokens t where t.key_id > k.key_id) from k where k.key_id is not null) \
             select key_id from k where key_id is not null",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn one_sealed_with(&self, key_id: &str) -> StoreResult<Option<SealedConnection>> {
        let row: Option<SealedRow> = sqlx::query_as(
            "select id, user_id, provider, access_token, refresh_token, key_id, version \
             from integration_tokens where key_id = $1 limit 1",
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
            "update integration_tokens set access_token = $1, refresh_token = $2, key_id = $3 \
             where id = $4 and version = $5 and key_id = $6",
        )
        .bind(access_token)
        .bind(refresh_token)
        .bind(key_id)
        .bind(old.id.to_string())
        .bind(old.version)
        .bind(&old.key_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_leases_of(&self, owner: Uuid) -> StoreResult<u64> {
        let result = sqlx::query(
            "update integration_tokens set refresh_lease_owner = null, refresh_lease_until = null \
             where refresh_lease_owner = $1",
        )
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
