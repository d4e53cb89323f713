//! Static files compiled into the binary (the callback page's script and style, the settings
//! page's, and the browser SDK), so the service runs from any folder and offline.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const FILES: &[(&str, &str, &str)] = &[
    ("callback.js", JS, include_str!("../../static/callback.js")),
    (
        "callback.css",
        CSS,
        include_str!("../../static/callback.css"),
    ),
    ("settings.js", JS, include_str!("../../static/settings.js")),
    (
        "settings.css",
        CSS,
        include_str!("../../static/settings.css"),
    ),
];

/// The browser SDK, as `sdk/js` ships it.
const SDK: &str = include_str!("../../../../sdk/js/connect.js");

fn serve(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /sdk/connect.js`: the browser SDK (an ES module). Any origin may load it.
pub async fn sdk() -> Response {
    let mut response = serve(SDK, JS);
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// `GET /favicon.ico`: browsers ask on every page; "no icon" (204, cached for a day) keeps
/// that out of the error logs.
pub async fn favicon() -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// `GET /static/{file}`.
pub async fn static_file(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => serve(body, content_type),
        None => Error::NotFound("file").into_response(),
    }
}
