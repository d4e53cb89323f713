//! The service API: what trusted backends and workflow engines (n8n) call with a service key.
//! Responses never carry a refresh token; unknown users and providers get a constant answer.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::activity::{Actor, Kind, outcome_of};
use crate::broker;
use crate::broker::tokens::fresh_token;
use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::http::ProviderName;
use crate::identity::ServiceCaller;
use crate::model::{ConnectionListing, ConnectionState, UserId};
use crate::provider::ProviderId;
use crate::store::ListFilter;

pub const MAX_PAGE: u32 = 500;
/// Largest `min_ttl` a caller may ask for (Microsoft access tokens live 60–90 minutes).
pub const MAX_MIN_TTL_SECS: u64 = 3600;

/// Reads the `{user_id}` and `{provider}` of a service path. A malformed user id is bad input;
/// an unknown provider answers exactly like an unknown user.
pub fn target(user_id: &str, provider: &str) -> Result<(UserId, ProviderId)> {
    let user = uuid::Uuid::parse_str(user_id)
        .map_err(|_| Error::InvalidRequest("user_id must be a UUID".into()))?;
    let provider = ProviderId::from_path(provider).ok_or(Error::NotConnected)?;
    Ok((UserId(user), provider))
}

/// A listing's `provider` filter: a provider path name, or bad input.
pub fn provider_filter(provider: Option<&str>) -> Result<Option<ProviderId>> {
    provider
        .map(|p| {
            ProviderId::from_path(p).ok_or_else(|| {
                Error::InvalidRequest(
                    "provider must be outlook, microsoft, google or dropbox".into(),
                )
            })
        })
        .transpose()
}

/// A listing's page size: 1–[`MAX_PAGE`], 100 when not given.
pub fn page_limit(limit: Option<u32>) -> Result<u32> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

#[derive(Deserialize, IntoParams)]
pub struct TokenQuery {
    /// Seconds the token must stay valid at least (0–3600); it is refreshed first otherwise.
    #[param(minimum = 0, maximum = 3600)]
    min_ttl: Option<u64>,
}

/// A fresh access token. Never the refresh token.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: time::OffsetDateTime,
    scopes: Vec<String>,
    provider_user_id: String,
    provider_email: Option<String>,
}

/// A valid access token for the user's connection, refreshed first when it expires within the
/// skew (5 minutes) or `min_ttl`.
#[utoipa::path(get, path = "/v1/service/users/{user_id}/integrations/{provider}/token", tag = "service",
    security(("service_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The app's user id (JWT `sub`)."),
           ("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`"), TokenQuery),
    responses((status = 200, body = TokenResponse, description = "A token valid for at least the skew (5 minutes) or `min_ttl`."),
              (status = 400, body = ErrorBody, description = "`user_id` is not a UUID, or `min_ttl` is out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 404, body = ErrorBody, description = "No such connection (same answer for an unknown user or provider)."),
              (status = 409, body = ErrorBody, description = "`reauth_required`: the user must connect again."),
              (status = 429, body = ErrorBody, description = "`rate_limited` (per service key, or per user within it), with `Retry-After`."),
              (status = 503, body = ErrorBody, description = "`provider_unavailable`, with `Retry-After`; nothing was lost.")))]
pub async fn token(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path((user_id, provider)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
) -> Result<Response> {
    let (user, provider) = target(&user_id, &provider)?;
    let answer = issue_token(&state, &caller, user, provider, query.min_ttl.unwrap_or(0)).await;
    state.broker.activity.record(
        user,
        provider,
        Kind::Token,
        Actor::Key(caller.key_name),
        None,
        outcome_of(&answer),
    );
    answer
}

async fn issue_token(
    state: &AppState,
    caller: &ServiceCaller,
    user: UserId,
    provider: ProviderId,
    min_ttl: u64,
) -> Result<Response> {
    state.limits.check_token(&caller.key_name, user)?;
    if min_ttl > MAX_MIN_TTL_SECS {
        return Err(Error::InvalidRequest(format!(
            "min_ttl must be between 0 and {MAX_MIN_TTL_SECS}"
        )));
    }
    let token = fresh_token(
        &state.broker,
        user,
        provider,
        Duration::from_secs(min_ttl),
        None,
    )
    .await?;
    tracing::info!(service_key = %caller.key_name, user_id = %user, provider = %provider,
                   expires_at = %token.expires_at, "token issued");
    let mut response = Json(TokenResponse {
        access_token: token.access_token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_at: token.expires_at,
        scopes: token.scopes.clone(),
        provider_user_id: token.provider_user_id.clone(),
        provider_email: token.provider_email.clone(),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// `outlook` (alias `microsoft`), `google` or `dropbox`.
    provider: Option<String>,
    /// `connected` or `needs_reauth`.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    connections: Vec<ConnectionListing>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    next_cursor: Option<String>,
}

/// Connections across users (no tokens), paged, for workflows that iterate users.
#[utoipa::path(get, path = "/v1/service/integrations", tag = "service", operation_id = "list_connections", security(("service_key" = [])),
    params(ListQuery),
    responses((status = 200, body = ConnectionPage, description = "One page of connections, oldest id first."),
              (status = 400, body = ErrorBody, description = "An unknown `provider` or `status`, a `cursor` this service did not issue, or `limit` out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key.")))]
pub async fn list(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConnectionPage>> {
    let provider = provider_filter(query.provider.as_deref())?;
    let status = query
        .status
        .as_deref()
        .map(|s| match s {
            "connected" => Ok(ConnectionState::Connected),
            "needs_reauth" => Ok(ConnectionState::NeedsReauth),
            _ => Err(Error::InvalidRequest(
                "status must be connected or needs_reauth".into(),
            )),
        })
        .transpose()?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            uuid::Uuid::parse_str(c)
                .map_err(|_| Error::InvalidRequest("cursor is not one this service issued".into()))
        })
        .transpose()?;
    let limit = page_limit(query.limit)?;
    let (connections, next) = broker::list_connections(
        &state.broker,
        ListFilter {
            provider,
            state: status,
            after,
            limit,
        },
    )
    .await?;
    Ok(Json(ConnectionPage {
        connections,
        next_cursor: next.map(|id| id.to_string()),
    }))
}
