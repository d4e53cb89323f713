//! What the Google and Dropbox stand-ins remember: codes, access and refresh tokens, the
//! grant each belongs to (revoking a grant kills all of them), who has consented to which
//! client (Google sends a refresh token on the first consent only), and Google's cap on refresh
//! tokens per account and client. Plain synchronous data; it must not know HTTP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use tokio::time::Instant;

use super::Flavor;
use crate::identity::pkce::Challenge;

/// Google keeps this many live refresh tokens per account and client; a new one invalidates
/// the oldest (providers.md §2.4).
pub const GOOGLE_REFRESH_TOKEN_CAP: usize = 100;

#[derive(Clone, Debug)]
pub(crate) struct Code {
    pub flavor: Flavor,
    pub client_id: String,
    pub redirect_uri: String,
    pub account_id: String,
    pub scopes: Vec<String>,
    pub challenge: Option<Challenge>,
    /// Whether the token response carries a refresh token.
    pub offline: bool,
    pub expires_at: Instant,
    pub redeemed: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct AccessToken {
    pub flavor: Flavor,
    pub account_id: String,
    pub scopes: Vec<String>,
    pub grant: u64,
    pub issued_at: Instant,
    pub expires_at: Instant,
}

#[derive(Clone, Debug)]
pub(crate) struct RefreshToken {
    pub flavor: Flavor,
    pub account_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub grant: u64,
}

/// Why a token does not work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dead {
    Unknown,
    Expired,
}

#[derive(Default)]
pub(crate) struct Memory {
    next_grant: u64,
    codes: HashMap<String, Code>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    revoked_grants: HashSet<u64>,
    /// (flavor, account, client) -> the scopes granted so far, cumulatively.
    consented: HashMap<(Flavor, String, String), Vec<String>>,
    /// Google's live refresh tokens per (account, client), oldest first.
    issued_order: HashMap<(String, String), VecDeque<String>>,
    /// Access tokens issued before this instant, per account, count as expired.
    access_cutoff: HashMap<String, Instant>,
}

/// A token in the provider's format (`ya29.`, `1//`, `sl.`) that still holds the marker and
/// its kind (`TOKMARK-at-`), so leak checks find every provider's tokens alike.
fn mint(marker: &str, prefix: &str, kind: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{marker}-{kind}-{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Memory {
    pub fn issue_code(&mut self, code: Code, marker: &str) -> String {
        let value = mint(marker, code.flavor.code_prefix(), "code");
        self.codes.retain(|_, c| c.expires_at > Instant::now());
        self.codes.insert(value.clone(), code);
        value
    }

    pub fn code_mut(&mut self, value: &str) -> Option<&mut Code> {
        self.codes.get_mut(value)
    }

    /// Records a consent to `scopes`; returns whether this account had consented to the client
    /// before, and every scope it has granted the client so far (these included).
    pub fn consent(
        &mut self,
        flavor: Flavor,
        account: &str,
        client: &str,
        scopes: &[String],
    ) -> (bool, Vec<String>) {
        let key = (flavor, account.to_owned(), client.to_owned());
        let before = self.consented.contains_key(&key);
        let granted = self.consented.entry(key).or_default();
        for scope in scopes {
            if !granted.contains(scope) {
                granted.push(scope.clone());
            }
        }
        (before, granted.clone())
    }

    pub fn new_grant(&mut self) -> u64 {
        self.next_grant += 1;
        self.next_grant
    }

    pub fn mint_access(
        &mut self,
        flavor: Flavor,
        account_id: &str,
        scopes: Vec<String>,
        grant: u64,
        lifetime: Duration,
        marker: &str,
    ) -> String {
        let value = mint(marker, flavor.access_prefix(), "at");
        let now = Instant::now();
        if self.access.len() > 10_000 {
            self.access.retain(|_, t| t.expires_at > now);
        }
        self.access.insert(
            value.clone(),
            AccessToken {
                flavor,
                account_id: account_id.to_owned(),
                scopes,
                grant,
                issued_at: now,
                expires_at: now + lifetime,
            },
        );
        value
    }

    pub fn mint_refresh(&mut self, token: RefreshToken, marker: &str) -> String {
        let value = mint(marker, token.flavor.refresh_prefix(), "rt");
        if token.flavor == Flavor::Google {
            let order = self
                .issued_order
                .entry((token.account_id.clone(), token.client_id.clone()))
                .or_default();
            order.push_back(value.clone());
            while order.len() > GOOGLE_REFRESH_TOKEN_CAP {
                if let Some(oldest) = order.pop_front() {
                    self.refresh.remove(&oldest);
                }
            }
        }
        self.refresh.insert(value.clone(), token);
        value
    }

    pub fn refresh_token(&self, flavor: Flavor, value: &str) -> Option<&RefreshToken> {
        self.refresh
            .get(value)
            .filter(|t| t.flavor == flavor && !self.revoked_grants.contains(&t.grant))
    }

    pub fn access_token(&self, flavor: Flavor, value: &str) -> Result<&AccessToken, Dead> {
        let token = self
            .access
            .get(value)
            .filter(|t| t.flavor == flavor && !self.revoked_grants.contains(&t.grant))
            .ok_or(Dead::Unknown)?;
        let cut = self
            .access_cutoff
            .get(&token.account_id)
            .is_some_and(|at| token.issued_at <= *at);
        if cut || Instant::now() >= token.expires_at {
            return Err(Dead::Expired);
        }
        Ok(token)
    }

    /// Revokes the grant `value` (a refresh token, or an access token that still works)
    /// belongs to; `false` when the token names no live grant or has expired (Google answers
    /// `invalid_token` "Token expired or revoked" to an expired access token, providers.md
    /// §2.5).
    pub fn revoke(&mut self, flavor: Flavor, value: &str) -> bool {
        let grant = self
            .refresh_token(flavor, value)
            .map(|t| t.grant)
            .or_else(|| self.access_token(flavor, value).ok().map(|t| t.grant));
        match grant {
            Some(grant) => self.revoked_grants.insert(grant),
            None => false,
        }
    }

    /// The user removed the app's access: every grant of the account ends.
    pub fn revoke_account(&mut self, account_id: &str) {
        let grants: Vec<u64> = self
            .refresh
            .values()
            .filter(|t| t.account_id == account_id)
            .map(|t| t.grant)
            .chain(
                self.access
                    .values()
                    .filter(|t| t.account_id == account_id)
                    .map(|t| t.grant),
            )
            .collect();
        self.revoked_grants.extend(grants);
        self.consented.retain(|(_, a, _), _| a != account_id);
    }

    /// The account's refresh tokens die (Google: six months unused, a Testing-mode app's
    /// seven days, a password change; providers.md §2.4); its access tokens live on.
    pub fn expire_refresh(&mut self, account_id: &str) {
        self.refresh.retain(|_, t| t.account_id != account_id);
    }

    /// The account's access tokens issued so far stop working.
    pub fn expire_access(&mut self, account_id: &str) {
        self.access_cutoff
            .insert(account_id.to_owned(), Instant::now());
    }

    pub fn reset(&mut self) {
        *self = Memory::default();
    }
}
