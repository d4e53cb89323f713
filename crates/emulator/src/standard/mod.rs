//! Stand-ins for the two providers that follow RFC 6749 closely, Google (providers.md §2) and
//! Dropbox (§3): one authorize page, token endpoint and revocation endpoint parameterised by a
//! [`Flavor`] for what differs (error shapes and statuses, when a refresh token is issued,
//! token formats and lifetimes), and each one's APIs in its own file. Routes live under
//! `/google/` and `/dropbox/` so the Microsoft stand-in keeps the root. It must not serve
//! Microsoft's endpoints.

// Handlers return a finished error `Response` early; boxing it would only add noise to a test
// double.
#![allow(clippy::result_large_err)]

pub(crate) mod dropbox_api;
pub(crate) mod google_api;
pub(crate) mod memory;
pub(crate) mod oauth;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::Emulator;
use crate::faults::HttpFault;

/// Which provider a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    Google,
    Dropbox,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Google => "google",
            Flavor::Dropbox => "dropbox",
        }
    }

    pub(crate) fn code_prefix(self) -> &'static str {
        match self {
            Flavor::Google => "4/0A",
            Flavor::Dropbox => "",
        }
    }

    pub(crate) fn access_prefix(self) -> &'static str {
        match self {
            Flavor::Google => "ya29.",
            Flavor::Dropbox => "sl.",
        }
    }

    pub(crate) fn refresh_prefix(self) -> &'static str {
        match self {
            Flavor::Google => "1//",
            Flavor::Dropbox => "",
        }
    }

    /// Google ≈ 1 h, Dropbox 4 h.
    pub(crate) fn access_lifetime(self) -> Duration {
        match self {
            Flavor::Google => Duration::from_secs(3599),
            Flavor::Dropbox => Duration::from_secs(14_400),
        }
    }

    /// What Dropbox grants when `scope` is omitted: every scope of the app.
    pub(crate) fn app_scopes(self) -> &'static [&'static str] {
        match self {
            Flavor::Google => &[],
            Flavor::Dropbox => &[
                "account_info.read",
                "files.metadata.read",
                "files.content.read",
            ],
        }
    }

    pub(crate) fn endpoint(self, what: Endpoint) -> &'static str {
        use crate::stats::endpoint as e;
        match (self, what) {
            (Flavor::Google, Endpoint::Authorize) => e::GOOGLE_AUTHORIZE,
            (Flavor::Google, Endpoint::Consent) => e::GOOGLE_CONSENT,
            (Flavor::Google, Endpoint::Token) => e::GOOGLE_TOKEN,
            (Flavor::Google, Endpoint::Revoke) => e::GOOGLE_REVOKE,
            (Flavor::Dropbox, Endpoint::Authorize) => e::DROPBOX_AUTHORIZE,
            (Flavor::Dropbox, Endpoint::Consent) => e::DROPBOX_CONSENT,
            (Flavor::Dropbox, Endpoint::Token) => e::DROPBOX_TOKEN,
            (Flavor::Dropbox, Endpoint::Revoke) => e::DROPBOX_REVOKE,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Endpoint {
    Authorize,
    Consent,
    Token,
    Revoke,
}

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route(
            "/google/o/oauth2/v2/auth",
            get(oauth::google_show).post(oauth::google_decide),
        )
        .route("/google/token", post(oauth::google_token))
        .route(
            "/google/revoke",
            post(oauth::google_revoke).get(oauth::google_revoke_get),
        )
        .route("/google/v1/userinfo", get(google_api::userinfo))
        .route("/google/oauth2/v3/userinfo", get(google_api::userinfo))
        .route(
            "/google/gmail/v1/users/me/messages",
            get(google_api::list_messages),
        )
        .route(
            "/google/gmail/v1/users/me/messages/{id}",
            get(google_api::get_message),
        )
        .route(
            "/dropbox/oauth2/authorize",
            get(oauth::dropbox_show).post(oauth::dropbox_decide),
        )
        .route("/dropbox/oauth2/token", post(oauth::dropbox_token))
        .route("/dropbox/2/auth/token/revoke", post(oauth::dropbox_revoke))
        .route(
            "/dropbox/2/users/get_current_account",
            post(dropbox_api::get_current_account),
        )
        .route(
            "/dropbox/2/files/list_folder",
            post(dropbox_api::list_folder),
        )
        .route(
            "/dropbox/2/files/list_folder/continue",
            post(dropbox_api::list_folder_continue),
        )
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, as token answers carry.
pub(crate) fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// An injected failure in the flavor's API error shape, with `Retry-After` when set.
pub(crate) fn fault_response(flavor: Flavor, fault: &HttpFault) -> Response {
    let status = StatusCode::from_u16(fault.status)
        .ok()
        .filter(|s| *s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry = fault
        .retry_after_secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64);
    let mut response = match (flavor, status) {
        (Flavor::Google, StatusCode::TOO_MANY_REQUESTS) => (
            status,
            axum::Json(serde_json::json!({"error": {"code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED"}})),
        )
            .into_response(),
        (Flavor::Google, _) => (
            status,
            axum::Json(serde_json::json!({"error": {"code": status.as_u16(),
                "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})),
        )
            .into_response(),
        (Flavor::Dropbox, StatusCode::TOO_MANY_REQUESTS) => (
            status,
            axum::Json(serde_json::json!({"error_summary": "too_many_requests/..",
                "error": {"reason": {".tag": "too_many_requests"}, "retry_after": retry.unwrap_or(1)}})),
        )
            .into_response(),
        (Flavor::Dropbox, _) => (status, "Internal Server Error").into_response(),
    };
    if let Some(value) = fault
        .retry_after_header()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
