//! The service API: what trusted backends and workflow engines (n8n) call with a service key.
//! Responses never carry a refresh token; unknown users and providers get a constant answer.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, RawPathParams, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::activity::{Actor, Kind, outcome_of};
use crate::broker;
use crate::broker::access_token::needs_no_escaping;
use crate::broker::tokens::{FreshToken, fresh_token};
use crate::error::{Error, ErrorBody, Result};
use crate::http::AppState;
use crate::http::ProviderName;
use crate::identity::ServiceCaller;
use crate::model::{ConnectionListing, ConnectionState, UserId};
use crate::provider::ProviderId;
use crate::store::ListFilter;

pub const MAX_PAGE: u32 = 500;
/// Largest `min_ttl` a caller may ask for (Microsoft access tokens live 60–90 minutes).
pub const MAX_MIN_TTL_SECS: u64 = 3600;

/// Reads the `{user_id}` and `{provider}` of a service path, as the router decoded them
/// (without copying the strings: these routes run on every token and proxy request). A malformed user id is bad input;
/// an unknown provider answers exactly like an unknown user.
pub fn target(params: &RawPathParams) -> Result<(UserId, ProviderId)> {
    let (mut user_id, mut provider) = ("", "");
    for (name, value) in params {
        match name {
            "user_id" => user_id = value,
            "provider" => provider = value,
            _ => {}
        }
    }
    let user = uuid::Uuid::parse_str(user_id)
        .map_err(|_| Error::InvalidRequest("user_id must be a UUID".into()))?;
    let provider = ProviderId::from_path(provider).ok_or(Error::NotConnected)?;
    Ok((UserId(user), provider))
}

/// A listing's `provider` filter: a provider path name, or bad input.
pub fn provider_filter(provider: Option<&str>) -> Result<Option<ProviderId>> {
    provider
        .map(|p| {
            ProviderId::from_path(p).ok_or_else(|| {
                Error::InvalidRequest(
                    "provider must be outlook, microsoft, google or dropbox".into(),
                )
            })
        })
        .transpose()
}

/// A listing's page size: 1–[`MAX_PAGE`], 100 when not given.
pub fn page_limit(limit: Option<u32>) -> Result<u32> {
    page(None, limit, 100, MAX_PAGE).map(|(_, limit)| limit)
}

#[derive(Deserialize, IntoParams)]
pub struct TokenQuery {
    /// Seconds the token must stay valid at least (0–3600); it is refreshed first otherwise.
    /// More than the provider's tokens live less a minute (3539 for Microsoft and Google) is
    /// taken as that much: no refresh could give more.
    #[param(minimum = 0, maximum = 3600)]
    min_ttl: Option<u64>,
}

/// A fresh access token. Never the refresh token.
// The fields borrow from the cached token, so answering from memory copies nothing but the
// body itself. (A `//` comment: the doc comment is the OpenAPI description.)
#[derive(Serialize, ToSchema)]
pub struct TokenResponse<'a> {
    #[schema(value_type = String)]
    access_token: &'a str,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: time::OffsetDateTime,
    #[schema(value_type = Vec<String>)]
    scopes: &'a [String],
    #[schema(value_type = String)]
    provider_user_id: &'a str,
    #[schema(value_type = Option<String>)]
    provider_email: Option<&'a str>,
}

impl<'a> TokenResponse<'a> {
    fn of(token: &'a FreshToken) -> Self {
        Self {
            access_token: token.access_token.expose_secret(),
            token_type: "Bearer",
            expires_at: token.expires_at,
            scopes: &token.scopes,
            provider_user_id: &token.provider_user_id,
            provider_email: token.provider_email.as_deref(),
        }
    }
}

/// The JSON body of a token answer: what serde writes for [`TokenResponse`], without copying
/// the token. Its chunk shares the cached token's memory (zeroed when the last user drops it),
/// and the fields after it are written by hand once per token and kept with it
/// ([`FreshToken::answer_tail`]): each string checked in one vectorised pass and copied, or
/// escaped by serde when it needs it. A token that needs escaping (no provider issues one)
/// sends the whole body through serde.
fn token_body(token: &FreshToken) -> serde_json::Result<Body> {
    let Some(access_token) = token.access_token.json_text() else {
        return Ok(Body::from(serde_json::to_vec(&TokenResponse::of(token))?));
    };
    let tail = match token.answer_tail.get() {
        Some(tail) => tail.clone(),
        None => {
            let tail = Bytes::from(answer_tail(token)?.into_boxed_slice());
            // Two first answers at once may both write it; either copy is the same.
            let _ = token.answer_tail.set(tail.clone());
            tail
        }
    };
    Ok(Body::new(Chunks(
        [
            Bytes::from_static(br#"{"access_token":""#),
            access_token,
            tail,
        ]
        .into_iter(),
    )))
}

/// Everything of a token answer after the token: its closing quote, then the other fields.
fn answer_tail(token: &FreshToken) -> serde_json::Result<Vec<u8>> {
    let mut rest = Vec::with_capacity(rest_size(token));
    rest.extend_from_slice(br#"","token_type":"Bearer","expires_at":""#);
    token
        .expires_at
        .format_into(&mut rest, &time::format_description::well_known::Rfc3339)
        .map_err(<serde_json::Error as serde::ser::Error>::custom)?;
    rest.extend_from_slice(br#"","scopes":["#);
    for (i, scope) in token.scopes.iter().enumerate() {
        if i > 0 {
            rest.push(b',');
        }
        push_json_str(&mut rest, scope)?;
    }
    rest.extend_from_slice(br#"],"provider_user_id":"#);
    push_json_str(&mut rest, &token.provider_user_id)?;
    rest.extend_from_slice(br#","provider_email":"#);
    match &token.provider_email {
        Some(email) => push_json_str(&mut rest, email)?,
        None => rest.extend_from_slice(b"null"),
    }
    rest.push(b'}');
    Ok(rest)
}

/// Room for what follows the token unless a value needs escaping: field names, punctuation and
/// the timestamp take about 130 bytes.
fn rest_size(token: &FreshToken) -> usize {
    160 + token.scopes.iter().map(|s| s.len() + 3).sum::<usize>()
        + token.provider_user_id.len()
        + token.provider_email.as_deref().map_or(0, str::len)
}

/// `value` as a JSON string: copied between quotes when it needs no escaping, else by serde.
fn push_json_str(out: &mut Vec<u8>, value: &str) -> serde_json::Result<()> {
    if needs_no_escaping(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, value)
    }
}

/// A body sent as the chunks it is made of, none copied, with its length known (so it goes
/// out with a Content-Length, not chunked).
struct Chunks<const N: usize>(std::array::IntoIter<Bytes, N>);

impl<const N: usize> http_body::Body for Chunks<N> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_slice().iter().all(Bytes::is_empty)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_slice().iter().map(|c| c.len() as u64).sum())
    }
}

/// A valid access token for the user's connection, refreshed first when it expires within the
/// skew (5 minutes) or `min_ttl`.
#[utoipa::path(get, path = "/v1/service/users/{user_id}/integrations/{provider}/token", tag = "service",
    security(("service_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The app's user id (JWT `sub`)."),
           ("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`"), TokenQuery),
    responses((status = 200, body = TokenResponse, description = "A token valid for at least the skew (5 minutes) or `min_ttl`."),
              (status = 400, body = ErrorBody, description = "`user_id` is not a UUID, or `min_ttl` is out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 404, body = ErrorBody, description = "No such connection (same answer for an unknown user or provider)."),
              (status = 409, body = ErrorBody, description = "`reauth_required`: the user must connect again."),
              (status = 429, body = ErrorBody, description = "`rate_limited` (per service key, or per user within it), with `Retry-After`."),
              (status = 503, body = ErrorBody, description = "`provider_unavailable`, with `Retry-After`; nothing was lost.")))]
pub async fn token(
    State(state): State<AppState>,
    caller: ServiceCaller,
    params: RawPathParams,
    Query(query): Query<TokenQuery>,
) -> Result<Response> {
    let (user, provider) = target(&params)?;
    let answer = issue_token(&state, &caller, user, provider, query.min_ttl.unwrap_or(0)).await;
    state.broker.activity.record(
        user,
        provider,
        Kind::Token,
        Actor::Key(caller.key_name),
        None,
        outcome_of(&answer),
    );
    answer
}

async fn issue_token(
    state: &AppState,
    caller: &ServiceCaller,
    user: UserId,
    provider: ProviderId,
    min_ttl: u64,
) -> Result<Response> {
    if min_ttl > MAX_MIN_TTL_SECS {
        return Err(Error::InvalidRequest(format!(
            "min_ttl must be between 0 and {MAX_MIN_TTL_SECS}"
        )));
    }
    // Counted once the request is valid: a refused one spends no one's budget.
    state.limits.check_token(&caller.key_name, user)?;
    let token = fresh_token(
        &state.broker,
        user,
        provider,
        Duration::from_secs(min_ttl),
        None,
    )
    .await?;
    tracing::info!(service_key = %caller.key_name, user_id = %user, provider = %provider,
                   expires_at = %token.expires_at, "token issued");
    token_response(&token)
}

/// The 200 answer for a token: its JSON body, `no-store`.
fn token_response(token: &FreshToken) -> Result<Response> {
    let body = token_body(token).map_err(|e| Error::Internal(format!("token body: {e}")))?;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Disconnects a user's connection as the operator: the same revocation as the user's own
/// disconnect (Google and Dropbox grants revoked first; a failed revocation still deletes), and
/// `connection.disconnected` with `by: operator`. Idempotent.
#[utoipa::path(delete, path = "/v1/service/users/{user_id}/integrations/{provider}", tag = "service",
    operation_id = "disconnect_as_operator", security(("service_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The app's user id (JWT `sub`)."),
           ("provider" = ProviderName, Path, description = "`outlook` (alias `microsoft`), `google` or `dropbox`")),
    responses((status = 204, description = "Disconnected (or was not connected)."),
              (status = 400, body = ErrorBody, description = "`user_id` is not a UUID."),
              (status = 401, body = ErrorBody, description = "No or invalid service key."),
              (status = 404, body = ErrorBody, description = "Unknown provider.")))]
pub async fn disconnect(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path((user_id, provider)): Path<(String, String)>,
) -> Result<axum::http::StatusCode> {
    let user = uuid::Uuid::parse_str(&user_id)
        .map_err(|_| Error::InvalidRequest("user_id must be a UUID".into()))?;
    let provider = ProviderId::from_path(&provider)
        .filter(|p| state.broker.provider(*p).is_some())
        .ok_or(Error::NotFound("provider"))?;
    broker::disconnect(
        &state.broker,
        UserId(user),
        provider,
        Actor::Key(caller.key_name.clone()),
    )
    .await?;
    tracing::info!(service_key = %caller.key_name, user_id = %user, provider = %provider, "disconnected by the operator");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A listing's `cursor` (an id this service issued) and `limit` (`default` when absent, at most
/// `max`), checked.
pub fn page(
    cursor: Option<&str>,
    limit: Option<u32>,
    default: u32,
    max: u32,
) -> Result<(Option<uuid::Uuid>, u32)> {
    let cursor = cursor
        .map(|c| {
            uuid::Uuid::parse_str(c)
                .map_err(|_| Error::InvalidRequest("cursor is not one this service issued".into()))
        })
        .transpose()?;
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {max}"
        )));
    }
    Ok((cursor, limit))
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// `outlook` (alias `microsoft`), `google` or `dropbox`.
    provider: Option<String>,
    /// `connected` or `needs_reauth`.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    connections: Vec<ConnectionListing>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    next_cursor: Option<String>,
}

/// Connections across users (no tokens), paged, for workflows that iterate users.
#[utoipa::path(get, path = "/v1/service/integrations", tag = "service", operation_id = "list_connections", security(("service_key" = [])),
    params(ListQuery),
    responses((status = 200, body = ConnectionPage, description = "One page of connections, oldest id first."),
              (status = 400, body = ErrorBody, description = "An unknown `provider` or `status`, a `cursor` this service did not issue, or `limit` out of range."),
              (status = 401, body = ErrorBody, description = "No or invalid service key.")))]
pub async fn list(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConnectionPage>> {
    let provider = provider_filter(query.provider.as_deref())?;
    let status = query
        .status
        .as_deref()
        .map(|s| match s {
            "connected" => Ok(ConnectionState::Connected),
            "needs_reauth" => Ok(ConnectionState::NeedsReauth),
            _ => Err(Error::InvalidRequest(
                "status must be connected or needs_reauth".into(),
            )),
        })
        .transpose()?;
    let (after, limit) = page(query.cursor.as_deref(), query.limit, 100, MAX_PAGE)?;
    let (connections, next) = broker::list_connections(
        &state.broker,
        ListFilter {
            provider,
            state: status,
            after,
            limit,
        },
    )
    .await?;
    Ok(Json(ConnectionPage {
        connections,
        next_cursor: next.map(|id| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(email: Option<&str>) -> FreshToken {
        FreshToken {
            access_token: "eyJ0eXAi.access".to_owned().into(),
            expires_at: time::macros::datetime!(2026-12-01 08:46:06.25 UTC),
            scopes: vec!["Mail.Read".to_owned(), "offline_access".to_owned()],
            provider_user_id: "00000000-0000-0000-0000-00000000abcd".to_owned(),
            provider_email: email.map(str::to_owned),
            version: 3,
            connection_id: uuid::Uuid::nil(),
            answer_tail: Default::default(),
        }
    }

    /// The body as the server sends it, after checking that its announced length is its length.
    async fn sent(token: &FreshToken) -> Vec<u8> {
        use http_body::Body as _;
        let body = token_body(token).unwrap();
        let announced = body.size_hint().exact();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(announced, Some(bytes.len() as u64));
        bytes.to_vec()
    }

    #[tokio::test]
    async fn the_token_body_keeps_its_field_order_and_types() {
        let with_email = sent(&token(Some("adele@contoso.com"))).await;
        assert_eq!(
            std::str::from_utf8(&with_email).unwrap(),
            r#"{"access_token":"eyJ0eXAi.access","token_type":"Bearer","expires_at":"2026-12-01T08:46:06.25Z","scopes":["Mail.Read","offline_access"],"provider_user_id":"00000000-0000-0000-0000-00000000abcd","provider_email":"adele@contoso.com"}"#
        );
        let without = sent(&token(None)).await;
        assert!(without.ends_with(br#""provider_email":null}"#));
        let mut no_scopes = token(None);
        no_scopes.scopes.clear();
        assert!(
            std::str::from_utf8(&sent(&no_scopes).await)
                .unwrap()
                .contains(r#""scopes":[],"#)
        );
    }

    #[tokio::test]
    async fn the_token_body_is_what_serde_writes_for_any_token() {
        let mut plain = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.".repeat(30);
        plain.push_str("~._-+/=\u{7f}é");
        for access_token in [
            plain.as_str(),
            "",
            "quote\"inside",
            "back\\slash",
            "tab\tand\u{1}control",
        ] {
            for email in [
                Some("a\"quoted\"@example.com"),
                Some("plain@example.com"),
                None,
            ] {
                for odd_scope in [None, Some("with \"quotes\"")] {
                    let mut t = token(email);
                    t.access_token = access_token.to_owned().into();
                    t.scopes.extend(odd_scope.map(str::to_owned));
                    t.expires_at = time::macros::datetime!(2026-12-01 08:46:06.123456789 +05:30);
                    assert_eq!(
                        sent(&t).await,
                        serde_json::to_vec(&TokenResponse::of(&t)).unwrap(),
                        "{access_token:?} {email:?} {odd_scope:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_token_answered_twice_is_written_once() {
        let mut t = token(Some("adele@contoso.com"));
        assert!(t.answer_tail.get().is_none());
        let first = sent(&t).await;
        assert!(t.answer_tail.get().is_some(), "kept with the token");
        // A cached token never changes; this one does, to show the second answer is the kept
        // rendering and not a new one.
        t.provider_email = None;
        assert_eq!(sent(&t).await, first);
    }

    #[test]
    fn what_follows_the_token_fits_the_buffer_it_is_written_into() {
        let mut long = token(Some("adele.vance@contoso.onmicrosoft.com"));
        long.expires_at = time::macros::datetime!(2026-12-01 08:46:06.123456789 +05:30);
        let body = serde_json::to_vec(&TokenResponse::of(&long)).unwrap();
        let after_token = body.len() - r#"{"access_token":"eyJ0eXAi.access"#.len();
        assert!(after_token <= rest_size(&long), "{after_token}");
    }
}
