//! The one place that wires the service together: from [`Settings`] to a [`Broker`] (the use
//! cases and what they own), an [`AppState`] (the broker plus what only HTTP needs), the
//! routers, and a running pair of listeners (API and admin) that shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::broker::{Broker, BrokerSettings};
use crate::config::Settings;
use crate::http::AppState;
use crate::http::state::AppInner;
use crate::identity::service_key::ServiceKeys;
use crate::identity::user_jwt::UserVerifier;
use crate::provider::Catalog;
use crate::store::{Store, StoreError, StoreOptions};
use crate::vault::Keyring;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// The database could not be opened; names where it is, never the credentials.
    #[error("cannot open the database at {location}: {source}")]
    Unreachable {
        location: String,
        source: StoreError,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot build the proxy's client: {0}")]
    Upstream(#[from] crate::http::upstream::BuildError),
    #[error("encryption keys: {0}")]
    Keys(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a database URL points, for error messages: `host:port/database` for PostgreSQL, the
/// file for SQLite; never the user name or the password.
pub fn database_location(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        return path.split('?').next().unwrap_or(path).to_owned();
    }
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}:{}{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432),
            parsed.path()
        ),
        Err(_) => "an unparsable DATABASE_URL".to_owned(),
    }
}

/// Builds the outbound HTTP client every provider call and JWKS fetch uses.
/// What the service tells providers it is, on the OAuth calls and on proxied calls.
pub const USER_AGENT: &str = concat!("celeste-connect/", env!("CARGO_PKG_VERSION"));

pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(USER_AGENT)
        .build()
}

/// Installs process-wide crypto providers (rustls for outbound TLS, jsonwebtoken's backend).
/// Idempotent.
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl AppState {
    /// Opens the store, builds the broker over it, and the state the handlers share.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        install_crypto();
        let store = Store::connect(
            settings.database_url.expose_secret(),
            StoreOptions {
                pool_size: settings.db_pool_size,
                read_pool_size: settings.db_read_pool_size,
                migrate: settings.migrate_on_start,
            },
        )
        .await
        .map_err(|source| StartError::Unreachable {
            location: database_location(settings.database_url.expose_secret()),
            source,
        })?
        .with_outbox(Arc::new(crate::store::Outbox {
            endpoints: settings
                .webhooks
                .endpoints
                .iter()
                .map(|e| e.name.clone())
                .collect(),
            failing_after: settings.webhooks.failing_after,
            written: Default::default(),
        }));
        verify_keys(&store, &settings.keyring).await?;
        let http = http_client()?;
        let limits = crate::limits::RateLimits::start(
            &settings.rate_limits,
            crate::broker::connect::FLOW_LIFETIME.unsigned_abs(),
        );
        let broker = Broker::new(
            store,
            settings.keyring.clone(),
            Catalog::new(settings.providers.iter().cloned()),
            http.clone(),
            limits.pending_flows.clone(),
            BrokerSettings {
                refresh: settings.refresh.clone(),
                public_url: settings.public_url.clone(),
                token_cache_capacity: settings.token_cache_capacity,
                status_cache_capacity: settings.status_cache_capacity,
                webhooks: settings.webhooks.clone(),
                activity: settings.activity.clone(),
            },
        );
        Ok(AppState::new(AppInner {
            broker: Arc::new(broker),
            users: UserVerifier::new(&settings.jwt, http),
            service_keys: ServiceKeys::new(settings.service_keys.clone()),
            metrics: crate::telemetry::metrics_handle(),
            limits,
            uncured_refusals: Default::default(),
            upstream: crate::http::upstream::UpstreamClient::new()?,
            settings,
        }))
    }
}

/// Fails closed when the key ring cannot open what the database holds: every key id in use
/// must be in the ring, and must open one of its rows (a wrong key under a known id).
pub async fn verify_keys(store: &Store, keyring: &Keyring) -> Result<(), StartError> {
    for key_id in store.key_ids_in_use().await? {
        if !keyring.key_ids().any(|k| k == key_id) {
            return Err(StartError::Keys(format!(
                "stored tokens are sealed with key {key_id:?}, which is not in CONNECT_ENCRYPTION_KEYS; \
                 add it back (after the active key) until `celeste-connect rotate-key` has moved every row"
            )));
        }
        if let Some(row) = store.one_sealed_with(&key_id).await? {
            let place =
                crate::broker::sealed::token_place("access_token", row.user_id, row.provider);
            if keyring.open(&place, &row.access_token).is_err() {
                return Err(StartError::Keys(format!(
                    "key {key_id:?} in CONNECT_ENCRYPTION_KEYS does not open the tokens sealed with it: wrong key"
                )));
            }
        }
    }
    Ok(())
}

/// A service ready to run: its state and routers.
pub struct App {
    pub state: AppState,
    pub api: Router,
    pub admin: Router,
}

impl App {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Ok(Self::from_state(AppState::build(settings).await?))
    }

    pub fn from_state(state: AppState) -> Self {
        Self {
            api: crate::http::api_router(state.clone()),
            admin: crate::http::admin_router(state.clone()),
            state,
        }
    }

    /// Serves the API and admin routers on already-bound listeners until `shutdown` resolves,
    /// then drains in-flight requests.
    pub async fn serve(
        self,
        api: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let broker = self.state.broker.clone();
        if let Some(admin) = admin {
            let mut admin_rx = rx.clone();
            let router = self.admin;
            tokio::spawn(async move {
                let _ = axum::serve(admin, router)
                    .with_graceful_shutdown(async move {
                        let _ = admin_rx.wait_for(|stop| *stop).await;
                    })
                    .await;
            });
        }
        if broker.settings.refresh.keepalive_idle.is_some() {
            broker
                .tokens
                .tasks
                .spawn(crate::refresher::run(broker.clone(), rx.clone()));
        }
        if !broker.settings.webhooks.endpoints.is_empty() {
            broker
                .tokens
                .tasks
                .spawn(crate::webhooks::worker::run(broker.clone(), rx.clone()));
        }
        let activity = &broker.settings.activity;
        let flusher = activity.enabled.then(|| {
            tokio::spawn(crate::activity::worker::run_flusher(
                broker.activity.clone(),
                broker.store.clone(),
                activity.flush_every,
                activity.fold_every,
                rx.clone(),
            ))
        });
        if let Some(retention) = activity.retention {
            tokio::spawn(crate::activity::worker::run_pruner(
                broker.store.clone(),
                retention,
                rx.clone(),
            ));
        }
        let mut api_rx = rx;
        let stopping = broker.clone();
        let served = axum::serve(
            api,
            self.api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
            stopping.stop_background();
            let _ = api_rx.wait_for(|stop| *stop).await;
        })
        .await;
        broker.finish_refreshes().await;
        // After the drain and the last refreshes, nothing more is counted: write it all.
        let journal = match flusher {
            Some(flusher) => flusher.await.unwrap_or_default(),
            None => Default::default(),
        };
        crate::activity::worker::flush_at_shutdown(journal, &broker.activity, &broker.store).await;
        broker.store.close().await;
        Ok(served?)
    }
}
