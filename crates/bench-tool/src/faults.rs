//! Faults under load: `outage` keeps token and status requests going while the database is
//! stopped and started again by commands it is given, and counts what the callers got before,
//! during and after; `replica-kill` kills a service process while it holds a refresh lease and
//! times the wait a caller on another process sees. Both record their figures for `report`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::record::{self, OutageKind, OutageRecord, Record, ReplicaKillRecord};
use crate::stats::percentile;

#[derive(clap::Args)]
pub struct OutageArgs {
    /// The service's base URL.
    #[arg(long)]
    base: String,
    /// Seeded user ids, one per line (token requests).
    #[arg(long)]
    users: PathBuf,
    /// Their user JWTs, one per line (status requests).
    #[arg(long)]
    jwts: PathBuf,
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// Shell command that stops the database.
    #[arg(long)]
    stop: String,
    /// Shell command that starts it again (returns once it accepts connections).
    #[arg(long)]
    start: String,
    /// Seconds of load before the stop.
    #[arg(long, default_value_t = 3)]
    before_secs: u64,
    /// Seconds the database stays down.
    #[arg(long, default_value_t = 5)]
    outage_secs: u64,
    /// Seconds of load after the start.
    #[arg(long, default_value_t = 5)]
    after_secs: u64,
    /// Concurrent callers (half token, half status).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One answer: when it was sent (since the start), which kind, its status (0: no answer).
struct Sample {
    sent_ms: f64,
    token: bool,
    status: u16,
    latency_ms: f64,
}

fn lines(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

pub async fn outage(args: OutageArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.base.trim_end_matches('/').to_owned();
    let users = Arc::new(lines(&args.users)?);
    let jwts = Arc::new(lines(&args.jwts)?);
    anyhow::ensure!(!users.is_empty() && !jwts.is_empty(), "no users");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(2) {
        let (http, base, users, jwts, stop) = (
            http.clone(),
            base.clone(),
            users.clone(),
            jwts.clone(),
            stop.clone(),
        );
        let key = args.service_key.clone();
        let token = worker % 2 == 0;
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = if token {
                    let user = &users[rand::random_range(0..users.len())];
                    http.get(format!(
                        "{base}/v1/service/users/{user}/integrations/outlook/token"
                    ))
                    .bearer_auth(&key)
                } else {
                    let jwt = &jwts[rand::random_range(0..jwts.len())];
                    http.get(format!("{base}/v1/integrations/outlook/status"))
                        .bearer_auth(jwt)
                };
                let sent = started.elapsed();
                let status = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                samples.push(Sample {
                    sent_ms: sent.as_secs_f64() * 1000.0,
                    token,
                    status,
                    latency_ms: (started.elapsed() - sent).as_secs_f64() * 1000.0,
                });
            }
            samples
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.before_secs)).await;
    let stopped_at = started.elapsed().as_secs_f64() * 1000.0;
    shell(&args.stop).await.context("stopping the database")?;
    tokio::time::sleep(Duration::from_secs(args.outage_secs)).await;
    shell(&args.start).await.context("starting the database")?;
    let back_at = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(args.after_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await?);
    }

    let mut kinds = Vec::new();
    for (token, name) in [(true, "token"), (false, "status")] {
        let of_kind: Vec<&Sample> = samples.iter().filter(|s| s.token == token).collect();
        let window = |from: f64, to: f64| -> BTreeMap<String, u64> {
            let mut counts = BTreeMap::new();
            for s in of_kind
                .iter()
                .filter(|s| s.sent_ms >= from && s.sent_ms < to)
            {
                *counts.entry(s.status.to_string()).or_default() += 1;
            }
            counts
        };
        let during: Vec<f64> = of_kind
            .iter()
            .filter(|s| s.sent_ms >= stopped_at && s.sent_ms < back_at)
            .map(|s| s.latency_ms)
            .collect();
        // Recovery: from the database accepting connections again to the first moment after
        // which every answer of this kind is a 200.
        let last_failure = of_kind
            .iter()
            .filter(|s| s.status != 200)
            .map(|s| s.sent_ms + s.latency_ms)
            .fold(f64::NAN, f64::max);
        let recovered_after_ms = if last_failure.is_nan() {
            0.0
        } else {
            (last_failure - back_at).max(0.0)
        };
        kinds.push(OutageKind {
            kind: name.to_owned(),
            before: window(0.0, stopped_at),
            during: window(stopped_at, back_at),
            after: window(back_at, f64::MAX),
            during_p50_ms: percentile(&during, 50.0).unwrap_or(0.0),
            during_max_ms: percentile(&during, 100.0).unwrap_or(0.0),
            recovered_after_ms,
        });
    }
    let outage = OutageRecord {
        outage_secs: args.outage_secs,
        concurrency: args.concurrency,
        kinds,
    };
    for k in &outage.kinds {
        println!(
            "{}: before {:?}, during {:?} (p50 {:.1} ms, max {:.1} ms), after {:?}; every answer 200 again {:.0} ms after the database was back",
            k.kind,
            k.before,
            k.during,
            k.during_p50_ms,
            k.during_max_ms,
            k.after,
            k.recovered_after_ms
        );
    }
    if let Some(results) = &args.results {
        record::append(results, &Record::Outage(outage))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ReplicaKillArgs {
    /// The process to kill while it holds the lease.
    #[arg(long)]
    victim_pid: u32,
    #[arg(long)]
    victim: String,
    /// Another process on the same database, asked right after the kill.
    #[arg(long)]
    survivor: String,
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// The connection's user.
    #[arg(long)]
    user: Uuid,
    /// The database, to move the token's expiry and watch the lease.
    #[arg(long)]
    database_url: String,
    /// Seconds the stored token has left when the victim starts refreshing (negative:
    /// expired). The victim refreshes because of `min_ttl`.
    #[arg(long, allow_hyphen_values = true)]
    expires_in: i64,
    #[arg(long)]
    label: String,
    #[arg(long)]
    results: Option<PathBuf>,
}

pub async fn replica_kill(args: ReplicaKillArgs) -> anyhow::Result<()> {
    use sqlx::Connection;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?;
    let mut db = sqlx::PgConnection::connect(&args.database_url).await?;
    sqlx::query(
        "update connect.integration_tokens set expires_at = now() + make_interval(secs => $2::float8), \
           refresh_lease_owner = null, refresh_lease_until = null, refresh_cooldown_until = null, \
           version = version + 1 where user_id = $1",
    )
    .bind(args.user)
    .bind(args.expires_in as f64)
    .execute(&mut db)
    .await?;
    let token_url = |base: &str, query: &str| {
        format!(
            "{}/v1/service/users/{}/integrations/outlook/token{query}",
            base.trim_end_matches('/'),
            args.user
        )
    };
    // The victim refreshes (the provider is slow); we wait until it holds the lease.
    let victim = http
        .get(token_url(&args.victim, "?min_ttl=3600"))
        .bearer_auth(&args.service_key)
        .send();
    let victim = tokio::spawn(victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owner: Option<Uuid> = sqlx::query_scalar(
            "select refresh_lease_owner from connect.integration_tokens where user_id = $1",
        )
        .bind(args.user)
        .fetch_one(&mut db)
        .await?;
        if owner.is_some() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the victim never took the lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &args.victim_pid.to_string()])
        .status()?;
    anyhow::ensure!(killed.success(), "kill -KILL {} failed", args.victim_pid);
    victim.abort();
    let asked = Instant::now();
    let response = http
        .get(token_url(&args.survivor, ""))
        .bearer_auth(&args.service_key)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let wait_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let kill = ReplicaKillRecord {
        label: args.label,
        expires_in_secs: args.expires_in,
        status,
        got_token: body["access_token"].is_string(),
        wait_ms,
    };
    println!(
        "{}: stored token expires in {} s; the survivor answered {} after {:.1} ms",
        kill.label, kill.expires_in_secs, kill.status, kill.wait_ms
    );
    if let Some(results) = &args.results {
        record::append(results, &Record::ReplicaKill(kill))?;
    }
    Ok(())
}
