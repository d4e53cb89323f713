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

/// Forgets the user's connection to `provider`. Idempotent. Microsoft has no revocation
/// endpoint, so for Microsoft this deletes the stored tokens; the user can remove the app's
/// access at https://myapps.microsoft.com or https://account.live.com/consent/Manage.
pub async fn disconnect(
    app: &crate::app::AppState,
    user: UserId,
    provider: ProviderId,
) -> Result<()> {
    let deleted = app.store.delete_connection(user, provider).await?;
    app.cache.invalidate(user, provider);
    tracing::info!(provider = %provider, deleted, "disconnected");
    Ok(())
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
