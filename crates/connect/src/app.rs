//! The one place that wires the service together: from [`Settings`] to a running pair of
//! listeners (API and admin). Everything a handler needs is in [`AppState`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::identity::service_key::ServiceKeys;
use crate::identity::user_jwt::UserVerifier;
use crate::provider::{Catalog, ConfiguredProvider, ProviderId};
use crate::store::{Store, StoreError, StoreOptions};
use crate::vault::Keyring;

/// Shared, read-only state of a running service. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub settings: Settings,
    pub store: Store,
    pub users: UserVerifier,
    pub service_keys: ServiceKeys,
    /// Providers with credentials configured, found by id.
    pub providers: Catalog,
    pub keyring: Arc<Keyring>,
    /// Fresh access tokens in memory (see `broker::cache`).
    pub cache: Arc<crate::broker::cache::TokenCache>,
    /// Tells background tasks (the cache listener) to stop; dropped with the state.
    background: tokio::sync::watch::Sender<bool>,
    /// Refreshes in flight in this process, and its lease owner id.
    pub tokens: crate::broker::tokens::TokenBroker,
    /// The one outbound HTTP client: no redirects followed, bounded timeouts.
    pub http: reqwest::Client,
    pub metrics: Option<PrometheusHandle>,
    /// Per-process rate limits and the pending-flow cap.
    pub limits: Arc<crate::limits::RateLimits>,
    /// The activity log's counts not yet written (see `activity`).
    pub activity: Arc<crate::activity::Recorder>,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
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
}

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
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("celeste-connect/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Installs process-wide crypto providers (rustls for outbound TLS, jsonwebtoken's backend).
/// Idempotent.
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl AppState {
    /// Opens the store and builds everything handlers need.
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
        })?;
        verify_keys(&store, &settings.keyring).await?;
        let http = http_client()?;
        let providers = Catalog::new(settings.providers.iter().cloned());
        // On PostgreSQL other replicas write too: the cache is on only while a listener hears
        // their changes. On SQLite this process is the only writer.
        let cache = Arc::new(crate::broker::cache::TokenCache::new(
            matches!(store, Store::Sqlite(_)),
            settings.token_cache_capacity,
        ));
        let (background, stop) = tokio::sync::watch::channel(false);
        if let (Store::Postgres(pg), true) = (&store, settings.token_cache_capacity > 0) {
            tokio::spawn(crate::broker::cache::listen(
                cache.clone(),
                pg.pool().clone(),
                stop,
            ));
        }
        Ok(AppState(Arc::new(AppInner {
            cache,
            background,
            users: UserVerifier::new(&settings.jwt, http.clone()),
            service_keys: ServiceKeys::new(settings.service_keys.clone()),
            providers,
            keyring: settings.keyring.clone(),
            tokens: crate::broker::tokens::TokenBroker::default(),
            http,
            metrics: crate::telemetry::metrics_handle(),
            limits: crate::limits::RateLimits::start(
                &settings.rate_limits,
                crate::broker::connect::FLOW_LIFETIME.unsigned_abs(),
            ),
            activity: Arc::new(crate::activity::Recorder::new(settings.activity.enabled)),
            store,
            settings,
        })))
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
                crate::broker::connect::token_place("access_token", row.user_id, row.provider);
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
        let background = self.state.background.clone();
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
        if self.state.settings.refresh.keepalive_idle.is_some() {
            self.state
                .tokens
                .tasks
                .spawn(crate::refresher::run(self.state.clone(), rx.clone()));
        }
        let flusher = self.state.settings.activity.enabled.then(|| {
            tokio::spawn(crate::activity::worker::run_flusher(
                self.state.activity.clone(),
                self.state.store.clone(),
                self.state.settings.activity.flush_every,
                rx.clone(),
            ))
        });
        if let Some(retention) = self.state.settings.activity.retention {
            tokio::spawn(crate::activity::worker::run_pruner(
                self.state.store.clone(),
                retention,
                rx.clone(),
            ));
        }
        let mut api_rx = rx;
        let served = axum::serve(
            api,
            self.api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
            let _ = background.send(true);
            let _ = api_rx.wait_for(|stop| *stop).await;
        })
        .await;
        self.state.finish_refreshes().await;
        // After the drain and the last refreshes, nothing more is counted: write it all.
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
        crate::activity::worker::flush_at_shutdown(&self.state.activity, &self.state.store).await;
        self.state.store.close().await;
        Ok(served?)
    }
}

impl AppState {
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
