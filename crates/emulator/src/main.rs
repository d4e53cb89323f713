//! `provider-emulator`: the emulator as its own process for multi-process tests. Binds first,
//! then prints exactly one line, `listening on http://ADDR`, to stdout (tests parse it; logs go
//! to stderr), and serves until SIGTERM or ctrl-c. It must not hold emulator behaviour.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use provider_emulator::{Emulator, EmulatorConfig, Faults, RegisteredClient};

/// Local stand-in for the Microsoft identity platform v2.0 and Microsoft Graph.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The registered application (client) id.
    #[arg(long)]
    client_id: String,
    /// The registered client secret.
    #[arg(long)]
    client_secret: String,
    /// A registered redirect URI (repeat for several).
    #[arg(long = "redirect-uri", required = true)]
    redirect_uris: Vec<String>,
    /// Fixed access-token lifetime; default: random 3600..=5400 s per token, like Microsoft.
    #[arg(long)]
    access_token_lifetime_secs: Option<u64>,
    /// Authorization-code lifetime.
    #[arg(long, default_value_t = 600)]
    code_lifetime_secs: u64,
    /// Latency added to every authorize, token and Graph answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Marker contained in every code and token.
    #[arg(long, default_value = provider_emulator::DEFAULT_MARKER)]
    marker: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = EmulatorConfig {
        clients: vec![RegisteredClient {
            client_id: args.client_id,
            client_secret: args.client_secret,
            redirect_uris: args.redirect_uris,
        }],
        access_token_lifetime: args.access_token_lifetime_secs.map(Duration::from_secs),
        code_lifetime: Duration::from_secs(args.code_lifetime_secs),
        marker: args.marker,
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::new(config);
    if args.latency_ms > 0 {
        emulator.set_faults(Faults {
            latency_ms: args.latency_ms,
            ..Faults::default()
        });
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // One line, flushed before serving: the only thing ever written to stdout.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%address, "provider emulator ready");

    axum::serve(listener, emulator.router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server error")?;
    tracing::info!("provider emulator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
