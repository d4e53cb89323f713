//! Google's APIs as the service and the n8n recipes call them: OpenID `userinfo` (`sub`,
//! `email`, `email_verified`, `name`, `picture`, by granted scope) and Gmail
//! `users/me/messages` list (`maxResults`, `pageToken`, `nextPageToken`) and get (`format`).
//! Errors in Google's JSON shape; a bad token is 401 with `WWW-Authenticate`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::memory::{AccessToken, Dead};
use super::{Flavor, bearer, fault_response};
use crate::config::ProviderAccount;
use crate::stats::endpoint;
use crate::{Emulator, Surface};

const GMAIL_READ: &[&str] = &[
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://mail.google.com/",
];

fn google_error(status: StatusCode, message: &str, state: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": state}})),
    )
        .into_response()
}

fn unauthenticated() -> Response {
    let mut response = google_error(
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
         cookie or other valid authentication credential.",
        "UNAUTHENTICATED",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    response
}

/// Counts, applies API faults, and finds the caller's token and account.
async fn begin(
    emulator: &Emulator,
    name: &'static str,
    headers: &HeaderMap,
) -> Result<(AccessToken, ProviderAccount), Response> {
    if let Some(fault) = emulator.enter(name, Surface::Graph).await {
        return Err(fault_response(Flavor::Google, &fault));
    }
    emulator.with(|memory| {
        let token = bearer(headers).unwrap_or_default();
        let token = match memory.standard.access_token(Flavor::Google, token) {
            Ok(token) => token.clone(),
            Err(Dead::Unknown | Dead::Expired) => return Err(unauthenticated()),
        };
        let account = memory
            .flavor_accounts(Flavor::Google)
            .iter()
            .find(|a| a.id == token.account_id)
            .cloned()
            .ok_or_else(unauthenticated)?;
        Ok((token, account))
    })
}

/// `GET /v1/userinfo`.
pub(crate) async fn userinfo(State(emulator): State<Emulator>, headers: HeaderMap) -> Response {
    let (token, account) = match begin(&emulator, endpoint::GOOGLE_USERINFO, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let has = |s: &str| token.scopes.iter().any(|g| g == s);
    // Userinfo needs an OpenID scope (providers.md §2.6): a token for Gmail alone gets 401.
    if !["openid", "email", "profile"].iter().any(|s| has(s)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer error=\"insufficient_scope\"",
            )],
            Json(json!({
                "error": "insufficient_scope",
                "error_description": "The access token does not have an OpenID scope."
            })),
        )
            .into_response();
    }
    let mut body = json!({"sub": account.id});
    if let Some(map) = body.as_object_mut() {
        if has("email") {
            map.insert("email".into(), json!(account.email));
            map.insert("email_verified".into(), json!(true));
        }
        if has("profile") {
            map.insert("name".into(), json!(account.name));
            map.insert("given_name".into(), json!(account.given_name));
            map.insert("family_name".into(), json!(account.family_name));
            map.insert(
                "picture".into(),
                json!("https://lh3.googleusercontent.example/a/default-user"),
            );
        }
    }
    Json(body).into_response()
}

fn can_read_mail(token: &AccessToken) -> bool {
    token
        .scopes
        .iter()
        .any(|s| GMAIL_READ.contains(&s.as_str()))
}

fn insufficient_scope() -> Response {
    google_error(
        StatusCode::FORBIDDEN,
        "Request had insufficient authentication scopes.",
        "PERMISSION_DENIED",
    )
}

/// The id of message `i` (0 is the newest) of `account`: 16 hex digits, like Gmail's.
fn message_id(account: &ProviderAccount, i: usize) -> String {
    let seed = account.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!(
        "{:016x}",
        seed.wrapping_add(i as u64 * 7919) | 0x1800_0000_0000_0000
    )
}

fn message_index(account: &ProviderAccount, id: &str) -> Option<usize> {
    (0..account.item_count).find(|i| message_id(account, *i) == id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    max_results: Option<String>,
    page_token: Option<String>,
}

/// `GET /gmail/v1/users/me/messages`: newest first, `maxResults` 1..=500 (default 100).
pub(crate) async fn list_messages(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let (token, account) = match begin(&emulator, endpoint::GMAIL_MESSAGES, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if !can_read_mail(&token) {
        return insufficient_scope();
    }
    let max = match query.max_results.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) => n.clamp(1, 500),
        Some(Err(_)) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "Invalid value for maxResults",
                "INVALID_ARGUMENT",
            );
        }
    };
    let start = match query.page_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= account.item_count => n,
        Some(_) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "Invalid pageToken",
                "INVALID_ARGUMENT",
            );
        }
    };
    let end = (start + max).min(account.item_count);
    let messages: Vec<Value> = (start..end)
        .map(|i| {
            let id = message_id(&account, i);
            json!({"id": id, "threadId": id})
        })
        .collect();
    let mut body = json!({"resultSizeEstimate": messages.len()});
    if let Some(map) = body.as_object_mut() {
        if !messages.is_empty() {
            map.insert("messages".into(), Value::Array(messages));
        }
        if end < account.item_count {
            map.insert("nextPageToken".into(), json!(end.to_string()));
        }
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct GetQuery {
    format: Option<String>,
}

/// `GET /gmail/v1/users/me/messages/{id}`: `format` `full` (default), `metadata` or `minimal`.
pub(crate) async fn get_message(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<GetQuery>,
) -> Response {
    let (token, account) = match begin(&emulator, endpoint::GMAIL_MESSAGES, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if !can_read_mail(&token) {
        return insufficient_scope();
    }
    let Some(i) = message_index(&account, &id) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            "NOT_FOUND",
        );
    };
    let subject = format!("Gmail test message {}", account.item_count - i);
    let sender = "Celeste Newsletter <news@celeste.example>";
    // Newest first, one hour apart, from a fixed point so answers are stable.
    let internal_date = 1_764_547_200_000_u64 - (i as u64) * 3_600_000;
    let mut body = json!({
        "id": id,
        "threadId": id,
        "labelIds": ["INBOX", "UNREAD"],
        "snippet": format!("This is test message {} for {}.", account.item_count - i, account.name),
        "historyId": (100_000 + account.item_count - i).to_string(),
        "internalDate": internal_date.to_string(),
        "sizeEstimate": 2048,
    });
    let format = query.format.as_deref().unwrap_or("full");
    if format != "minimal"
        && let Some(map) = body.as_object_mut()
    {
        map.insert(
            "payload".into(),
            json!({
                "mimeType": "text/plain",
                "headers": [
                    {"name": "From", "value": sender},
                    {"name": "To", "value": account.email},
                    {"name": "Subject", "value": subject},
                    {"name": "Date", "value": "Mon, 1 Dec 2025 00:00:00 +0000"},
                ],
            }),
        );
    }
    Json(body).into_response()
}
