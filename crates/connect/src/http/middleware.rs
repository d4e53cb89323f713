//! What every request passes through: a fresh request id (in the span, the `x-request-id`
//! header and every error body), the JSON error envelope built from [`ApiError`], one access-log
//! line, and the request metrics. Client-supplied request ids are ignored, so logs cannot be
//! forged through them.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{ApiError, Error};

/// Marks a response whose error body is meant for the client as it is (an HTML page, a
/// provider's answer passed through); the envelope leaves it alone.
#[derive(Clone, Copy, Debug)]
pub struct KeepBody;

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // A path no route knows is logged as it came, without its query string (which may hold a
    // code or a token); metrics keep the one label `unmatched`.
    let unmatched_path = matched.is_none().then(|| request.uri().path().to_owned());
    let route = matched.unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        path = tracing::field::Empty,
        user_id = tracing::field::Empty,
        service_key = tracing::field::Empty,
    );
    if let Some(path) = &unmatched_path {
        span.record("path", path.as_str());
    }
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();

    let api_error = response.extensions_mut().remove::<ApiError>();
    let keep = response.extensions().get::<KeepBody>().is_some();
    if api_error.is_some() || (status.as_u16() >= 400 && !keep) {
        let api = api_error.unwrap_or_else(|| ApiError::for_status(status));
        span.in_scope(|| {
            if status.is_server_error() {
                tracing::error!(
                    status = status.as_u16(),
                    code = api.code,
                    detail = api.detail.as_deref().unwrap_or(""),
                    "request failed"
                );
            } else {
                tracing::info!(
                    status = status.as_u16(),
                    code = api.code,
                    detail = api.detail.as_deref().unwrap_or(""),
                    "request refused"
                );
            }
        });
        let body = serde_json::json!({
            "error": api.code,
            "message": api.message,
            "request_id": request_id,
        });
        let (mut parts, _) = response.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, Body::from(body.to_string()));
    } else {
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "request"
            );
        });
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    response
}

/// The answer for a path no route matches.
pub async fn not_found() -> Response {
    Error::NotFound("resource").into_response()
}

/// A handler panicked: answer 500 with the ordinary envelope, and log no payload (it could
/// hold anything).
pub fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response
        .extensions_mut()
        .insert(ApiError::for_status(StatusCode::INTERNAL_SERVER_ERROR));
    response
}
