//! PostgreSQL (and Supabase) implementation of the store.
//!
//! Every pooled connection switches to the NOLOGIN role `connect_service` right after it is
//! opened, so the service runs with exactly the privileges the migration grants, whatever role
//! `DATABASE_URL` names. Queries on behalf of a user run in a transaction that also sets
//! `role = authenticated` and `request.jwt.claims` locally, as PostgREST does, so row-level
//! security filters them even if a `WHERE user_id` were forgotten; both settings end with the
//! transaction. Migrations run on a separate connection as the URL's own role (the owner).

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ListFilter, NewConnection, StoreError, StoreOptions, StoreResult};
use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The role the service's pooled connections run as.
pub const SERVICE_ROLE: &str = "connect_service";

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
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
            user_id: UserId(r.user_id),
            provider: ProviderId::from_db(&r.provider)
                .ok_or_else(|| StoreError::Corrupt(format!("provider {:?}", r.provider)))?,
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
            provider: ProviderId::from_db(&r.provider)
                .ok_or_else(|| StoreError::Corrupt(format!("provider {:?}", r.provider)))?
                .as_str(),
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

const SUMMARY_COLUMNS: &str = "user_id, provider, status, provider_email, display_name, scopes, \
                               created_at, updated_at, last_refreshed_at";

impl PgStore {
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        if options.migrate {
            Self::migrate(url).await?;
        }
        let connect = PgConnectOptions::from_str(url)?.application_name("celeste-connect");
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "set role connect_service; \
                         set statement_timeout = '15s'; \
                         set lock_timeout = '5s'; \
                         set idle_in_transaction_session_timeout = '30s'",
                    )
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }

    /// Applies the embedded migrations as the URL's role; the bookkeeping table lives in
    /// schema `connect`, not in Supabase's exposed `public`.
    pub async fn migrate(url: &str) -> StoreResult<()> {
        let options = PgConnectOptions::from_str(url)?.application_name("celeste-connect-migrate");
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::raw_sql("create schema if not exists connect; set search_path = connect")
            .execute(&mut conn)
            .await?;
        MIGRATOR.run(&mut conn).await?;
        sqlx::raw_sql(
            "revoke all on connect._sqlx_migrations from public, anon, authenticated; \
             alter table connect._sqlx_migrations enable row level security",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(())
    }

    /// The pool, for operations and tests that inspect connections directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction acting as `user`: role `authenticated`, claims naming only the
    /// user. Row-level security applies to everything run in it.
    pub async fn begin_as_user(&self, user: UserId) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        let claims = serde_json::json!({ "sub": user.0, "role": "authenticated" }).to_string();
        sqlx::query("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)")
            .bind(claims)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        let mut tx = self.begin_as_user(user).await?;
        let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SUMMARY_COLUMNS} from connect.integration_tokens \
             where user_id = $1 order by provider"
        )))
        .bind(user.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(ConnectionSummary::try_from).collect()
    }

    pub async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        let mut tx = self.begin_as_user(user).await?;
        let row: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SUMMARY_COLUMNS} from connect.integration_tokens \
             where user_id = $1 and provider = $2"
        )))
        .bind(user.0)
        .bind(provider.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(ConnectionSummary::try_from).transpose()
    }

    pub async fn delete_connection(&self, user: UserId, provider: ProviderId) -> StoreResult<bool> {
        let result = sqlx::query(
            "delete from connect.integration_tokens where user_id = $1 and provider = $2",
        )
        .bind(user.0)
        .bind(provider.as_str())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn upsert_connection(&self, c: &NewConnection) -> StoreResult<()> {
        sqlx::query(
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
               refresh_lease_until = null, version = connect.integration_tokens.version + 1",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_connections(&self, f: &ListFilter) -> StoreResult<Vec<ConnectionListing>> {
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

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
