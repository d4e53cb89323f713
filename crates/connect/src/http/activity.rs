//! The activity log over HTTP: the operator's query (service key) and a signed-in user's own
//! history of one connection (user JWT, read through row-level security on PostgreSQL).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::activity::read::{self, UserActivity};
use crate::activity::{ActivityEntry, ActivityFilter};
use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::http::ProviderName;
use crate::http::service::{page_limit, provider_filter};
use crate::http::user::configured_provider;
use crate::identity::{CurrentUser, ServiceCaller};
use crate::model::UserId;

/// The signed-in user's recent activity on one connection: which backends (service keys, by
/// name) used it and when, and when it was connected, reconnected, disconnected or needed a new
/// sign-in. Never a token.
#[utoipa::path(get, path = "/v1/integrations/{provider}/activity", tag = "user", operation_id = "user_activity", security(("user_jwt" = [])),
    params(("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`")),
    responses((status = 200, body = UserActivity, description = "The newest 20 rows and who last used the connection."),
              (status = 401, body = ErrorBody, description = "No or invalid user token."),
              (status = 404, body = ErrorBody, description = "Unknown provider."),
              (status = 503, body = ErrorBody, description = "`storage_unavailable`, with `Retry-After`.")))]
pub async fn user_activity(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(provider): Path<String>,
) -> Result<Json<UserActivity>> {
    let provider = configured_provider(&state, &provider)?;
    Ok(Json(
        read::for_user(&state.broker.store, user.id, provider).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// Only this user's rows.
    #[param(value_type = Option<uuid::Uuid>)]
    user_id: Option<String>,
    /// Only rows of this service key (by name).
    key: Option<String>,
    /// `outlook` (alias `microsoft`), `google` or `dropbox`.
    provider: Option<String>,
    /// Rows of minutes at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Rows of minutes before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ActivityPage {
    entries: Vec<ActivityEntry>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                Error::InvalidRequest(format!(
                    "{name} must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z"
                ))
            })
        })
        .transpose()
}

/// The activity log across users, newest minute first, paged: tokens handed out and proxied
/// calls per minute, service key, user, provider, method, path template and outcome, and the
/// connections' changes.
#[utoipa::path(get, path = "/v1/service/activity", tag = "service", operation_id = "list_activity", security(("service_key" = [])),
    params(ActivityQuery),
    responses((status = 200, body = ActivityPage, description = "One page of rows, newest minute first."),
              (status = 400, body = ErrorBody, description = "A malformed `user_id`, `key`, `provider`, `from`, `to` or `cursor`, or `limit` out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 503, body = ErrorBody, description = "`storage_unavailable`, with `Retry-After`.")))]
pub async fn service_activity(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(query): Query<ActivityQuery>,
) -> Result<Json<ActivityPage>> {
    let user = query
        .user_id
        .as_deref()
        .map(|u| {
            uuid::Uuid::parse_str(u)
                .map(UserId)
                .map_err(|_| Error::InvalidRequest("user_id must be a UUID".into()))
        })
        .transpose()?;
    if let Some(key) = query.key.as_deref()
        && (key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(Error::InvalidRequest(
            "key must be a service key's name: letters, digits, - or _".into(),
        ));
    }
    let provider = provider_filter(query.provider.as_deref())?;
    let from = time_param("from", query.from.as_deref())?;
    let to = time_param("to", query.to.as_deref())?;
    let before = query
        .cursor
        .as_deref()
        .map(read::parse_cursor)
        .transpose()?;
    let limit = page_limit(query.limit)?;
    let filter = ActivityFilter {
        user,
        key_name: query.key,
        provider,
        from,
        to,
        before,
        limit,
    };
    let (entries, next_cursor) = read::query(&state.broker.store, &filter).await?;
    Ok(Json(ActivityPage {
        entries,
        next_cursor,
    }))
}
