//! Storage: one contract, two thin implementations. [`Store`] picks PostgreSQL (production,
//! Supabase-compatible, with roles and row-level security) or SQLite (the embedded default) from
//! the URL scheme, applies that backend's embedded migrations, and offers the operations the use
//! cases need. The store sees only ciphertext for tokens and knows nothing of HTTP.

pub mod postgres;
pub mod sqlite;

use time::OffsetDateTime;

use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("row does not decode: {0}")]
    Corrupt(String),
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    pub pool_size: u32,
    pub migrate: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
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

/// Which connections a service listing wants, and where the page starts.
#[derive(Clone, Debug)]
pub struct ListFilter {
    pub provider: Option<ProviderId>,
    pub state: Option<ConnectionState>,
    /// Only connections whose id sorts after this one.
    pub after: Option<uuid::Uuid>,
    pub limit: u32,
}

/// The storage backend in use.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Postgres($s) => $call,
            Store::Sqlite($s) => $call,
        }
    };
}

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
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, s => s.ping().await)
    }

    /// The caller's connections, read as the caller (RLS on PostgreSQL).
    pub async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        dispatch!(self, s => s.user_connections(user).await)
    }

    /// The caller's connection to `provider`, read as the caller (RLS on PostgreSQL).
    pub async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        dispatch!(self, s => s.user_connection(user, provider).await)
    }

    /// Deletes the user's connection to `provider`; true when a row was deleted.
    pub async fn delete_connection(&self, user: UserId, provider: ProviderId) -> StoreResult<bool> {
        dispatch!(self, s => s.delete_connection(user, provider).await)
    }

    /// Inserts or atomically replaces the user's connection to the provider.
    pub async fn upsert_connection(&self, new: &NewConnection) -> StoreResult<()> {
        dispatch!(self, s => s.upsert_connection(new).await)
    }

    /// Connections across users, for trusted backends; ordered by id.
    pub async fn list_connections(
        &self,
        filter: &ListFilter,
    ) -> StoreResult<Vec<ConnectionListing>> {
        dispatch!(self, s => s.list_connections(filter).await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}
