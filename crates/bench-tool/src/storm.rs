//! `storm`: the refresh storm. Many concurrent token fetches for one connection whose access
//! token has expired, spread round-robin over several service processes on one database, all
//! released at once. Every answer must be 200 with the same (new) token, and the emulator's
//! counters must show exactly one `refresh_token` grant. Records p50, p99 and max latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::record::{self, Record, StormRecord};
use crate::stats::percentile;

#[derive(clap::Args)]
pub struct StormArgs {
    /// Base URLs of the service processes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    bases: Vec<String>,
    /// A service key every process accepts.
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// The user whose (expired) connection every request asks for.
    #[arg(long)]
    user: Uuid,
    /// The emulator's base URL (for its counters).
    #[arg(long)]
    emulator: String,
    /// The latency the emulator adds, for the record.
    #[arg(long, default_value_t = 500)]
    emulator_latency_ms: u64,
    /// Concurrent requests.
    #[arg(long, default_value_t = 1_000)]
    requests: usize,
    /// The token before the storm, to check it changed.
    #[arg(long)]
    previous_token: Option<String>,
    #[arg(long)]
    results: Option<PathBuf>,
    /// Where to write the token the storm returned (the next storm's `--previous-token`).
    #[arg(long)]
    token_out: Option<PathBuf>,
    /// `storm`, or `baseline` for a run against a token that needs no refresh (what the
    /// harness and the service cost at this concurrency without a provider call).
    #[arg(long, default_value = "storm")]
    label: String,
}

/// The emulator's count of `refresh_token` grants in its `/_emulator/stats` answer.
pub fn refresh_grants(stats: &Value) -> u64 {
    stats["grants"]["refresh_token"].as_u64().unwrap_or(0)
}

pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let bases: Vec<String> = args
        .bases
        .iter()
        .map(|b| b.trim_end_matches('/').to_owned())
        .collect();
    // Open the connections first, so the storm measures the service, not TCP handshakes.
    let warm = (0..args.requests).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/health", bases[i % bases.len()]);
        async move { http.get(url).send().await?.text().await.map(|_| ()) }
    });
    for result in futures::future::join_all(warm).await {
        result.context("warming connections")?;
    }
    let emulator = args.emulator.trim_end_matches('/');
    let stats_url = format!("{emulator}/_emulator/stats");
    let before: Value = http.get(&stats_url).send().await?.json().await?;

    let barrier = Arc::new(tokio::sync::Barrier::new(args.requests));
    let mut tasks = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let http = http.clone();
        let barrier = barrier.clone();
        let url = format!(
            "{}/v1/service/users/{}/integrations/outlook/token",
            bases[i % bases.len()],
            args.user
        );
        let key = args.service_key.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let result = async {
                let response = http.get(url).bearer_auth(key).send().await?;
                let status = response.status().as_u16();
                let body: Value = response.json().await?;
                anyhow::Ok((status, body["access_token"].as_str().map(str::to_owned)))
            }
            .await;
            (started.elapsed(), result)
        }));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut tokens = std::collections::BTreeSet::new();
    let mut ok = 0;
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        let (elapsed, result) = task.await?;
        latencies.push(elapsed.as_secs_f64() * 1000.0);
        match result {
            Ok((200, Some(token))) => {
                ok += 1;
                tokens.insert(token);
            }
            Ok((status, _)) => *failures.entry(format!("status {status}")).or_default() += 1,
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let after: Value = http.get(&stats_url).send().await?.json().await?;
    let grants = refresh_grants(&after).saturating_sub(refresh_grants(&before));
    let token_changed = args
        .previous_token
        .as_ref()
        .map(|previous| !tokens.contains(previous) && !tokens.is_empty());
    let storm = StormRecord {
        label: args.label.clone(),
        requests: args.requests,
        processes: bases.len(),
        emulator_latency_ms: args.emulator_latency_ms,
        ok,
        distinct_tokens: tokens.len(),
        token_changed,
        refresh_grants: grants,
        p50_ms: percentile(&latencies, 50.0).unwrap_or(0.0),
        p99_ms: percentile(&latencies, 99.0).unwrap_or(0.0),
        max_ms: percentile(&latencies, 100.0).unwrap_or(0.0),
    };
    println!(
        "{}: {}/{} answered 200, {} distinct token(s), token changed: {:?}, {} refresh_token grant(s) at the provider, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        storm.label,
        storm.ok,
        storm.requests,
        storm.distinct_tokens,
        storm.token_changed,
        storm.refresh_grants,
        storm.p50_ms,
        storm.p99_ms,
        storm.max_ms
    );
    for (failure, count) in &failures {
        println!("  {count} × {failure}");
    }
    if let (Some(path), Some(token)) = (&args.token_out, tokens.iter().next()) {
        std::fs::write(path, token)?;
    }
    if let Some(results) = &args.results {
        record::append(results, &Record::Storm(storm))?;
    }
    Ok(())
}
