//! The results file: one JSON record per line, appended by every subcommand that measures
//! something and read back by `report`. Owns the record shapes and nothing else.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One line of the results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A fact about the run: machine, commit, settings, a command line.
    Meta { key: String, value: String },
    /// One load-generator run of one scenario.
    Load(LoadRecord),
    /// A process's resident memory at one moment.
    Rss { label: String, kb: u64 },
    /// The refresh storm.
    Storm(StormRecord),
    /// Cold starts of one backend.
    Cold { backend: String, runs_ms: Vec<f64> },
    /// Token and status answers across a database outage.
    Outage(OutageRecord),
    /// A caller's wait after a replica was killed holding a refresh lease.
    ReplicaKill(ReplicaKillRecord),
    /// Complete connect flows per second.
    Flow(FlowRecord),
    /// Many connections falling due for refresh at once.
    Expire(ExpireRecord),
    /// A seeding pass.
    Seed {
        label: String,
        backend: String,
        count: u64,
        seconds: f64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadRecord {
    pub scenario: String,
    pub run: u32,
    pub warmup: bool,
    pub connections: u32,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers that were not 2xx/3xx.
    pub non2xx: u64,
    /// Connect, read, write and timeout errors of the load generator.
    pub socket_errors: u64,
    /// Highest VmRSS sampled during the run (kB), when a process was watched.
    pub rss_peak_kb: Option<u64>,
    /// CPU time (user and system, all threads) the watched process spent during the run, in
    /// milliseconds.
    #[serde(default)]
    pub cpu_ms: Option<f64>,
    pub command: Vec<String>,
}

impl LoadRecord {
    /// The watched process's CPU time per completed request, in microseconds.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu_ms = self.cpu_ms?;
        (self.requests > 0).then(|| cpu_ms * 1000.0 / self.requests as f64)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutageRecord {
    pub outage_secs: u64,
    pub concurrency: usize,
    pub kinds: Vec<OutageKind>,
}

/// Answers of one kind (`token` or `status`) by HTTP status ("0": no answer), by when they
/// were sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutageKind {
    pub kind: String,
    pub before: std::collections::BTreeMap<String, u64>,
    pub during: std::collections::BTreeMap<String, u64>,
    pub after: std::collections::BTreeMap<String, u64>,
    pub during_p50_ms: f64,
    pub during_max_ms: f64,
    /// From the database accepting connections again to the last non-200 answer's end.
    pub recovered_after_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaKillRecord {
    pub label: String,
    pub expires_in_secs: i64,
    pub status: u16,
    pub got_token: bool,
    pub wait_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowRecord {
    pub provider: String,
    pub workers: usize,
    pub seconds: f64,
    pub completed: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpireRecord {
    pub provider: String,
    pub rows: u64,
    pub concurrency: usize,
    /// The keep-alive settings of the service, in words.
    pub keepalive: String,
    /// From the load's start to the first row falling due.
    pub lead_secs: f64,
    /// From the first row falling due to the last.
    pub spread_secs: f64,
    pub refresh_grants: u64,
    pub drained: bool,
    /// From the first row falling due until none was due (or the time given up after).
    pub drain_secs: f64,
    pub fetches: u64,
    pub failed: u64,
    /// Rows no longer `connected` at the end (a refresh refused for good).
    pub not_connected: u64,
    pub before_count: u64,
    pub before_p50_ms: Option<f64>,
    pub before_p99_ms: Option<f64>,
    pub during_count: u64,
    pub during_p50_ms: Option<f64>,
    pub during_p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormRecord {
    /// `storm` for the measured storm; `baseline` for the same fetches of a fresh token.
    #[serde(default)]
    pub label: String,
    pub requests: usize,
    pub processes: usize,
    pub emulator_latency_ms: u64,
    pub ok: usize,
    pub distinct_tokens: usize,
    pub token_changed: Option<bool>,
    pub refresh_grants: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Appends one record to the results file.
pub fn append(path: &Path, record: &Record) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

/// Reads every record of the results file.
pub fn read_all(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}
