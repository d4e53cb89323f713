//! `cold`: process start to the first 200 from `/v1/ready`. Spawns `celeste-connect serve`
//! (the rest of its configuration comes from the environment), reads the bound address it
//! prints, polls `/v1/ready` every millisecond on fresh connections, then stops the process
//! with SIGTERM. Repeats and records every run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::record::{self, Record};
use crate::stats::median;

#[derive(clap::Args)]
pub struct ColdArgs {
    /// The `celeste-connect` binary.
    #[arg(long)]
    binary: PathBuf,
    /// DATABASE_URL for the runs (an already seeded database: a restart, not a first start).
    #[arg(long, env = "BENCH_COLD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Name of the backend in the results.
    #[arg(long)]
    backend: String,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long)]
    results: Option<PathBuf>,
}

pub async fn run(args: ColdArgs) -> anyhow::Result<()> {
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let ms = once(&args).await?;
        println!("cold start ({}): {ms:.1} ms", args.backend);
        runs.push(ms);
    }
    println!(
        "cold start ({}): median {:.1} ms over {} runs",
        args.backend,
        median(&runs).unwrap_or(0.0),
        runs.len()
    );
    if let Some(results) = &args.results {
        record::append(
            results,
            &Record::Cold {
                backend: args.backend.clone(),
                runs_ms: runs,
            },
        )?;
    }
    Ok(())
}

async fn once(args: &ColdArgs) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let mut child = Command::new(&args.binary)
        .arg("serve")
        .env("DATABASE_URL", &args.database_url)
        .env("CONNECT_LISTEN", "127.0.0.1:0")
        .env("CONNECT_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if let Some(address) = line.strip_prefix("listening on ") {
                    break address.trim().to_owned();
                }
            }
            Ok(Ok(None)) => bail!("the service exited before listening"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("the service did not listen within 30 s"),
        }
    };
    let ready = format!("{address}/v1/ready");
    let elapsed = loop {
        if let Ok(response) = http.get(&ready).send().await
            && response.status() == 200
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("/v1/ready did not answer 200 within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // Drain stdout so the process never blocks on a full pipe, then stop it gracefully.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        child.kill().await?;
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}
