//! `expire`: many connections whose access tokens become due for refresh within seconds of each
//! other, while token fetches over random users keep coming. The rows are seeded by `seed` with
//! `--expires-in-secs`, `--expires-spread-secs`, one emulator-issued refresh token and a
//! `last_refreshed_at` that makes them idle for the keep-alive worker at the same moment, so
//! refresh on use and keep-alive meet the wave together. It measures the provider's
//! `refresh_token` grants (emulator counters), the drain (from the first row falling due, i.e.
//! `expires_at - skew`, until no `connected` row is due any more), failed fetches, and token
//! fetch p50/p99 before the wave and during the drain.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use celeste_connect::provider::ProviderId;
use rand::Rng;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;

use crate::record::{self, ExpireRecord, Record};
use crate::seed::parse_provider;
use crate::stats::percentile;
use crate::storm::refresh_grants;

#[derive(clap::Args)]
pub struct ExpireArgs {
    /// The service's base URL (keep-alive on).
    #[arg(long)]
    base: String,
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// User ids to fetch tokens for, one per line (all the seeded rows).
    #[arg(long)]
    users: PathBuf,
    #[arg(long, default_value = "microsoft", value_parser = parse_provider)]
    provider: ProviderId,
    /// The emulator's base URL (for its counters).
    #[arg(long)]
    emulator: String,
    /// `postgres://…` of the seeded database (the schema owner).
    #[arg(long, env = "BENCH_EXPIRE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The service's CONNECT_REFRESH_SKEW_SECS: a row is due when it expires within it.
    #[arg(long, default_value_t = 300)]
    skew_secs: u64,
    /// Concurrent token fetchers (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Give up on the drain this many seconds after the first row fell due.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    /// What the keep-alive worker was set to, for the record.
    #[arg(long, default_value = "")]
    keepalive: String,
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One fetch: when it was sent (Unix seconds), how long it took, whether it got a token.
struct Fetch {
    sent: f64,
    latency_ms: f64,
    ok: bool,
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

pub async fn run(args: ExpireArgs) -> anyhow::Result<()> {
    let users: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&args.users)
            .with_context(|| format!("reading {}", args.users.display()))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    if users.is_empty() {
        bail!("no users in {}", args.users.display());
    }
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let skew = i64::try_from(args.skew_secs)?;
    let (rows, first, last): (i64, OffsetDateTime, OffsetDateTime) = sqlx::query_as(
        "select count(*), min(expires_at) - make_interval(secs => $2), \
                max(expires_at) - make_interval(secs => $2) \
         from connect.integration_tokens where provider = $1",
    )
    .bind(args.provider.as_str())
    .bind(skew as f64)
    .fetch_one(&db)
    .await
    .context("reading the seeded expiry times")?;
    let (due_first, due_last) = (unix(first), unix(last));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let stats_url = format!("{}/_emulator/stats", args.emulator.trim_end_matches('/'));
    let before: Value = http.get(&stats_url).send().await?.json().await?;
    let load_start = unix(OffsetDateTime::now_utc());
    if load_start >= due_first {
        println!(
            "warning: the first rows fell due {:.1} s before the load started; no before phase",
            load_start - due_first
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let base = args.base.trim_end_matches('/').to_owned();
    let path = args.provider.path_name();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, users, stop, base) =
                (http.clone(), users.clone(), stop.clone(), base.clone());
            let key = args.service_key.clone();
            tokio::spawn(async move {
                let mut fetches = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let user = &users[rand::rng().random_range(0..users.len())];
                    let url = format!("{base}/v1/service/users/{user}/integrations/{path}/token");
                    let sent = unix(OffsetDateTime::now_utc());
                    let t = Instant::now();
                    let ok = async {
                        let response = http.get(url).bearer_auth(&key).send().await?;
                        let status = response.status();
                        let body: Value = response.json().await?;
                        anyhow::Ok(status == 200 && body["access_token"].is_string())
                    }
                    .await
                    .unwrap_or(false);
                    fetches.push(Fetch {
                        sent,
                        latency_ms: t.elapsed().as_secs_f64() * 1000.0,
                        ok,
                    });
                }
                fetches
            })
        })
        .collect();

    // Watch the table until every row fell due and none is due any more.
    let mut drained_at: Option<f64> = None;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = unix(OffsetDateTime::now_utc());
        let (due, gone): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'connected' \
                                     and expires_at <= now() + make_interval(secs => $2)), \
                    count(*) filter (where status <> 'connected') \
             from connect.integration_tokens where provider = $1",
        )
        .bind(args.provider.as_str())
        .bind(skew as f64)
        .fetch_one(&db)
        .await?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!(
                "expire: {:+.0} s from the first row falling due: {due} rows due, {gone} not connected",
                now - due_first
            );
            last_report = Instant::now();
        }
        if now >= due_last && due == 0 {
            drained_at = Some(now);
            break;
        }
        if now - due_first > args.max_secs as f64 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut fetches = Vec::new();
    for worker in workers {
        fetches.extend(worker.await?);
    }
    let after: Value = http.get(&stats_url).send().await?.json().await?;
    let not_connected: i64 = sqlx::query_scalar(
        "select count(*) from connect.integration_tokens where provider = $1 and status <> 'connected'",
    )
    .bind(args.provider.as_str())
    .fetch_one(&db)
    .await?;
    db.close().await;

    let end = drained_at.unwrap_or(f64::INFINITY);
    let phase = |from: f64, to: f64| -> Vec<f64> {
        fetches
            .iter()
            .filter(|f| f.sent >= from && f.sent < to && f.ok)
            .map(|f| f.latency_ms)
            .collect()
    };
    let before_ms = phase(f64::NEG_INFINITY, due_first);
    let during_ms = phase(due_first, end);
    let record = ExpireRecord {
        provider: args.provider.as_str().to_owned(),
        rows: u64::try_from(rows)?,
        concurrency: args.concurrency,
        keepalive: args.keepalive.clone(),
        lead_secs: due_first - load_start,
        spread_secs: due_last - due_first,
        refresh_grants: refresh_grants(&after).saturating_sub(refresh_grants(&before)),
        drained: drained_at.is_some(),
        drain_secs: drained_at.map_or(args.max_secs as f64, |d| d - due_first),
        fetches: fetches.len() as u64,
        failed: fetches.iter().filter(|f| !f.ok).count() as u64,
        not_connected: u64::try_from(not_connected)?,
        before_count: before_ms.len() as u64,
        before_p50_ms: percentile(&before_ms, 50.0),
        before_p99_ms: percentile(&before_ms, 99.0),
        during_count: during_ms.len() as u64,
        during_p50_ms: percentile(&during_ms, 50.0),
        during_p99_ms: percentile(&during_ms, 99.0),
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2} ms"));
    println!(
        "expire: {} {} rows due within {:.1} s; {} refresh_token grants; drained: {} after {:.1} s; \
         {} fetches, {} failed, {} rows not connected; before: {} fetches p50 {} p99 {}; \
         during the drain: {} fetches p50 {} p99 {}",
        record.rows,
        record.provider,
        record.spread_secs,
        record.refresh_grants,
        record.drained,
        record.drain_secs,
        record.fetches,
        record.failed,
        record.not_connected,
        record.before_count,
        ms(record.before_p50_ms),
        ms(record.before_p99_ms),
        record.during_count,
        ms(record.during_p50_ms),
        ms(record.during_p99_ms),
    );
    if let Some(results) = &args.results {
        record::append(results, &Record::Expire(record))?;
    }
    Ok(())
}
