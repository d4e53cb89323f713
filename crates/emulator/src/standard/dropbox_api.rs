//! Dropbox's RPC API as the service and the n8n recipes call it:
//! `POST /2/users/get_current_account` (no argument) and `POST /2/files/list_folder` /
//! `/continue` with cursors and `has_more`. Errors in Dropbox's shapes: 401 JSON auth errors
//! (`expired_access_token`, `invalid_access_token`, `missing_scope`), 409 endpoint errors, 400
//! plain text for bad input.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::memory::{AccessToken, Dead};
use super::{Flavor, bearer, fault_response};
use crate::config::ProviderAccount;
use crate::stats::endpoint;
use crate::{Emulator, Surface};

/// A 401 for a token that does not work.
pub(crate) fn auth_error(dead: Dead) -> Response {
    let tag = match dead {
        Dead::Expired => "expired_access_token",
        Dead::Unknown => "invalid_access_token",
    };
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error_summary": format!("{tag}/"), "error": {".tag": tag}})),
    )
        .into_response()
}

fn missing_scope(scope: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error_summary": "missing_scope/..",
                    "error": {".tag": "missing_scope", "required_scope": scope}})),
    )
        .into_response()
}

fn bad_input(function: &str, why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Error in call to API function \"{function}\": {why}"),
    )
        .into_response()
}

async fn begin(
    emulator: &Emulator,
    name: &'static str,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(AccessToken, ProviderAccount), Response> {
    if let Some(fault) = emulator.enter(name, Surface::Graph).await {
        return Err(fault_response(Flavor::Dropbox, &fault));
    }
    emulator.with(|memory| {
        let token = bearer(headers).unwrap_or_default();
        let token = memory
            .standard
            .access_token(Flavor::Dropbox, token)
            .map_err(auth_error)?
            .clone();
        if !token.scopes.iter().any(|s| s == scope) {
            return Err(missing_scope(scope));
        }
        let account = memory
            .flavor_accounts(Flavor::Dropbox)
            .iter()
            .find(|a| a.id == token.account_id)
            .cloned()
            .ok_or_else(|| auth_error(Dead::Unknown))?;
        Ok((token, account))
    })
}

/// `POST /2/users/get_current_account`: no argument (no body, or `null`).
pub(crate) async fn get_current_account(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, account) = match begin(
        &emulator,
        endpoint::DROPBOX_ACCOUNT,
        &headers,
        "account_info.read",
    )
    .await
    {
        Ok(found) => found,
        Err(response) => return response,
    };
    let text = String::from_utf8_lossy(&body);
    if !(text.trim().is_empty() || text.trim() == "null") {
        return bad_input(
            "users/get_current_account",
            "request body: could not decode input as JSON",
        );
    }
    Json(json!({
        "account_id": account.id,
        "name": {
            "given_name": account.given_name,
            "surname": account.family_name,
            "familiar_name": account.given_name,
            "display_name": account.name,
            "abbreviated_name": account.name.split_whitespace().filter_map(|w| w.chars().next()).collect::<String>(),
        },
        "email": account.email,
        "email_verified": true,
        "disabled": false,
        "country": "US",
        "locale": "en",
        "referral_link": "https://db.tt/emulator",
        "is_paired": false,
        "account_type": {".tag": "basic"},
        "root_info": {".tag": "user", "root_namespace_id": "3235641", "home_namespace_id": "3235641"},
    }))
    .into_response()
}

/// The account's files: `/Documents` holds `item_count` reports, the root two folders and a
/// file.
fn entries(account: &ProviderAccount, path: &str) -> Option<Vec<Value>> {
    let file = |dir: &str, name: &str, n: usize| {
        let display = format!("{dir}/{name}");
        json!({".tag": "file", "name": name, "path_lower": display.to_lowercase(),
               "path_display": display, "id": format!("id:emu{n:06}"),
               "client_modified": "2025-11-01T09:00:00Z", "server_modified": "2025-11-01T09:00:05Z",
               "rev": format!("{:015x}", n + 1), "size": 1024 + n * 10, "is_downloadable": true})
    };
    let folder = |name: &str, n: usize| {
        json!({".tag": "folder", "name": name, "path_lower": format!("/{}", name.to_lowercase()),
               "path_display": format!("/{name}"), "id": format!("id:emudir{n}")})
    };
    match path.to_lowercase().as_str() {
        "" => Some(vec![
            folder("Documents", 1),
            folder("Photos", 2),
            file("", "Get Started with Dropbox.pdf", 0),
        ]),
        "/documents" => Some(
            (1..=account.item_count)
                .map(|n| file("/Documents", &format!("Report {n:03}.txt"), n))
                .collect(),
        ),
        "/photos" => Some(Vec::new()),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListFolderArg {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    include_deleted: bool,
}

fn page(account: &ProviderAccount, path: &str, offset: usize, limit: usize) -> Response {
    let Some(all) = entries(account, path) else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error_summary": "path/not_found/..",
                        "error": {".tag": "path", "path": {".tag": "not_found"}}})),
        )
            .into_response();
    };
    let end = (offset + limit).min(all.len());
    let cursor = URL_SAFE_NO_PAD.encode(format!("{offset_end}|{limit}|{path}", offset_end = end));
    Json(json!({
        "entries": all.get(offset..end).unwrap_or_default(),
        "cursor": format!("AAE{cursor}"),
        "has_more": end < all.len(),
    }))
    .into_response()
}

fn json_arg<T: for<'de> Deserialize<'de>>(
    function: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(bad_input(
            function,
            &format!(
                "Bad HTTP \"Content-Type\" header: \"{content_type}\".  Expecting one of \"application/json\", \"application/json; charset=utf-8\", \"text/plain; charset=dropbox-cors-hack\"."
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| bad_input(function, &format!("request body: {e}")))
}

/// `POST /2/files/list_folder`: `{"path": "" | "/documents", "limit": 1..=2000}`.
pub(crate) async fn list_folder(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, account) = match begin(
        &emulator,
        endpoint::DROPBOX_LIST_FOLDER,
        &headers,
        "files.metadata.read",
    )
    .await
    {
        Ok(found) => found,
        Err(response) => return response,
    };
    let arg: ListFolderArg = match json_arg("files/list_folder", &headers, &body) {
        Ok(arg) => arg,
        Err(response) => return response,
    };
    let _ = (arg.recursive, arg.include_deleted);
    if !(arg.path.is_empty() || arg.path.starts_with('/')) {
        return bad_input(
            "files/list_folder",
            "request body: path: 'path' did not match pattern",
        );
    }
    let limit = arg.limit.unwrap_or(2000).clamp(1, 2000);
    page(&account, &arg.path, 0, limit)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContinueArg {
    cursor: String,
}

/// `POST /2/files/list_folder/continue`: `{"cursor": …}` from the previous page.
pub(crate) async fn list_folder_continue(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, account) = match begin(
        &emulator,
        endpoint::DROPBOX_LIST_FOLDER,
        &headers,
        "files.metadata.read",
    )
    .await
    {
        Ok(found) => found,
        Err(response) => return response,
    };
    let arg: ContinueArg = match json_arg("files/list_folder/continue", &headers, &body) {
        Ok(arg) => arg,
        Err(response) => return response,
    };
    let decoded = arg
        .cursor
        .strip_prefix("AAE")
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let parsed = decoded.as_deref().and_then(|text| {
        let mut parts = text.splitn(3, '|');
        let offset = parts.next()?.parse::<usize>().ok()?;
        let limit = parts.next()?.parse::<usize>().ok()?;
        Some((offset, limit, parts.next()?.to_owned()))
    });
    match parsed {
        Some((offset, limit, path)) => page(&account, &path, offset, limit),
        None => bad_input(
            "files/list_folder/continue",
            "request body: cursor: invalid cursor",
        ),
    }
}
