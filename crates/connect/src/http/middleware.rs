//! What every request passes through: a fresh request id (in the span, the `x-request-id`
//! header and every error body), refusal of requests no handler should see (an unknown long
//! method, an over-long target, oversized headers), the JSON error envelope built from
//! [`ApiError`], one access-log line, and the request metrics (labels from fixed sets only).
//! Client-supplied request ids are ignored, so logs cannot be forged through them.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::{ApiError, Error};

/// Marks a response whose error body is meant for the client as it is (an HTML page, a
/// provider's answer passed through); the envelope leaves it alone.
#[derive(Clone, Copy, Debug)]
pub struct KeepBody;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// The request context (id, span, refusals, error envelope, access log, metrics) around every
/// route. A layer of its own rather than `axum::middleware::from_fn`, which boxes the rest of
/// the stack anew for every request, on top of the request's future.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service polled ready is the one called; its clone waits for the next request.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(request_context(request, ready).await) })
    }
}

/// The route template as a label that lives as long as the process: the router's templates are
/// a fixed, small set, each kept once, so a request's log fields and metric labels copy none.
fn route_label(matched: &MatchedPath) -> &'static str {
    static ROUTES: RwLock<BTreeSet<&'static str>> = RwLock::new(BTreeSet::new());
    let template = matched.as_str();
    if let Some(&known) = ROUTES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(template)
    {
        return known;
    }
    let mut routes = ROUTES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(&known) = routes.get(template) {
        return known;
    }
    let leaked: &'static str = Box::leak(template.into());
    routes.insert(leaked);
    leaked
}

/// The status code as a label that lives as long as the process (every code from 100 to 999,
/// written once).
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: OnceLock<Box<[String]>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (100..1000u16).map(|code| code.to_string()).collect());
    &labels[usize::from(status.as_u16() - 100)]
}

async fn request_context<S>(request: Request, mut inner: S) -> Response
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    let mut id_buffer = uuid::Uuid::encode_buffer();
    let request_id: &str = uuid::Uuid::new_v4().simple().encode_lower(&mut id_buffer);
    let matched = request.extensions().get::<MatchedPath>().map(route_label);
    // Route labels come from the router's own templates only, never from the request path. A
    // path no route knows is logged as it came, without its query string (which may hold a
    // code or a token); metrics keep the one label `unmatched`.
    let unmatched_path = matched.is_none().then(|| request.uri().path().to_owned());
    let route = matched.unwrap_or("unmatched");
    let method = method_label(request.method());
    let refused = refusal(&request);
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
        None => match span
            .in_scope(|| inner.call(request))
            .instrument(span.clone())
            .await
        {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        },
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
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status_label(status)).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_codes() {
        for code in [100, 101, 200, 204, 401, 404, 429, 503, 599, 999] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(status), code.to_string());
        }
    }
}
