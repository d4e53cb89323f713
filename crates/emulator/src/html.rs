//! The emulator's HTML pages: escaping and one page shell with security headers. Every value
//! placed in a page goes through [`escape`]; this module must not know any protocol.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A fresh CSP nonce, so the pages need no `unsafe-inline`.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f3f2f1;margin:0}\
main{max-width:28rem;margin:3rem auto;background:#fff;padding:2rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}\
h1{font-size:1.4rem;font-weight:600}ul{padding-left:1.2rem}label{display:block;margin:.4rem 0}\
fieldset{border:1px solid #ddd;margin:1rem 0}button{padding:.5rem 1.5rem;margin-right:.5rem}\
#accept{background:#0067b8;color:#fff;border:0}.fine{color:#666;font-size:.8rem}\
.error{color:#a80000}code{word-break:break-all}";

/// Renders `body` (already escaped HTML) in the page shell. `script` (trusted, constant) runs
/// under the page's nonce.
pub(crate) fn page(status: StatusCode, title: &str, body: &str, script: Option<&str>) -> Response {
    let nonce = nonce();
    let script = script
        .map(|code| format!("<script nonce=\"{nonce}\">{code}</script>"))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title}</title><style nonce=\"{nonce}\">{STYLE}</style></head>\
         <body><main>{body}</main>{script}</body></html>\n",
        title = escape(title),
    );
    let csp = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; \
         form-action 'self' http: https:; base-uri 'none'; frame-ancestors 'none'"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}
