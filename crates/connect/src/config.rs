//! One typed configuration, read from the command line and the environment (each secret also as
//! `NAME_FILE`), validated before anything starts. `--help` is the reference for every
//! variable. Every missing, placeholder or invalid setting is collected, and `serve` stops with
//! one message that names them all and says what to set; nothing here logs a secret or keeps one
//! outside a [`SecretString`].

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
use crate::provider::{ConfiguredProvider, ProviderId};
pub use crate::setting::{
    ConfigError, parse_secret, placeholder_reason, require_real, resolve_secret,
};
use crate::vault::{Keyring, generate_entry};

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
    /// Most signed-in users whose statuses (what the settings page reads) are kept in memory
    /// per replica (0: every status read goes to the database). Invalidated like the token cache.
    #[arg(long, env = "CONNECT_STATUS_CACHE_CAPACITY", default_value_t = 50_000)]
    pub status_cache_capacity: usize,
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

    /// Webhook endpoints that hear of connection changes (docs/webhooks.md): `name:https://…`,
    /// comma-separated, e.g. `n8n:https://n8n.example.com/webhook/connect`.
    #[arg(long, env = "CONNECT_WEBHOOK_ENDPOINTS", hide_env_values = true)]
    pub webhook_endpoints: Option<String>,
    /// Their signing secrets: `name:whsec_…`, comma-separated; several for one name sign each
    /// message (rotation), the first first. `celeste-connect keygen webhook NAME` prints one.
    #[arg(long, env = "CONNECT_WEBHOOK_SECRETS", hide_env_values = true, value_parser = parse_secret)]
    pub webhook_secrets: Option<SecretString>,
    /// File holding CONNECT_WEBHOOK_SECRETS.
    #[arg(long, env = "CONNECT_WEBHOOK_SECRETS_FILE")]
    pub webhook_secrets_file: Option<PathBuf>,
    /// Let webhooks reach loopback and private addresses (a receiver on this machine or
    /// network, such as a local n8n). Off: such addresses are refused when connecting.
    #[arg(long, env = "CONNECT_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_networks: bool,
    /// Let webhook endpoints use plain http:// (payloads then travel unencrypted).
    #[arg(long, env = "CONNECT_WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Longest wait for one webhook delivery (seconds).
    #[arg(long, env = "CONNECT_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Refreshes failing (provider down, throttled) for this long send
    /// `connection.refresh_failing`: seconds, or 90s, 30m, 1h.
    #[arg(long, env = "CONNECT_WEBHOOK_FAILING_AFTER", default_value = "1h")]
    pub webhook_failing_after: String,
    /// Record the activity log (tokens handed out, proxied calls, connects and disconnects per
    /// minute; docs/activity.md): on or off.
    #[arg(long, env = "CONNECT_ACTIVITY", default_value = "on", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub activity: bool,
    /// Days the activity log keeps a minute's rows (0: forever).
    #[arg(long, env = "CONNECT_ACTIVITY_RETENTION_DAYS", default_value_t = ActivitySettings::DEFAULT_RETENTION_DAYS)]
    pub activity_retention_days: u32,
    /// Seconds between two folds of the activity journal into the log on PostgreSQL (1–3600):
    /// how late a count may show in reads, against the database's work for each fold.
    #[arg(long, env = "CONNECT_ACTIVITY_FOLD_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub activity_fold_secs: u64,
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
    /// Most users whose statuses are kept in memory (0: no cache).
    pub status_cache_capacity: usize,
    /// Demo mode: the demo sign-in and the in-process emulator are mounted.
    pub demo: bool,
    /// Demo mode only: a `Cross-Origin-Opener-Policy` for `/settings` (`CONNECT_DEMO_COOP`),
    /// to try the connect flow under COOP.
    pub demo_coop: Option<String>,
    /// Per-process rate limits and the pending-flow cap.
    pub rate_limits: RateLimitSettings,
    /// Connection webhooks: endpoints, reach, timeouts.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// The activity log.
    pub activity: ActivitySettings,
}

/// The activity log (`crate::activity`).
#[derive(Clone, Debug)]
pub struct ActivitySettings {
    /// Off: nothing is counted or written (what was written stays, and is still pruned).
    pub enabled: bool,
    /// How long rows are kept; `None`: forever.
    pub retention: Option<Duration>,
    /// How often counts are written (`activity::worker::FLUSH_EVERY`; tests lengthen it).
    pub flush_every: Duration,
    /// How often the PostgreSQL journal is added to the log (`activity::worker::FOLD_EVERY`).
    pub fold_every: Duration,
}

impl ActivitySettings {
    pub const DEFAULT_RETENTION_DAYS: u32 = 90;

    pub fn from_days(enabled: bool, retention_days: u32) -> Self {
        Self {
            enabled,
            retention: (retention_days > 0)
                .then(|| Duration::from_secs(u64::from(retention_days) * 86_400)),
            flush_every: crate::activity::worker::FLUSH_EVERY,
            fold_every: crate::activity::worker::FOLD_EVERY,
        }
    }
}

impl Default for ActivitySettings {
    fn default() -> Self {
        Self::from_days(true, Self::DEFAULT_RETENTION_DAYS)
    }
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

/// Every problem found in one configuration, so that one run names them all.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [only] => write!(f, "{only}"),
            all => {
                write!(f, "{} configuration problems:", all.len())?;
                for problem in all {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl ConfigErrors {
    /// Keeps the value, or records the problem and goes on checking the rest.
    fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }
}

/// Shortest HS256 secret accepted: Supabase's JWT secrets are at least this long, and a shorter
/// one can be guessed offline from any token it signed.
pub const MIN_JWT_SECRET_CHARS: usize = 32;

impl ServeArgs {
    /// Validates the arguments into [`Settings`], or names every setting to fix at once.
    pub fn into_settings(self) -> Result<Settings, ConfigErrors> {
        let mut problems = ConfigErrors(Vec::new());
        let database_url = problems
            .check(resolve_secret(
                "DATABASE_URL",
                self.database_url,
                self.database_url_file.as_ref(),
            ))
            .and_then(|url| {
                problems.check(url.ok_or_else(|| {
                    ConfigError::Missing {
                    name: "DATABASE_URL",
                    hint: "Set it to postgres://… (PostgreSQL or Supabase) or sqlite://connect.db."
                        .into(),
                }
                }))
            });
        let public_url = problems.check(self.public_url.ok_or_else(|| ConfigError::Missing {
            name: "CONNECT_PUBLIC_URL",
            hint:
                "Set it to the service's public base URL, e.g. https://connect.example.com.".into(),
        }));
        let mut app_origins = Vec::new();
        if self.app_origins.is_empty() {
            problems.0.push(ConfigError::Missing {
                name: "CONNECT_APP_ORIGINS",
                hint: "Set it to your app's origin(s), e.g. https://app.example.com.".into(),
            });
        }
        for origin in &self.app_origins {
            app_origins.extend(problems.check(parse_origin(origin)));
        }
        let app_settings_url = match (self.app_settings_url, app_origins.first()) {
            (Some(url), _) => Some(url),
            (None, Some(first)) => {
                problems.check(Url::parse(&format!("{first}/settings")).map_err(|e| {
                    ConfigError::Invalid {
                        name: "CONNECT_APP_SETTINGS_URL",
                        why: e.to_string(),
                    }
                }))
            }
            (None, None) => None,
        };

        let jwt_secret = problems
            .check(resolve_secret(
                "CONNECT_JWT_SECRET",
                self.jwt_secret,
                self.jwt_secret_file.as_ref(),
            ))
            .flatten();
        if jwt_secret.is_none() && self.jwks_url.is_none() {
            problems.0.push(ConfigError::Missing {
                name: "CONNECT_JWT_SECRET or CONNECT_JWKS_URL",
                hint: "Set Supabase's JWT secret (Settings → API → JWT secret) and/or its JWKS \
                       URL (https://<ref>.supabase.co/auth/v1/.well-known/jwks.json)."
                    .into(),
            });
        }
        if let Some(secret) = &jwt_secret {
            if let Some(why) = placeholder_reason(secret.expose_secret()) {
                problems.0.push(ConfigError::Placeholder {
                    name: "CONNECT_JWT_SECRET",
                    why,
                    hint: "Copy Supabase's JWT secret.".into(),
                });
            } else if secret.expose_secret().chars().count() < MIN_JWT_SECRET_CHARS {
                problems.0.push(ConfigError::Invalid {
                    name: "CONNECT_JWT_SECRET",
                    why: format!(
                        "it is shorter than {MIN_JWT_SECRET_CHARS} characters, so tokens signed \
                         with it could be forged. Copy Supabase's JWT secret (Settings → API), or \
                         make one with `openssl rand -base64 32`."
                    ),
                });
            }
        }
        for (name, value) in [
            ("CONNECT_JWKS_URL", self.jwks_url.as_ref().map(Url::as_str)),
            ("CONNECT_JWT_ISSUER", self.jwt_issuer.as_deref()),
        ] {
            if let Some(why) = value.and_then(placeholder_reason) {
                problems.0.push(ConfigError::Placeholder {
                    name,
                    why,
                    hint: "Put your Supabase project's reference (Settings → General → Project \
                           ID) in place of YOUR-PROJECT-REF."
                        .into(),
                });
            }
        }

        let service_keys = match problems.check(resolve_secret(
            "CONNECT_SERVICE_KEYS",
            self.service_keys,
            self.service_keys_file.as_ref(),
        )) {
            Some(Some(list)) => problems
                .check(parse_service_keys(list.expose_secret()).map_err(|why| {
                    ConfigError::Invalid {
                        name: "CONNECT_SERVICE_KEYS",
                        why,
                    }
                }))
                .unwrap_or_default(),
            _ => Vec::new(),
        };

        let keys = problems.check(resolve_secret(
            "CONNECT_ENCRYPTION_KEYS",
            self.encryption_keys,
            self.encryption_keys_file.as_ref(),
        ));
        let key_hint = || {
            let example = generate_entry("k1")
                .map(|e| format!(" For example (freshly generated, keep it secret): CONNECT_ENCRYPTION_KEYS={}", e.expose_secret()))
                .unwrap_or_default();
            format!(
                "Tokens are encrypted at rest and the service will not start without a key; `celeste-connect keygen encryption k1` prints one.{example}"
            )
        };
        let keyring = keys
            .and_then(|keys| {
                problems.check(require_real("CONNECT_ENCRYPTION_KEYS", keys, key_hint))
            })
            .and_then(|keys| {
                problems.check(Keyring::parse(keys.expose_secret()).map_err(|e| {
                    ConfigError::Invalid {
                        name: "CONNECT_ENCRYPTION_KEYS",
                        why: e.to_string(),
                    }
                }))
            });

        let provider_errors_before = problems.0.len();
        let mut providers = Vec::new();
        for resolved in [
            self.providers.microsoft.resolve(),
            self.providers.google.resolve(),
            self.providers.dropbox.resolve(),
        ] {
            if let Some(Some(provider)) = problems.check(resolved) {
                providers.push(provider);
            }
        }
        if providers.is_empty() && problems.0.len() == provider_errors_before {
            problems.0.push(ConfigError::Missing {
                name: "MICROSOFT_CLIENT_ID",
                hint: "No provider is configured, so every connect would answer \"No such \
                       provider\". Set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET (Entra ID \
                       → App registrations), GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET, or \
                       DROPBOX_CLIENT_ID and DROPBOX_CLIENT_SECRET (to try the service without \
                       one, run `celeste-connect demo`)."
                    .into(),
            });
        }

        let reach = crate::webhooks::net::Reach {
            allow_http: self.webhook_allow_http,
            allow_private_networks: self.webhook_allow_private_networks,
        };
        let webhook_secrets = problems
            .check(resolve_secret(
                crate::webhooks::SECRETS_VAR,
                self.webhook_secrets,
                self.webhook_secrets_file.as_ref(),
            ))
            .flatten();
        let webhook_endpoints = match crate::webhooks::parse_endpoints(
            self.webhook_endpoints.as_deref(),
            webhook_secrets.as_ref().map(|s| s.expose_secret()),
            reach,
        ) {
            Ok(endpoints) => endpoints,
            Err(found) => {
                problems.0.extend(found);
                Vec::new()
            }
        };
        let failing_after = problems
            .check(
                crate::webhooks::parse_duration(&self.webhook_failing_after).map_err(|why| {
                    ConfigError::Invalid {
                        name: "CONNECT_WEBHOOK_FAILING_AFTER",
                        why,
                    }
                }),
            )
            .unwrap_or(Duration::from_secs(3600));

        if !problems.0.is_empty() {
            return Err(problems);
        }
        // Each value below is missing only when a problem was recorded for it.
        let (Some(database_url), Some(public_url), Some(app_settings_url), Some(keyring)) =
            (database_url, public_url, app_settings_url, keyring)
        else {
            return Err(problems);
        };

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
            status_cache_capacity: self.status_cache_capacity,
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
            webhooks: crate::webhooks::WebhookSettings {
                endpoints: webhook_endpoints,
                reach,
                timeout: Duration::from_secs(self.webhook_timeout_secs.clamp(1, 60)),
                failing_after,
                ..crate::webhooks::WebhookSettings::default()
            },
            activity: ActivitySettings {
                fold_every: Duration::from_secs(self.activity_fold_secs),
                ..ActivitySettings::from_days(self.activity, self.activity_retention_days)
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// What `into_settings` says about these arguments (flags, so the environment plays no part
    /// unless a variable of ours is set in the test process).
    fn problems(args: &[&str]) -> String {
        let cli =
            Cli::try_parse_from(std::iter::once("celeste-connect").chain(args.iter().copied()))
                .unwrap();
        match cli.serve.into_settings() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn valid_args() -> Vec<String> {
        let key = generate_entry("k1").unwrap();
        [
            "--database-url=sqlite://x.db",
            "--public-url=https://api.example.com",
            "--app-origins=https://app.example.com",
            "--jwt-secret=0123456789abcdefghijklmnopqrstuvwxyz",
            "--microsoft-client-id=41f6dc82-8127-4330-97e0-c6b26e6aa967",
            "--microsoft-client-secret=Xy8Q~abcdefGHIJKL1234567890",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("--encryption-keys={}", key.expose_secret())])
        .collect()
    }

    fn problems_with(extra: &[&str], drop: &[&str]) -> String {
        let mut args: Vec<String> = valid_args()
            .into_iter()
            .filter(|a| !drop.iter().any(|d| a.starts_with(d)))
            .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        problems(&refs)
    }

    #[test]
    fn a_complete_configuration_is_accepted() {
        assert_eq!(problems_with(&[], &[]), "");
    }

    #[test]
    fn every_missing_setting_is_named_in_one_report() {
        let report = problems(&[]);
        for name in [
            "DATABASE_URL",
            "CONNECT_PUBLIC_URL",
            "CONNECT_APP_ORIGINS",
            "CONNECT_JWT_SECRET or CONNECT_JWKS_URL",
            "CONNECT_ENCRYPTION_KEYS",
            "MICROSOFT_CLIENT_ID",
        ] {
            assert!(
                report.contains(&format!("{name} is not set")),
                "{name}: {report}"
            );
        }
        assert!(report.starts_with("6 configuration problems"), "{report}");
    }

    #[test]
    fn invalid_values_are_reported_together_with_missing_ones() {
        let report = problems_with(
            &[
                "--app-origins=https://app.example.com/settings",
                "--encryption-keys=k1:c2hvcnQ=",
            ],
            &["--app-origins", "--encryption-keys", "--database-url"],
        );
        assert!(report.contains("DATABASE_URL is not set"), "{report}");
        assert!(
            report.contains("CONNECT_APP_ORIGINS is invalid"),
            "{report}"
        );
        assert!(report.contains("32 bytes"), "{report}");
    }

    #[test]
    fn webhook_endpoints_and_secrets_are_checked_with_everything_else() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(
            problems_with(
                &[
                    "--webhook-endpoints=n8n:https://n8n.example.com/webhook/x",
                    &format!("--webhook-secrets=n8n:{secret}"),
                    "--webhook-failing-after=30m",
                ],
                &[]
            ),
            ""
        );
        let report = problems_with(
            &[
                "--webhook-endpoints=n8n:http://127.0.0.1:5678/webhook/x",
                "--webhook-secrets=n8n:whsec_c2hvcnQ=",
                "--webhook-failing-after=soon",
            ],
            &["--database-url"],
        );
        assert!(report.starts_with("4 configuration problems"), "{report}");
        for expected in [
            "DATABASE_URL is not set",
            "CONNECT_WEBHOOK_ENDPOINTS is invalid: endpoint n8n: http:// is refused",
            "CONNECT_WEBHOOK_SECRETS is invalid: endpoint n8n: a signing secret must hold 24 to 64 bytes",
            "CONNECT_WEBHOOK_FAILING_AFTER is invalid",
        ] {
            assert!(report.contains(expected), "{expected}: {report}");
        }
        // A local receiver, once allowed.
        assert_eq!(
            problems_with(
                &[
                    "--webhook-endpoints=n8n:http://127.0.0.1:5678/webhook/x",
                    &format!("--webhook-secrets=n8n:{secret}"),
                    "--webhook-allow-http=true",
                    "--webhook-allow-private-networks=true",
                ],
                &[]
            ),
            ""
        );
    }

    #[test]
    fn no_configured_provider_refuses_to_start() {
        let report = problems_with(&[], &["--microsoft-client-id", "--microsoft-client-secret"]);
        assert!(
            report.contains("MICROSOFT_CLIENT_ID is not set"),
            "{report}"
        );
        assert!(report.contains("No provider is configured"), "{report}");
    }

    #[test]
    fn placeholder_jwks_url_and_issuer_are_flagged() {
        let report = problems_with(
            &[
                "--jwks-url=https://YOUR-PROJECT-REF.supabase.co/auth/v1/.well-known/jwks.json",
                "--jwt-issuer=https://YOUR-PROJECT-REF.supabase.co/auth/v1",
            ],
            &[],
        );
        assert!(
            report.contains("CONNECT_JWKS_URL looks like a placeholder"),
            "{report}"
        );
        assert!(
            report.contains("CONNECT_JWT_ISSUER looks like a placeholder"),
            "{report}"
        );
        assert!(
            report.contains("YOUR-PROJECT-REF"),
            "says what to replace: {report}"
        );
    }

    #[test]
    fn jwt_secret_shorter_than_supabases_is_refused() {
        let report = problems_with(&["--jwt-secret=short-secret-1234"], &["--jwt-secret"]);
        assert!(report.contains("CONNECT_JWT_SECRET is invalid"), "{report}");
        assert!(report.contains("shorter than 32 characters"), "{report}");
        assert!(
            !report.contains("short-secret-1234"),
            "the secret is never echoed: {report}"
        );
        let exactly_32 = format!("--jwt-secret={}", "a1".repeat(16));
        assert_eq!(problems_with(&[&exactly_32], &["--jwt-secret"]), "");
    }

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
        use crate::provider::scopes_or;
        let spec = ProviderId::Google.spec();
        assert_eq!(
            scopes_or(None, spec).unwrap(),
            "openid email profile https://www.googleapis.com/auth/gmail.readonly"
        );
        assert_eq!(
            scopes_or(Some(" openid,email ".into()), spec).unwrap(),
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
