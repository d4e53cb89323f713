//! `celeste-connect demo`: the whole service on one machine with no setup. Embedded SQLite and
//! generated secrets in a data folder (files mode 0600), the provider emulator mounted
//! in-process, a demo sign-in, and the settings page; a service key generated once into the data
//! folder, printed at start with ready `curl` lines so the token API, the proxy and n8n can be
//! tried too; extra app origins from `--app-origins` / `CONNECT_APP_ORIGINS`. Everything else
//! runs exactly as `serve` runs it. Never used by `serve`, which never prints a key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use url::Url;

use provider_emulator::{Emulator, EmulatorConfig, RegisteredClient};

use crate::app::App;
use crate::config::{JwtSettings, Settings, parse_origin};
use crate::http::AppState;
use crate::http::demo::user_id_for;
use crate::identity::service_key::{self, parse_service_keys};
use crate::provider::{ProviderId, dropbox, google, microsoft};
use crate::vault::{Keyring, generate_entry};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where to listen (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for the demo database and its generated secrets.
    #[arg(long, default_value = ".demo")]
    pub data_dir: PathBuf,
    /// Other app origins allowed to use the user API and the SDK (comma-separated), e.g. a
    /// local Next.js app at `http://localhost:3000`. The demo's own origin is always allowed.
    #[arg(long, env = "CONNECT_APP_ORIGINS", value_delimiter = ',')]
    pub app_origins: Vec<String>,
    /// Webhook endpoints (`name:url,…`, as `serve` reads them); in the demo they may be plain
    /// http:// and on this machine (a local n8n).
    #[arg(long, env = "CONNECT_WEBHOOK_ENDPOINTS", hide_env_values = true)]
    pub webhook_endpoints: Option<String>,
    /// Their signing secrets (`name:whsec_…,…`).
    #[arg(long, env = "CONNECT_WEBHOOK_SECRETS", hide_env_values = true)]
    pub webhook_secrets: Option<String>,
}

/// The demo's service key (for n8n and other backends), in the data folder.
pub const SERVICE_KEY_FILE: &str = "service.key";

/// The demo's service key, for its own sign-in to print ready `curl` lines with.
#[derive(Clone)]
pub struct DemoServiceKey(pub SecretString);

/// The name of the demo's service key, as logs show it.
pub const DEMO_SERVICE_KEY_NAME: &str = "demo";

/// The user the demo's start-up lines use (the first of the settings page's quick picks).
pub const DEMO_USER: &str = "alice";

/// The emulator's app registration for the demo.
pub const DEMO_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c0de";

/// The provider emulator with this service's client registered for every configured
/// provider's redirect URI (the demo uses one client id and secret for all three).
pub fn emulator_for(state: &AppState) -> Option<Emulator> {
    let first = state.broker.providers.iter().next()?;
    Some(Emulator::new(EmulatorConfig {
        clients: vec![RegisteredClient {
            client_id: first.client_id.clone(),
            client_secret: first.client_secret.expose_secret().to_owned(),
            redirect_uris: state
                .broker
                .provider_ids()
                .into_iter()
                .map(|p| state.broker.redirect_uri(p))
                .collect(),
        }],
        ..EmulatorConfig::default()
    }))
}

/// Reads a secret file, creating it (mode 0600) from `make` when missing.
fn secret_file(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<SecretString> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(SecretString::from(text.trim().to_owned()));
    }
    let value = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, value.as_bytes())?;
    Ok(SecretString::from(value))
}

fn random_secret() -> anyhow::Result<String> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The demo's service key: generated once into `data_dir`, the same on every start.
pub fn service_key(data_dir: &Path) -> anyhow::Result<SecretString> {
    secret_file(&data_dir.join(SERVICE_KEY_FILE), || {
        let (key, _) = service_key::generate(DEMO_SERVICE_KEY_NAME).map_err(anyhow::Error::msg)?;
        Ok(key)
    })
}

/// The service's token endpoint for a user, as printed for `curl` and n8n.
pub fn token_url(public_url: &Url, user: uuid::Uuid) -> String {
    format!(
        "{}/v1/service/users/{user}/integrations/outlook/token",
        public_url.as_str().trim_end_matches('/')
    )
}

/// The `curl` line that fetches a user's fresh access token with the demo's service key.
pub fn token_curl(public_url: &Url, key: &SecretString, user: uuid::Uuid) -> String {
    format!(
        "curl -H 'Authorization: Bearer {}' {}",
        key.expose_secret(),
        token_url(public_url, user)
    )
}

/// The demo's settings for a service reachable at `public_url`, with its files in `data_dir`
/// and `extra_origins` allowed beside its own.
pub fn settings(
    public_url: &Url,
    data_dir: &Path,
    extra_origins: &[String],
) -> anyhow::Result<Settings> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // The folder holds the database and the demo's keys: this user only.
    #[cfg(unix)]
    std::fs::set_permissions(
        data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("restricting {}", data_dir.display()))?;
    let jwt_secret = secret_file(&data_dir.join("jwt.secret"), random_secret)?;
    let keys = secret_file(&data_dir.join("encryption.keys"), || {
        Ok(generate_entry("demo1")?.expose_secret().to_owned())
    })?;
    let keyring = Keyring::parse(keys.expose_secret())?;
    let origin = public_url.origin().ascii_serialization();
    let mut app_origins = vec![origin];
    for extra in extra_origins.iter().filter(|o| !o.trim().is_empty()) {
        let extra = parse_origin(extra).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !app_origins.contains(&extra) {
            app_origins.push(extra);
        }
    }
    let key = service_key(data_dir)?;
    let service_keys = parse_service_keys(&service_key::entry(
        DEMO_SERVICE_KEY_NAME,
        key.expose_secret(),
    ))
    .map_err(anyhow::Error::msg)?;
    let database = data_dir.join("connect.db");
    Ok(Settings {
        database_url: SecretString::from(format!("sqlite://{}", database.display())),
        public_url: public_url.clone(),
        app_origins,
        app_settings_url: public_url.join("settings")?,
        jwt: JwtSettings {
            hs256_secret: Some(jwt_secret),
            jwks_url: None,
            audience: "authenticated".into(),
            issuer: None,
            jwks_min_refetch: JwtSettings::DEFAULT_JWKS_MIN_REFETCH,
            jwks_max_age: JwtSettings::DEFAULT_JWKS_MAX_AGE,
        },
        service_keys,
        keyring: Arc::new(keyring),
        providers: {
            let emulator = public_url.join("emulator/")?;
            let secret = secret_file(&data_dir.join("microsoft-client.secret"), random_secret)?;
            vec![
                microsoft::on_emulator(&emulator, DEMO_CLIENT_ID, secret.clone())?,
                google::on_emulator(&emulator, DEMO_CLIENT_ID, secret.clone())?,
                dropbox::on_emulator(&emulator, DEMO_CLIENT_ID, secret)?,
            ]
        },
        db_pool_size: 4,
        db_read_pool_size: 1,
        migrate_on_start: true,
        refresh: crate::config::RefreshSettings::default(),
        token_cache_capacity: 10_000,
        status_cache_capacity: 10_000,
        demo: true,
        demo_coop: std::env::var("CONNECT_DEMO_COOP")
            .ok()
            .filter(|v| !v.is_empty()),
        rate_limits: crate::config::RateLimitSettings::default(),
        // A local receiver (n8n on this machine) is what the demo is for.
        webhooks: crate::webhooks::WebhookSettings {
            reach: crate::webhooks::net::Reach {
                allow_http: true,
                allow_private_networks: true,
            },
            ..crate::webhooks::WebhookSettings::default()
        },
        activity: crate::config::ActivitySettings::from_days(
            std::env::var("CONNECT_ACTIVITY")
                .map_or(true, |v| !matches!(v.trim(), "off" | "false" | "0" | "no")),
            crate::config::ActivitySettings::DEFAULT_RETENTION_DAYS,
        ),
    })
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another demo running? try --listen 127.0.0.1:0)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let public_url = Url::parse(&format!("http://{addr}/"))?;
    let mut settings = settings(&public_url, &args.data_dir, &args.app_origins)?;
    settings.webhooks.endpoints = crate::webhooks::parse_endpoints(
        args.webhook_endpoints.as_deref(),
        args.webhook_secrets.as_deref(),
        settings.webhooks.reach,
    )
    .map_err(|problems| anyhow::anyhow!("{}", crate::config::ConfigErrors(problems)))?;
    let key = service_key(&args.data_dir)?;
    let origins = settings.app_origins.join(", ");
    let state = AppState::build(settings).await?;
    let emulator = emulator_for(&state).context("the demo configures every provider")?;
    let mut app = App::from_state(state);
    app.api = app
        .api
        .nest("/emulator", emulator.router())
        .layer(axum::Extension(DemoServiceKey(key.clone())));
    let base = public_url.as_str().trim_end_matches('/');
    let alice = user_id_for(DEMO_USER);
    let data_dir = args.data_dir.display();
    // Everything a newcomer needs to try each side of the service, in the order they need it.
    let banner = format!(
        "listening on {base}
settings page: {base}/settings (sign in with any name, then Connect)
provider emulator: {base}/emulator (sign-in and API stand-ins for {providers})
app origins allowed (SDK, user API): {origins} (add more with --app-origins or CONNECT_APP_ORIGINS)
service key (token API, proxy, n8n; kept in {data_dir}/service.key):
  {key}
once {DEMO_USER} is connected, fetch {DEMO_USER}'s token:
  {curl}
or read {DEMO_USER}'s mail through the proxy:
  curl -H 'Authorization: Bearer {key}' '{base}/v1/service/users/{alice}/integrations/outlook/proxy/v1.0/me/messages?$top=3'
n8n (examples/n8n): set connect_url to {base} (n8n in Docker: run it with --network host) and the Header Auth credential's value to: Bearer {key}
data folder: {data_dir} (delete it to start over)
",
        providers = ProviderId::ALL.map(ProviderId::label).join(", "),
        key = key.expose_secret(),
        curl = token_curl(&public_url, &key, alice),
    );
    // A reader that went away must not stop the demo.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    app.serve(listener, None, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_accepts_its_own_service_key_and_configures_every_provider() {
        let dir = std::env::temp_dir().join(format!("cc-demo-{}", uuid::Uuid::new_v4()));
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        let settings = settings(&url, &dir, &[]).unwrap();
        let key = std::fs::read_to_string(dir.join(SERVICE_KEY_FILE)).unwrap();
        let keys = crate::identity::service_key::ServiceKeys::new(settings.service_keys.clone());
        assert_eq!(keys.verify(key.trim()).as_deref(), Some("demo"));
        let again = super::settings(&url, &dir, &[]).unwrap();
        assert_eq!(
            again.service_keys.len(),
            1,
            "the same key on a second start"
        );
        assert_eq!(
            settings.providers.iter().map(|p| p.id).collect::<Vec<_>>(),
            ProviderId::ALL.to_vec()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
