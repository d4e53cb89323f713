//! `bench-tool`: the helper binary `bench/run` drives. It owns the parts of the benchmark that
//! are easier and more exact in Rust than in bash: seeding connections through the service's
//! own migrations and vault (`seed`), sanity checks of a running service (`check`), the real
//! OAuth connect flow against the provider emulator (`connect`, and its throughput: `flows`),
//! the refresh storm (`storm`), many connections falling due at once (`expire`, with
//! `refresh-token` to reuse one emulator-issued refresh token), a database outage under load
//! (`outage`), a replica killed mid-refresh (`replica-kill`), cold starts (`cold`), the
//! minimal axum + sqlx service the ratios are also taken against (`baseline`), the minimal
//! forwarder the proxy is compared with (`forwarder`), load runs with
//! RSS sampling (`load`, `rss`), and the `RESULTS.md` report (`note`, `report`). It is not part
//! of the service and is never deployed.

mod baseline;
mod check;
mod cold;
mod expire;
mod faults;
mod flow;
mod forwarder;
mod load;
mod record;
mod report;
mod seed;
mod stats;
mod storm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench-tool",
    about = "Benchmark helper for Celeste Connect (bench/run)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the service's migrations and insert N connections sealed by the service's vault;
    /// write sample user ids and ready-made user JWTs.
    Seed(seed::SeedArgs),
    /// Check that a running service answers token and status calls for seeded users.
    Check(check::CheckArgs),
    /// Connect users through the real OAuth flow against the emulator.
    Connect(flow::ConnectArgs),
    /// Complete connect flows per second with concurrent workers, for a fixed time.
    Flows(flow::FlowsArgs),
    /// Write the refresh token the service stored for a user (for `seed --refresh-token-file`).
    RefreshToken(seed::RefreshTokenArgs),
    /// Token fetches over random users while many connections fall due for refresh at once.
    Expire(expire::ExpireArgs),
    /// A minimal axum + sqlx service: one row read and one AES-GCM open per token request.
    Baseline(baseline::BaselineArgs),
    /// A minimal axum forwarder to one upstream: the floor for a proxied call.
    Forwarder(forwarder::ForwarderArgs),
    /// Fire concurrent token fetches of one expired connection at several service processes.
    Storm(storm::StormArgs),
    /// Token and status load across a database stop and start.
    Outage(faults::OutageArgs),
    /// Kill a process holding a refresh lease; time a caller on another process.
    ReplicaKill(faults::ReplicaKillArgs),
    /// Time process start to the first 200 from `/v1/ready`, several runs.
    Cold(cold::ColdArgs),
    /// Run a load generator command, sample the service's RSS meanwhile, record the figures.
    Load(load::LoadArgs),
    /// Record a process's current RSS under a label.
    Rss(load::RssArgs),
    /// Record a key/value fact about the run (machine, commit, commands).
    Note(report::NoteArgs),
    /// Write RESULTS.md from the recorded figures.
    Report(report::ReportArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed(args) => seed::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Connect(args) => flow::run(args).await,
        Command::Flows(args) => flow::flows(args).await,
        Command::RefreshToken(args) => seed::refresh_token(args).await,
        Command::Expire(args) => expire::run(args).await,
        Command::Baseline(args) => baseline::run(args).await,
        Command::Forwarder(args) => forwarder::run(args).await,
        Command::Storm(args) => storm::run(args).await,
        Command::Outage(args) => faults::outage(args).await,
        Command::ReplicaKill(args) => faults::replica_kill(args).await,
        Command::Cold(args) => cold::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Rss(args) => load::rss(args),
        Command::Note(args) => report::note(args),
        Command::Report(args) => report::run(args),
    }
}
