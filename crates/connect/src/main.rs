//! The `celeste-connect` binary: parses the command line, reads the configuration, and runs one
//! subcommand. `anyhow` lives here and nowhere else.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use celeste_connect::app::App;
use celeste_connect::config::{self, ServeArgs};
use celeste_connect::store::Store;
use celeste_connect::{demo, telemetry};

/// `DATABASE_URL`, or the file `DATABASE_URL_FILE` names, as `serve` takes it.
#[derive(clap::Args)]
struct DatabaseArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = config::parse_secret)]
    database_url: Option<secrecy::SecretString>,
    /// File holding DATABASE_URL.
    #[arg(long, env = "DATABASE_URL_FILE")]
    database_url_file: Option<std::path::PathBuf>,
}

impl DatabaseArgs {
    fn resolve(self) -> anyhow::Result<secrecy::SecretString> {
        config::resolve_secret(
            "DATABASE_URL",
            self.database_url,
            self.database_url_file.as_ref(),
        )?
        .context("DATABASE_URL is not set (nor DATABASE_URL_FILE)")
    }
}

#[derive(Parser)]
#[command(
    name = "celeste-connect",
    version,
    about = "Connect users' Outlook accounts over OAuth 2.0; keep their tokens encrypted, fresh and on the server."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service in production: every secret and URL from the environment.
    Serve(Box<ServeArgs>),
    /// Zero-setup local run: embedded SQLite, a generated key, the provider emulator in-process,
    /// a demo sign-in and the settings page.
    Demo(demo::DemoArgs),
    /// Apply migrations to DATABASE_URL and exit.
    Migrate {
        /// The database, as the role that owns the schema.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Re-encrypt every stored token not yet on the active (first) encryption key. Idempotent
    /// and resumable; run it after putting a new key first in CONNECT_ENCRYPTION_KEYS, then
    /// drop the old key once it reports nothing left.
    /// The schema must be migrated already (`migrate`); any role the service runs as will do.
    RotateKey {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long, env = "CONNECT_ENCRYPTION_KEYS", hide_env_values = true)]
        encryption_keys: Option<String>,
        #[arg(long, env = "CONNECT_ENCRYPTION_KEYS_FILE")]
        encryption_keys_file: Option<std::path::PathBuf>,
        /// Rows per batch.
        #[arg(long, default_value_t = 200)]
        batch: u32,
    },
    /// Print a new secret and the configuration line that goes with it.
    Keygen {
        #[command(subcommand)]
        kind: KeygenKind,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum KeygenKind {
    /// A service key for a backend or workflow engine (n8n).
    Service {
        /// Name of the caller, as logs will show it (letters, digits, - and _).
        name: String,
    },
    /// An encryption key for tokens at rest.
    Encryption {
        /// Key id, e.g. k1, k2 (new keys go first in CONNECT_ENCRYPTION_KEYS).
        id: String,
    },
    /// A signing secret for a webhook endpoint (Standard Webhooks `whsec_…`).
    Webhook {
        /// The endpoint's name in CONNECT_WEBHOOK_ENDPOINTS.
        name: String,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down: draining in-flight requests");
}

async fn serve(args: ServeArgs, loaded_dotenv: bool) -> anyhow::Result<()> {
    let listen: SocketAddr = args.listen;
    let admin_listen: SocketAddr = args.admin_listen;
    telemetry::init_logging(&args.log_format);
    if loaded_dotenv {
        tracing::info!("read .env (variables already in the environment win)");
    }
    for name in config::unknown_env_vars() {
        tracing::warn!(variable = %name, "unknown variable in the environment (typo?)");
    }
    let settings = args.into_settings().map_err(|e| anyhow::anyhow!("{e}"))?;
    for origin in &settings.app_origins {
        let parsed = url::Url::parse(origin).ok();
        if parsed.is_some_and(|url| !config::same_site(&settings.public_url, &url)) {
            tracing::warn!(app_origin = %origin, public_url = %settings.public_url,
                "CONNECT_PUBLIC_URL and this app origin are not same-site: browsers will not send the \
                 browser-binding cookie to the callback, and connecting will fail. Serve the API from \
                 a sibling subdomain or a path of the app's site.");
        }
    }
    let api = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding admin listener {admin_listen}"))?;
    let app = App::build(settings).await?;
    // One line on stdout with the bound address, for scripts that start it on port 0.
    let announce = format!(
        "listening on http://{}\nadmin listening on http://{}\n",
        api.local_addr()?,
        admin.local_addr()?
    );
    // A reader that went away must not stop the service.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), announce.as_bytes());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tracing::info!(listen = %listen, admin = %admin_listen, database = app.state.broker.store.backend(), "celeste-connect serving");
    app.serve(api, Some(admin), shutdown_signal()).await?;
    Ok(())
}

async fn run(cli: Cli, loaded_dotenv: bool) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args, loaded_dotenv).await,
        Command::Demo(args) => {
            telemetry::init_logging("text");
            demo::run(args, shutdown_signal()).await
        }
        Command::RotateKey {
            database,
            encryption_keys,
            encryption_keys_file,
            batch,
        } => {
            telemetry::init_logging("text");
            let keys = config::resolve_secret(
                "CONNECT_ENCRYPTION_KEYS",
                encryption_keys.map(secrecy::SecretString::from),
                encryption_keys_file.as_ref(),
            )?
            .context("CONNECT_ENCRYPTION_KEYS is not set")?;
            let keyring = celeste_connect::vault::Keyring::parse(keys.expose_secret())?;
            let database_url = database.resolve()?;
            // No migration: `migrate` (as the schema's owner) does that; this runs as any role
            // the service may run as, the least-privileged login included.
            let store = Store::connect(
                database_url.expose_secret(),
                celeste_connect::store::StoreOptions {
                    pool_size: 2,
                    read_pool_size: 1,
                    migrate: false,
                },
            )
            .await?;
            let done = celeste_connect::broker::rotate::rotate_keys(&store, &keyring, batch.max(1))
                .await?;
            println!(
                "re-encrypted {} connection(s) under key {}; {} changed meanwhile (rerun to pick them up if still on an old key)",
                done.resealed,
                keyring.active_key_id(),
                done.skipped
            );
            store.close().await;
            Ok(())
        }
        Command::Migrate { database } => {
            telemetry::init_logging("text");
            Store::migrate(database.resolve()?.expose_secret()).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keygen {
            kind: KeygenKind::Service { name },
        } => {
            let (key, entry) = celeste_connect::identity::service_key::generate(&name)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("service key for {name} (give it to the caller; it is shown once):\n  {key}");
            println!("add this entry to CONNECT_SERVICE_KEYS (comma-separated):\n  {entry}");
            Ok(())
        }
        Command::Keygen {
            kind: KeygenKind::Encryption { id },
        } => {
            let line = celeste_connect::vault::generate_entry(&id)?;
            println!("CONNECT_ENCRYPTION_KEYS={}", line.expose_secret());
            Ok(())
        }
        Command::Keygen {
            kind: KeygenKind::Webhook { name },
        } => {
            let secret = celeste_connect::webhooks::signing::generate_secret()
                .map_err(anyhow::Error::msg)?;
            println!("signing secret for endpoint {name} (give it to the receiver; shown once):");
            println!("  {secret}");
            println!(
                "entry for CONNECT_WEBHOOK_SECRETS (comma-separated; a new secret goes first):"
            );
            println!("  {name}:{secret}");
            Ok(())
        }
        Command::Openapi => {
            let doc = celeste_connect::http::openapi();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
}

/// Reads `./.env` into the environment for variables not already set: the environment wins, and
/// only the current folder is searched, so a `.env` elsewhere never changes a run by surprise.
/// A line with nothing after `=` (as `.env.example` ships them) counts as not set.
fn load_dotenv() -> Result<bool, dotenvy::Error> {
    let text = match std::fs::read_to_string(".env") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(dotenvy::Error::Io(e)),
    };
    let filled: String = text
        .lines()
        .filter(|line| !is_unfilled_line(line))
        .flat_map(|line| [line, "\n"])
        .collect();
    dotenvy::from_read(filled.as_bytes())?;
    Ok(true)
}

/// What is wrong with `.env`, without the offending line: it may hold a secret.
fn dotenv_problem(error: &dotenvy::Error) -> String {
    match error {
        dotenvy::Error::LineParse(line, _) => {
            let name = line.split('=').next().unwrap_or("").trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                format!("the line of {name} cannot be parsed (check its quotes)")
            } else {
                "a line cannot be parsed (check its quotes)".to_owned()
            }
        }
        other => other.to_string(),
    }
}

/// `NAME=`, `NAME=""` or `NAME=''`: a template line left empty.
fn is_unfilled_line(line: &str) -> bool {
    let line = line.trim();
    let line = line.strip_prefix("export ").unwrap_or(line);
    match line.split_once('=') {
        Some((name, value)) => {
            !name.trim().is_empty()
                && !name.trim_start().starts_with('#')
                && matches!(value.trim(), "" | "\"\"" | "''")
        }
        None => false,
    }
}

fn main() -> ExitCode {
    let loaded_dotenv = match load_dotenv() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: cannot read .env: {}", dotenv_problem(&e));
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, loaded_dotenv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: several layers quote their source
/// in their own message, and `{:#}` would repeat it at every level.
fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
