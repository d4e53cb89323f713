//! Fault switches tests turn on: added latency, token-endpoint, API and revocation failures, and an error
//! instead of the next consent. Data and the small bookkeeping of "how many more"; it must not
//! build HTTP responses (each protocol module renders its own error shape).

use serde::{Deserialize, Serialize};

/// Where added latency applies. Test controls under `/_emulator/` are never delayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyTarget {
    /// authorize, token and Graph
    #[default]
    All,
    /// the token endpoint only
    Token,
}

/// One failing answer, repeated `count` times or until cleared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// 429 or a 5xx (500, 502, 503, 504); anything else is treated as 500.
    pub status: u16,
    /// `Retry-After` in seconds; fractional values are sent as-is (Graph samples show `2.128`).
    #[serde(default)]
    pub retry_after_secs: Option<f64>,
    /// `None`: until cleared.
    #[serde(default)]
    pub count: Option<u32>,
}

impl HttpFault {
    pub fn throttled(retry_after_secs: u32) -> Self {
        Self {
            status: 429,
            retry_after_secs: Some(f64::from(retry_after_secs)),
            count: None,
        }
    }

    pub fn server_error(status: u16) -> Self {
        Self {
            status,
            retry_after_secs: None,
            count: None,
        }
    }

    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    pub(crate) fn retry_after_header(&self) -> Option<String> {
        self.retry_after_secs
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| secs.to_string())
    }
}

/// What `/authorize` answers instead of a code on the next accepted consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentFault {
    /// `consent_required` (seen when a user cancels on some Microsoft consent screens)
    ConsentRequired,
    /// `interaction_required`
    InteractionRequired,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
}

/// All switches; the default is "no faults".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub latency_ms: u64,
    pub latency_target: LatencyTarget,
    pub token: Option<HttpFault>,
    /// API answers: Graph, Google's APIs, Dropbox's RPC API.
    pub graph: Option<HttpFault>,
    /// Google's and Dropbox's revocation endpoints.
    pub revoke: Option<HttpFault>,
    /// One-shot: consumed by the next accepted consent.
    pub next_consent: Option<ConsentFault>,
}

impl Faults {
    /// Takes one use of the token fault, clearing it when its count runs out.
    pub(crate) fn take_token(&mut self) -> Option<HttpFault> {
        take_one(&mut self.token)
    }

    pub(crate) fn take_graph(&mut self) -> Option<HttpFault> {
        take_one(&mut self.graph)
    }

    pub(crate) fn take_revoke(&mut self) -> Option<HttpFault> {
        take_one(&mut self.revoke)
    }

    pub(crate) fn latency_for(&self, endpoint_is_token: bool) -> u64 {
        match self.latency_target {
            LatencyTarget::All => self.latency_ms,
            LatencyTarget::Token if endpoint_is_token => self.latency_ms,
            LatencyTarget::Token => 0,
        }
    }
}

fn take_one(slot: &mut Option<HttpFault>) -> Option<HttpFault> {
    let fault = slot.as_mut()?;
    match fault.count {
        None => Some(fault.clone()),
        Some(0) => {
            *slot = None;
            None
        }
        Some(left) => {
            fault.count = Some(left - 1);
            let taken = fault.clone();
            if left == 1 {
                *slot = None;
            }
            Some(taken)
        }
    }
}
