//! `POST /{tenant}/oauth2/v2.0/token` (providers.md §1.4–1.6): reads the form, authenticates the
//! client (secret in the body or HTTP Basic), hands the grant to its module and renders the
//! answer or Microsoft's JSON error. Grant rules live in `authorization_code` and
//! `refresh_token`; this file must not know them.

mod authorization_code;
mod refresh_token;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tokio::time::Instant;

use crate::faults::HttpFault;
use crate::identity::error::{AadError, Trace, no_store};
use crate::identity::params::Params;
use crate::identity::scope::granted_scope_string;
use crate::identity::tenant::Tenant;
use crate::state::State as Memory;
use crate::stats::endpoint;
use crate::{Emulator, Surface};

/// What a grant module decided: whose token, for which Graph permissions, with or without a
/// refresh token.
pub(crate) struct Grant {
    pub account_id: String,
    pub graph: Vec<&'static str>,
    pub refresh: bool,
}

#[derive(Serialize)]
struct TokenBody {
    token_type: &'static str,
    scope: String,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

pub(crate) async fn token(
    State(emulator): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let trace = Trace::new(&headers);
    if let Some(fault) = emulator.enter(endpoint::TOKEN, Surface::Token).await {
        return fault_response(&fault, &trace);
    }
    let now = Instant::now();
    emulator.with(
        |memory| match exchange(memory, &tenant, &headers, &body, now) {
            Ok(body) => {
                let mut response = (StatusCode::OK, Json(body)).into_response();
                no_store(response.headers_mut());
                trace.stamp(response.headers_mut());
                response
            }
            Err(error) => {
                memory.stats.token_error(error.error, error.code);
                error.into_token_response(&trace)
            }
        },
    )
}

fn exchange(
    memory: &mut Memory,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: Instant,
) -> Result<TokenBody, AadError> {
    // Microsoft reads only form bodies; anything else looks like a request without parameters.
    let params = if is_form(headers) {
        Params::parse(body)?
    } else {
        Params::default()
    };
    let grant_type = params.get("grant_type");
    memory.stats.grant_requested(grant_type.unwrap_or("(none)"));
    let grant_type = grant_type.ok_or_else(|| AadError::missing_parameter("grant_type"))?;
    let tenant = Tenant::parse(tenant)?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = authenticate(memory, &tenant, headers, &params)?;
    let grant = if grant_type == "authorization_code" {
        authorization_code::redeem(memory, &client_id, &tenant, &params, now)?
    } else {
        refresh_token::redeem(memory, &client_id, &params, now)?
    };
    let scope = granted_scope_string(&grant.graph);
    let minted = memory.mint_tokens(
        &grant.account_id,
        &client_id,
        grant.graph,
        grant.refresh,
        now,
    );
    memory.stats.token_issued(grant_type);
    Ok(TokenBody {
        token_type: "Bearer",
        scope,
        expires_in: minted.expires_in,
        ext_expires_in: minted.expires_in,
        access_token: minted.access_token,
        refresh_token: minted.refresh_token,
    })
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Client authentication: `client_secret` in the body or HTTP Basic, never both. Returns the
/// client id.
fn authenticate(
    memory: &Memory,
    tenant: &Tenant,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, AadError> {
    let basic = basic_credentials(headers)?;
    let client_id = match (&basic, params.get("client_id")) {
        (Some((id, _)), Some(body_id)) if id != body_id => return Err(AadError::malformed()),
        (Some((id, _)), _) => id.clone(),
        (None, Some(body_id)) => body_id.to_owned(),
        (None, None) => return Err(AadError::missing_parameter("client_id")),
    };
    let Some(client) = memory.client(&client_id) else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant. You may have sent your \
                 authentication request to the wrong tenant.",
                tenant.path
            ),
        ));
    };
    let secret = match (basic.map(|(_, secret)| secret), params.get("client_secret")) {
        // RFC 6749 §2.3: a client must not use more than one authentication method.
        (Some(_), Some(_)) => return Err(AadError::malformed()),
        (Some(secret), None) => secret,
        (None, Some(secret)) => secret.to_owned(),
        (None, None) => {
            return Err(AadError::invalid_client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'.",
            ));
        }
    };
    let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
        secret.as_bytes(),
        client.client_secret.as_bytes(),
    )
    .is_ok();
    if !matches {
        return Err(AadError::invalid_client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        ));
    }
    Ok(client_id)
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, AadError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AadError::malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(AadError::malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(AadError::malformed)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// An injected token-endpoint failure in Microsoft's error shape.
fn fault_response(fault: &HttpFault, trace: &Trace) -> Response {
    let status = StatusCode::from_u16(fault.status)
        .ok()
        .filter(|s| *s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = match status {
        StatusCode::TOO_MANY_REQUESTS => AadError::new(
            status,
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Please retry later.",
        ),
        StatusCode::INTERNAL_SERVER_ERROR => AadError::new(
            status,
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        ),
        _ => AadError::new(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
    };
    let mut response = error.into_token_response(trace);
    if let Some(retry_after) = fault.retry_after_header()
        && let Ok(value) = HeaderValue::from_str(&retry_after)
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
