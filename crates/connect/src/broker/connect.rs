//! Connecting an account: `start` creates a flow (state, PKCE, browser binding) and the
//! provider's authorize URL; `finish` consumes the flow exactly once, checks the browser
//! binding, exchanges the code, reads the profile and stores the sealed tokens in one write.
//! Every rejection happens before any token request and stores nothing. Nothing here logs a
//! token, a code, a state, a verifier or a binding secret.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{ConnectionState, UserId};
use crate::oauth::{self, ProviderError, authorization_code, pkce::Pkce, profile, state};
use crate::provider::{ConfiguredProvider, ProviderId};
use crate::store::{Flow, NewConnection, ReturnMode};
use crate::vault::Place;

use super::Broker;
use super::sealed::Sealed;

/// How long a started flow stays valid (the provider's codes live about as long).
pub const FLOW_LIFETIME: time::Duration = time::Duration::minutes(10);

fn pkce_place(user: UserId, provider: ProviderId) -> Place {
    Place {
        table: "oauth_flows",
        column: "pkce_verifier",
        user,
        provider,
    }
}

pub use super::sealed::token_place;

/// A started flow: where to send the browser, and the secret for the binding cookie.
pub struct Started {
    pub auth_url: url::Url,
    pub expires_at: OffsetDateTime,
    pub binding_secret: SecretString,
}

/// Starts connecting `provider` for `user`, from a page on `app_origin` (already checked
/// against the configured origins).
pub async fn start(
    broker: &Broker,
    user: UserId,
    provider: ProviderId,
    app_origin: String,
    return_mode: ReturnMode,
) -> Result<Started> {
    let endpoints = broker
        .provider(provider)
        .ok_or(Error::NotFound("provider"))?;
    let random = |_| Error::Internal("no randomness".into());
    let flow_state = state::random_token().map_err(random)?;
    let binding_secret = state::random_token().map_err(random)?;
    let pkce = Pkce::new().map_err(random)?;
    let sealed_verifier = broker
        .keyring
        .seal(
            &pkce_place(user, provider),
            pkce.verifier.expose_secret().as_bytes(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
    let expires_at = OffsetDateTime::now_utc() + FLOW_LIFETIME;
    let state_hash = state::sha256(flow_state.expose_secret());
    broker
        .store
        .insert_flow(&Flow {
            state_hash,
            user_id: user,
            provider,
            pkce_verifier: sealed_verifier,
            key_id: broker.keyring.active_key_id().to_owned(),
            binding_hash: state::sha256(binding_secret.expose_secret()),
            app_origin,
            return_mode,
            expires_at,
        })
        .await?;
    // A user keeps at most a few flows pending: the oldest beyond the cap can no longer
    // complete (its callback finds no flow).
    for dropped in broker.pending_flows.record(user, state_hash) {
        if let Err(e) = broker.store.take_flow(&dropped).await {
            tracing::warn!(error = %e, "dropping the oldest pending flow failed");
        }
    }
    let auth_url = endpoints.authorize_url(
        &broker.redirect_uri(provider),
        flow_state.expose_secret(),
        &pkce.challenge,
    );
    tracing::info!(provider = %provider, "connect flow started");
    Ok(Started {
        auth_url,
        expires_at,
        binding_secret,
    })
}

/// What the provider's redirect carried.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// Why a callback did not connect: a stable code the app can show a sentence for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Unknown, used, or another provider's state.
    InvalidState,
    /// The flow is older than [`FLOW_LIFETIME`].
    Expired,
    /// The binding cookie is missing or belongs to another flow: another browser.
    BrowserMismatch,
    /// The user declined at the provider.
    AccessDenied,
    /// The provider asked for consent or interaction it could not get.
    ConsentRequired,
    /// Another error from the provider's authorize step.
    ProviderError,
    /// The provider did not answer in time; nothing changed.
    ProviderUnavailable,
    /// The token endpoint refused the code.
    ExchangeFailed,
    /// The profile could not be read.
    ProfileFailed,
    /// The user granted only part of the API access asked for (Google's granular consent).
    ScopeDenied,
    /// Our side failed (storage, encryption).
    Internal,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::InvalidState => "invalid_state",
            Failure::Expired => "expired",
            Failure::BrowserMismatch => "browser_mismatch",
            Failure::AccessDenied => "access_denied",
            Failure::ConsentRequired => "consent_required",
            Failure::ProviderError => "provider_error",
            Failure::ProviderUnavailable => "provider_unavailable",
            Failure::ExchangeFailed => "exchange_failed",
            Failure::ProfileFailed => "profile_failed",
            Failure::ScopeDenied => "scope_denied",
            Failure::Internal => "internal",
        }
    }
}

/// The outcome of a callback, and what is known about where to report it.
#[derive(Debug)]
pub struct Finished {
    pub provider: ProviderId,
    /// The flow's app origin; `None` when the state named no flow.
    pub app_origin: Option<String>,
    pub return_mode: ReturnMode,
    pub result: std::result::Result<(), Failure>,
}

/// Completes a flow from the provider's redirect, in the browser that started it.
pub async fn finish(
    broker: &Broker,
    provider: ProviderId,
    params: &CallbackParams,
    binding_cookie: Option<&str>,
) -> Finished {
    let mut finished = Finished {
        provider,
        app_origin: None,
        return_mode: ReturnMode::Popup,
        result: Ok(()),
    };
    let Some(state_value) = params.state.as_deref().filter(|s| state::well_formed(s)) else {
        finished.result = Err(Failure::InvalidState);
        return finished;
    };
    let flow = match broker.store.take_flow(&state::sha256(state_value)).await {
        Ok(Some(flow)) => flow,
        Ok(None) => {
            finished.result = Err(Failure::InvalidState);
            return finished;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the flow failed");
            finished.result = Err(Failure::Internal);
            return finished;
        }
    };
    finished.app_origin = Some(flow.app_origin.clone());
    finished.return_mode = flow.return_mode;
    finished.result = complete(broker, provider, &flow, params, binding_cookie).await;
    match finished.result {
        Ok(()) => tracing::info!(provider = %provider, user_id = %flow.user_id, "connected"),
        Err(failure) => {
            tracing::info!(provider = %provider, user_id = %flow.user_id, reason = failure.code(), "connect failed")
        }
    }
    finished
}

/// The stored refresh token of `user`'s connection to `provider`, when that connection is to
/// the same provider account and still working (another account's grant, or one the provider
/// refused, is never carried over).
/// For a provider whose users may grant part of what was asked (Google's granular consent):
/// the first configured API scope (those written as URLs; sign-in scopes such as `email` are
/// echoed in other forms and cannot be declined) the answer's `scope` leaves out. An answer
/// that names no scopes is taken as granting what was asked.
fn missing_api_scope<'a>(
    endpoints: &'a ConfiguredProvider,
    granted: Option<&str>,
) -> Option<&'a str> {
    if !endpoints.spec().granular_consent {
        return None;
    }
    let granted: Vec<&str> = granted?.split_ascii_whitespace().collect();
    endpoints
        .scope
        .split_ascii_whitespace()
        .filter(|s| s.starts_with("https://"))
        .find(|s| !granted.contains(s))
}

async fn kept_refresh_token(
    broker: &Broker,
    user: UserId,
    provider: ProviderId,
    provider_user_id: &str,
) -> std::result::Result<Option<SecretString>, Failure> {
    let row = broker.store.token_row(user, provider).await.map_err(|e| {
        tracing::error!(error = %e, "reading the stored connection failed");
        Failure::Internal
    })?;
    let Some((row, sealed)) = row
        .filter(|row| {
            row.state == ConnectionState::Connected && row.provider_user_id == provider_user_id
        })
        .and_then(|row| row.refresh_token.clone().map(|rt| (row, rt)))
    else {
        return Ok(None);
    };
    match broker
        .keyring
        .open_string(&token_place("refresh_token", user, provider), &sealed)
    {
        Ok(rt) => Ok(Some(rt)),
        Err(e) => {
            tracing::warn!(error = %e, connection_id = %row.id, "the stored refresh token does not open; not kept");
            Ok(None)
        }
    }
}

async fn complete(
    broker: &Broker,
    provider: ProviderId,
    flow: &Flow,
    params: &CallbackParams,
    binding_cookie: Option<&str>,
) -> std::result::Result<(), Failure> {
    if flow.provider != provider {
        return Err(Failure::InvalidState);
    }
    if OffsetDateTime::now_utc() > flow.expires_at {
        return Err(Failure::Expired);
    }
    if !binding_cookie.is_some_and(|c| state::matches(c, &flow.binding_hash)) {
        return Err(Failure::BrowserMismatch);
    }
    if let Some(error) = params.error.as_deref() {
        return Err(match oauth::sanitize_code(error).as_str() {
            "access_denied" => Failure::AccessDenied,
            "consent_required" | "interaction_required" | "login_required" => {
                Failure::ConsentRequired
            }
            "temporarily_unavailable" | "server_error" => Failure::ProviderUnavailable,
            _ => Failure::ProviderError,
        });
    }
    let code = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or(Failure::ProviderError)?;
    let endpoints = broker.provider(provider).ok_or(Failure::Internal)?;
    let verifier = broker
        .keyring
        .open_string(&pkce_place(flow.user_id, provider), &flow.pkce_verifier)
        .map_err(|e| {
            tracing::error!(error = %e, "the flow's verifier does not open");
            Failure::Internal
        })?;
    let tokens = authorization_code::exchange(
        &broker.http,
        endpoints,
        code,
        verifier.expose_secret(),
        &broker.redirect_uri(provider),
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "code exchange failed");
        match e {
            ProviderError::Unavailable { .. } => Failure::ProviderUnavailable,
            _ => Failure::ExchangeFailed,
        }
    })?;
    if let Some(missing) = missing_api_scope(endpoints, tokens.scope.as_deref()) {
        // Stored, it would be "connected" while every call to that API answered 403. Not
        // revoked either: with Google's combined grants that could end another of the app's
        // users' connection to the same account.
        tracing::info!(provider = %provider, scope = missing, "consent left out an API scope; nothing stored");
        return Err(Failure::ScopeDenied);
    }
    let account = profile::fetch(&broker.http, endpoints, &tokens.access_token)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "profile fetch failed");
            match e {
                ProviderError::Unavailable { .. } => Failure::ProviderUnavailable,
                _ => Failure::ProfileFailed,
            }
        })?;

    // A reconnect without a new refresh token (Google without forced consent, Dropbox
    // without offline access) keeps the stored one of the same account.
    let previous_refresh = match tokens.refresh_token {
        Some(_) => None,
        None => {
            kept_refresh_token(broker, flow.user_id, provider, &account.provider_user_id).await?
        }
    };
    let sealed = Sealed::from_response(
        &broker.keyring,
        flow.user_id,
        provider,
        &tokens,
        previous_refresh.as_ref(),
    )
    .map_err(|_| Failure::Internal)?;
    // Whether this replaces a connection, for the activity log (connected or reconnected).
    let existed = matches!(
        broker.store.token_row(flow.user_id, provider).await,
        Ok(Some(_))
    );
    let stored = broker
        .store
        .upsert_connection(&NewConnection {
            user_id: flow.user_id,
            provider,
            access_token: sealed.access_token,
            refresh_token: sealed.refresh_token,
            key_id: sealed.key_id,
            expires_at: sealed.expires_at,
            provider_user_id: account.provider_user_id,
            provider_email: account.email,
            display_name: account.display_name,
            scopes: sealed.scopes.unwrap_or_default(),
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing the connection failed");
            Failure::Internal
        });
    broker.connection_changed(flow.user_id, provider);
    if stored.is_ok() {
        let kind = if existed {
            crate::activity::Kind::Reconnected
        } else {
            crate::activity::Kind::Connected
        };
        broker.activity.record(
            flow.user_id,
            provider,
            kind,
            crate::activity::Actor::User,
            None,
            "ok",
        );
    }
    stored
}
