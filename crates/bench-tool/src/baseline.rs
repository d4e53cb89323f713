//! `baseline`: the floor for one database round trip, served next to the service in the same
//! run. A minimal axum + sqlx service: `GET /v1/service/users/{id}/integrations/{provider}/token`
//! reads the row by (user_id, provider) from the same seeded table, opens the stored access
//! token with the same key (the service's own `Keyring::open` at `token_place`, AES-256-GCM)
//! and answers `{access_token, expires_at}`; no authentication, no cache, no limits, no
//! metrics. `GET /v1/health` answers `{"status":"ok"}`. It prints `listening on http://ADDR`
//! once bound, like the service, and serves until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use celeste_connect::broker::connect::token_place;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::vault::Keyring;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct BaselineArgs {
    /// `postgres://…` of the seeded database.
    #[arg(long, env = "BENCH_BASELINE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// `id:base64key,…`, as CONNECT_ENCRYPTION_KEYS.
    #[arg(long, env = "CONNECT_ENCRYPTION_KEYS", hide_env_values = true)]
    encryption_keys: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Database connections (the service's CONNECT_DB_POOL_SIZE default).
    #[arg(long, default_value_t = 10)]
    pool_size: u32,
}

struct Baseline {
    pool: PgPool,
    keyring: Keyring,
}

pub async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let keyring = Keyring::parse(&args.encryption_keys)
        .map_err(|e| anyhow::anyhow!("--encryption-keys: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(args.pool_size)
        .min_connections(args.pool_size)
        // No ping before each use: the floor, not a pool policy.
        .test_before_acquire(false)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let state = Arc::new(Baseline { pool, keyring });
    let app = axum::Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(
            "/v1/service/users/{user}/integrations/{provider}/token",
            get(token),
        )
        .with_state(state);
    serve_until_stopped(args.listen, app).await
}

/// Binds `listen`, prints `listening on http://ADDR` once bound (what bench/run waits for, as
/// it does for the service), and serves `app` until SIGTERM or Ctrl-C.
pub async fn serve_until_stopped(listen: SocketAddr, app: axum::Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{address}")?;
        stdout.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        })
        .await?;
    Ok(())
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({ "error": code }))).into_response()
}

async fn token(
    State(state): State<Arc<Baseline>>,
    Path((user, provider)): Path<(Uuid, String)>,
) -> Response {
    let Some(provider) = ProviderId::from_path(&provider) else {
        return error(StatusCode::NOT_FOUND, "unknown_provider");
    };
    let row: Result<Option<(Vec<u8>, OffsetDateTime)>, sqlx::Error> = sqlx::query_as(
        "select access_token, expires_at from connect.integration_tokens \
         where user_id = $1 and provider = $2",
    )
    .bind(user)
    .bind(provider.as_str())
    .fetch_optional(&state.pool)
    .await;
    let (sealed, expires_at) = match row {
        Ok(Some(row)) => row,
        Ok(None) => return error(StatusCode::NOT_FOUND, "not_connected"),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "database"),
    };
    let place = token_place("access_token", UserId(user), provider);
    let Ok(plain) = state.keyring.open(&place, &sealed) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "does_not_open");
    };
    let Ok(access_token) = std::str::from_utf8(&plain) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "not_utf8");
    };
    Json(json!({
        "access_token": access_token,
        "expires_at": expires_at.unix_timestamp(),
    }))
    .into_response()
}
