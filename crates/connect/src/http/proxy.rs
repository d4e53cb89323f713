//! The provider API proxy for trusted callers: `ANY /v1/service/users/{user_id}/integrations/
//! {provider}/proxy/{*path}` forwards to one of the provider's API bases only (Graph for
//! Microsoft; Gmail, or `www.googleapis.com` with `X-Connect-Api: www`, for Google; Dropbox's
//! RPC API, or its content API with `X-Connect-Api: content`) with the user's fresh token. It
//! forwards the method, query, body, a short list of safe headers and the provider's own; streams the answer back without hop-by-hop or auth headers; on a 401 refreshes once
//! and retries (unless a refresh already failed to cure a 401 for that token); passes 429 and
//! `Retry-After` through. No other host is reachable through it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, HttpBody, to_bytes};
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use url::Url;

use crate::broker::tokens::{FreshToken, fresh_token};
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::middleware::KeepBody;
use crate::http::service::target;
use crate::http::upstream::{Outgoing, UpstreamError};
use crate::identity::ServiceCaller;
use crate::model::UserId;
use crate::provider::ProviderId;

/// Tokens a provider still refused (401) right after a refresh. That refusal is about
/// something a refresh cannot change (Dropbox's `missing_scope` or a suspended user, Graph's
/// claims challenge), so later calls with the same token get the provider's 401 without another
/// refresh: at most one refresh per token a 401 can cost, not one per call. Per process, keyed
/// by user and provider, holding the token's version (a new token, refreshed for any reason, is
/// tried again).
#[derive(Default)]
pub struct UncuredRefusals(Mutex<HashMap<(UserId, ProviderId), i64>>);

impl UncuredRefusals {
    /// Entries kept before the map starts over (each is a few dozen bytes).
    const CAPACITY: usize = 10_000;

    fn contains(&self, user: UserId, provider: ProviderId, version: i64) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(user, provider)) == Some(&version)
    }

    fn insert(&self, user: UserId, provider: ProviderId, version: i64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert((user, provider), version);
    }
}

/// Largest request body the proxy forwards (kept in memory for the one retry).
pub const PROXY_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Request headers passed to every provider, besides the provider's own
/// ([`ProviderSpec::forwarded_headers`](crate::provider::ProviderSpec)); everything else
/// (cookies, auth, forwarding headers, `X-Connect-Api`) stays here.
const FORWARD_REQUEST: [HeaderName; 6] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
];

const USER_AGENT: HeaderValue = HeaderValue::from_static(crate::app::USER_AGENT);

/// Names which of the provider's API bases a request goes to (`content` for Dropbox's content
/// API); absent, the provider's default.
pub const API_HEADER: &str = "x-connect-api";

/// Response headers never passed back: hop-by-hop (RFC 9110 §7.6.1), cookies, the provider's
/// authentication challenges, and `Clear-Site-Data` (it would act on the caller's origin, not
/// the provider's). Headers the answer's own `Connection` names are dropped too.
const DROP_RESPONSE: [HeaderName; 14] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::SET_COOKIE,
    HeaderName::from_static("set-cookie2"),
    HeaderName::from_static("clear-site-data"),
    header::WWW_AUTHENTICATE,
    header::CONTENT_LENGTH,
];

/// The headers an answer passes back to the caller: all but [`DROP_RESPONSE`] and those its
/// `Connection` header names as hop-by-hop (RFC 9110 §7.6.1), removed from the upstream's own
/// map. Names are compared with the few the answer has before any lookup: most answers carry
/// none of them but a Content-Length.
fn forwardable_response_headers(mut headers: HeaderMap) -> HeaderMap {
    let has = |headers: &HeaderMap, name: &HeaderName| headers.keys().any(|n| n == name);
    if has(&headers, &header::CONNECTION) {
        let connection: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for listed in connection.iter().filter_map(|v| v.to_str().ok()) {
            for name in listed.split(',').map(str::trim) {
                // Looked up case-insensitively; a name that is not a valid header name is a no-op.
                headers.remove(name);
            }
        }
    }
    for name in &DROP_RESPONSE {
        if has(&headers, name) {
            headers.remove(name);
        }
    }
    headers
}

/// The provider URL for the part of the request path after `/proxy/`, or `None` when it could
/// leave the API base (dot segments, encoded slashes or dots, backslashes, a scheme, an
/// authority).
pub fn upstream_url(api_base: &Url, rest: &str, query: Option<&str>) -> Option<Url> {
    let first = rest.split('/').next().unwrap_or_default();
    let suspicious = rest.is_empty()
        || rest.starts_with('/')
        || rest.contains("//")
        || rest.contains('\\')
        || first.contains(':')
        || rest.split('/').any(|seg| seg == ".." || seg == ".")
        || rest.as_bytes().windows(3).any(|w| {
            matches!(w, [b'%', hi, lo]
                if matches!([hi.to_ascii_lowercase(), lo.to_ascii_lowercase()],
                            [b'2', b'e' | b'f'] | [b'5', b'c'] | [b'0', b'0']))
        });
    if suspicious {
        return None;
    }
    let mut url = api_base.join(rest).ok()?;
    url.set_query(query);
    let same_origin = url.origin() == api_base.origin();
    (same_origin && url.path().starts_with(api_base.path())).then_some(url)
}

async fn send(
    state: &AppState,
    provider_headers: &[&str],
    method: &http::Method,
    url: &Url,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    token: &FreshToken,
) -> Result<http::Response<Body>> {
    let authorization = token
        .access_token
        .authorization()
        .ok_or_else(|| Error::Internal("the access token is not a valid header value".into()))?;
    let uri = url
        .as_str()
        .parse::<http::Uri>()
        .map_err(|_| Error::InvalidRequest("the request cannot be forwarded".into()))?;
    let mut forwarded = HeaderMap::with_capacity(8);
    forwarded.insert(header::AUTHORIZATION, authorization.clone());
    forwarded.insert(header::USER_AGENT, USER_AGENT);
    for (name, value) in headers {
        if FORWARD_REQUEST.contains(name) || provider_headers.contains(&name.as_str()) {
            forwarded.append(name, value.clone());
        }
    }
    if !forwarded.contains_key(header::ACCEPT) {
        forwarded.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    state
        .upstream
        .send(Outgoing {
            method: method.clone(),
            uri,
            headers: forwarded,
            body: body.clone(),
        })
        .await
        .map_err(|e| Error::ProviderUnavailable {
            retry_after_secs: 5,
            detail: match e {
                UpstreamError::Timeout => "proxy timeout".into(),
                UpstreamError::Transport => "proxy transport error".into(),
            },
        })
}

fn unknown_api(configured: &crate::provider::ConfiguredProvider) -> Error {
    Error::InvalidRequest(format!(
        "{API_HEADER} must be one of: {}",
        configured.spec().api_names.join(", ")
    ))
}

pub async fn proxy(
    State(state): State<AppState>,
    caller: ServiceCaller,
    params: RawPathParams,
    request: Request,
) -> Result<Response> {
    let (user, provider) = target(&params)?;
    // The raw (still percent-encoded) path: what the provider would see.
    let rest = request
        .uri()
        .path()
        .split_once("/proxy/")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let call = (
        crate::activity::method_name(request.method()),
        crate::activity::path_template(rest),
    );
    let answer = forward(&state, &caller, user, provider, request).await;
    let outcome = match &answer {
        Ok(response) => crate::activity::status_class(response.status().as_u16()),
        Err(e) => e.code(),
    };
    state.broker.activity.record(
        user,
        provider,
        crate::activity::Kind::Proxy,
        crate::activity::Actor::Key(caller.key_name),
        Some(call),
        outcome,
    );
    answer
}

async fn forward(
    state: &AppState,
    caller: &ServiceCaller,
    user: UserId,
    provider: ProviderId,
    request: Request,
) -> Result<Response> {
    let configured = state.broker.provider(provider).ok_or(Error::NotConnected)?;
    let (parts, body) = request.into_parts();
    let api_name = match parts.headers.get(API_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| unknown_api(configured))?),
    };
    let api_base = configured
        .api_base(api_name)
        .ok_or_else(|| unknown_api(configured))?;
    let provider_headers = configured.spec().forwarded_headers;
    // The raw (still percent-encoded) path, so the check sees what the provider would see.
    let raw_path = parts.uri.path();
    let rest = raw_path
        .split_once("/proxy/")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let url = upstream_url(api_base, rest, parts.uri.query()).ok_or_else(|| {
        Error::InvalidRequest("the path must stay within the provider's API".into())
    })?;
    // Counted once the request is known to be valid (a refused one spends no one's budget),
    // and before its body is read.
    state.limits.check_proxy(&caller.key_name, user)?;
    // Buffered only when there is one (kept for the one retry); most calls are bodiless GETs.
    // The server knows: no Content-Length (or 0), no Transfer-Encoding, or an HTTP/2 request
    // that ended with its headers.
    let body = if body.is_end_stream() {
        bytes::Bytes::new()
    } else {
        to_bytes(body, PROXY_BODY_LIMIT).await.map_err(|_| {
            Error::InvalidRequest(format!("the body must be at most {PROXY_BODY_LIMIT} bytes"))
        })?
    };
    let method = parts.method.clone();

    let token = fresh_token(&state.broker, user, provider, Duration::ZERO, None).await?;
    let mut upstream = send(
        state,
        provider_headers,
        &method,
        &url,
        &parts.headers,
        &body,
        &token,
    )
    .await?;
    if upstream.status() == http::StatusCode::UNAUTHORIZED
        && !state
            .uncured_refusals
            .contains(user, provider, token.version)
    {
        // The provider no longer takes this token (revoked, clock skew): refresh once, retry once.
        let newer = fresh_token(
            &state.broker,
            user,
            provider,
            Duration::ZERO,
            Some(token.version),
        )
        .await?;
        upstream = send(
            state,
            provider_headers,
            &method,
            &url,
            &parts.headers,
            &body,
            &newer,
        )
        .await?;
        if upstream.status() == http::StatusCode::UNAUTHORIZED {
            state.uncured_refusals.insert(user, provider, newer.version);
        }
    }
    tracing::info!(service_key = %caller.key_name, user_id = %user, provider = %provider,
                   method = %method, status = upstream.status().as_u16(), "proxied");

    // The upstream's body as it comes, with its length when known (the server then sends it
    // with a Content-Length rather than chunked).
    let (upstream, body) = upstream.into_parts();
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    *response.headers_mut() = forwardable_response_headers(upstream.headers);
    response.extensions_mut().insert(KeepBody);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_api_base() {
        let base = Url::parse("https://graph.microsoft.com/").unwrap();
        let ok = upstream_url(&base, "v1.0/me/messages", Some("$top=5")).unwrap();
        assert_eq!(
            ok.as_str(),
            "https://graph.microsoft.com/v1.0/me/messages?$top=5"
        );
        assert!(upstream_url(&base, "v1.0/users/adele@contoso.com", None).is_some());
        assert!(upstream_url(&base, "v1.0/drive/root:/a%20b%2Cc.txt", None).is_some());
        for bad in [
            "",
            "/evil.example/x",
            "//evil.example/x",
            "../x",
            "v1.0/../../x",
            "v1.0/%2e%2e/x",
            "v1.0%2f..%2fx",
            "v1.0/%2E%2E/x",
            "v1.0%2F..%2Fx",
            "v1.0/a%5cb",
            "v1.0/a%5Cb",
            "v1.0/a%00b",
            "https:evil.example",
            "http://evil.example/",
            "v1.0\\..\\x",
            "./x",
        ] {
            assert!(upstream_url(&base, bad, None).is_none(), "{bad}");
        }
        let nested = Url::parse("http://127.0.0.1:8080/emulator/").unwrap();
        assert_eq!(
            upstream_url(&nested, "v1.0/me", None).unwrap().as_str(),
            "http://127.0.0.1:8080/emulator/v1.0/me"
        );
    }
}
