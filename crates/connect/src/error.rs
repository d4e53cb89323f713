//! The one error type of the service and its mapping to HTTP.
//!
//! Every failure a handler can meet becomes an [`Error`]; [`Error::into_response`] is the only
//! place that decides status codes and the stable snake_case codes clients see. The response
//! carries an [`ApiError`] extension; the request middleware (`http::middleware`) turns it into
//! the JSON body with the request id and logs the internal detail once. Nothing here may put a
//! token, a code, a secret, SQL or a provider's raw error body into a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failure, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message is written for the client and must not echo secrets.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Missing or invalid credentials. The reason is logged, never sent.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Authenticated but not allowed. The message is for the client.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The route, provider or resource does not exist (or is not configured).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The user has no connection for this provider.
    #[error("not connected")]
    NotConnected,
    /// The provider refused the stored grant; the user must connect again.
    #[error("reauthorization required")]
    ReauthRequired,
    /// A webhook delivery is being sent right now; its schedule cannot start over under it.
    #[error("delivery in flight")]
    DeliveryInFlight,
    /// The caller is sending too much; retry after the given seconds.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// The provider failed or timed out; nothing was lost.
    #[error("provider unavailable: {detail}")]
    ProviderUnavailable {
        retry_after_secs: u64,
        detail: String,
    },
    /// The database failed; the detail is logged, never sent.
    #[error("storage: {0}")]
    Storage(#[from] crate::store::StoreError),
    /// Anything else that is our fault; the detail is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `Retry-After` of a `storage_unavailable` answer: the database is probed about four times
/// a second, so a client may come back soon.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 1;

/// The JSON body of every error answer, as the OpenAPI document describes it (the request
/// middleware writes it from an [`ApiError`]).
#[derive(utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `not_connected`, `reauth_required`, `rate_limited`, `provider_unavailable`,
    /// `storage_unavailable`, …
    #[schema(example = "not_connected")]
    pub error: String,
    /// A sentence for people; never a secret, a token or a provider's raw answer.
    pub message: String,
    /// The id in the `x-request-id` header and in the service's log line.
    pub request_id: String,
}

/// What a failed response says, attached to the response for the middleware to render.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    /// Logged with the request id; never part of the body.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The code and sentence for a failure that did not come from an [`Error`] (unknown route,
    /// wrong method, an extractor's rejection, a body over the limit).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new("not_found", "No such resource."),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                "method_not_allowed",
                "This method is not allowed on this resource.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new("payload_too_large", "The request body is too large.")
            }
            StatusCode::URI_TOO_LONG => {
                Self::new("uri_too_long", "The request's path and query are too long.")
            }
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                Self::new("headers_too_large", "The request's headers are too large.")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                "unsupported_media_type",
                "The request body must be application/json.",
            ),
            StatusCode::UNAUTHORIZED => {
                Self::new("unauthorized", "Missing or invalid credentials.")
            }
            StatusCode::FORBIDDEN => Self::new("forbidden", "Not allowed."),
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                Self::new("timeout", "The request took too long.")
            }
            s if s.is_client_error() => Self::new("invalid_request", "The request is malformed."),
            _ => Self::new("internal", "Something went wrong on our side."),
        }
    }
}

impl Error {
    /// The stable code clients see (`not_connected`, `rate_limited`, …).
    pub fn code(&self) -> &'static str {
        self.parts().1.code
    }

    fn parts(&self) -> (StatusCode, ApiError, Option<u64>) {
        use StatusCode as S;
        let with = |status, code, message: &str| (status, ApiError::new(code, message), None);
        match self {
            Error::InvalidRequest(message) => (
                S::BAD_REQUEST,
                ApiError::new("invalid_request", message.clone()),
                None,
            ),
            Error::Unauthorized(_) => with(
                S::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid credentials.",
            ),
            Error::Forbidden(message) => with(S::FORBIDDEN, "forbidden", message),
            Error::NotFound(what) => (
                S::NOT_FOUND,
                ApiError::new("not_found", format!("No such {what}.")),
                None,
            ),
            Error::NotConnected => with(
                S::NOT_FOUND,
                "not_connected",
                "There is no connection for this user and provider.",
            ),
            Error::ReauthRequired => with(
                S::CONFLICT,
                "reauth_required",
                "The provider no longer accepts this connection; the user must connect again.",
            ),
            Error::DeliveryInFlight => with(
                S::CONFLICT,
                "delivery_in_flight",
                "This delivery is being sent right now; retry it once that attempt has ended.",
            ),
            Error::RateLimited { retry_after_secs } => (
                S::TOO_MANY_REQUESTS,
                ApiError::new("rate_limited", "Too many requests; retry later."),
                Some(*retry_after_secs),
            ),
            Error::ProviderUnavailable {
                retry_after_secs, ..
            } => (
                S::SERVICE_UNAVAILABLE,
                ApiError::new(
                    "provider_unavailable",
                    "The provider is not answering; nothing was lost, retry later.",
                ),
                Some(*retry_after_secs),
            ),
            Error::Storage(e) if e.is_unavailable() => (
                S::SERVICE_UNAVAILABLE,
                ApiError::new(
                    "storage_unavailable",
                    "The service's database is not reachable; nothing was lost, retry later.",
                ),
                Some(STORAGE_RETRY_AFTER_SECS),
            ),
            Error::Storage(_) | Error::Internal(_) => with(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side.",
            ),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, mut api_error, retry_after) = self.parts();
        api_error.detail = Some(self.to_string());
        let mut response = status.into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(api_error);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_detail_is_not_in_the_client_message() {
        let err = Error::Internal("SELECT secret FROM somewhere".into());
        let response = err.into_response();
        let api = response.extensions().get::<ApiError>().cloned().unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!api.message.contains("SELECT"));
        assert!(api.detail.unwrap().contains("SELECT"));
    }

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after_not_a_500() {
        let response = Error::Storage(crate::store::StoreError::Unavailable).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let api = response.extensions().get::<ApiError>().cloned().unwrap();
        assert_eq!(api.code, "storage_unavailable");
        let refused = Error::Storage(crate::store::StoreError::Corrupt("x".into())).into_response();
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn provider_unavailable_carries_retry_after() {
        let response = Error::ProviderUnavailable {
            retry_after_secs: 30,
            detail: "timeout".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
