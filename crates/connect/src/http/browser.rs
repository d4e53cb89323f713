//! The browser side of the connect flow: `auth-url` (called by the app's page with the user's
//! JWT, sets the browser-binding cookie) and the provider's redirect to `callback`, which
//! answers with a small page that tells the opener and closes, or with a redirect back to the
//! app. Pages escape everything, are never cached, send no Referer, and run under a strict CSP.

use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::broker::connect::{self, CallbackParams, Failure, Finished};
use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::http::ProviderName;
use crate::http::middleware::KeepBody;
use crate::http::user::configured_provider;
use crate::identity::CurrentUser;
use crate::oauth::state::BINDING_COOKIE;
use crate::store::ReturnMode;

/// Policy for pages the service renders: scripts and styles from this origin only.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Deserialize, IntoParams)]
pub struct AuthUrlQuery {
    /// `popup` (default) or `redirect` (same-window flow that returns to the app's settings URL).
    mode: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuthUrl {
    /// Open this in the popup (or the window, for `mode=redirect`).
    auth_url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: time::OffsetDateTime,
}

/// The app origin a request comes from: its `Origin` header, or this service's own origin for
/// a same-origin request (browsers omit `Origin` on same-origin GETs). It must be configured.
fn app_origin(state: &AppState, headers: &HeaderMap) -> Result<String> {
    let origin = match headers.get(header::ORIGIN) {
        Some(value) => value
            .to_str()
            .map_err(|_| Error::Forbidden("origin not allowed"))?
            .to_owned(),
        None if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v == "same-origin") =>
        {
            state.settings.public_url.origin().ascii_serialization()
        }
        None => {
            return Err(Error::Forbidden(
                "Start connecting from the app's page in a browser: the request must come from an allowed origin.",
            ));
        }
    };
    if state.settings.app_origins.contains(&origin) {
        Ok(origin)
    } else {
        Err(Error::Forbidden(
            "This origin is not allowed to start a connection.",
        ))
    }
}

/// The browser-binding cookie: `__Host-` (Secure, `Path=/`, no `Domain`: only this host can
/// set it) and no longer-lived than the flow it binds. Browsers accept `Secure` cookies from
/// `http://localhost` and `http://127.0.0.1`, so the demo works without TLS.
fn binding_cookie(value: &str, max_age: i64) -> HeaderValue {
    let cookie = format!(
        "{BINDING_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Starts connecting a provider: returns the authorize URL and sets the browser-binding cookie.
#[utoipa::path(get, path = "/v1/integrations/{provider}/auth-url", tag = "user", security(("user_jwt" = [])),
    params(("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`"), AuthUrlQuery),
    responses((status = 200, body = AuthUrl, description = "Also sets the HttpOnly `__Host-` browser-binding cookie; call with `credentials: 'include'`."),
              (status = 400, body = ErrorBody, description = "`mode` is neither `popup` nor `redirect`."),
              (status = 401, body = ErrorBody, description = "No or invalid user token."),
              (status = 403, body = ErrorBody, description = "Origin not allowed, or an anonymous user."),
              (status = 404, body = ErrorBody, description = "Unknown provider."),
              (status = 429, body = ErrorBody, description = "`rate_limited` (per user), with `Retry-After`.")))]
pub async fn auth_url(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(provider): Path<String>,
    Query(query): Query<AuthUrlQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let provider = configured_provider(&state, &provider)?;
    if user.is_anonymous {
        return Err(Error::Forbidden(
            "Anonymous users cannot connect accounts; sign in first.",
        ));
    }
    let origin = app_origin(&state, &headers)?;
    let mode = match query.mode.as_deref() {
        None | Some("popup") => ReturnMode::Popup,
        Some("redirect") => ReturnMode::Redirect,
        Some(_) => {
            return Err(Error::InvalidRequest(
                "mode must be popup or redirect".into(),
            ));
        }
    };
    // Counted once the request is valid: a refused one spends no one's budget.
    state.limits.auth_url_per_user.check(&user.id)?;
    let started = connect::start(&state.broker, user.id, provider, origin, mode).await?;
    let max_age = connect::FLOW_LIFETIME.whole_seconds();
    let mut response = Json(AuthUrl {
        auth_url: started.auth_url.to_string(),
        expires_at: started.expires_at,
    })
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        binding_cookie(started.binding_secret.expose_secret(), max_age),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Template)]
#[template(path = "callback.html")]
struct CallbackPage<'a> {
    base_path: &'a str,
    success: bool,
    heading: &'a str,
    detail: &'a str,
    message_type: String,
    provider: &'static str,
    reason: &'static str,
    app_origin: &'a str,
    settings_url: &'a str,
}

fn sentence(failure: Failure) -> &'static str {
    match failure {
        Failure::InvalidState => {
            "This sign-in link is not valid any more (it was used already, or belongs to another flow). Start again from the settings page."
        }
        Failure::Expired => {
            "This sign-in took too long and expired. Start again from the settings page."
        }
        Failure::BrowserMismatch => {
            "This sign-in was started in another browser. Start again from the settings page in this browser."
        }
        Failure::AccessDenied => "Access was not granted. Nothing was connected.",
        Failure::ConsentRequired => {
            "The account needs consent the sign-in could not give (an administrator may have to approve the app)."
        }
        Failure::ProviderError => "The provider reported an error. Nothing was connected.",
        Failure::ProviderUnavailable => {
            "The provider is not answering right now. Nothing changed; try again in a minute."
        }
        Failure::ExchangeFailed => {
            "The provider did not accept the sign-in. Nothing was connected; start again."
        }
        Failure::ProfileFailed => "The account's profile could not be read. Nothing was connected.",
        Failure::ScopeDenied => {
            "Not all the access asked for was granted, and the connection needs all of it. Nothing was connected; start again and leave every permission ticked."
        }
        Failure::Internal => "Something went wrong on our side. Nothing was connected.",
    }
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Headers for every page the service renders: never cached, no Referer, strict CSP, not
/// framed.
pub fn page_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Page headers for a callback answer. `flow_found`: the state named one of our flows, so its
/// binding is spent and the cookie is cleared; a state that matched nothing (anyone can send
/// one) leaves the cookie alone, so it cannot cut short the flow this browser has pending.
fn secure_page_headers(response: &mut Response, flow_found: bool) {
    page_headers(response.headers_mut());
    if flow_found {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, binding_cookie("", 0));
    }
    response.extensions_mut().insert(KeepBody);
}

/// Where the provider returns the browser. Renders the result page (popup) or redirects to the
/// app's settings URL (same-window flow).
#[utoipa::path(get, path = "/v1/integrations/{provider}/callback", tag = "browser",
    params(("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`"),
           ("code" = Option<String>, Query, description = "The provider's authorization code."),
           ("state" = Option<String>, Query, description = "The flow's state, as `auth-url` sent it to the provider."),
           ("error" = Option<String>, Query, description = "The provider's error code, e.g. `access_denied`."),
           ("error_description" = Option<String>, Query, description = "The provider's text; never shown or stored.")),
    responses((status = 200, content_type = "text/html", description = "Connected: a page that tells the app and closes."),
              (status = 303, description = "Same-window flow: back to the app's settings URL with `integration`, `result` and `reason`."),
              (status = 400, content_type = "text/html", description = "Not connected: a page with the reason; nothing was stored."),
              (status = 404, body = ErrorBody, description = "Unknown provider."),
              (status = 429, body = ErrorBody, description = "`rate_limited` (per client address), with `Retry-After`.")))]
pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(params): Query<CallbackParams>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Response> {
    state
        .limits
        .callback_per_ip
        .check(&client_ip(&state, &headers, &extensions))?;
    let provider = configured_provider(&state, &provider)?;
    let finished = connect::finish(
        &state.broker,
        provider,
        &params,
        cookie_value(&headers, BINDING_COOKIE),
    )
    .await;
    Ok(render(&state, finished))
}

/// The client's address: the rightmost entry of the configured header (the one the trusted
/// proxy in front appended), else the TCP peer. Unknown: the unspecified address, one shared
/// bucket.
fn client_ip(state: &AppState, headers: &HeaderMap, extensions: &Extensions) -> IpAddr {
    let from_header = state
        .settings
        .rate_limits
        .client_ip_header
        .as_ref()
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    from_header
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

fn render(state: &AppState, finished: Finished) -> Response {
    let settings_url = &state.settings.app_settings_url;
    let provider = finished.provider;
    let reason = finished.result.err().map(Failure::code).unwrap_or("");
    let flow_found = finished.app_origin.is_some();
    let mut response =
        if finished.return_mode == ReturnMode::Redirect && finished.app_origin.is_some() {
            let mut target = settings_url.clone();
            target
                .query_pairs_mut()
                .append_pair("integration", provider.path_name())
                .append_pair(
                    "result",
                    if finished.result.is_ok() {
                        "connected"
                    } else {
                        "error"
                    },
                );
            if !reason.is_empty() {
                target.query_pairs_mut().append_pair("reason", reason);
            }
            Redirect::to(target.as_str()).into_response()
        } else {
            let success = finished.result.is_ok();
            let prefix = provider.as_str().to_ascii_uppercase();
            // Only the flow's own outcome is announced to the app's pages: a state that matched
            // no flow came from anyone, and must neither close the user's popup nor end the
            // connect the app is waiting for.
            let message_type = if flow_found {
                format!(
                    "{prefix}_AUTH_{}",
                    if success { "SUCCESS" } else { "ERROR" }
                )
            } else {
                String::new()
            };
            let page = CallbackPage {
                base_path: &crate::http::pages::base_path(&state.settings.public_url),
                success,
                heading: if success {
                    "Connected"
                } else {
                    "Not connected"
                },
                detail: match finished.result {
                    Ok(()) => "Your account is connected. This window closes by itself.",
                    Err(failure) => sentence(failure),
                },
                message_type,
                provider: provider.as_str(),
                reason,
                app_origin: finished.app_origin.as_deref().unwrap_or(""),
                settings_url: settings_url.as_str(),
            };
            match page.render() {
                Ok(html) => {
                    let status = if success {
                        StatusCode::OK
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    (status, Html(html)).into_response()
                }
                Err(e) => return Error::Internal(format!("callback page: {e}")).into_response(),
            }
        };
    secure_page_headers(&mut response, flow_found);
    response
}
