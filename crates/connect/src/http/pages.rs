//! The service's own settings page (`/settings`): a card per configured provider, built on the
//! browser SDK, server-rendered with no build step. In demo mode it offers a demo sign-in; in
//! production it reads the host app's user token (see the page's own text). No inline script or
//! style, so the strict CSP holds.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::error::Error;
use crate::http::AppState;
use crate::http::browser::page_headers;

pub struct ProviderCard {
    pub id: &'static str,
    pub path_name: &'static str,
    pub label: &'static str,
    /// What connecting allows, in the user's words ("read your Gmail messages").
    pub access_summary: &'static str,
    /// Whether a disconnect revokes at the provider; if not, the page says where to remove it.
    pub revokes: bool,
    pub remove_access_at: &'static str,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    demo: bool,
    providers: Vec<ProviderCard>,
    base_url: String,
    base_path: String,
}

/// The path the service's pages are served under, ending in `/`: the path of
/// `CONNECT_PUBLIC_URL` (`/` at a host's root, `/connect/` behind a path of the app's domain).
/// The pages' own files are linked under it.
pub fn base_path(public_url: &url::Url) -> String {
    format!("{}/", public_url.path().trim_end_matches('/'))
}

/// `GET /`: the settings page is the only page a person opens here.
pub async fn home() -> Redirect {
    Redirect::to("settings")
}

/// `GET /settings`.
pub async fn settings(State(state): State<AppState>) -> Response {
    let page = SettingsPage {
        demo: state.settings.demo,
        providers: state
            .broker
            .provider_ids()
            .into_iter()
            .map(|p| ProviderCard {
                id: p.as_str(),
                path_name: p.path_name(),
                label: p.label(),
                access_summary: p.spec().access_summary,
                revokes: p.spec().revocation != crate::provider::Revocation::None,
                remove_access_at: p.spec().remove_access_at,
            })
            .collect(),
        base_url: state
            .settings
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        base_path: base_path(&state.settings.public_url),
    };
    let html = match page.render() {
        Ok(html) => html,
        Err(e) => return Error::Internal(format!("settings page: {e}")).into_response(),
    };
    let mut response = Html(html).into_response();
    let h = response.headers_mut();
    page_headers(h);
    if let Some(value) = state
        .settings
        .demo_coop
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert("cross-origin-opener-policy", value);
    }
    response
}
