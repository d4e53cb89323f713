//! Newtypes and views shared by every layer: who a user is, which state a connection is in, and
//! what a status answer contains. Nothing here talks to the network or the database, and no
//! type here can hold a token in a form that prints.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::provider::ProviderId;

/// A user of the host app: the `sub` of their verified JWT, and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The stored state of a connection (a missing row is [`ConnectionState::NotConnected`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    NotConnected,
    Connected,
    /// The provider refused the refresh token: consent revoked, token expired, admin reset.
    NeedsReauth,
}

impl ConnectionState {
    /// The value stored in the `status` column (rows exist only for these two states).
    pub fn as_db(self) -> &'static str {
        match self {
            ConnectionState::NotConnected => "not_connected",
            ConnectionState::Connected => "connected",
            ConnectionState::NeedsReauth => "needs_reauth",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "connected" => ConnectionState::Connected,
            "needs_reauth" => ConnectionState::NeedsReauth,
            _ => ConnectionState::NotConnected,
        }
    }
}

/// The non-secret columns of a connection: what a user may see about their own row.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionSummary {
    /// The row's id: what change notifications name (never shown to users).
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub state: ConnectionState,
    pub provider_email: Option<String>,
    pub display_name: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_refreshed_at: Option<OffsetDateTime>,
}

/// The answer of `GET /v1/integrations/{provider}/status`: never a token.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// Canonical provider id (`microsoft` for the `outlook` alias).
    #[schema(example = "microsoft")]
    pub provider: &'static str,
    pub connected: bool,
    pub status: ConnectionState,
    pub provider_email: Option<String>,
    pub display_name: Option<String>,
    /// Scopes the provider granted.
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub connected_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_refreshed_at: Option<OffsetDateTime>,
}

impl StatusView {
    pub fn not_connected(provider: ProviderId) -> Self {
        Self {
            provider: provider.as_str(),
            connected: false,
            status: ConnectionState::NotConnected,
            provider_email: None,
            display_name: None,
            scopes: Vec::new(),
            connected_at: None,
            updated_at: None,
            last_refreshed_at: None,
        }
    }
}

impl From<ConnectionSummary> for StatusView {
    fn from(c: ConnectionSummary) -> Self {
        Self {
            provider: c.provider.as_str(),
            connected: c.state == ConnectionState::Connected,
            status: c.state,
            provider_email: c.provider_email,
            display_name: c.display_name,
            scopes: c.scopes,
            connected_at: Some(c.created_at),
            updated_at: Some(c.updated_at),
            last_refreshed_at: c.last_refreshed_at,
        }
    }
}

/// A connection as trusted backends list it (`GET /v1/service/integrations`): no token.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConnectionListing {
    /// Opaque, stable; also the paging cursor.
    pub id: Uuid,
    pub user_id: Uuid,
    #[schema(example = "microsoft")]
    pub provider: &'static str,
    pub status: ConnectionState,
    pub provider_email: Option<String>,
    pub display_name: Option<String>,
    pub scopes: Vec<String>,
    /// When the stored access token expires (the token endpoint refreshes it first).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub connected_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_refreshed_at: Option<OffsetDateTime>,
}
