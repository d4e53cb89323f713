//! `connect`: connects users through the real OAuth flow, as a browser would, against the
//! provider emulator, so the emulator knows their tokens (it accepts only tokens it issued):
//! `GET auth-url` with the user's JWT and an allowed `Origin` (keeping the binding cookie), the
//! consent form posted to the emulator's authorize endpoint (302 to the callback), then the
//! callback with the cookie. Each user's access token is then fetched with the service key and
//! written out (`user<TAB>access token`) for the proxy scenario's direct calls.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use crate::seed::user_jwt;

#[derive(clap::Args)]
pub struct ConnectArgs {
    /// The service's base URL.
    #[arg(long)]
    base: String,
    /// The emulator's base URL (for its test accounts).
    #[arg(long)]
    emulator: String,
    /// CONNECT_JWT_SECRET of the service.
    #[arg(long, env = "BENCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// A service key the service accepts.
    #[arg(long, env = "BENCH_SERVICE_KEY", hide_env_values = true)]
    service_key: String,
    /// An origin listed in CONNECT_APP_ORIGINS.
    #[arg(long)]
    origin: String,
    /// How many users to connect.
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Where to write `user<TAB>access token` lines.
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = Url::parse(&args.base)?;
    let emulator = args.emulator.trim_end_matches('/');
    let accounts: Vec<Value> = http
        .get(format!("{emulator}/_emulator/accounts"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("emulator accounts")?;
    let account_ids: Vec<&str> = accounts
        .iter()
        .filter(|a| a["kind"] == "work")
        .filter_map(|a| a["id"].as_str())
        .collect();
    if account_ids.is_empty() {
        bail!("the emulator lists no work account");
    }
    let key = EncodingKey::from_secret(args.jwt_secret.as_bytes());
    let header = Header::new(Algorithm::HS256);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut out = std::fs::File::create(&args.out)?;
    for i in 0..args.count {
        let user = Uuid::new_v4();
        let jwt = user_jwt(&header, &key, user, now)?;
        let account = account_ids
            .get(i % account_ids.len())
            .copied()
            .unwrap_or_default();
        connect_one(&http, &base, &jwt, &args.origin, account).await?;
        let token = fetch_token(&http, &base, &args.service_key, user).await?;
        writeln!(out, "{user}\t{token}")?;
    }
    println!(
        "connected {} users through the OAuth flow; tokens in {}",
        args.count,
        args.out.display()
    );
    Ok(())
}

async fn connect_one(
    http: &reqwest::Client,
    base: &Url,
    jwt: &str,
    origin: &str,
    account: &str,
) -> anyhow::Result<()> {
    let response = http
        .get(base.join("/v1/integrations/outlook/auth-url")?)
        .bearer_auth(jwt)
        .header("origin", origin)
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
    form.push(("account".into(), account.into()));
    form.push(("decision".into(), "accept".into()));
    let mut authorize = auth_url.clone();
    authorize.set_query(None);
    let answer = http.post(authorize).form(&form).send().await?;
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
    let mut callback = base.join(redirect.path())?;
    callback.set_query(redirect.query());
    let page = http.get(callback).header("cookie", cookie).send().await?;
    if page.status() != 200 {
        bail!("the callback answered {}", page.status());
    }
    Ok(())
}

/// The user's current access token, from the service's token endpoint.
pub async fn fetch_token(
    http: &reqwest::Client,
    base: &Url,
    service_key: &str,
    user: Uuid,
) -> anyhow::Result<String> {
    let response = http
        .get(base.join(&format!(
            "/v1/service/users/{user}/integrations/outlook/token"
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
