//! What every request passes through: a fresh request id (in the span, the `x-request-id`
//! header and every error body), refusal of requests no handler should see (an unknown long
//! method, an over-long target, oversized headers), the JSON error envelope built from
//! [`ApiError`], one access-log line, and the request metrics (labels from fixed sets only).
//! Client-supplied request ids are ignored, so logs cannot be forged through them.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
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

/// Longest request method the service reads. Real methods are short (`PROPPATCH` is the
/// longest in RFC 4918); anything longer is refused before it reaches a log line or a handler.
pub const MAX_METHOD_LEN: usize = 16;

/// Longest request target (path and query) the service reads. Graph queries through the proxy
/// stay far below it. The HTTP server itself refuses targets over 64 KiB, with an empty body.
pub const MAX_URI_LEN: usize = 16 * 1024;

/// Most header bytes (names, values and separators) a request may carry: a user JWT is a few
/// KiB, and the app's site cookies come along. The HTTP server itself refuses more than 100
/// headers or about 400 KiB, with an empty body.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A request too odd or too big to hand to any handler, refused with the JSON envelope.
fn refusal(request: &Request) -> Option<Response> {
    if request.method().as_str().len() > MAX_METHOD_LEN {
        return Some(
            Error::InvalidRequest("The request method is not one this service knows.".into())
                .into_response(),
        );
    }
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let status = if target_len > MAX_URI_LEN {
        StatusCode::URI_TOO_LONG
    } else if header_bytes(request) > MAX_HEADER_BYTES {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        return None;
    };
    let mut response = status.into_response();
    response
        .extensions_mut()
        .insert(ApiError::for_status(status));
    Some(response)
}

fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .fold(0, usize::saturating_add)
}

/// The method as a metrics and log label: one of a fixed set, so requests cannot grow the
/// label space (each new label value is a time series the recorder keeps for good).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // Route labels come from the router's own templates only, never from the request path. A
    // path no route knows is logged as it came, without its query string (which may hold a
    // code or a token); metrics keep the one label `unmatched`.
    let unmatched_path = matched.is_none().then(|| request.uri().path().to_owned());
    let route = matched.unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let refused = refusal(&request);
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
    let mut response = match refused {
        Some(response) => response,
        None => next.run(request).instrument(span.clone()).await,
    };
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
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status.as_u16().to_string()).increment(1);
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
