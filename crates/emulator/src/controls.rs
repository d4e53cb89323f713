//! Test controls under `/_emulator/`: counters, fault switches, reset, accounts and their
//! switches, clients and token lifetime, JSON in and out, for tests in another process. Each
//! route is a thin call into the same `Emulator` methods in-process tests use; it must not hold
//! logic of its own. Unauthenticated by design: the emulator never runs in production.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::Emulator;
use crate::config::RegisteredClient;
use crate::faults::{Faults, HttpFault};

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/faults", get(faults).post(set_faults))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/accounts", get(accounts))
        .route("/_emulator/accounts/{id}/{action}", post(account_switch))
        .route("/_emulator/clients", post(add_client))
        .route(
            "/_emulator/access-token-lifetime",
            post(set_access_token_lifetime),
        )
}

async fn stats(State(emulator): State<Emulator>) -> Response {
    Json(emulator.stats()).into_response()
}

async fn faults(State(emulator): State<Emulator>) -> Response {
    Json(emulator.faults()).into_response()
}

async fn set_faults(
    State(emulator): State<Emulator>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Response {
    let faults = match body {
        Ok(Json(faults)) => faults,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    for fault in [&faults.token, &faults.graph, &faults.revoke]
        .into_iter()
        .flatten()
    {
        if !is_failure_status(fault) {
            return bad_request("a fault status must be 429 or 5xx");
        }
    }
    emulator.set_faults(faults.clone());
    Json(faults).into_response()
}

fn is_failure_status(fault: &HttpFault) -> bool {
    fault.status == 429 || (500..=599).contains(&fault.status)
}

async fn reset(State(emulator): State<Emulator>) -> Response {
    emulator.reset();
    ok()
}

async fn accounts(State(emulator): State<Emulator>) -> Response {
    Json(emulator.accounts()).into_response()
}

async fn account_switch(
    State(emulator): State<Emulator>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if !emulator.knows_account(&id) {
        return not_found("no such account");
    }
    match action.as_str() {
        "revoke-grant" => emulator.revoke_grant(&id),
        "withdraw-consent" => emulator.withdraw_consent(&id),
        "expire-refresh-tokens" => emulator.expire_refresh_tokens(&id),
        "expire-access-tokens" => emulator.expire_access_tokens(&id),
        _ => return not_found("no such account switch"),
    }
    ok()
}

async fn add_client(
    State(emulator): State<Emulator>,
    body: Result<Json<RegisteredClient>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(client)) => {
            emulator.add_client(client);
            ok()
        }
        Err(rejection) => bad_request(&rejection.body_text()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeBody {
    /// `null`: random 3600..=5400 s per token.
    secs: Option<u64>,
}

async fn set_access_token_lifetime(
    State(emulator): State<Emulator>,
    body: Result<Json<LifetimeBody>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(body)) => {
            emulator.set_access_token_lifetime(body.secs.map(Duration::from_secs));
            ok()
        }
        Err(rejection) => bad_request(&rejection.body_text()),
    }
}

fn ok() -> Response {
    Json(json!({"ok": true})).into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_request", "message": message})),
    )
        .into_response()
}

fn not_found(message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": message})),
    )
        .into_response()
}
