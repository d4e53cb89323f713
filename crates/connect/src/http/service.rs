//! The service API: what trusted backends and workflow engines (n8n) call with a service key.
//! Responses never carry a refresh token; unknown users and providers get a constant answer.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::broker;
use crate::error::{Error, Result};
use crate::identity::ServiceCaller;
use crate::model::{ConnectionListing, ConnectionState};
use crate::provider::ProviderId;
use crate::store::ListFilter;

pub const MAX_PAGE: u32 = 500;

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// `outlook` (alias `microsoft`), `google` or `dropbox`.
    provider: Option<String>,
    /// `connected` or `needs_reauth`.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–500 (default 100).
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    connections: Vec<ConnectionListing>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Connections across users (no tokens), paged, for workflows that iterate users.
#[utoipa::path(get, path = "/v1/service/integrations", tag = "service", security(("service_key" = [])),
    params(ListQuery),
    responses((status = 200, body = ConnectionPage), (status = 400), (status = 401)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConnectionPage>> {
    let provider = query
        .provider
        .as_deref()
        .map(|p| {
            ProviderId::from_path(p).ok_or_else(|| {
                Error::InvalidRequest("provider must be outlook or microsoft".into())
            })
        })
        .transpose()?;
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
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let (connections, next) = broker::list_connections(
        &state.store,
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
