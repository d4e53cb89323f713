//! Redirect URI matching and the reply to it (query, fragment or form_post). Matching is exact,
//! except that the port of a loopback `http` URI is ignored, as Microsoft does (RFC 8252 §7.3).
//! It must not decide what the reply carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use crate::html;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

impl ResponseMode {
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("") | Some("query") => Some(Self::Query),
            Some("fragment") => Some(Self::Fragment),
            Some("form_post") => Some(Self::FormPost),
            Some(_) => None,
        }
    }
}

/// Whether `sent` names the registered URI `registered`.
pub(crate) fn matches(sent: &str, registered: &str) -> bool {
    if sent == registered {
        return true;
    }
    let (Ok(sent), Ok(registered)) = (Url::parse(sent), Url::parse(registered)) else {
        return false;
    };
    is_loopback_http(&sent)
        && is_loopback_http(&registered)
        && sent.host_str() == registered.host_str()
        && sent.path() == registered.path()
        && sent.query() == registered.query()
        && sent.fragment() == registered.fragment()
        && sent.username() == registered.username()
        && sent.password() == registered.password()
}

fn is_loopback_http(url: &Url) -> bool {
    url.scheme() == "http" && matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// Sends `params` back to the client at `redirect_uri` in the requested mode. `None` when the
/// URI does not parse (the caller shows an error page instead).
pub(crate) fn reply(
    redirect_uri: &str,
    mode: ResponseMode,
    params: &[(&str, &str)],
) -> Option<Response> {
    let mut url = Url::parse(redirect_uri).ok()?;
    match mode {
        ResponseMode::Query => {
            {
                let mut pairs = url.query_pairs_mut();
                for (name, value) in params {
                    pairs.append_pair(name, value);
                }
            }
            Some(found(url.as_str()))
        }
        ResponseMode::Fragment => {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            url.set_fragment(Some(&encoded));
            Some(found(url.as_str()))
        }
        ResponseMode::FormPost => Some(form_post(url.as_str(), params)),
    }
}

fn found(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

/// An auto-submitting form, with a button for when scripts are off.
fn form_post(action: &str, params: &[(&str, &str)]) -> Response {
    let inputs: String = params
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                html::escape(name),
                html::escape(value)
            )
        })
        .collect();
    let body = format!(
        "<h1>Working…</h1><form method=\"post\" action=\"{action}\" id=\"reply\">{inputs}\
         <noscript><p>Script is disabled. Click Continue.</p></noscript>\
         <button type=\"submit\" id=\"continue\">Continue</button></form>",
        action = html::escape(action),
    );
    html::page(
        StatusCode::OK,
        "Working…",
        &body,
        Some("document.getElementById('reply').submit();"),
    )
}
