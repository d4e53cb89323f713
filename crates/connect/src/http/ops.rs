//! Operations endpoints: liveness (as the seed has it), readiness (database reachable, keys
//! loaded), and Prometheus metrics for the admin listener.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::http::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/v1/health", tag = "ops",
    responses((status = 200, body = Health, description = "The process is up.")))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "celeste-connect",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    database: &'static str,
}

/// How long readiness waits for the database before it answers 503.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the database answers. Answers 503 while it does not, within [`READY_TIMEOUT`].
#[utoipa::path(get, path = "/v1/ready", tag = "ops", responses(
    (status = 200, body = Readiness, description = "The database answers and the keys are loaded."),
    (status = 503, body = ErrorBody, description = "The database is not reachable."),
))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let pinged = tokio::time::timeout(READY_TIMEOUT, state.broker.store.ping())
        .await
        .unwrap_or(Err(crate::store::StoreError::Unavailable));
    match pinged {
        Ok(()) => Json(Readiness {
            status: "ready",
            database: state.broker.store.backend(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database");
            let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(crate::error::STORAGE_RETRY_AFTER_SECS),
            );
            response
                .extensions_mut()
                .insert(crate::error::ApiError::new(
                    "not_ready",
                    "The database is not reachable.",
                ));
            response
        }
    }
}

/// Prometheus metrics (admin listener only).
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
