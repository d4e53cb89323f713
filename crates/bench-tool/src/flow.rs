//! The real OAuth connect flow, as a browser drives it, against the provider emulator (it
//! accepts only tokens it issued): `GET auth-url` with the user's JWT and an allowed `Origin`
//! (keeping the binding cookie), the consent form posted to the emulator's authorize endpoint
//! (302 to the callback), then the callback with the cookie; the page must announce
//! `{PROVIDER}_AUTH_SUCCESS`. `connect` connects a few users and writes `user<TAB>access token`
//! for the proxy scenarios' direct calls; `flows` measures complete flows per second with
//! concurrent workers for a fixed time.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use celeste_connect::provider::ProviderId;

use crate::record::{self, FlowRecord, Record};
use crate::seed::{parse_provider, user_jwt};
use crate::stats::percentile;

/// Where the flows go and as whom: the service, the emulator, the user JWT secret, an allowed
/// origin and the provider.
#[derive(clap::Args)]
pub struct FlowTarget {
    /// The service's base URL.
    #[arg(long)]
    base: String,
    /// The emulator's base URL (for its test accounts).
    #[arg(long)]
    emulator: String,
    /// CONNECT_JWT_SECRET of the service.
    #[arg(long, env = "BENCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// An origin listed in CONNECT_APP_ORIGINS.
    #[arg(long)]
    origin: String,
    /// `microsoft` (or `outlook`), `google` or `dropbox`.
    #[arg(long, default_value = "microsoft", value_parser = parse_provider)]
    provider: ProviderId,
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    target: FlowTarget,
    /// A service key the service accepts.
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// How many users to connect.
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Where to write `user<TAB>access token` lines.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    target: FlowTarget,
    /// Concurrent workers, each driving one flow after another.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Seconds of measured flows (flows started before the end are finished and counted).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of flows before the measurement, not recorded.
    #[arg(long, default_value_t = 0)]
    warmup_secs: u64,
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One browser-less connect flow driver: the HTTP client, the service, and the emulator
/// account to pick.
struct Driver {
    http: reqwest::Client,
    base: Url,
    origin: String,
    provider: ProviderId,
    /// Microsoft's consent page needs an account; Google's and Dropbox's take their first.
    accounts: Vec<String>,
    key: EncodingKey,
}

impl Driver {
    async fn new(target: &FlowTarget) -> anyhow::Result<Self> {
        let provider = target.provider;
        let emulator = target.emulator.as_str();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let accounts = if provider == ProviderId::Microsoft {
            let emulator = emulator.trim_end_matches('/');
            let listed: Vec<Value> = http
                .get(format!("{emulator}/_emulator/accounts"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .context("emulator accounts")?;
            let work: Vec<String> = listed
                .iter()
                .filter(|a| a["kind"] == "work")
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect();
            if work.is_empty() {
                bail!("the emulator lists no work account");
            }
            work
        } else {
            Vec::new()
        };
        Ok(Self {
            http,
            base: Url::parse(&target.base)?,
            origin: target.origin.clone(),
            provider,
            accounts,
            key: EncodingKey::from_secret(target.jwt_secret.as_bytes()),
        })
    }

    /// Connects a new user through the whole flow; returns the user.
    async fn connect(&self, i: usize) -> anyhow::Result<Uuid> {
        let user = Uuid::new_v4();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let jwt = user_jwt(&Header::new(Algorithm::HS256), &self.key, user, now)?;
        let account = self
            .accounts
            .get(i % self.accounts.len().max(1))
            .map(String::as_str);
        let path = self.provider.path_name();
        let response = self
            .http
            .get(
                self.base
                    .join(&format!("/v1/integrations/{path}/auth-url"))?,
            )
            .bearer_auth(&jwt)
            .header("origin", &self.origin)
            .send()
            .await?;
        if response.status() != 200 {
            bail!("auth-url answered {}", response.status());
        }
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.starts_with("__Host-cc_flow_binding="))
            .map(str::to_owned)
            .context("auth-url set no __Host-cc_flow_binding cookie")?;
        let body: Value = response.json().await?;
        let auth_url = Url::parse(body["auth_url"].as_str().context("no auth_url")?)?;

        let mut form: Vec<(String, String)> = auth_url.query_pairs().into_owned().collect();
        if let Some(account) = account {
            form.push(("account".into(), account.into()));
        }
        form.push(("decision".into(), "accept".into()));
        let mut authorize = auth_url.clone();
        authorize.set_query(None);
        let answer = self.http.post(authorize).form(&form).send().await?;
        if answer.status() != 302 {
            bail!("the consent form answered {}", answer.status());
        }
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("no Location from the consent form")?;
        // The redirect names CONNECT_PUBLIC_URL; the service listens on a port chosen at start.
        let redirect = Url::parse(location)?;
        let mut callback = self.base.join(redirect.path())?;
        callback.set_query(redirect.query());
        let page = self
            .http
            .get(callback)
            .header("cookie", cookie)
            .send()
            .await?;
        let status = page.status();
        let html = page.text().await?;
        let success = format!(
            "data-message-type=\"{}_AUTH_SUCCESS\"",
            self.provider.as_str().to_ascii_uppercase()
        );
        if status != 200 || !html.contains(&success) {
            bail!("the callback answered {status} without {success}");
        }
        Ok(user)
    }
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let driver = Driver::new(&args.target).await?;
    let mut out = std::fs::File::create(&args.out)?;
    for i in 0..args.count {
        let user = driver.connect(i).await?;
        let token = fetch_token(
            &driver.http,
            &driver.base,
            &args.service_key,
            driver.provider,
            user,
        )
        .await?;
        writeln!(out, "{user}\t{token}")?;
    }
    println!(
        "connected {} users to {} through the OAuth flow; tokens in {}",
        args.count,
        driver.provider,
        args.out.display()
    );
    Ok(())
}

/// What the workers saw in one phase.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    errors: std::collections::BTreeMap<String, u64>,
}

async fn drive(driver: &Arc<Driver>, workers: usize, seconds: u64) -> (Tally, f64) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let driver = driver.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = w;
                while Instant::now() < until {
                    let t = Instant::now();
                    match driver.connect(i).await {
                        Ok(_) => tally.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(e) => *tally.errors.entry(e.to_string()).or_default() += 1,
                    }
                    i += workers;
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => {
                all.latencies_ms.extend(t.latencies_ms);
                for (k, v) in t.errors {
                    *all.errors.entry(k).or_default() += v;
                }
            }
            Err(e) => *all.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    (all, started.elapsed().as_secs_f64())
}

/// `flows`: complete connect flows per second with `--workers` concurrent workers.
pub async fn flows(args: FlowsArgs) -> anyhow::Result<()> {
    let driver = Arc::new(Driver::new(&args.target).await?);
    if args.warmup_secs > 0 {
        drive(&driver, args.workers, args.warmup_secs).await;
    }
    let (tally, seconds) = drive(&driver, args.workers, args.seconds).await;
    let errors: u64 = tally.errors.values().sum();
    let flow = FlowRecord {
        provider: driver.provider.as_str().to_owned(),
        workers: args.workers,
        seconds,
        completed: tally.latencies_ms.len() as u64,
        per_sec: tally.latencies_ms.len() as f64 / seconds.max(1e-9),
        p50_ms: percentile(&tally.latencies_ms, 50.0).unwrap_or(0.0),
        p99_ms: percentile(&tally.latencies_ms, 99.0).unwrap_or(0.0),
        errors,
    };
    println!(
        "flows ({}, {} workers, {:.1} s): {} completed, {:.1} flows/s, p50 {:.1} ms, p99 {:.1} ms, errors {}",
        flow.provider,
        flow.workers,
        flow.seconds,
        flow.completed,
        flow.per_sec,
        flow.p50_ms,
        flow.p99_ms,
        flow.errors
    );
    for (error, count) in &tally.errors {
        println!("  {count} × {error}");
    }
    if let Some(results) = &args.results {
        record::append(results, &Record::Flow(flow))?;
    }
    if errors > 0 {
        bail!("{errors} connect flow(s) failed");
    }
    Ok(())
}

/// The user's current access token, from the service's token endpoint.
pub async fn fetch_token(
    http: &reqwest::Client,
    base: &Url,
    service_key: &str,
    provider: ProviderId,
    user: Uuid,
) -> anyhow::Result<String> {
    let path = provider.path_name();
    let response = http
        .get(base.join(&format!(
            "/v1/service/users/{user}/integrations/{path}/token"
        ))?)
        .bearer_auth(service_key)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    match body["access_token"].as_str() {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => bail!("token call for {user} answered {status}: {}", body["error"]),
    }
}
