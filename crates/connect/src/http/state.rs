//! What the HTTP layer shares across requests: the [`Broker`] the handlers call, and what only
//! HTTP needs (who is calling, rate limits, the metrics handle, the settings routes read).
//! Built by `app`; nothing here opens a database or calls a provider.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::broker::Broker;
use crate::config::Settings;
use crate::identity::service_key::ServiceKeys;
use crate::identity::user_jwt::UserVerifier;
use crate::limits::RateLimits;

/// Shared, read-only state of a running service. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    /// The use cases and everything they own.
    pub broker: Arc<Broker>,
    /// The validated configuration (routes read the app origins, the demo flag, the rate-limit
    /// header; replicas in tests are built from it).
    pub settings: Settings,
    pub users: UserVerifier,
    pub service_keys: ServiceKeys,
    pub metrics: Option<PrometheusHandle>,
    /// Per-process rate limits.
    pub limits: Arc<RateLimits>,
    /// Tokens a refresh did not get the provider to take (the proxy's 401 retry).
    pub uncured_refusals: crate::http::proxy::UncuredRefusals,
    /// The proxy's outbound client.
    pub upstream: crate::http::upstream::UpstreamClient,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}
