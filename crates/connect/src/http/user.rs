//! The user API: what the app calls for its signed-in user, with the user's JWT. The user is
//! always the JWT's `sub`; no id in a path, query or body is read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::broker;
use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::http::ProviderName;
use crate::identity::CurrentUser;
use crate::model::StatusView;
use crate::provider::ProviderId;

/// Resolves a `{provider}` path segment to a configured provider, or 404.
pub fn configured_provider(state: &AppState, segment: &str) -> Result<ProviderId> {
    ProviderId::from_path(segment)
        .filter(|p| state.broker.provider(*p).is_some())
        .ok_or(Error::NotFound("provider"))
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationList {
    integrations: Vec<StatusView>,
}

/// Every configured provider with the caller's status (one call for a settings page).
#[utoipa::path(get, path = "/v1/integrations", tag = "user", operation_id = "list_integrations", security(("user_jwt" = [])),
    responses((status = 200, body = IntegrationList, description = "Every configured provider with the user's status."),
              (status = 401, body = ErrorBody, description = "No or invalid user token.")))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<IntegrationList>> {
    let integrations = broker::list(&state.broker, user.id).await?;
    Ok(Json(IntegrationList { integrations }))
}

/// The caller's connection to a provider; never a token.
#[utoipa::path(get, path = "/v1/integrations/{provider}/status", tag = "user", security(("user_jwt" = [])),
    params(("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`")),
    responses((status = 200, body = StatusView, description = "The user's connection (never a token)."),
              (status = 401, body = ErrorBody, description = "No or invalid user token."),
              (status = 404, body = ErrorBody, description = "Unknown provider.")))]
pub async fn status(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(provider): Path<String>,
) -> Result<Json<StatusView>> {
    let provider = configured_provider(&state, &provider)?;
    Ok(Json(
        broker::status(&state.broker, user.id, provider).await?,
    ))
}

/// Forgets the caller's connection. Idempotent: 204 whether or not there was one. Google and
/// Dropbox grants are revoked at the provider first; if that fails the connection is deleted
/// all the same. Microsoft has no revocation endpoint, so the stored tokens are deleted; the
/// user can also remove the app at https://myapps.microsoft.com (work or school) or
/// https://account.live.com/consent/Manage (personal).
#[utoipa::path(delete, path = "/v1/integrations/{provider}/disconnect", tag = "user", security(("user_jwt" = [])),
    params(("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`")),
    responses((status = 204, description = "Disconnected (or was not connected)."),
              (status = 401, body = ErrorBody, description = "No or invalid user token."),
              (status = 404, body = ErrorBody, description = "Unknown provider.")))]
pub async fn disconnect(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(provider): Path<String>,
) -> Result<StatusCode> {
    let provider = configured_provider(&state, &provider)?;
    broker::disconnect(
        &state.broker,
        user.id,
        provider,
        crate::activity::Actor::User,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
