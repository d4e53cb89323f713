//! Demo mode's sign-in: `POST /demo/session` turns a name into a user token signed with the
//! demo's own JWT secret, exactly like the tokens a Supabase app would send, so the settings
//! page can be tried without an app. The same name always maps to the same user. Mounted only
//! by `celeste-connect demo`, which also prints, for each sign-in, the `curl` line that fetches
//! that user's token with the demo's service key.

use axum::extract::State;
use axum::{Extension, Json};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::demo::DemoServiceKey;
use crate::error::{Error, Result};
use crate::http::AppState;

const SESSION_HOURS: i64 = 12;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    user: String,
}

#[derive(Serialize)]
pub struct Session {
    access_token: String,
    user_id: Uuid,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// The demo user id for a name (case-insensitive).
pub fn user_id_for(name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("celeste-connect-demo:{}", name.to_lowercase()).as_bytes(),
    )
}

pub async fn session(
    State(state): State<AppState>,
    service_key: Option<Extension<DemoServiceKey>>,
    Json(request): Json<SessionRequest>,
) -> Result<Json<Session>> {
    let name = request.user.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "user must be a name of 1 to 64 characters".into(),
        ));
    }
    let secret = state
        .settings
        .jwt
        .hs256_secret
        .as_ref()
        .ok_or_else(|| Error::Internal("demo mode has no JWT secret".into()))?;
    let user_id = user_id_for(name);
    let expires_at = OffsetDateTime::now_utc() + time::Duration::hours(SESSION_HOURS);
    let claims = serde_json::json!({
        "sub": user_id,
        "role": "authenticated",
        "aud": state.settings.jwt.audience,
        "exp": expires_at.unix_timestamp(),
        "iat": OffsetDateTime::now_utc().unix_timestamp(),
        "is_anonymous": false,
        "user_metadata": { "name": name },
    });
    let access_token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|e| Error::Internal(format!("signing the demo token: {e}")))?;
    // The demo's terminal is its user interface: say how to fetch this user's token.
    if let Some(Extension(DemoServiceKey(key))) = service_key {
        println!(
            "demo user {name:?} signed in (user id {user_id}); once connected, their token:\n  {}",
            crate::demo::token_curl(&state.settings.public_url, &key, user_id)
        );
    }
    Ok(Json(Session {
        access_token,
        user_id,
        name: name.to_owned(),
        expires_at,
    }))
}
