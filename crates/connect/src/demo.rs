//! `celeste-connect demo`: the whole service on one machine with no setup. Embedded SQLite and
//! generated secrets in a data folder (files mode 0600), the provider emulator mounted
//! in-process, a demo sign-in, and the settings page. Everything else runs exactly as `serve`
//! runs it. Never used by `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use url::Url;

use provider_emulator::{Emulator, EmulatorConfig, RegisteredClient};

use crate::app::{App, AppState};
use crate::config::{JwtSettings, Settings};
use crate::identity::service_key::parse_service_keys;
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
}

/// The demo's service key (for n8n and other backends), in the data folder.
pub const SERVICE_KEY_FILE: &str = "service.key";

/// The emulator's app registration for the demo.
pub const DEMO_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c0de";

/// The provider emulator with this service's client registered for every configured
/// provider's redirect URI (the demo uses one client id and secret for all three).
pub fn emulator_for(state: &AppState) -> Option<Emulator> {
    let first = state.providers.iter().next()?;
    Some(Emulator::new(EmulatorConfig {
        clients: vec![RegisteredClient {
            client_id: first.client_id.clone(),
            client_secret: first.client_secret.expose_secret().to_owned(),
            redirect_uris: state
                .provider_ids()
                .into_iter()
                .map(|p| state.redirect_uri(p))
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

/// The demo's settings for a service reachable at `public_url`, with its files in `data_dir`.
pub fn settings(public_url: &Url, data_dir: &Path) -> anyhow::Result<Settings> {
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
    // A service key for n8n and other backends, so the service API works in the demo too.
    let service_key = secret_file(&data_dir.join(SERVICE_KEY_FILE), || {
        crate::identity::service_key::generate("demo")
            .map(|(key, _)| key)
            .map_err(|e| anyhow::anyhow!(e))
    })?;
    let service_keys = parse_service_keys(&format!(
        "demo:{}",
        crate::identity::service_key::hash_key(service_key.expose_secret())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
    .map_err(|e| anyhow::anyhow!(e))?;
    let origin = public_url.origin().ascii_serialization();
    let database = data_dir.join("connect.db");
    Ok(Settings {
        database_url: SecretString::from(format!("sqlite://{}", database.display())),
        public_url: public_url.clone(),
        app_origins: vec![origin.clone()],
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
        demo: true,
        demo_coop: std::env::var("CONNECT_DEMO_COOP")
            .ok()
            .filter(|v| !v.is_empty()),
        rate_limits: crate::config::RateLimitSettings::default(),
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
    let settings = settings(&public_url, &args.data_dir)?;
    let state = AppState::build(settings).await?;
    let emulator = emulator_for(&state).context("the demo configures every provider")?;
    let mut app = App::from_state(state);
    app.api = app.api.nest("/emulator", emulator.router());
    println!("listening on http://{addr}");
    println!("settings page: {}settings", public_url);
    println!(
        "provider emulator: {}emulator (sign-in and API stand-ins for {})",
        public_url,
        ProviderId::ALL.map(ProviderId::label).join(", ")
    );
    println!(
        "service key for n8n and other backends: in {} (header `Authorization: Bearer <key>`)",
        args.data_dir.join(SERVICE_KEY_FILE).display()
    );
    println!(
        "data folder: {} (delete it to start over)",
        args.data_dir.display()
    );
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
        let settings = settings(&url, &dir).unwrap();
        let key = std::fs::read_to_string(dir.join(SERVICE_KEY_FILE)).unwrap();
        let keys = crate::identity::service_key::ServiceKeys::new(settings.service_keys.clone());
        assert_eq!(keys.verify(key.trim()), Some("demo"));
        let again = super::settings(&url, &dir).unwrap();
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
