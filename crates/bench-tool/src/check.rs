//! `check`: before load is measured, proves the scenario measures the real thing. For sampled
//! seeded users, the service key's token call answers 200 with an access token carrying the
//! seed's marker (so it was decrypted, not made up), and the user's own status call answers
//! 200 `connected`, and the provider list (`GET /v1/integrations`, the `list` scenario) answers
//! 200.

use std::path::PathBuf;

use anyhow::{Context, bail};
use celeste_connect::provider::ProviderId;
use serde_json::Value;

use crate::seed::parse_provider;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The service's base URL.
    #[arg(long)]
    base: String,
    /// A service key the service accepts.
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// `users.txt` from `seed`.
    #[arg(long)]
    users: PathBuf,
    /// `jwts.txt` from `seed` (aligned with `users.txt`).
    #[arg(long)]
    jwts: PathBuf,
    /// Every access token must start with this.
    #[arg(long, default_value = "BENCHTOK-at-")]
    prefix: String,
    /// The seeded rows' provider.
    #[arg(long, default_value = "microsoft", value_parser = parse_provider)]
    provider: ProviderId,
    /// How many users to check.
    #[arg(long, default_value_t = 20)]
    sample: usize,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let users = std::fs::read_to_string(&args.users)?;
    let jwts = std::fs::read_to_string(&args.jwts)?;
    let pairs: Vec<(&str, &str)> = users.lines().zip(jwts.lines()).collect();
    if pairs.is_empty() {
        bail!("no users in {}", args.users.display());
    }
    let step = (pairs.len() / args.sample.max(1)).max(1);
    let http = reqwest::Client::new();
    let base = args.base.trim_end_matches('/');
    let path = args.provider.path_name();
    let mut checked = 0;
    for (user, jwt) in pairs.iter().step_by(step).take(args.sample) {
        let response = http
            .get(format!(
                "{base}/v1/service/users/{user}/integrations/{path}/token"
            ))
            .bearer_auth(&args.service_key)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("token answer")?;
        let token = body["access_token"].as_str().unwrap_or_default();
        if status != 200 || !token.starts_with(&args.prefix) {
            bail!(
                "token call for {user}: {status}, error {:?}; expected 200 and a token starting with {:?}",
                body["error"],
                args.prefix
            );
        }
        let response = http
            .get(format!("{base}/v1/integrations/{path}/status"))
            .bearer_auth(jwt)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("status answer")?;
        if status != 200 || body["status"] != "connected" {
            bail!("status call for {user}: {status} {body}");
        }
        let response = http
            .get(format!("{base}/v1/integrations"))
            .bearer_auth(jwt)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("list answer")?;
        let listed = body["integrations"].as_array().is_some_and(|all| {
            all.iter()
                .any(|i| i["provider"] == args.provider.as_str() && i["status"] == "connected")
        });
        if status != 200 || !listed {
            bail!("list call for {user}: {status} {body}");
        }
        checked += 1;
    }
    println!(
        "checked {checked} {} users: token calls answer the seeded tokens, status calls answer connected, list calls list it connected",
        args.provider
    );
    Ok(())
}
