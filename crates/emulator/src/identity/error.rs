//! Microsoft identity platform errors in their three outward forms: the token endpoint's JSON
//! envelope (providers.md §1.6), the authorize redirect (`error`, `error_description`), and the
//! HTML error page shown when no redirect is allowed. It must not decide *which* error applies;
//! the grant and authorize modules do.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use crate::html;

/// One AADSTS error. `message` is the text after `AADSTS<n>: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AadError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
    pub suberror: Option<&'static str>,
}

impl AadError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
            suberror: None,
        }
    }

    pub fn invalid_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    pub fn invalid_grant(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", code, message)
    }

    pub fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    pub fn invalid_scope(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", code, message)
    }

    pub fn with_suberror(mut self, suberror: &'static str) -> Self {
        self.suberror = Some(suberror);
        self
    }

    /// AADSTS900144, the "required parameter missing" error.
    pub fn missing_parameter(name: &str) -> Self {
        Self::invalid_request(
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS9002313, Microsoft's catch-all for a malformed request or garbled grant.
    pub fn malformed() -> Self {
        Self::invalid_request(9002313, "Invalid request. Request is malformed or invalid.")
    }

    /// AADSTS9002313 for a garbled or truncated code or refresh token (Microsoft answers
    /// `invalid_grant` there, though its docs call the code InvalidRequest).
    pub fn malformed_grant() -> Self {
        Self::invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
    }

    /// AADSTS65001 with `suberror: consent_required`: consent never given or withdrawn.
    pub fn consent_required(client_id: &str) -> Self {
        Self::invalid_grant(
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID \
                 '{client_id}' named '{client_id}'. Send an interactive authorization request \
                 for this user and resource."
            ),
        )
        .with_suberror("consent_required")
    }

    /// `error_description`: the AADSTS line followed by the three trace lines, as Microsoft sends it.
    pub fn description(&self, trace: &Trace) -> String {
        format!(
            "AADSTS{}: {}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.code, self.message, trace.trace_id, trace.correlation_id, trace.timestamp
        )
    }

    /// The token endpoint's JSON error response.
    pub fn into_token_response(self, trace: &Trace) -> Response {
        let body = TokenErrorBody {
            error: self.error,
            error_description: self.description(trace),
            error_codes: [self.code],
            timestamp: &trace.timestamp,
            trace_id: &trace.trace_id,
            correlation_id: &trace.correlation_id,
            error_uri: format!("https://login.microsoftonline.com/error?code={}", self.code),
            suberror: self.suberror,
        };
        let mut response = (self.status, Json(body)).into_response();
        no_store(response.headers_mut());
        trace.stamp(response.headers_mut());
        response
    }

    /// The page shown instead of redirecting (unknown client, redirect URI mismatch, ...).
    pub fn into_error_page(self, trace: &Trace) -> Response {
        let body = format!(
            "<h1>Sign in</h1><p>Sorry, but we’re having trouble signing you in.</p>\
             <p class=\"error\" id=\"error\" data-error-code=\"AADSTS{code}\">AADSTS{code}: {message}</p>\
             <p class=\"fine\">Request Id: {trace_id}<br>Correlation Id: {correlation_id}<br>\
             Timestamp: {timestamp}</p>",
            code = self.code,
            message = html::escape(&self.message),
            trace_id = html::escape(&trace.trace_id),
            correlation_id = html::escape(&trace.correlation_id),
            timestamp = html::escape(&trace.timestamp),
        );
        let mut response = html::page(
            StatusCode::BAD_REQUEST,
            "Sign in to your account",
            &body,
            None,
        );
        trace.stamp(response.headers_mut());
        response
    }
}

#[derive(Serialize)]
struct TokenErrorBody<'a> {
    error: &'static str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: &'a str,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'static str>,
}

/// The ids and time Microsoft stamps on every answer. The correlation id echoes the caller's
/// `client-request-id` when it is a GUID, as Microsoft does.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    pub trace_id: String,
    pub correlation_id: String,
    pub timestamp: String,
}

impl Trace {
    pub fn new(headers: &HeaderMap) -> Self {
        let correlation_id = headers
            .get("client-request-id")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| Uuid::parse_str(value).ok())
            .unwrap_or_else(Uuid::new_v4);
        Self {
            trace_id: Uuid::new_v4().to_string(),
            correlation_id: correlation_id.to_string(),
            timestamp: aad_timestamp(OffsetDateTime::now_utc()),
        }
    }

    pub fn stamp(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.trace_id) {
            headers.insert("x-ms-request-id", value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.correlation_id) {
            headers.insert("client-request-id", value);
        }
    }
}

/// `2024-01-01 00:00:00Z`, the format of `timestamp` in Microsoft's error bodies.
pub(crate) fn aad_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// `2024-01-01T00:00:00.0000000Z`, the format of dates inside AADSTS messages.
pub(crate) fn aad_message_time(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z"
    ))
    .unwrap_or_default()
}

/// `Cache-Control: no-store, no-cache` and `Pragma: no-cache`, as on every token response.
pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
}
