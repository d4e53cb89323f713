//! Signed connection webhooks (docs/webhooks.md): when a connection changes, the operator's
//! endpoints hear of it, signed per the Standard Webhooks specification.
//!
//! `event` builds the payloads the store writes to its outbox in the transaction of each
//! change; `signing` signs them; `net` is the SSRF-safe client; `schedule` says when to try
//! again; `worker` claims due deliveries, sends them and records each attempt. Endpoint URLs
//! and secrets live here, in memory, from the configuration; the database never holds them.

pub mod event;
pub mod net;
pub mod schedule;
pub mod signing;
pub mod worker;

use std::time::Duration;

use url::Url;

use crate::config::ConfigError;
use signing::SigningSecret;

/// The variable naming the endpoints (`name:url,…`).
pub const ENDPOINTS_VAR: &str = "CONNECT_WEBHOOK_ENDPOINTS";
/// The variable holding their secrets (`name:whsec_…,…`; the first of a name signs first).
pub const SECRETS_VAR: &str = "CONNECT_WEBHOOK_SECRETS";

/// One receiver the operator configured.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub url: Url,
    /// Every secret signs each message (the first is the current one; more during rotation).
    pub secrets: Vec<SigningSecret>,
}

impl Endpoint {
    /// SHA-256 of the URL (hex): which URL a 410 disabled, without storing the URL.
    pub fn url_sha256(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.url.as_str().as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Scheme, host and port: what may be shown of the URL (its path can be a capability).
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

/// How webhooks are sent.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub endpoints: Vec<Endpoint>,
    pub reach: net::Reach,
    /// Longest wait for one delivery (connect, send, answer).
    pub timeout: Duration,
    /// Refreshes failing this long make `connection.refresh_failing`.
    pub failing_after: Duration,
    /// How often each worker looks for due deliveries when nothing woke it.
    pub poll_interval: Duration,
    /// Deliveries sent at once per replica.
    pub concurrency: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            reach: net::Reach::default(),
            timeout: Duration::from_secs(10),
            failing_after: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(5),
            concurrency: 8,
        }
    }
}

impl WebhookSettings {
    /// How long a claimed delivery stays with its replica: a whole attempt and a margin, after
    /// which another replica takes it (the one that claimed it died).
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

fn invalid(name: &'static str, why: String) -> ConfigError {
    ConfigError::Invalid { name, why }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads `name:url,…` and `name:whsec_…,…` into endpoints, every problem named (never a
/// secret's value, nor a URL's path or query).
pub fn parse_endpoints(
    endpoints: Option<&str>,
    secrets: Option<&str>,
    reach: net::Reach,
) -> Result<Vec<Endpoint>, Vec<ConfigError>> {
    let mut problems = Vec::new();
    let mut parsed: Vec<Endpoint> = Vec::new();
    // Every well-named endpoint listed, valid or not, so its secrets are checked all the same.
    let mut listed: Vec<String> = Vec::new();
    let entries = |list: Option<&str>| -> Vec<String> {
        list.unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for entry in entries(endpoints) {
        let Some((name, url)) = entry.split_once(':') else {
            problems.push(invalid(
                ENDPOINTS_VAR,
                "write each endpoint as name:https://host/path (e.g. n8n:https://n8n.example.com/webhook/connect)".into(),
            ));
            continue;
        };
        let name = name.trim();
        if !valid_name(name) {
            problems.push(invalid(
                ENDPOINTS_VAR,
                format!("endpoint name {name:?}: use letters, digits, - and _ (at most 64)"),
            ));
            continue;
        }
        if listed.iter().any(|e| e == name) {
            problems.push(invalid(
                ENDPOINTS_VAR,
                format!("endpoint {name} is named twice"),
            ));
            continue;
        }
        listed.push(name.to_owned());
        let url = match Url::parse(url.trim()) {
            Ok(url) => url,
            Err(e) => {
                problems.push(invalid(
                    ENDPOINTS_VAR,
                    format!("endpoint {name}: not a URL ({e})"),
                ));
                continue;
            }
        };
        if let Err(why) = net::check_url(&url, reach) {
            problems.push(invalid(ENDPOINTS_VAR, format!("endpoint {name}: {why}")));
            continue;
        }
        parsed.push(Endpoint {
            name: name.to_owned(),
            url,
            secrets: Vec::new(),
        });
    }
    for entry in entries(secrets) {
        let Some((name, secret)) = entry.split_once(':') else {
            problems.push(invalid(
                SECRETS_VAR,
                "write each secret as name:whsec_… (the endpoint's name)".into(),
            ));
            continue;
        };
        let name = name.trim();
        if !listed.iter().any(|e| e == name) {
            // A malformed name may be part of a secret written wrongly: not echoed.
            let why = if valid_name(name) {
                format!("a secret names endpoint {name:?}, which {ENDPOINTS_VAR} does not list")
            } else {
                "write each secret as name:whsec_… (the endpoint's name)".to_owned()
            };
            problems.push(invalid(SECRETS_VAR, why));
            continue;
        }
        match SigningSecret::parse(secret) {
            Ok(secret) => {
                if let Some(endpoint) = parsed.iter_mut().find(|e| e.name == name) {
                    endpoint.secrets.push(secret);
                }
            }
            Err(why) => problems.push(invalid(SECRETS_VAR, format!("endpoint {name}: {why}"))),
        }
    }
    for endpoint in &parsed {
        if endpoint.secrets.is_empty() {
            problems.push(ConfigError::Missing {
                name: SECRETS_VAR,
                hint: format!(
                    "Endpoint {} has no signing secret; `celeste-connect keygen webhook {}` prints one and its {SECRETS_VAR} entry.",
                    endpoint.name, endpoint.name
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Reads a duration as operators write it: `3600`, `90s`, `30m`, `1h`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let wrong = || format!("{value:?}: write seconds (3600) or 90s, 30m, 1h");
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let n: u64 = number.parse().map_err(|_| wrong())?;
    let secs = match unit.trim() {
        "s" => n,
        "m" | "min" => n.checked_mul(60).ok_or_else(wrong)?,
        "h" => n.checked_mul(3600).ok_or_else(wrong)?,
        _ => return Err(wrong()),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn problems(endpoints: &str, secrets: &str, reach: net::Reach) -> String {
        match parse_endpoints(Some(endpoints), Some(secrets), reach) {
            Ok(_) => String::new(),
            Err(all) => all
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn endpoints_with_several_secrets_are_read() {
        let endpoints = parse_endpoints(
            Some("n8n:https://n8n.example.com/webhook/abc, crm:https://crm.example.com/hooks"),
            Some(&format!("n8n:{SECRET},crm:{SECRET},n8n:{SECRET}")),
            net::Reach::default(),
        )
        .unwrap();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].name, "n8n");
        assert_eq!(endpoints[0].secrets.len(), 2);
        assert_eq!(endpoints[1].origin(), "https://crm.example.com");
    }

    #[test]
    fn every_bad_endpoint_or_secret_is_named_without_its_secret_or_path() {
        let report = problems(
            "a:http://hooks.example.com/x,b:https://127.0.0.1/private-path,c:nonsense,a b:https://x.example.com,d:https://d.example.com",
            "b:whsec_c2hvcnQ=,e:whsec_x,d:not-a-secret-value",
            net::Reach::default(),
        );
        for expected in [
            "endpoint a: http:// is refused",
            "endpoint b: 127.0.0.1 is a loopback",
            "endpoint c: not a URL",
            "endpoint name \"a b\"",
            "names endpoint \"e\"",
            "endpoint d: a signing secret must start with whsec_",
        ] {
            assert!(report.contains(expected), "{expected}: {report}");
        }
        assert!(report.contains(SECRETS_VAR) && report.contains(ENDPOINTS_VAR));
        assert!(
            !report.contains("private-path") && !report.contains("not-a-secret-value"),
            "{report}"
        );
    }

    #[test]
    fn an_endpoint_without_a_secret_is_refused() {
        let report = problems("n8n:https://n8n.example.com/x", "", net::Reach::default());
        assert!(
            report.contains("Endpoint n8n has no signing secret"),
            "{report}"
        );
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
