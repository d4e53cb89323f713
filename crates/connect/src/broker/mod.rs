//! Use cases: what the service does, independent of HTTP and of the storage backend. Handlers
//! call exactly one function here; functions here call the store, the vault and the providers.
//! `connect` holds the OAuth connect flow, `rotate` the re-encryption of stored tokens.

pub mod cache;
pub mod connect;
pub mod rotate;
pub mod tokens;

use crate::error::Result;
use crate::model::ConnectionListing;
use crate::model::{StatusView, UserId};
use crate::provider::ProviderId;
use crate::store::{ListFilter, Store};

/// The user's connection to `provider`, as a settings page shows it.
pub async fn status(store: &Store, user: UserId, provider: ProviderId) -> Result<StatusView> {
    Ok(match store.user_connection(user, provider).await? {
        Some(connection) => connection.into(),
        None => StatusView::not_connected(provider),
    })
}

/// One status per configured provider, in catalog order.
pub async fn list(
    store: &Store,
    user: UserId,
    configured: &[ProviderId],
) -> Result<Vec<StatusView>> {
    let mut stored = store.user_connections(user).await?;
    Ok(configured
        .iter()
        .map(
            |&provider| match stored.iter().position(|c| c.provider == provider) {
                Some(i) => stored.swap_remove(i).into(),
                None => StatusView::not_connected(provider),
            },
        )
        .collect())
}

/// Forgets the user's connection to `provider`. Idempotent. Where the provider has a
/// revocation endpoint (Google, Dropbox) the grant is given back first; a revocation that
/// fails (timeout, 5xx, refusal) is logged and counted, and the connection is deleted all the
/// same — a disconnect never leaves the user connected. Microsoft has no per-app revocation
/// endpoint: the stored tokens are deleted, and the user can remove the app's access at
/// https://myapps.microsoft.com or https://account.live.com/consent/Manage.
pub async fn disconnect(
    app: &crate::app::AppState,
    user: UserId,
    provider: ProviderId,
    by: crate::activity::Actor,
) -> Result<()> {
    let revocation = revoke(app, user, provider).await;
    metrics::counter!("revocation_total", "provider" => provider.as_str(), "outcome" => revocation)
        .increment(1);
    let deleted = app.store.delete_connection(user, provider).await?;
    app.cache.invalidate(user, provider);
    if deleted {
        app.activity.record(
            user,
            provider,
            crate::activity::Kind::Disconnected,
            by,
            None,
            "ok",
        );
    }
    tracing::info!(provider = %provider, user_id = %user, deleted, revocation, "disconnected");
    Ok(())
}

/// Gives the grant back at the provider, if it can; never fails, says what happened:
/// `unsupported`, `not_connected`, `revoked`, `no_token` or `failed`.
async fn revoke(app: &crate::app::AppState, user: UserId, provider: ProviderId) -> &'static str {
    use crate::provider::Revocation;
    let Some(configured) = app.provider(provider) else {
        return "unsupported";
    };
    let token = match configured.spec().revocation {
        Revocation::None => return "unsupported",
        // The refresh token names the whole grant; the access token will do without one.
        Revocation::Rfc7009Form => match stored_token(app, user, provider).await {
            Ok(Some(token)) => token,
            Ok(None) => return "not_connected",
            Err(e) => {
                tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation skipped: stored token unreadable");
                return "failed";
            }
        },
        // Authenticates with a valid access token: refreshed first when it has expired.
        Revocation::BearerRpc => {
            match tokens::fresh_token(
                app,
                user,
                provider,
                std::time::Duration::from_secs(60),
                None,
            )
            .await
            {
                Ok(fresh) => fresh.access_token.clone(),
                Err(crate::error::Error::NotConnected) => return "not_connected",
                Err(e) => {
                    tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation skipped: no valid access token");
                    return "no_token";
                }
            }
        }
    };
    let timeout = app.settings.refresh.provider_timeout;
    match crate::oauth::revocation::revoke(&app.http, configured, &token, timeout).await {
        Ok(()) => "revoked",
        Err(e) => {
            tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation at the provider failed; deleting the connection all the same");
            "failed"
        }
    }
}

/// The stored refresh token, or the access token when there is none.
async fn stored_token(
    app: &crate::app::AppState,
    user: UserId,
    provider: ProviderId,
) -> std::result::Result<Option<secrecy::SecretString>, String> {
    let Some(row) = app
        .store
        .token_row(user, provider)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let (column, sealed) = match &row.refresh_token {
        Some(rt) => ("refresh_token", rt.as_slice()),
        None => ("access_token", row.access_token.as_slice()),
    };
    app.keyring
        .open_string(&connect::token_place(column, user, provider), sealed)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A page of connections across users for a trusted backend, and the cursor of the next page.
pub async fn list_connections(
    store: &Store,
    filter: ListFilter,
) -> Result<(Vec<ConnectionListing>, Option<uuid::Uuid>)> {
    let limit = filter.limit;
    let page = store.list_connections(&filter).await?;
    let next = if page.len() == limit as usize {
        page.last().map(|c| c.id)
    } else {
        None
    };
    Ok((page, next))
}
