//! One typed configuration, read from the command line and the environment (each secret also as
//! `NAME_FILE`), validated before anything starts. `--help` is the reference for every
//! variable. A missing or placeholder secret stops `serve` with a message that says what to set;
//! nothing here logs a secret or keeps one outside a [`SecretString`].

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::identity::service_key::{ServiceKeyEntry, parse_service_keys};
use crate::provider::dropbox::DropboxArgs;
use crate::provider::google::GoogleArgs;
use crate::provider::microsoft::MicrosoftArgs;
use crate::provider::{ConfiguredProvider, ProviderId, ProviderSpec};
use crate::vault::{Keyring, generate_entry};

pub fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// Settings of `serve`. Every field is also an environment variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Database: `postgres://user:pass@host:5432/db` (PostgreSQL or Supabase, direct or
    /// session-mode connection) or `sqlite://path/to/connect.db` (single node).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,
    /// File holding DATABASE_URL.
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// API listener.
    #[arg(long, env = "CONNECT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Metrics listener (Prometheus `/metrics`); keep it private.
    #[arg(long, env = "CONNECT_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    pub admin_listen: SocketAddr,
    /// The service's public base URL; provider redirect URIs are built from it.
    #[arg(long, env = "CONNECT_PUBLIC_URL")]
    pub public_url: Option<Url>,
    /// Comma-separated exact origins of the apps allowed to use the user API and to receive
    /// popup messages, e.g. `https://app.example.com`.
    #[arg(long, env = "CONNECT_APP_ORIGINS", value_delimiter = ',')]
    pub app_origins: Vec<String>,
    /// Where the no-popup connect flow returns to (the app's settings page).
    #[arg(long, env = "CONNECT_APP_SETTINGS_URL")]
    pub app_settings_url: Option<Url>,

    /// Supabase's JWT secret, for HS256 user tokens.
    #[arg(long, env = "CONNECT_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<SecretString>,
    /// File holding CONNECT_JWT_SECRET.
    #[arg(long, env = "CONNECT_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// JWKS URL for ES256/RS256 user tokens, e.g.
    /// `https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`.
    #[arg(long, env = "CONNECT_JWKS_URL")]
    pub jwks_url: Option<Url>,
    /// Expected `aud` of user tokens.
    #[arg(long, env = "CONNECT_JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,
    /// Expected `iss` of user tokens (optional), e.g. `https://<ref>.supabase.co/auth/v1`.
    #[arg(long, env = "CONNECT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Service keys by hash: `name:sha256hex,…`. `celeste-connect keygen service NAME` prints a
    /// new key and its entry. Several may be valid at once, for rotation.
    #[arg(long, env = "CONNECT_SERVICE_KEYS", hide_env_values = true, value_parser = parse_secret)]
    pub service_keys: Option<SecretString>,
    /// File holding CONNECT_SERVICE_KEYS.
    #[arg(long, env = "CONNECT_SERVICE_KEYS_FILE")]
    pub service_keys_file: Option<PathBuf>,

    /// Encryption keys for tokens at rest: `id:base64key,…`, the first is active.
    /// `celeste-connect keygen encryption ID` prints one.
    #[arg(long, env = "CONNECT_ENCRYPTION_KEYS", hide_env_values = true, value_parser = parse_secret)]
    pub encryption_keys: Option<SecretString>,
    /// File holding CONNECT_ENCRYPTION_KEYS.
    #[arg(long, env = "CONNECT_ENCRYPTION_KEYS_FILE")]
    pub encryption_keys_file: Option<PathBuf>,

    /// Every provider's credentials and endpoints (`MICROSOFT_*`, `GOOGLE_*`, `DROPBOX_*`).
    #[command(flatten)]
    pub providers: ProviderArgs,

    /// PostgreSQL connections per process for the service's own work.
    #[arg(long, env = "CONNECT_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// PostgreSQL connections per process for signed-in users' reads (status, connection
    /// lists), kept apart so that each such read is one round trip.
    #[arg(long, env = "CONNECT_DB_READ_POOL_SIZE", default_value_t = 4)]
    pub db_read_pool_size: u32,
    /// Apply migrations on start. Turn off when DATABASE_URL names a login role without DDL
    /// rights, and run `celeste-connect migrate` with the owner's URL instead.
    #[arg(long, env = "CONNECT_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
    /// Refresh an access token this long before it expires (seconds).
    #[arg(long, env = "CONNECT_REFRESH_SKEW_SECS", default_value_t = 300)]
    pub refresh_skew_secs: u64,
    /// How long one replica may hold a connection's refresh lease (seconds).
    #[arg(long, env = "CONNECT_REFRESH_LEASE_SECS", default_value_t = 30)]
    pub refresh_lease_secs: u64,
    /// After a provider failure, no refresh of that connection for this long (seconds; a
    /// longer Retry-After wins).
    #[arg(long, env = "CONNECT_REFRESH_COOLDOWN_SECS", default_value_t = 30)]
    pub refresh_cooldown_secs: u64,
    /// Keep-alive: refresh connections whose refresh token has not been used for this long
    /// (hours; Microsoft's die after 90 idle days). 0 turns the worker off.
    #[arg(long, env = "CONNECT_KEEPALIVE_IDLE_HOURS", default_value_t = 168)]
    pub keepalive_idle_hours: u64,
    /// Keep-alive: how often each replica looks for idle connections (seconds).
    #[arg(long, env = "CONNECT_KEEPALIVE_INTERVAL_SECS", default_value_t = 300)]
    pub keepalive_interval_secs: u64,
    /// Keep-alive: refreshes in flight at once per replica.
    #[arg(long, env = "CONNECT_KEEPALIVE_CONCURRENCY", default_value_t = 4)]
    pub keepalive_concurrency: u32,
    /// Most fresh access tokens kept in memory per replica (0 turns the cache off). Entries
    /// are invalidated across replicas at once through PostgreSQL LISTEN/NOTIFY.
    #[arg(long, env = "CONNECT_TOKEN_CACHE_CAPACITY", default_value_t = 50_000)]
    pub token_cache_capacity: usize,
    /// Log format: `text` or `json`.
    #[arg(long, env = "CONNECT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Started connect flows kept per user (per process); starting one more drops the oldest.
    /// 0: no cap.
    #[arg(long, env = "CONNECT_PENDING_FLOWS_PER_USER", default_value_t = RateLimitSettings::DEFAULT_PENDING_FLOWS_PER_USER)]
    pub pending_flows_per_user: usize,
    /// Rate limits, each `N/s`, `N/min` or `N/h` (a burst of N, refilled evenly) or `off`;
    /// per process. `auth-url` calls per user.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_AUTH_URL_PER_USER",
        default_value = RateLimitSettings::AUTH_URL_PER_USER
    )]
    pub rate_limit_auth_url_per_user: Rate,
    /// Token requests per service key.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_TOKEN_PER_KEY",
        default_value = RateLimitSettings::TOKEN_PER_KEY
    )]
    pub rate_limit_token_per_key: Rate,
    /// Token requests per user within one service key.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_TOKEN_PER_USER",
        default_value = RateLimitSettings::TOKEN_PER_USER
    )]
    pub rate_limit_token_per_user: Rate,
    /// Proxy requests per service key.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_PROXY_PER_KEY",
        default_value = RateLimitSettings::PROXY_PER_KEY
    )]
    pub rate_limit_proxy_per_key: Rate,
    /// Proxy requests per user within one service key.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_PROXY_PER_USER",
        default_value = RateLimitSettings::PROXY_PER_USER
    )]
    pub rate_limit_proxy_per_user: Rate,
    /// Provider callbacks per client IP.
    #[arg(
        long,
        env = "CONNECT_RATE_LIMIT_CALLBACK_PER_IP",
        default_value = RateLimitSettings::CALLBACK_PER_IP
    )]
    pub rate_limit_callback_per_ip: Rate,
    /// Header holding the client's address when a proxy you run sits in front (its rightmost
    /// address is used, e.g. `x-forwarded-for`); unset: the TCP peer address.
    #[arg(long, env = "CONNECT_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<axum::http::HeaderName>,
}

/// Everything the service needs, validated. Built from [`ServeArgs`] by `serve`, and directly
/// by `demo` and the tests.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: SecretString,
    pub public_url: Url,
    pub app_origins: Vec<String>,
    pub app_settings_url: Url,
    pub jwt: JwtSettings,
    pub service_keys: Vec<ServiceKeyEntry>,
    /// Encryption keys for tokens at rest; the service does not start without them.
    pub keyring: Arc<Keyring>,
    /// The configured providers (a provider is configured when its client id is set).
    pub providers: Vec<ConfiguredProvider>,
    pub db_pool_size: u32,
    pub db_read_pool_size: u32,
    pub migrate_on_start: bool,
    pub refresh: RefreshSettings,
    /// Most access tokens kept in memory (0: no cache).
    pub token_cache_capacity: usize,
    /// Demo mode: the demo sign-in and the in-process emulator are mounted.
    pub demo: bool,
    /// Demo mode only: a `Cross-Origin-Opener-Policy` for `/settings` (`CONNECT_DEMO_COOP`),
    /// to try the connect flow under COOP.
    pub demo_coop: Option<String>,
    /// Per-process rate limits and the pending-flow cap.
    pub rate_limits: RateLimitSettings,
}

/// A rate: a burst of `count`, refilled evenly over `per` (`10/min` lets 10 through at once,
/// then one every 6 s). `off` (or `0`) is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub Option<(std::num::NonZeroU32, Duration)>);

impl Rate {
    pub const OFF: Rate = Rate(None);

    pub fn new(count: u32, per: Duration) -> Self {
        Rate(std::num::NonZeroU32::new(count).map(|n| (n, per)))
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") || value == "0" {
            return Ok(Rate::OFF);
        }
        let wrong = || format!("{value:?}: write N/s, N/min or N/h (e.g. 10/min), or off");
        let (count, unit) = value.split_once('/').ok_or_else(wrong)?;
        let count: u32 = count.trim().parse().map_err(|_| wrong())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(wrong()),
        };
        Ok(Rate::new(count, per))
    }
}

/// Rate limits (see `crate::limits`), all per process: replicas do not share counts.
#[derive(Clone, Debug)]
pub struct RateLimitSettings {
    /// Started flows kept per user; starting one more drops the oldest (0: no cap).
    pub pending_flows_per_user: usize,
    pub auth_url_per_user: Rate,
    pub token_per_key: Rate,
    /// Per user within one service key.
    pub token_per_user: Rate,
    pub proxy_per_key: Rate,
    /// Per user within one service key.
    pub proxy_per_user: Rate,
    pub callback_per_ip: Rate,
    /// Read the client's address from this header (rightmost entry), set by a trusted proxy.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

impl RateLimitSettings {
    pub const DEFAULT_PENDING_FLOWS_PER_USER: usize = 10;
    // The defaults, as `serve --help` shows them and [`Default`] reads them.
    pub const AUTH_URL_PER_USER: &'static str = "10/min";
    pub const TOKEN_PER_KEY: &'static str = "2000/s";
    pub const TOKEN_PER_USER: &'static str = "50/s";
    pub const PROXY_PER_KEY: &'static str = "500/s";
    pub const PROXY_PER_USER: &'static str = "20/s";
    pub const CALLBACK_PER_IP: &'static str = "30/min";

    /// No limit at all (tests that are about something else).
    pub fn unlimited() -> Self {
        Self {
            pending_flows_per_user: 0,
            auth_url_per_user: Rate::OFF,
            token_per_key: Rate::OFF,
            token_per_user: Rate::OFF,
            proxy_per_key: Rate::OFF,
            proxy_per_user: Rate::OFF,
            callback_per_ip: Rate::OFF,
            client_ip_header: None,
        }
    }
}

impl Default for RateLimitSettings {
    /// The defaults `serve` documents in `--help` (the constants above; a unit test checks
    /// that each one reads).
    fn default() -> Self {
        let rate = |text: &str| text.parse().unwrap_or(Rate::OFF);
        Self {
            pending_flows_per_user: Self::DEFAULT_PENDING_FLOWS_PER_USER,
            auth_url_per_user: rate(Self::AUTH_URL_PER_USER),
            token_per_key: rate(Self::TOKEN_PER_KEY),
            token_per_user: rate(Self::TOKEN_PER_USER),
            proxy_per_key: rate(Self::PROXY_PER_KEY),
            proxy_per_user: rate(Self::PROXY_PER_USER),
            callback_per_ip: rate(Self::CALLBACK_PER_IP),
            client_ip_header: None,
        }
    }
}

/// How tokens are kept fresh.
#[derive(Clone, Debug)]
pub struct RefreshSettings {
    pub skew: Duration,
    pub lease: Duration,
    pub cooldown: Duration,
    /// Longest wait for one provider token call.
    pub provider_timeout: Duration,
    /// `None`: the keep-alive worker is off.
    pub keepalive_idle: Option<Duration>,
    pub keepalive_interval: Duration,
    pub keepalive_concurrency: u32,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            skew: Duration::from_secs(300),
            lease: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(10),
            keepalive_idle: Some(Duration::from_secs(7 * 24 * 3600)),
            keepalive_interval: Duration::from_secs(300),
            keepalive_concurrency: 4,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub hs256_secret: Option<SecretString>,
    pub jwks_url: Option<Url>,
    pub audience: String,
    pub issuer: Option<String>,
    /// Shortest time between two JWKS fetches caused by unknown key ids.
    pub jwks_min_refetch: std::time::Duration,
    /// Cached JWKS keys older than this are fetched again before use.
    pub jwks_max_age: std::time::Duration,
}

impl JwtSettings {
    pub const DEFAULT_JWKS_MIN_REFETCH: std::time::Duration = std::time::Duration::from_secs(5);
    pub const DEFAULT_JWKS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);
}

/// Each provider's arguments, owned by its file in `provider/`.
#[derive(Args, Debug, Clone)]
pub struct ProviderArgs {
    #[command(flatten)]
    pub microsoft: MicrosoftArgs,
    #[command(flatten)]
    pub google: GoogleArgs,
    #[command(flatten)]
    pub dropbox: DropboxArgs,
}

impl ProviderArgs {
    /// The providers whose client id is set, checked.
    pub fn resolve(self) -> Result<Vec<ConfiguredProvider>, ConfigError> {
        Ok([
            self.microsoft.resolve()?,
            self.google.resolve()?,
            self.dropbox.resolve()?,
        ]
        .into_iter()
        .flatten()
        .collect())
    }
}

/// The variable names of a provider's client credentials, and how to get real values.
pub struct CredentialNames {
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub client_id_hint: &'static str,
    pub client_secret_hint: &'static str,
}

/// A provider's client id and secret: `None` when the id is not set (the provider is off);
/// an error naming the variable when either is a placeholder or the secret is missing.
pub fn client_credentials(
    names: &CredentialNames,
    client_id: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<&PathBuf>,
) -> Result<Option<(String, SecretString)>, ConfigError> {
    let Some(client_id) = client_id else {
        return Ok(None);
    };
    if let Some(why) = placeholder_reason(&client_id) {
        return Err(ConfigError::Placeholder {
            name: names.client_id,
            why,
            hint: names.client_id_hint.into(),
        });
    }
    let secret = resolve_secret(names.client_secret, secret, secret_file)?;
    let secret = require_real(names.client_secret, secret, || {
        names.client_secret_hint.into()
    })?;
    Ok(Some((client_id, secret)))
}

/// The configured scopes (space- or comma-separated), or the provider's defaults.
pub fn scopes_or(configured: Option<String>, spec: &ProviderSpec) -> String {
    let words: Vec<&str> = configured
        .as_deref()
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        spec.default_scopes.join(" ")
    } else {
        words.join(" ")
    }
}

/// A configuration problem, worded as what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set. {hint}")]
    Missing { name: &'static str, hint: String },
    #[error("{name} looks like a placeholder ({why}). {hint}")]
    Placeholder {
        name: &'static str,
        why: &'static str,
        hint: String,
    },
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("both {name} and {name}_FILE are set; set only one")]
    Both { name: &'static str },
    #[error("cannot read {name}_FILE ({path}): {source}")]
    File {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Reads a secret from its variable or its `_FILE` twin (trailing newline trimmed).
pub fn resolve_secret(
    name: &'static str,
    value: Option<SecretString>,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Both { name }),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                name,
                path: path.display().to_string(),
                source,
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// Why a value looks like a template placeholder rather than a real secret, if it does.
pub fn placeholder_reason(value: &str) -> Option<&'static str> {
    let lower = value.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Some("it is empty");
    }
    if lower.contains('<') && lower.contains('>') {
        return Some("it contains <...>");
    }
    const MARKERS: [&str; 6] = [
        "your-",
        "your_",
        "changeme",
        "change-me",
        "replace-me",
        "xxxxxx",
    ];
    if MARKERS.iter().any(|m| lower.contains(m)) {
        return Some("it reads like template text");
    }
    None
}

fn require_real(
    name: &'static str,
    value: Option<SecretString>,
    hint: impl Fn() -> String,
) -> Result<SecretString, ConfigError> {
    let value = value.ok_or_else(|| ConfigError::Missing { name, hint: hint() })?;
    if let Some(why) = placeholder_reason(value.expose_secret()) {
        return Err(ConfigError::Placeholder {
            name,
            why,
            hint: hint(),
        });
    }
    Ok(value)
}

/// An origin exactly as browsers send it: scheme, host, optional port, no path.
pub fn parse_origin(value: &str) -> Result<String, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| ConfigError::Invalid {
        name: "CONNECT_APP_ORIGINS",
        why: format!("{value:?} is not a URL ({e})"),
    })?;
    let origin = url.origin();
    if !origin.is_tuple() || !(url.path() == "/" || url.path().is_empty()) || url.query().is_some()
    {
        return Err(ConfigError::Invalid {
            name: "CONNECT_APP_ORIGINS",
            why: format!("{value:?} must be an origin like https://app.example.com (no path)"),
        });
    }
    Ok(origin.ascii_serialization())
}

impl ServeArgs {
    /// Validates the arguments into [`Settings`], or says exactly what to set.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let database_url = resolve_secret(
            "DATABASE_URL",
            self.database_url,
            self.database_url_file.as_ref(),
        )?
        .ok_or_else(|| ConfigError::Missing {
            name: "DATABASE_URL",
            hint: "Set it to postgres://… (PostgreSQL or Supabase) or sqlite://connect.db.".into(),
        })?;
        let public_url = self.public_url.ok_or_else(|| ConfigError::Missing {
            name: "CONNECT_PUBLIC_URL",
            hint: "Set it to the service's public base URL, e.g. https://connect.example.com."
                .into(),
        })?;
        if self.app_origins.is_empty() {
            return Err(ConfigError::Missing {
                name: "CONNECT_APP_ORIGINS",
                hint: "Set it to your app's origin(s), e.g. https://app.example.com.".into(),
            });
        }
        let app_origins = self
            .app_origins
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        let app_settings_url = match self.app_settings_url {
            Some(url) => url,
            None => Url::parse(&format!("{}/settings", app_origins[0])).map_err(|e| {
                ConfigError::Invalid {
                    name: "CONNECT_APP_SETTINGS_URL",
                    why: e.to_string(),
                }
            })?,
        };

        let jwt_secret = resolve_secret(
            "CONNECT_JWT_SECRET",
            self.jwt_secret,
            self.jwt_secret_file.as_ref(),
        )?;
        if jwt_secret.is_none() && self.jwks_url.is_none() {
            return Err(ConfigError::Missing {
                name: "CONNECT_JWT_SECRET or CONNECT_JWKS_URL",
                hint: "Set Supabase's JWT secret (Settings → API → JWT secret) and/or its JWKS \
                       URL (https://<ref>.supabase.co/auth/v1/.well-known/jwks.json)."
                    .into(),
            });
        }
        if let Some(why) = jwt_secret
            .as_ref()
            .and_then(|s| placeholder_reason(s.expose_secret()))
        {
            return Err(ConfigError::Placeholder {
                name: "CONNECT_JWT_SECRET",
                why,
                hint: "Copy Supabase's JWT secret.".into(),
            });
        }

        let service_keys = match resolve_secret(
            "CONNECT_SERVICE_KEYS",
            self.service_keys,
            self.service_keys_file.as_ref(),
        )? {
            Some(list) => {
                parse_service_keys(list.expose_secret()).map_err(|why| ConfigError::Invalid {
                    name: "CONNECT_SERVICE_KEYS",
                    why,
                })?
            }
            None => Vec::new(),
        };

        let keys = resolve_secret(
            "CONNECT_ENCRYPTION_KEYS",
            self.encryption_keys,
            self.encryption_keys_file.as_ref(),
        )?;
        let key_hint = || {
            let example = generate_entry("k1")
                .map(|e| format!(" For example (freshly generated, keep it secret): CONNECT_ENCRYPTION_KEYS={}", e.expose_secret()))
                .unwrap_or_default();
            format!(
                "Tokens are encrypted at rest and the service will not start without a key; `celeste-connect keygen encryption k1` prints one.{example}"
            )
        };
        let keys = require_real("CONNECT_ENCRYPTION_KEYS", keys, key_hint)?;
        let keyring = Keyring::parse(keys.expose_secret()).map_err(|e| ConfigError::Invalid {
            name: "CONNECT_ENCRYPTION_KEYS",
            why: e.to_string(),
        })?;

        let providers = self.providers.resolve()?;

        Ok(Settings {
            database_url,
            public_url,
            app_origins,
            app_settings_url,
            jwt: JwtSettings {
                hs256_secret: jwt_secret,
                jwks_url: self.jwks_url,
                audience: self.jwt_audience,
                issuer: self.jwt_issuer,
                jwks_min_refetch: JwtSettings::DEFAULT_JWKS_MIN_REFETCH,
                jwks_max_age: JwtSettings::DEFAULT_JWKS_MAX_AGE,
            },
            service_keys,
            keyring: Arc::new(keyring),
            providers,
            db_pool_size: self.db_pool_size.max(1),
            db_read_pool_size: self.db_read_pool_size.max(1),
            migrate_on_start: self.migrate_on_start,
            refresh: RefreshSettings {
                skew: Duration::from_secs(self.refresh_skew_secs),
                lease: Duration::from_secs(self.refresh_lease_secs.max(1)),
                cooldown: Duration::from_secs(self.refresh_cooldown_secs),
                keepalive_idle: (self.keepalive_idle_hours > 0)
                    .then(|| Duration::from_secs(self.keepalive_idle_hours * 3600)),
                keepalive_interval: Duration::from_secs(self.keepalive_interval_secs.max(1)),
                keepalive_concurrency: self.keepalive_concurrency.max(1),
                ..RefreshSettings::default()
            },
            token_cache_capacity: self.token_cache_capacity,
            demo: false,
            demo_coop: None,
            rate_limits: RateLimitSettings {
                pending_flows_per_user: self.pending_flows_per_user,
                auth_url_per_user: self.rate_limit_auth_url_per_user,
                token_per_key: self.rate_limit_token_per_key,
                token_per_user: self.rate_limit_token_per_user,
                proxy_per_key: self.rate_limit_proxy_per_key,
                proxy_per_user: self.rate_limit_proxy_per_user,
                callback_per_ip: self.rate_limit_callback_per_ip,
                client_ip_header: self.client_ip_header,
            },
        })
    }
}

/// Every variable `serve` reads, from its arguments (so a provider's file that adds one adds
/// it here), plus the demo's own.
pub fn known_env() -> Vec<String> {
    use clap::Args as _;
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .chain(std::iter::once("CONNECT_DEMO_COOP".to_owned()))
        .collect()
}

/// Names of set variables that look like ours but are not known: probably typos.
pub fn unknown_env_vars() -> Vec<String> {
    let known = known_env();
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    unknown_among(&names, &known)
}

/// Which of `names` look like ours (`CONNECT_…`, or a provider's prefix with one of the words
/// our provider variables use) without being `known`. Other tools' variables under a provider's
/// prefix (`GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_CLOUD_PROJECT`) are not ours and not typos.
pub fn unknown_among(names: &[String], known: &[String]) -> Vec<String> {
    const PROVIDER_WORDS: [&str; 6] = ["CLIENT", "SECRET", "SCOPE", "URL", "TENANT", "AUTHORITY"];
    names
        .iter()
        .filter(|k| {
            k.starts_with("CONNECT_")
                || ProviderId::ALL.iter().any(|p| {
                    k.strip_prefix(p.spec().env_prefix)
                        .is_some_and(|rest| PROVIDER_WORDS.iter().any(|w| rest.contains(w)))
                })
        })
        .filter(|k| !known.contains(k))
        .cloned()
        .collect()
}

/// Whether two origins are same-site (same scheme and registrable domain, approximated by the
/// last two labels; loopback hosts match each other). The browser-binding cookie only reaches
/// the callback when the service and the app are same-site.
pub fn same_site(a: &Url, b: &Url) -> bool {
    fn site(u: &Url) -> Option<(String, String)> {
        let host = u.host_str()?.to_ascii_lowercase();
        let site = if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
            host
        } else {
            let labels: Vec<&str> = host.rsplitn(3, '.').collect();
            match labels.as_slice() {
                [tld, domain, ..] => format!("{domain}.{tld}"),
                _ => host.clone(),
            }
        };
        Some((u.scheme().to_owned(), site))
    }
    site(a).is_some() && site(a) == site(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_operators_write_them() {
        let secs = Duration::from_secs;
        assert_eq!("10/min".parse::<Rate>().unwrap(), Rate::new(10, secs(60)));
        assert_eq!(
            " 2000/s ".parse::<Rate>().unwrap(),
            Rate::new(2000, secs(1))
        );
        assert_eq!("5/h".parse::<Rate>().unwrap(), Rate::new(5, secs(3600)));
        assert_eq!("off".parse::<Rate>().unwrap(), Rate::OFF);
        assert_eq!("0".parse::<Rate>().unwrap(), Rate::OFF);
        assert_eq!("0/s".parse::<Rate>().unwrap(), Rate::OFF);
        for bad in ["10", "ten/min", "10/day", "-1/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_default_rate_limit_reads_and_is_on() {
        let d = RateLimitSettings::default();
        for rate in [
            d.auth_url_per_user,
            d.token_per_key,
            d.token_per_user,
            d.proxy_per_key,
            d.proxy_per_user,
            d.callback_per_ip,
        ] {
            assert_ne!(rate, Rate::OFF);
        }
        assert_eq!(d.auth_url_per_user, Rate::new(10, Duration::from_secs(60)));
        assert_eq!(d.token_per_key, Rate::new(2000, Duration::from_secs(1)));
        assert_eq!(d.pending_flows_per_user, 10);
    }

    #[test]
    fn seed_placeholder_secret_is_recognised() {
        assert!(placeholder_reason("<your-azure-client-secret>").is_some());
        assert!(placeholder_reason("your-anon-key").is_some());
        assert!(placeholder_reason("").is_some());
        assert!(placeholder_reason("Xy8Q~abcdefGHIJKL1234567890").is_none());
    }

    #[test]
    fn every_providers_variables_are_known() {
        let known = known_env();
        for name in [
            "DATABASE_URL_FILE",
            "MICROSOFT_CLIENT_SECRET_FILE",
            "MICROSOFT_SCOPES",
            "GOOGLE_CLIENT_ID",
            "GOOGLE_SCOPES",
            "GOOGLE_REVOKE_URL",
            "DROPBOX_CLIENT_SECRET",
            "DROPBOX_CONTENT_URL",
            "CONNECT_DEMO_COOP",
        ] {
            assert!(known.iter().any(|k| k == name), "{name}");
        }
    }

    #[test]
    fn typos_of_our_variables_are_flagged_but_other_tools_variables_are_not() {
        let names: Vec<String> = [
            "GOOGLE_CLIENT_SECRETS",
            "DROPBOX_CLIENTID",
            "MICROSOFT_TENANTS",
            "CONNECT_LISTEN_ADDR",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_CLIENT_ID",
            "PATH",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            unknown_among(&names, &known_env()),
            [
                "GOOGLE_CLIENT_SECRETS",
                "DROPBOX_CLIENTID",
                "MICROSOFT_TENANTS",
                "CONNECT_LISTEN_ADDR"
            ]
        );
    }

    #[test]
    fn scopes_fall_back_to_the_providers_defaults() {
        let spec = ProviderId::Google.spec();
        assert_eq!(
            scopes_or(None, spec),
            "openid email profile https://www.googleapis.com/auth/gmail.readonly"
        );
        assert_eq!(
            scopes_or(Some(" openid,email ".into()), spec),
            "openid email"
        );
    }

    #[test]
    fn origins_must_be_bare() {
        assert_eq!(
            parse_origin("https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:3000/").unwrap(),
            "http://127.0.0.1:3000"
        );
        assert!(parse_origin("https://app.example.com/settings").is_err());
        assert!(parse_origin("not a url").is_err());
    }

    #[test]
    fn same_site_compares_registrable_domains() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_site(
            &u("https://api.example.com"),
            &u("https://app.example.com")
        ));
        assert!(!same_site(
            &u("https://api.example.com"),
            &u("https://app.other.com")
        ));
        assert!(!same_site(
            &u("http://api.example.com"),
            &u("https://app.example.com")
        ));
        assert!(same_site(
            &u("http://127.0.0.1:8080"),
            &u("http://127.0.0.1:3000")
        ));
    }
}
