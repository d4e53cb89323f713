//! Call counters tests read to assert what the service did (one refresh, not ten). Counting
//! only; it must not influence any answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Endpoint names used as keys in [`Stats::endpoints`].
pub mod endpoint {
    pub const AUTHORIZE: &str = "authorize";
    pub const CONSENT: &str = "consent";
    pub const TOKEN: &str = "token";
    pub const ME: &str = "me";
    pub const MESSAGES: &str = "messages";
    pub const MAILBOX_SETTINGS: &str = "mailbox_settings";
    pub const GOOGLE_AUTHORIZE: &str = "google.authorize";
    pub const GOOGLE_CONSENT: &str = "google.consent";
    pub const GOOGLE_TOKEN: &str = "google.token";
    pub const GOOGLE_REVOKE: &str = "google.revoke";
    pub const GOOGLE_USERINFO: &str = "google.userinfo";
    pub const GMAIL_MESSAGES: &str = "google.gmail_messages";
    pub const DROPBOX_AUTHORIZE: &str = "dropbox.authorize";
    pub const DROPBOX_CONSENT: &str = "dropbox.consent";
    pub const DROPBOX_TOKEN: &str = "dropbox.token";
    pub const DROPBOX_REVOKE: &str = "dropbox.revoke";
    pub const DROPBOX_ACCOUNT: &str = "dropbox.get_current_account";
    pub const DROPBOX_LIST_FOLDER: &str = "dropbox.list_folder";
}

/// Counters since start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Requests per endpoint (faulted ones included).
    pub endpoints: BTreeMap<String, u64>,
    /// Token requests per `grant_type` as sent (faulted and failed ones included); Google's
    /// and Dropbox's are prefixed (`google.refresh_token`).
    pub grants: BTreeMap<String, u64>,
    /// Successful token responses per grant type.
    pub tokens_issued: BTreeMap<String, u64>,
    /// Token-endpoint errors per `error` value (`invalid_grant`, ...).
    pub token_errors: BTreeMap<String, u64>,
    /// Token-endpoint errors per AADSTS number.
    pub aadsts: BTreeMap<u32, u64>,
    /// Graph errors per OData error code (`InvalidAuthenticationToken`, ...).
    pub graph_errors: BTreeMap<String, u64>,
    /// Successful revocations per provider (`google`, `dropbox`).
    pub revocations: BTreeMap<String, u64>,
    pub consents_accepted: u64,
    pub consents_declined: u64,
    /// Answers replaced by an injected fault.
    pub faults_injected: u64,
}

impl Stats {
    pub fn endpoint(&self, name: &str) -> u64 {
        self.endpoints.get(name).copied().unwrap_or(0)
    }

    pub fn grant(&self, grant_type: &str) -> u64 {
        self.grants.get(grant_type).copied().unwrap_or(0)
    }

    pub fn issued(&self, grant_type: &str) -> u64 {
        self.tokens_issued.get(grant_type).copied().unwrap_or(0)
    }

    pub fn revocations(&self, provider: &str) -> u64 {
        self.revocations.get(provider).copied().unwrap_or(0)
    }

    pub fn aadsts_count(&self, code: u32) -> u64 {
        self.aadsts.get(&code).copied().unwrap_or(0)
    }

    pub(crate) fn hit(&mut self, endpoint: &str) {
        *self.endpoints.entry(endpoint.to_owned()).or_default() += 1;
    }

    pub(crate) fn grant_requested(&mut self, grant_type: &str) {
        *self.grants.entry(grant_type.to_owned()).or_default() += 1;
    }

    pub(crate) fn token_issued(&mut self, grant_type: &str) {
        *self.tokens_issued.entry(grant_type.to_owned()).or_default() += 1;
    }

    pub(crate) fn token_error(&mut self, error: &str, code: u32) {
        *self.token_errors.entry(error.to_owned()).or_default() += 1;
        *self.aadsts.entry(code).or_default() += 1;
    }

    pub(crate) fn standard_token_error(&mut self, provider: &str, error: &str) {
        *self
            .token_errors
            .entry(format!("{provider}.{error}"))
            .or_default() += 1;
    }

    pub(crate) fn revoked(&mut self, provider: &str) {
        *self.revocations.entry(provider.to_owned()).or_default() += 1;
    }

    pub(crate) fn graph_error(&mut self, code: &str) {
        *self.graph_errors.entry(code.to_owned()).or_default() += 1;
    }
}
