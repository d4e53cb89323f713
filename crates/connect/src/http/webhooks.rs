//! The operator's webhook API (service key): the delivery log (by endpoint, status and time,
//! newest first, paged), resending one delivery, the endpoints and whether a 410 disabled one,
//! and enabling it again. Never an endpoint's path, query or secret; payloads carry no token.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::identity::ServiceCaller;
use crate::store::{DeliveryFilter, DeliveryRecord, DeliveryStatus};

/// Largest page of the delivery log.
pub const MAX_PAGE: u32 = 200;

#[derive(Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// The endpoint's configured name.
    endpoint: Option<String>,
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// One delivery of one event to one endpoint, and its last attempt.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    id: uuid::Uuid,
    /// The `webhook-id` header: the same for every attempt and every endpoint of one event.
    #[schema(example = "msg_0193a1f0c2d47e8fb1c2d3e4f5a6b7c8")]
    event_id: String,
    #[schema(example = "connection.needs_reauth")]
    event_type: String,
    endpoint: String,
    status: DeliveryStatus,
    /// Attempts made so far (at most 10).
    attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_attempt_at: Option<OffsetDateTime>,
    /// The receiver's HTTP status at the last attempt, if it answered.
    last_status: Option<u16>,
    /// Why the last attempt failed (`timeout`, `connect: …`, `redirect not followed`, …).
    last_error: Option<String>,
    /// The first 256 bytes of the receiver's last answer.
    last_response: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    delivered_at: Option<OffsetDateTime>,
    /// The event exactly as sent (`{id, type, timestamp, data}`).
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

impl From<DeliveryRecord> for Delivery {
    fn from(r: DeliveryRecord) -> Self {
        Delivery {
            id: r.id,
            event_id: r.event_id,
            event_type: r.event_type,
            endpoint: r.endpoint,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            last_response: r.last_response,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            payload: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    next_cursor: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).map_err(|_| {
                Error::InvalidRequest(format!(
                    "{name} must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"
                ))
            })
        })
        .transpose()
}

/// The delivery log, newest first: every event sent (or to send) to every endpoint.
#[utoipa::path(get, path = "/v1/service/webhooks/deliveries", tag = "service", operation_id = "list_webhook_deliveries",
    security(("service_key" = [])), params(DeliveriesQuery),
    responses((status = 200, body = DeliveryPage, description = "One page of deliveries, newest first."),
              (status = 400, body = ErrorBody, description = "An unknown `status`, a malformed time or `cursor`, or `limit` out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key.")))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>> {
    let status = query
        .status
        .as_deref()
        .map(|s| match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(Error::InvalidRequest(
                "status must be pending, delivered or failed".into(),
            )),
        })
        .transpose()?;
    let (before, limit) =
        crate::http::service::page(query.cursor.as_deref(), query.limit, 50, MAX_PAGE)?;
    let filter = DeliveryFilter {
        endpoint: query.endpoint,
        status,
        since: time_param("since", query.since.as_deref())?,
        until: time_param("until", query.until.as_deref())?,
        before,
        limit,
    };
    let page = state.broker.store.list_deliveries(&filter).await?;
    let next_cursor = (page.len() == limit as usize)
        .then(|| page.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: page.into_iter().map(Delivery::from).collect(),
        next_cursor,
    }))
}

/// Sends a delivery again, now, with its schedule started over (a replay: same `webhook-id`,
/// same body, a fresh timestamp and signature). A delivery being sent at this moment is left
/// to finish: 409 `delivery_in_flight`, and nothing changes.
#[utoipa::path(post, path = "/v1/service/webhooks/deliveries/{id}/retry", tag = "service", operation_id = "retry_webhook_delivery",
    security(("service_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The delivery's id.")),
    responses((status = 202, body = Delivery, description = "Queued: pending and due now."),
              (status = 400, body = ErrorBody, description = "`id` is not a UUID."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 404, body = ErrorBody, description = "No such delivery."),
              (status = 409, body = ErrorBody, description = "`delivery_in_flight`: an attempt is being sent right now; retry once it has ended.")))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Delivery>)> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| Error::InvalidRequest("id must be a UUID".into()))?;
    let retried = state
        .broker
        .store
        .retry_delivery(id)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
    if !retried.queued {
        return Err(Error::DeliveryInFlight);
    }
    let record = retried.record;
    tracing::info!(service_key = %caller.key_name, delivery_id = %id, event_id = %record.event_id, "webhook delivery queued again");
    Ok((StatusCode::ACCEPTED, Json(record.into())))
}

/// A configured endpoint and whether it receives deliveries.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    name: String,
    /// Scheme, host and port only (the path can be a secret of the receiver's).
    #[schema(example = "https://n8n.example.com")]
    origin: String,
    /// Secrets signing each message (more than one while rotating).
    secrets: usize,
    /// False after a 410 Gone, until enabled again or its URL changes.
    enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    disabled_at: Option<OffsetDateTime>,
    disabled_reason: Option<String>,
}

async fn endpoint_views(state: &AppState) -> Result<Vec<EndpointView>> {
    let disabled = state.broker.store.disabled_endpoints().await?;
    Ok(state
        .broker
        .settings
        .webhooks
        .endpoints
        .iter()
        .map(|e| {
            let off = disabled.iter().find(|d| {
                d.name == e.name && d.url_sha256.as_deref() == Some(e.url_sha256().as_str())
            });
            EndpointView {
                name: e.name.clone(),
                origin: e.origin(),
                secrets: e.secrets.len(),
                enabled: off.is_none(),
                disabled_at: off.map(|d| d.disabled_at),
                disabled_reason: off.and_then(|d| d.reason.clone()),
            }
        })
        .collect())
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    endpoints: Vec<EndpointView>,
}

/// The configured webhook endpoints (`CONNECT_WEBHOOK_ENDPOINTS`) and their state.
#[utoipa::path(get, path = "/v1/service/webhooks/endpoints", tag = "service", operation_id = "list_webhook_endpoints",
    security(("service_key" = [])),
    responses((status = 200, body = EndpointList, description = "Every configured endpoint."),
              (status = 401, body = ErrorBody, description = "No or invalid service key.")))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    _caller: ServiceCaller,
) -> Result<Json<EndpointList>> {
    Ok(Json(EndpointList {
        endpoints: endpoint_views(&state).await?,
    }))
}

/// Enables an endpoint a 410 Gone disabled; its pending deliveries go out. Idempotent.
#[utoipa::path(post, path = "/v1/service/webhooks/endpoints/{name}/enable", tag = "service", operation_id = "enable_webhook_endpoint",
    security(("service_key" = [])),
    params(("name" = String, Path, description = "The endpoint's configured name.")),
    responses((status = 200, body = EndpointView, description = "The endpoint, enabled."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 404, body = ErrorBody, description = "No endpoint of that name is configured.")))]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path(name): Path<String>,
) -> Result<Json<EndpointView>> {
    if state.broker.settings.webhooks.endpoint(&name).is_none() {
        return Err(Error::NotFound("webhook endpoint"));
    }
    if state.broker.store.enable_endpoint(&name).await? {
        tracing::info!(service_key = %caller.key_name, endpoint = %name, "webhook endpoint enabled again");
        state.broker.store.outbox().written.notify_one();
    }
    endpoint_views(&state)
        .await?
        .into_iter()
        .find(|e| e.name == name)
        .map(Json)
        .ok_or(Error::NotFound("webhook endpoint"))
}
