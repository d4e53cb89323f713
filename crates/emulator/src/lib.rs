//! Provider emulator: a faithful local stand-in for the Microsoft identity platform v2.0
//! (authorize with a consent page, token with codes, PKCE, client auth, rotating refresh tokens
//! and Microsoft's AADSTS errors) and Microsoft Graph (`/v1.0/me`, `/v1.0/me/messages`), and
//! under `/google/` and `/dropbox/` for Google (authorize, token, revoke, userinfo, Gmail
//! messages) and Dropbox (authorize, token, revoke, `get_current_account`, `list_folder`), with
//! fault switches and call counters for tests. Facts it follows: shared/reference/providers.md
//! §1, §2, §3 and §5. This file owns the public handle ([`Emulator`]) and the route table; it must not
//! hold protocol rules (those live in `identity` and `graph`). Never mount it in production.

mod config;
mod controls;
mod faults;
mod graph;
mod html;
mod identity;
mod request_url;
mod standard;
mod state;
mod stats;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

pub use config::{
    AccountKind, DEFAULT_CODE_LIFETIME, DEFAULT_MARKER, EmulatorConfig, ProviderAccount,
    RegisteredClient, TestAccount, demo_accounts, dropbox_demo_accounts, google_demo_accounts,
};
pub use faults::{ConsentFault, Faults, HttpFault, LatencyTarget};
pub use standard::Flavor;
pub use standard::memory::GOOGLE_REFRESH_TOKEN_CAP;
pub use stats::{Stats, endpoint};

/// BASE64URL(SHA256(verifier)): the `S256` code challenge for a verifier, for tests.
pub fn s256_challenge(verifier: &str) -> String {
    identity::pkce::s256(verifier)
}

/// A running emulator. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Mutex<state::State>>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

/// Which fault switches a request is subject to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Authorize,
    Token,
    Graph,
    Revoke,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(state::State::new(config))),
        }
    }

    /// Routes relative to the mount point; works at the root or under `Router::nest`.
    pub fn router(&self) -> Router {
        let authorize = get(identity::authorize::show).post(identity::authorize::decide);
        Router::new()
            .route("/{tenant}/oauth2/v2.0/authorize", authorize)
            .route("/{tenant}/oauth2/v2.0/token", post(identity::token::token))
            .route("/v1.0/me", get(graph::me::me))
            .route("/v1.0/me/messages", get(graph::messages::list))
            .route("/v1.0/me/messages/{id}", get(graph::messages::single))
            .route("/v1.0/me/mailboxSettings", get(graph::me::mailbox_settings))
            .route("/v1.0/{*rest}", get(graph::unknown_segment))
            .merge(standard::routes())
            .merge(controls::routes())
            .with_state(self.clone())
    }

    pub fn stats(&self) -> Stats {
        self.with(|memory| memory.stats.clone())
    }

    pub fn faults(&self) -> Faults {
        self.with(|memory| memory.faults.clone())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.with(|memory| memory.faults = faults);
    }

    /// The next refresh with any token issued so far answers `invalid_grant` AADSTS50173.
    pub fn revoke_grant(&self, account_id: &str) {
        self.with(|memory| memory.revoke_grant(account_id));
    }

    /// Forgets the account's consent; the next refresh answers `invalid_grant` AADSTS65001 with
    /// `suberror: consent_required`.
    pub fn withdraw_consent(&self, account_id: &str) {
        self.with(|memory| memory.withdraw_consent(account_id));
    }

    /// The next refresh with any token issued so far answers `invalid_grant` AADSTS700082.
    pub fn expire_refresh_tokens(&self, account_id: &str) {
        self.with(|memory| memory.expire_refresh_tokens(account_id));
    }

    /// Graph answers 401 `InvalidAuthenticationToken` for the account's access tokens so far.
    pub fn expire_access_tokens(&self, account_id: &str) {
        self.with(|memory| memory.expire_access_tokens(account_id));
    }

    /// `None`: a random 3600..=5400 s per token, as Microsoft does.
    pub fn set_access_token_lifetime(&self, lifetime: Option<Duration>) {
        self.with(|memory| memory.access_token_lifetime = lifetime);
    }

    /// Clears faults, counters, codes, tokens, consents and account switches.
    pub fn reset(&self) {
        self.with(state::State::reset);
    }

    /// Registers a client, replacing one with the same id.
    pub fn add_client(&self, client: RegisteredClient) {
        self.with(|memory| memory.add_client(client));
    }

    pub fn accounts(&self) -> Vec<TestAccount> {
        self.with(|memory| memory.accounts.clone())
    }

    /// The Google or Dropbox test accounts.
    pub fn provider_accounts(&self, flavor: Flavor) -> Vec<ProviderAccount> {
        self.with(|memory| memory.flavor_accounts(flavor).to_vec())
    }

    /// Whether `id` names a test account of any provider.
    pub fn knows_account(&self, id: &str) -> bool {
        self.with(|memory| {
            memory.accounts.iter().any(|a| a.id == id)
                || memory.google_accounts.iter().any(|a| a.id == id)
                || memory.dropbox_accounts.iter().any(|a| a.id == id)
        })
    }

    /// Runs `f` on the state. Never call across an `.await`.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut state::State) -> R) -> R {
        // A panic elsewhere must not wedge every later test request.
        let mut memory = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut memory)
    }

    /// Counts the request, waits any injected latency, and takes the fault that replaces this
    /// answer, if one is set.
    pub(crate) async fn enter(
        &self,
        endpoint: &'static str,
        surface: Surface,
    ) -> Option<HttpFault> {
        let latency = self.with(|memory| {
            memory.stats.hit(endpoint);
            memory.faults.latency_for(surface == Surface::Token)
        });
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        self.with(|memory| {
            let fault = match surface {
                Surface::Authorize => None,
                Surface::Token => memory.faults.take_token(),
                Surface::Graph => memory.faults.take_graph(),
                Surface::Revoke => memory.faults.take_revoke(),
            };
            if fault.is_some() {
                memory.stats.faults_injected += 1;
            }
            fault
        })
    }
}
