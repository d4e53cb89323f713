//! `load`: runs one load-generator command (wrk with `bench/random-request.lua`, whose `done`
//! prints one `BENCHJSON {…}` line), samples the watched process's VmRSS every 100 ms while it
//! runs, and appends the run's requests/s, latency percentiles, errors and peak RSS to the
//! results file, with the CPU time the watched process spent meanwhile. `rss`: records one
//! process's VmRSS now.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::record::{self, LoadRecord, Record};

#[derive(clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    results: PathBuf,
    #[arg(long)]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// A warm-up run: printed, recorded as such, left out of the report.
    #[arg(long)]
    warmup: bool,
    /// Concurrent connections of the command (for the record).
    #[arg(long)]
    connections: u32,
    /// The process whose RSS is sampled (the service).
    #[arg(long)]
    pid: Option<u32>,
    /// The load generator and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct RssArgs {
    #[arg(long)]
    results: PathBuf,
    #[arg(long)]
    label: String,
    #[arg(long)]
    pid: u32,
}

/// VmRSS of `pid` in kB, if the process exists.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`: 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of every thread of `pid` so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in brackets, may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1000.0 / USER_HZ)
}

pub fn rss(args: RssArgs) -> anyhow::Result<()> {
    let kb = vm_rss_kb(args.pid).with_context(|| format!("no process {}", args.pid))?;
    println!("rss {}: {:.1} MB", args.label, kb as f64 / 1024.0);
    record::append(
        &args.results,
        &Record::Rss {
            label: args.label,
            kb,
        },
    )
}

fn us(value: &Value, name: &str) -> f64 {
    value[name].as_f64().unwrap_or(0.0) / 1000.0
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let (program, rest) = args.command.split_first().context("no command")?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.map(|_| text)
    });
    let mut peak: Option<u64> = None;
    let cpu_before = args.pid.and_then(cpu_ms);
    let status = loop {
        if let Some(kb) = args.pid.and_then(vm_rss_kb) {
            peak = Some(peak.map_or(kb, |p| p.max(kb)));
        }
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let cpu_after = args.pid.and_then(cpu_ms);
    let output = reader.await??;
    if !status.success() {
        bail!("{program} failed ({status}):\n{output}");
    }
    let json = output
        .lines()
        .find_map(|l| l.strip_prefix("BENCHJSON "))
        .with_context(|| format!("no BENCHJSON line in the output:\n{output}"))?;
    let v: Value = serde_json::from_str(json)?;
    let seconds = v["duration_us"].as_f64().unwrap_or(0.0) / 1e6;
    let requests = v["requests"].as_u64().unwrap_or(0);
    let errors = &v["errors"];
    let socket_errors = ["connect", "read", "write", "timeout"]
        .iter()
        .map(|k| errors[*k].as_u64().unwrap_or(0))
        .sum();
    let load = LoadRecord {
        scenario: args.scenario.clone(),
        run: args.run,
        warmup: args.warmup,
        connections: args.connections,
        seconds,
        requests,
        rps: requests as f64 / seconds.max(1e-9),
        p50_ms: us(&v, "p50_us"),
        p90_ms: us(&v, "p90_us"),
        p99_ms: us(&v, "p99_us"),
        max_ms: us(&v, "max_us"),
        non2xx: errors["status"].as_u64().unwrap_or(0),
        socket_errors,
        rss_peak_kb: peak,
        cpu_ms: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        command: args.command.clone(),
    };
    println!(
        "{:<18} {} {:>2}: {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  non-2xx {}  socket errors {}  rss peak {}  cpu {}",
        load.scenario,
        if load.warmup { "warm-up" } else { "run    " },
        load.run,
        load.rps,
        load.p50_ms,
        load.p99_ms,
        load.non2xx,
        load.socket_errors,
        peak.map_or_else(
            || "-".to_owned(),
            |kb| format!("{:.1} MB", kb as f64 / 1024.0)
        ),
        load.cpu_us_per_request()
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs/req")),
    );
    record::append(&args.results, &Record::Load(load))
}
