//! The emulator's own absolute base URL as the caller reached it (scheme, Host, and the prefix
//! it is mounted under), for `@odata.nextLink` and `@odata.context`. A nested router sees a
//! stripped path, so the prefix is the original path minus the routed one. It must not trust
//! anything but Host and `X-Forwarded-Proto`.

use axum::http::{HeaderMap, Uri, header};

/// `scheme://host[:port]/prefix`, without a trailing slash.
pub(crate) fn base_url(headers: &HeaderMap, original: &Uri, routed: &Uri) -> String {
    let scheme = original
        .scheme_str()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v == "https" || *v == "http")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "http".to_owned());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .or_else(|| original.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let prefix = original
        .path()
        .strip_suffix(routed.path())
        .unwrap_or_default()
        .trim_end_matches('/');
    format!("{scheme}://{host}{prefix}")
}
