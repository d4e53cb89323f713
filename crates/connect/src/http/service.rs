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
// The answer's schema. The body is written by `token_body`, whose tests compare it with what
// serde writes for this. (A `//` comment: the doc comment is the OpenAPI description.)
#[derive(Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
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

/// The JSON body of a token answer ([`TokenResponse`]), made of three pieces of which none is
/// written or copied per request: the opening, the token (sharing the cached token's memory,
/// zeroed when the last user drops it), and the rest, written once when the token was opened
/// ([`FreshToken::answer_tail`]). A token that needs escaping (no provider issues one) is
/// written through serde into a body of its own.
fn token_body(token: &FreshToken) -> serde_json::Result<Body> {
    const OPEN: &[u8] = br#"{"access_token":""#;
    let Some(access_token) = token.access_token.json_text() else {
        let mut body = Vec::with_capacity(64 + token.answer_tail.len());
        // Without its quote, which serde writes with the token.
        body.extend_from_slice(&OPEN[..OPEN.len() - 1]);
        serde_json::to_writer(&mut body, token.access_token.expose_secret())?;
        // The tail starts with the closing quote serde has just written.
        body.extend_from_slice(token.answer_tail.get(1..).unwrap_or_default());
        return Ok(Body::from(body));
    };
    Ok(Body::new(Chunks(
        [
            Bytes::from_static(OPEN),
            access_token,
            token.answer_tail.clone(),
        ]
        .into_iter(),
    )))
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
    use crate::broker::tokens::answer_tail;

    /// What a token answer is made of.
    struct Parts<'a> {
        access_token: &'a str,
        expires_at: time::OffsetDateTime,
        scopes: Vec<String>,
        provider_email: Option<&'a str>,
    }

    const ACCOUNT: &str = "00000000-0000-0000-0000-00000000abcd";

    impl Parts<'_> {
        /// The token as the broker makes one from these parts.
        fn token(&self) -> FreshToken {
            FreshToken {
                access_token: self.access_token.to_owned().into(),
                expires_at: self.expires_at,
                answer_tail: answer_tail(
                    self.expires_at,
                    &self.scopes,
                    ACCOUNT,
                    self.provider_email,
                )
                .unwrap(),
                version: 3,
                connection_id: uuid::Uuid::nil(),
            }
        }

        /// What serde writes for the answer's schema.
        fn serde(&self) -> Vec<u8> {
            serde_json::to_vec(&TokenResponse {
                access_token: self.access_token,
                token_type: "Bearer",
                expires_at: self.expires_at,
                scopes: &self.scopes,
                provider_user_id: ACCOUNT,
                provider_email: self.provider_email,
            })
            .unwrap()
        }
    }

    fn parts(email: Option<&str>) -> Parts<'_> {
        Parts {
            access_token: "eyJ0eXAi.access",
            expires_at: time::macros::datetime!(2026-12-01 08:46:06.25 UTC),
            scopes: vec!["Mail.Read".to_owned(), "offline_access".to_owned()],
            provider_email: email,
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
        let with_email = sent(&parts(Some("adele@contoso.com")).token()).await;
        assert_eq!(
            std::str::from_utf8(&with_email).unwrap(),
            r#"{"access_token":"eyJ0eXAi.access","token_type":"Bearer","expires_at":"2026-12-01T08:46:06.25Z","scopes":["Mail.Read","offline_access"],"provider_user_id":"00000000-0000-0000-0000-00000000abcd","provider_email":"adele@contoso.com"}"#
        );
        let without = sent(&parts(None).token()).await;
        assert!(without.ends_with(br#""provider_email":null}"#));
        let mut no_scopes = parts(None);
        no_scopes.scopes.clear();
        assert!(
            std::str::from_utf8(&sent(&no_scopes.token()).await)
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
                    let mut p = parts(email);
                    p.access_token = access_token;
                    p.scopes.extend(odd_scope.map(str::to_owned));
                    p.expires_at = time::macros::datetime!(2026-12-01 08:46:06.123456789 +05:30);
                    assert_eq!(
                        sent(&p.token()).await,
                        p.serde(),
                        "{access_token:?} {email:?} {odd_scope:?}"
                    );
                }
            }
        }
    }
}
