//! Use cases: what the service does, independent of HTTP and of the storage backend. A
//! [`Broker`] owns what they need (the store, the key ring, the provider catalog, the one
//! outbound HTTP client, the token cache, the refreshes in flight) and nothing of HTTP: handlers
//! call exactly one function here with the broker. `connect` holds the OAuth connect flow,
//! `tokens` fresh tokens and refreshes, `sealed` the one conversion from a provider's token
//! answer to stored ciphertexts, `rotate` the re-encryption of stored tokens.

pub mod access_token;
pub mod cache;
pub mod connect;
pub mod rotate;
pub mod sealed;
pub mod status_cache;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use crate::config::RefreshSettings;
use crate::error::Result;
use crate::limits::PendingFlows;
use crate::model::ConnectionListing;
use crate::model::{StatusView, UserId};
use crate::provider::{Catalog, ConfiguredProvider, ProviderId};
use crate::store::{ListFilter, Store};
use crate::vault::Keyring;

/// The few settings the use cases read.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub refresh: RefreshSettings,
    /// Where this service is reached from outside: the base of the providers' redirect URIs.
    pub public_url: url::Url,
    /// Most access tokens kept in memory (0: no cache).
    pub token_cache_capacity: usize,
    /// Most users whose statuses are kept in memory (0: every status read goes to the database).
    pub status_cache_capacity: usize,
    /// Connection webhooks: the endpoints the worker sends to (the store writes the events).
    pub webhooks: crate::webhooks::WebhookSettings,
    /// The activity log: on or off, retention, flush interval.
    pub activity: crate::config::ActivitySettings,
}

/// Everything the use cases need, shared by every request and background task of a process.
pub struct Broker {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    /// Providers with credentials configured, found by id.
    pub providers: Catalog,
    /// The one outbound HTTP client: no redirects followed, bounded timeouts.
    pub http: reqwest::Client,
    /// Fresh access tokens in memory (see `cache`).
    pub cache: Arc<cache::TokenCache>,
    /// Signed-in users' statuses in memory (see `status_cache`).
    pub statuses: Arc<status_cache::StatusCache>,
    /// Refreshes in flight in this process, its tasks, and its lease owner id.
    pub tokens: tokens::TokenBroker,
    /// Each user's newest started flows, so starting one over the cap drops the oldest.
    pub pending_flows: Arc<PendingFlows>,
    /// The activity log's counts not yet written (see `crate::activity`).
    pub activity: Arc<crate::activity::Recorder>,
    pub settings: BrokerSettings,
    /// Tells background tasks (the cache listener) to stop; dropped with the broker.
    background: tokio::sync::watch::Sender<bool>,
}

impl Broker {
    /// Builds the broker over an opened store; on PostgreSQL with a cache, starts the listener
    /// that keeps the cache honest about other replicas' writes.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        providers: Catalog,
        http: reqwest::Client,
        pending_flows: Arc<PendingFlows>,
        settings: BrokerSettings,
    ) -> Self {
        // On PostgreSQL other replicas write too: the caches are on only while a listener hears
        // their changes. On SQLite (and in memory) this process is the only writer.
        let sole_writer = !matches!(store, Store::Postgres(_));
        let cache = Arc::new(cache::TokenCache::new(
            sole_writer,
            settings.token_cache_capacity,
        ));
        // Statuses are cached on PostgreSQL (every writer is heard through the trigger) and in
        // memory, not on SQLite: other programs may write the file (the demo's `sqlite3`), and
        // nothing would tell this process; the read there is a local file read anyway.
        let statuses = Arc::new(status_cache::StatusCache::new(
            matches!(store, Store::Memory(_)),
            settings.status_cache_capacity,
        ));
        let (background, stop) = tokio::sync::watch::channel(false);
        if let Store::Postgres(pg) = &store {
            let mut caches: Vec<Arc<dyn cache::ChangeObserver>> = Vec::new();
            if settings.token_cache_capacity > 0 {
                caches.push(cache.clone());
            }
            if settings.status_cache_capacity > 0 {
                caches.push(statuses.clone());
            }
            if !caches.is_empty() {
                tokio::spawn(cache::listen(caches, pg.listener_pool().clone(), stop));
            }
        }
        Self {
            store,
            keyring,
            providers,
            http,
            cache,
            statuses,
            tokens: tokens::TokenBroker::default(),
            pending_flows,
            activity: Arc::new(crate::activity::Recorder::new(settings.activity.enabled)),
            settings,
            background,
        }
    }

    /// The endpoints of a configured provider.
    pub fn provider(&self, provider: ProviderId) -> Option<&ConfiguredProvider> {
        self.providers.get(provider)
    }

    /// Ids of the configured providers, in catalog order.
    pub fn provider_ids(&self) -> Vec<ProviderId> {
        self.providers.ids()
    }

    /// Where the provider sends the browser back to.
    pub fn redirect_uri(&self, provider: ProviderId) -> String {
        let base = self.settings.public_url.as_str().trim_end_matches('/');
        format!("{base}/v1/integrations/{}/callback", provider.path_name())
    }

    /// This process changed the user's connection to `provider` as a whole (connect,
    /// reconnect, needs_reauth, disconnect): both caches forget it at once, and refuse reads of
    /// it that started before.
    pub fn connection_changed(&self, user: UserId, provider: ProviderId) {
        self.cache.invalidate(user, provider);
        self.statuses.invalidate(user);
    }

    /// This process wrote row `id` at `version` (a refresh): older cached copies go.
    pub fn row_written(&self, id: uuid::Uuid, version: i64) {
        use cache::ChangeObserver;
        self.cache.observe(id, Some(version));
        self.statuses.observe(id, Some(version));
    }

    /// Stops the background tasks (the cache listener); the HTTP side is draining.
    pub fn stop_background(&self) {
        let _ = self.background.send(true);
    }

    /// After the HTTP drain: lets the refreshes under way (and a keep-alive pass) finish, up to
    /// one provider timeout and a little more, then gives back every refresh lease this process
    /// still holds, so callers on other replicas need not wait for them to expire.
    pub async fn finish_refreshes(&self) {
        let tasks = &self.tokens.tasks;
        tasks.close();
        let deadline = self.settings.refresh.provider_timeout + Duration::from_secs(2);
        if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "refreshes still running at shutdown; giving their leases back"
            );
        }
        match self.store.release_leases_of(self.tokens.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "refresh leases given back at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "could not give refresh leases back at shutdown; they expire on their own")
            }
        }
    }
}

/// The user's connections, from memory when the status cache holds them, else read as the
/// user (row-level security on PostgreSQL) and kept.
async fn user_rows(broker: &Broker, user: UserId) -> Result<status_cache::UserRows> {
    if let Some(rows) = broker.statuses.get(user) {
        return Ok(rows);
    }
    let epoch = broker.statuses.epoch();
    let rows: status_cache::UserRows = broker.store.user_connections(user).await?.into();
    broker.statuses.put(user, rows.clone(), epoch);
    Ok(rows)
}

/// The user's connection to `provider`, as a settings page shows it.
pub async fn status(broker: &Broker, user: UserId, provider: ProviderId) -> Result<StatusView> {
    let stored = if broker.settings.status_cache_capacity == 0 {
        broker.store.user_connection(user, provider).await?
    } else {
        let rows = user_rows(broker, user).await?;
        rows.iter().find(|c| c.provider == provider).cloned()
    };
    Ok(stored.map_or_else(|| StatusView::not_connected(provider), StatusView::from))
}

/// One status per configured provider, in catalog order.
pub async fn list(broker: &Broker, user: UserId) -> Result<Vec<StatusView>> {
    let stored = user_rows(broker, user).await?;
    Ok(broker
        .provider_ids()
        .iter()
        .map(
            |&provider| match stored.iter().find(|c| c.provider == provider) {
                Some(c) => c.clone().into(),
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
/// `by` names who asked, for the activity log and the `connection.disconnected` event
/// (`user`, or `operator` for a service key).
pub async fn disconnect(
    broker: &Arc<Broker>,
    user: UserId,
    provider: ProviderId,
    by: crate::activity::Actor,
) -> Result<()> {
    let revocation = revoke(broker, user, provider).await;
    metrics::counter!("revocation_total", "provider" => provider.as_str(), "outcome" => revocation)
        .increment(1);
    let disconnected_by = match by {
        crate::activity::Actor::User => crate::webhooks::event::DisconnectedBy::User,
        crate::activity::Actor::Key(_) | crate::activity::Actor::Service => {
            crate::webhooks::event::DisconnectedBy::Operator
        }
    };
    let deleted = broker
        .store
        .delete_connection(user, provider, disconnected_by)
        .await?;
    broker.connection_changed(user, provider);
    let by_name = by.as_db().to_owned();
    if deleted {
        broker.activity.record(
            user,
            provider,
            crate::activity::Kind::Disconnected,
            by,
            None,
            "ok",
        );
    }
    tracing::info!(provider = %provider, user_id = %user, deleted, revocation, by = %by_name, "disconnected");
    Ok(())
}

/// Gives the grant back at the provider, if it can; never fails, says what happened:
/// `unsupported`, `not_connected`, `revoked`, `shared`, `no_token` or `failed`.
async fn revoke(broker: &Arc<Broker>, user: UserId, provider: ProviderId) -> &'static str {
    use crate::provider::Revocation;
    let Some(configured) = broker.provider(provider) else {
        return "unsupported";
    };
    let token = match configured.spec().revocation {
        Revocation::None => return "unsupported",
        // The refresh token names the whole grant; the access token will do without one.
        Revocation::Rfc7009Form => match stored_token(broker, user, provider).await {
            Ok(Some((token, account))) => {
                // Google keeps one grant per account and app: revoking it would also end
                // every other user's connection to that account (a shared mailbox).
                match broker.store.account_shared(provider, &account, user).await {
                    Ok(false) => token,
                    Ok(true) => return "shared",
                    Err(e) => {
                        tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation skipped: cannot tell whether the account is shared");
                        return "failed";
                    }
                }
            }
            Ok(None) => return "not_connected",
            Err(e) => {
                tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation skipped: stored token unreadable");
                return "failed";
            }
        },
        // Authenticates with a valid access token: refreshed first when it has expired.
        Revocation::BearerRpc => {
            match tokens::fresh_token(
                broker,
                user,
                provider,
                std::time::Duration::from_secs(60),
                None,
            )
            .await
            {
                Ok(fresh) => secrecy::SecretString::from(fresh.access_token.expose_secret()),
                Err(crate::error::Error::NotConnected) => return "not_connected",
                Err(e) => {
                    tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation skipped: no valid access token");
                    return "no_token";
                }
            }
        }
    };
    let timeout = broker.settings.refresh.provider_timeout;
    match crate::oauth::revocation::revoke(&broker.http, configured, &token, timeout).await {
        Ok(()) => "revoked",
        Err(e) => {
            tracing::warn!(provider = %provider, user_id = %user, error = %e, "revocation at the provider failed; deleting the connection all the same");
            "failed"
        }
    }
}

/// The stored refresh token, or the access token when there is none, and the account's id at
/// the provider.
async fn stored_token(
    broker: &Broker,
    user: UserId,
    provider: ProviderId,
) -> std::result::Result<Option<(secrecy::SecretString, String)>, String> {
    let Some(row) = broker
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
    broker
        .keyring
        .open_string(&sealed::token_place(column, user, provider), sealed)
        .map(|token| Some((token, row.provider_user_id.clone())))
        .map_err(|e| e.to_string())
}

/// A page of connections across users for a trusted backend, and the cursor of the next page.
pub async fn list_connections(
    broker: &Broker,
    filter: ListFilter,
) -> Result<(Vec<ConnectionListing>, Option<uuid::Uuid>)> {
    let limit = filter.limit;
    let page = broker.store.list_connections(&filter).await?;
    let next = if page.len() == limit as usize {
        page.last().map(|c| c.id)
    } else {
        None
    };
    Ok((page, next))
}
