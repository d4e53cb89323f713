//! The emulator's memory: registered clients and accounts, issued codes and tokens, cumulative
//! consent, the per-account test switches (revoked grant, withdrawn consent, expired tokens),
//! faults and counters. Plain synchronous data behind one mutex; it must not know HTTP and must
//! never be held across an `.await`.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, RngCore};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::{EmulatorConfig, ProviderAccount, RegisteredClient, TestAccount};
use crate::faults::Faults;
use crate::identity::pkce::Challenge;
use crate::identity::scope::Scopes;
use crate::stats::Stats;

/// Microsoft refresh tokens die after 90 days without use (sliding: each new one gets 90 days).
pub(crate) const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Past this many live entries per map, expired ones are swept on insert.
const SWEEP_THRESHOLD: usize = 10_000;

pub(crate) struct State {
    pub clients: Vec<RegisteredClient>,
    pub accounts: Vec<TestAccount>,
    pub google_accounts: Vec<ProviderAccount>,
    pub dropbox_accounts: Vec<ProviderAccount>,
    /// Codes, tokens and grants of the Google and Dropbox stand-ins.
    pub standard: crate::standard::memory::Memory,
    pub access_token_lifetime: Option<Duration>,
    pub code_lifetime: Duration,
    pub marker: String,
    pub faults: Faults,
    pub stats: Stats,
    /// Every issued code and token takes the next generation; switches cut off by generation.
    generation: u64,
    codes: HashMap<String, IssuedCode>,
    access_tokens: HashMap<String, IssuedAccessToken>,
    refresh_tokens: HashMap<String, IssuedRefreshToken>,
    /// (account id, client id) -> what the user has consented to, cumulatively.
    consents: HashMap<(String, String), Consent>,
    switches: HashMap<String, AccountSwitches>,
}

#[derive(Clone, Debug)]
pub(crate) struct IssuedCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub tenant_path: String,
    pub account_id: String,
    pub scopes: Scopes,
    pub challenge: Option<Challenge>,
    pub expires_at: Instant,
    pub redeemed: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct IssuedAccessToken {
    pub account_id: String,
    pub graph_scopes: Vec<&'static str>,
    pub expires_at: Instant,
    generation: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct IssuedRefreshToken {
    pub account_id: String,
    pub client_id: String,
    pub issued_at: OffsetDateTime,
    pub expires_at: Instant,
    generation: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Consent {
    pub graph: Vec<&'static str>,
    pub offline_access: bool,
}

/// Why refresh tokens issued before a switch was thrown no longer work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshDenial {
    Revoked,
    ConsentWithdrawn,
    Expired,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cutoff {
    generation: u64,
    pub reason: RefreshDenial,
    pub at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, Default)]
struct AccountSwitches {
    refresh: Option<Cutoff>,
    access: Option<u64>,
}

/// What an access token is worth right now.
pub(crate) enum AccessCheck<'a> {
    Unknown,
    Expired,
    Valid(&'a IssuedAccessToken),
}

/// A freshly minted token response.
pub(crate) struct MintedTokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
}

impl State {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            clients: config.clients,
            accounts: config.accounts,
            google_accounts: config.google_accounts,
            dropbox_accounts: config.dropbox_accounts,
            standard: Default::default(),
            access_token_lifetime: config.access_token_lifetime,
            code_lifetime: config.code_lifetime,
            marker: config.marker,
            faults: Faults::default(),
            stats: Stats::default(),
            generation: 0,
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            consents: HashMap::new(),
            switches: HashMap::new(),
        }
    }

    /// Back to a fresh start: no faults, counters, codes, tokens, consents or switches.
    /// Clients, accounts and lifetimes stay.
    pub fn reset(&mut self) {
        self.faults = Faults::default();
        self.stats = Stats::default();
        self.codes.clear();
        self.access_tokens.clear();
        self.refresh_tokens.clear();
        self.consents.clear();
        self.switches.clear();
        self.standard.reset();
    }

    pub fn flavor_accounts(&self, flavor: crate::standard::Flavor) -> &[ProviderAccount] {
        match flavor {
            crate::standard::Flavor::Google => &self.google_accounts,
            crate::standard::Flavor::Dropbox => &self.dropbox_accounts,
        }
    }

    pub fn client(&self, client_id: &str) -> Option<&RegisteredClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn add_client(&mut self, client: RegisteredClient) {
        self.clients.retain(|c| c.client_id != client.client_id);
        self.clients.push(client);
    }

    pub fn account(&self, account_id: &str) -> Option<&TestAccount> {
        self.accounts.iter().find(|a| a.id == account_id)
    }

    pub fn is_our_token(&self, value: &str, kind: &str) -> bool {
        value.starts_with(&format!("{}-{kind}-", self.marker))
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    fn mint(&self, kind: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{}-{kind}-{}", self.marker, URL_SAFE_NO_PAD.encode(bytes))
    }

    // --- consent ---------------------------------------------------------------------------

    /// Adds what the user just accepted to what they accepted before; returns the Graph
    /// permissions the code is for. `.default` means "what is already consented", or
    /// `User.Read` for a first consent.
    pub fn record_consent(
        &mut self,
        account_id: &str,
        client_id: &str,
        scopes: &Scopes,
    ) -> Vec<&'static str> {
        let consent = self
            .consents
            .entry((account_id.to_owned(), client_id.to_owned()))
            .or_default();
        let requested: Vec<&'static str> = if scopes.default_scope {
            if consent.graph.is_empty() {
                vec!["User.Read"]
            } else {
                consent.graph.clone()
            }
        } else {
            scopes.graph.clone()
        };
        for permission in &requested {
            if !consent.graph.contains(permission) {
                consent.graph.push(permission);
            }
        }
        consent.offline_access |= scopes.offline_access;
        requested
    }

    pub fn consent(&self, account_id: &str, client_id: &str) -> Option<&Consent> {
        self.consents
            .get(&(account_id.to_owned(), client_id.to_owned()))
    }

    // --- codes -----------------------------------------------------------------------------

    pub fn issue_code(&mut self, mut code: IssuedCode, now: Instant) -> String {
        code.expires_at = now + self.code_lifetime;
        let value = self.mint("code");
        if self.codes.len() > SWEEP_THRESHOLD {
            // Redeemed codes are kept until they expire so a replay still answers 54005.
            self.codes.retain(|_, c| c.expires_at > now);
        }
        self.codes.insert(value.clone(), code);
        value
    }

    pub fn code_mut(&mut self, code: &str) -> Option<&mut IssuedCode> {
        self.codes.get_mut(code)
    }

    // --- tokens ----------------------------------------------------------------------------

    fn access_token_lifetime(&self) -> Duration {
        self.access_token_lifetime
            .unwrap_or_else(|| Duration::from_secs(rand::rng().random_range(3600..=5400)))
    }

    /// Mints an access token (and a refresh token when `with_refresh`).
    pub fn mint_tokens(
        &mut self,
        account_id: &str,
        client_id: &str,
        graph_scopes: Vec<&'static str>,
        with_refresh: bool,
        now: Instant,
    ) -> MintedTokens {
        let lifetime = self.access_token_lifetime();
        let generation = self.next_generation();
        let access_token = self.mint("at");
        if self.access_tokens.len() > SWEEP_THRESHOLD {
            self.access_tokens.retain(|_, t| t.expires_at > now);
        }
        self.access_tokens.insert(
            access_token.clone(),
            IssuedAccessToken {
                account_id: account_id.to_owned(),
                graph_scopes,
                expires_at: now + lifetime,
                generation,
            },
        );
        let refresh_token = with_refresh.then(|| {
            let value = self.mint("rt");
            if self.refresh_tokens.len() > SWEEP_THRESHOLD {
                self.refresh_tokens.retain(|_, t| t.expires_at > now);
            }
            self.refresh_tokens.insert(
                value.clone(),
                IssuedRefreshToken {
                    account_id: account_id.to_owned(),
                    client_id: client_id.to_owned(),
                    issued_at: OffsetDateTime::now_utc(),
                    expires_at: now + REFRESH_TOKEN_LIFETIME,
                    generation,
                },
            );
            value
        });
        MintedTokens {
            access_token,
            expires_in: lifetime.as_secs(),
            refresh_token,
        }
    }

    pub fn refresh_token(&self, value: &str) -> Option<&IssuedRefreshToken> {
        self.refresh_tokens.get(value)
    }

    /// The switch that kills this refresh token, if one was thrown after it was issued.
    pub fn refresh_cutoff(&self, token: &IssuedRefreshToken) -> Option<Cutoff> {
        self.switches
            .get(&token.account_id)
            .and_then(|s| s.refresh)
            .filter(|cutoff| token.generation <= cutoff.generation)
    }

    pub fn check_access_token(&self, value: &str, now: Instant) -> AccessCheck<'_> {
        let Some(token) = self.access_tokens.get(value) else {
            return AccessCheck::Unknown;
        };
        let cut_off = self
            .switches
            .get(&token.account_id)
            .and_then(|s| s.access)
            .is_some_and(|generation| token.generation <= generation);
        if cut_off || now >= token.expires_at {
            AccessCheck::Expired
        } else {
            AccessCheck::Valid(token)
        }
    }

    // --- test switches ---------------------------------------------------------------------

    fn cut_refresh(&mut self, account_id: &str, reason: RefreshDenial) {
        let cutoff = Cutoff {
            generation: self.generation,
            reason,
            at: OffsetDateTime::now_utc(),
        };
        self.switches
            .entry(account_id.to_owned())
            .or_default()
            .refresh = Some(cutoff);
    }

    pub fn revoke_grant(&mut self, account_id: &str) {
        self.standard.revoke_account(account_id);
        self.cut_refresh(account_id, RefreshDenial::Revoked);
    }

    pub fn withdraw_consent(&mut self, account_id: &str) {
        // Google's and Dropbox's accounts: the app's access removed, every grant ends.
        self.standard.revoke_account(account_id);
        self.consents
            .retain(|(account, _), _| account != account_id);
        self.cut_refresh(account_id, RefreshDenial::ConsentWithdrawn);
    }

    pub fn expire_refresh_tokens(&mut self, account_id: &str) {
        self.standard.expire_refresh(account_id);
        self.cut_refresh(account_id, RefreshDenial::Expired);
    }

    pub fn expire_access_tokens(&mut self, account_id: &str) {
        self.standard.expire_access(account_id);
        let generation = self.generation;
        self.switches
            .entry(account_id.to_owned())
            .or_default()
            .access = Some(generation);
    }
}
