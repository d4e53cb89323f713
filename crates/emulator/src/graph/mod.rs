//! The Microsoft Graph stand-in: `/v1.0/me`, `/v1.0/me/messages`, `/v1.0/me/mailboxSettings`.
//! This file owns what every Graph call shares: fault gate, bearer check, scope check, response
//! headers and the OData error shape (providers.md §1.8). It must not issue tokens.

pub(crate) mod mailbox;
pub(crate) mod me;
pub(crate) mod messages;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::TestAccount;
use crate::faults::HttpFault;
use crate::state::AccessCheck;
use crate::{Emulator, Surface};

const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

const WWW_AUTHENTICATE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

/// One Graph call's ids, echoed on every answer.
pub(crate) struct GraphCall {
    request_id: String,
    client_request_id: String,
}

/// A refused Graph call, already rendered.
pub(crate) type Refused = Box<Response>;

impl GraphCall {
    fn new(headers: &HeaderMap) -> Self {
        let request_id = Uuid::new_v4().to_string();
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 100)
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
        Self {
            request_id,
            client_request_id,
        }
    }

    fn stamp(&self, response: &mut Response) {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert("request-id", value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.client_request_id) {
            headers.insert("client-request-id", value);
        }
    }

    /// 200 with Graph's OData content type.
    pub fn ok(&self, body: Value) -> Response {
        let mut response = (StatusCode::OK, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
        self.stamp(&mut response);
        response
    }

    /// `{"error":{"code","message","innerError":{...}}}`.
    pub fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let date = graph_date(OffsetDateTime::now_utc());
        let mut inner = json!({
            "date": date,
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            inner["code"] = json!("429");
            inner["status"] = json!("429");
        }
        let body = json!({"error": {"code": code, "message": message, "innerError": inner}});
        let mut response = (status, Json(body)).into_response();
        self.stamp(&mut response);
        response
    }

    fn refused(
        &self,
        emulator: &Emulator,
        status: StatusCode,
        code: &str,
        message: &str,
    ) -> Refused {
        emulator.with(|memory| memory.stats.graph_error(code));
        let mut response = self.error(status, code, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        Box::new(response)
    }
}

/// Counts the call, applies latency and faults, checks the bearer token and that it carries one
/// of `any_of` permissions. Returns the signed-in account.
pub(crate) async fn begin(
    emulator: &Emulator,
    headers: &HeaderMap,
    endpoint: &'static str,
    any_of: &[&str],
    forbidden: (&str, &str),
) -> Result<(GraphCall, TestAccount), Refused> {
    let call = GraphCall::new(headers);
    if let Some(fault) = emulator.enter(endpoint, Surface::Graph).await {
        return Err(fault_response(emulator, &call, &fault));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(call.refused(
            emulator,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        ));
    };
    let checked = emulator.with(
        |memory| match memory.check_access_token(token, Instant::now()) {
            AccessCheck::Unknown => Err("IDX14100: JWT is not well formed, there are no dots (.)."),
            AccessCheck::Expired => Err("Lifetime validation failed, the token is expired."),
            AccessCheck::Valid(issued) => {
                let allowed = issued.graph_scopes.iter().any(|s| any_of.contains(s));
                let account = memory.account(&issued.account_id).cloned();
                Ok((allowed, account))
            }
        },
    );
    match checked {
        Err(message) => Err(call.refused(
            emulator,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )),
        Ok((false, _)) => Err(call.refused(emulator, StatusCode::FORBIDDEN, forbidden.0, forbidden.1)),
        Ok((true, None)) => Err(call.refused(
            emulator,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "Resource does not exist or one of its queried reference-property objects are not present.",
        )),
        Ok((true, Some(account))) => Ok((call, account)),
    }
}

/// An injected Graph failure: 429 `TooManyRequests` or a 5xx, with `Retry-After` if set.
fn fault_response(emulator: &Emulator, call: &GraphCall, fault: &HttpFault) -> Refused {
    let status = StatusCode::from_u16(fault.status)
        .ok()
        .filter(|s| *s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => ("TooManyRequests", "Please retry again later."),
        StatusCode::SERVICE_UNAVAILABLE => ("serviceNotAvailable", "Service Unavailable"),
        StatusCode::GATEWAY_TIMEOUT => ("UnknownError", "Gateway Timeout"),
        _ => ("generalException", "An unspecified error has occurred."),
    };
    emulator.with(|memory| memory.stats.graph_error(code));
    let mut response = call.error(status, code, message);
    if let Some(retry_after) = fault.retry_after_header()
        && let Ok(value) = HeaderValue::from_str(&retry_after)
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Box::new(response)
}

/// Any other `/v1.0/...` path, answered as Graph answers an unknown segment.
pub(crate) async fn unknown_segment(
    State(emulator): State<Emulator>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = GraphCall::new(&headers);
    let segment = rest.split('/').next().unwrap_or_default();
    emulator.with(|memory| memory.stats.graph_error("BadRequest"));
    call.error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Resource not found for the segment '{segment}'."),
    )
}

/// `2024-01-01T00:00:00`, the `innerError.date` format.
fn graph_date(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .unwrap_or_default()
}

/// Splits `$select` into canonical property names, or names the first unknown one.
pub(crate) fn parse_select<'a>(raw: &str, known: &[&'a str]) -> Result<Vec<&'a str>, String> {
    let mut selected = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let canonical = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(item))
            .ok_or_else(|| item.to_owned())?;
        if !selected.contains(canonical) {
            selected.push(*canonical);
        }
    }
    Ok(selected)
}
