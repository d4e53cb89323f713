//! Who is calling: a signed-in user of the host app (a verified JWT, [`CurrentUser`]) or a
//! trusted backend (a service key, [`ServiceCaller`]). The extractors read only the
//! `Authorization` header; a user id never comes from a path, a query or a body.

pub mod service_key;
pub mod user_jwt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::Error;
use crate::http::AppState;
use crate::model::UserId;

/// The bearer credential of a request, if it has exactly one well-formed one.
fn bearer(parts: &Parts) -> Result<&str, Error> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or(Error::Unauthorized("no authorization header"))?;
    if values.next().is_some() {
        return Err(Error::Unauthorized("several authorization headers"));
    }
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("authorization is not ASCII"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or(Error::Unauthorized("authorization is not a bearer"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(Error::Unauthorized("authorization is not a bearer"));
    }
    Ok(credential.trim())
}

/// A signed-in user, verified from their JWT.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    pub id: UserId,
    pub is_anonymous: bool,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer(parts)?;
        let user = state.users.verify(token).await.map_err(|why| {
            tracing::info!(reason = %why, "user token refused");
            Error::Unauthorized("user token refused")
        })?;
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        Ok(CurrentUser {
            id: user.id,
            is_anonymous: user.is_anonymous,
        })
    }
}

/// A trusted backend, by the name of its service key.
#[derive(Clone, Debug)]
pub struct ServiceCaller {
    pub key_name: std::sync::Arc<str>,
}

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let presented = bearer(parts)?;
        let name = state
            .service_keys
            .verify(presented)
            .ok_or(Error::Unauthorized("not a service key"))?;
        tracing::Span::current().record("service_key", &*name);
        Ok(ServiceCaller { key_name: name })
    }
}
