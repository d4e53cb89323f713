//! Fresh tokens for workflows (security.md §8 G1–G5, H1–H7): the service token endpoint, refresh
//! exactly once (single flight, lease, compare-and-swap), failures, the Graph proxy and the
//! keep-alive worker — against real PostgreSQL, SQLite and the provider emulator over HTTP.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use celeste_connect::broker::connect::token_place;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::Refreshed;
use provider_emulator::{Faults, HttpFault, LatencyTarget, demo_accounts};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    APP_ORIGIN, BACKENDS, Backend, CLIENT_ID, CLIENT_SECRET, Connected, TEST_KEY_ENTRY, error_code,
    test_keyring, user_token, with_emulator, with_emulator_adjusted,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
const LEE: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

async fn connected(backend: Backend) -> (Connected, Uuid) {
    let c = with_emulator(backend, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    (c, user)
}

async fn token_json(c: &Connected, user: Uuid, query: &str) -> Value {
    let response = c.token(user, query).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn stored_refresh_token(row: &celeste_connect::store::TokenRow) -> String {
    let place = token_place("refresh_token", row.user_id, row.provider);
    String::from_utf8(
        test_keyring()
            .open(&place, row.refresh_token.as_ref().unwrap())
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_valid_token_is_handed_out_without_calling_the_provider() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        let response = c.token(user, "").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["content-type"], "application/json");
        // Sent with its length, not chunked, though it leaves as separate pieces.
        let length: usize = response.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(response.headers().get("transfer-encoding").is_none());
        let text = response.text().await.unwrap();
        assert_eq!(text.len(), length);
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["access_token"]
                .as_str()
                .unwrap()
                .starts_with("TOKMARK-at-")
        );
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["provider_email"], "adele.vance@contoso.example");
        assert!(body["provider_user_id"].as_str().is_some());
        assert!(body["scopes"].as_array().is_some_and(|s| !s.is_empty()));
        assert!(
            !text.contains("TOKMARK-rt") && body.get("refresh_token").is_none(),
            "never the refresh token"
        );
        assert_eq!(c.refreshes(), 0, "{backend:?}");
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_rotated_refresh_token_is_kept() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        let before = token_json(&c, user, "").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let row = c
            .app
            .store()
            .token_row(UserId(user), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        let old_refresh = stored_refresh_token(&row);

        c.set_expiry(user, -60).await;
        let fresh = token_json(&c, user, "").await;
        let after = fresh["access_token"].as_str().unwrap().to_owned();
        assert_ne!(after, before, "{backend:?}");
        assert_eq!(c.refreshes(), 1);
        let expires_at = time::OffsetDateTime::parse(
            fresh["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            expires_at > time::OffsetDateTime::now_utc() + time::Duration::minutes(55),
            "a full new lifetime"
        );

        // Served from the store from now on, and the rotated refresh token replaced the old one.
        assert_eq!(
            token_json(&c, user, "").await["access_token"],
            after.as_str()
        );
        assert_eq!(c.refreshes(), 1);
        let row = c
            .app
            .store()
            .token_row(UserId(user), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            stored_refresh_token(&row),
            old_refresh,
            "{backend:?}: rotated refresh token stored"
        );
        let status: Value = c
            .app
            .get_as(user, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert!(status["last_refreshed_at"].as_str().is_some());
    }
}

#[tokio::test]
async fn min_ttl_asks_for_a_token_that_lives_long_enough() {
    let (c, user) = connected(Backend::Sqlite).await;
    // Two minutes left is inside the default five-minute skew: refreshed first.
    c.set_expiry(user, 120).await;
    token_json(&c, user, "?min_ttl=300").await;
    assert_eq!(c.refreshes(), 1);
    // Eight minutes left: fine by default, too short for min_ttl=600.
    c.set_expiry(user, 480).await;
    token_json(&c, user, "").await;
    assert_eq!(c.refreshes(), 1);
    token_json(&c, user, "?min_ttl=600").await;
    assert_eq!(c.refreshes(), 2);
    for bad in ["?min_ttl=-1", "?min_ttl=abc", "?min_ttl=999999"] {
        assert_eq!(c.token(user, bad).await.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn a_refused_grant_needs_reauth_once_and_then_costs_the_provider_nothing() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        c.emulator.revoke_grant(ADELE);
        c.set_expiry(user, -60).await;
        let response = c.token(user, "").await;
        assert_eq!(response.status(), 409);
        assert_eq!(error_code(response).await, "reauth_required");
        assert_eq!(c.refreshes(), 1);
        for _ in 0..100 {
            assert_eq!(c.token(user, "").await.status(), 409);
        }
        assert_eq!(c.refreshes(), 1, "{backend:?}: no further provider calls");
        let status: Value = c
            .app
            .get_as(user, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["status"], "needs_reauth");
        assert_eq!(status["connected"], false);

        // Connecting again heals it.
        assert_eq!(c.connect(user, LEE).await.status(), 200);
        assert_eq!(c.token(user, "").await.status(), 200);
    }
}

#[tokio::test]
async fn a_provider_outage_loses_nothing_and_cools_down() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        let current = token_json(&c, user, "").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let baseline = c.token_calls();

        // Inside the skew but still valid: the current token is handed out during the outage.
        c.emulator.set_faults(Faults {
            token: Some(HttpFault::server_error(503)),
            ..Faults::default()
        });
        c.set_expiry(user, 120).await;
        assert_eq!(
            token_json(&c, user, "").await["access_token"],
            current.as_str()
        );
        assert_eq!(c.token_calls(), baseline + 1, "{backend:?}: one attempt");

        // Expired: 503 with Retry-After, and the cooldown keeps the provider out of it.
        c.set_expiry(user, -60).await;
        for _ in 0..10 {
            let response = c.token(user, "").await;
            assert_eq!(response.status(), 503, "{backend:?}");
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=30).contains(&retry), "{retry}");
            assert_eq!(error_code(response).await, "provider_unavailable");
        }
        assert_eq!(
            c.token_calls(),
            baseline + 1,
            "{backend:?}: the cooldown holds"
        );
        let status: Value = c
            .app
            .get_as(user, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["status"], "connected", "nothing lost");
    }
}

#[tokio::test]
async fn a_throttled_provider_sets_the_cooldown_from_retry_after() {
    let (c, user) = connected(Backend::Sqlite).await;
    c.emulator.set_faults(Faults {
        token: Some(HttpFault::throttled(120)),
        ..Faults::default()
    });
    c.set_expiry(user, -60).await;
    let response = c.token(user, "").await;
    assert_eq!(response.status(), 503);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&retry), "{retry}");
}

#[tokio::test]
async fn unknown_users_and_providers_get_one_constant_answer() {
    let (c, _) = connected(Backend::Sqlite).await;
    let stranger = Uuid::new_v4();
    let bodies = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 404);
        let mut v: Value = r.json().await.unwrap();
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    let unknown_user = bodies(c.token(stranger, "").await).await;
    let unknown_provider = bodies(
        c.app
            .get_service(&format!(
                "/v1/service/users/{stranger}/integrations/gmail/token"
            ))
            .await,
    )
    .await;
    let unconfigured = bodies(
        c.app
            .get_service(&format!(
                "/v1/service/users/{stranger}/integrations/google/token"
            ))
            .await,
    )
    .await;
    assert_eq!(unknown_user, unknown_provider);
    assert_eq!(unknown_user, unconfigured);
    assert_eq!(unknown_user["error"], "not_connected");
    let bad = c
        .app
        .get_service("/v1/service/users/not-a-uuid/integrations/outlook/token")
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_request");
}

#[tokio::test]
async fn the_token_endpoint_takes_service_keys_only() {
    let (c, user) = connected(Backend::Sqlite).await;
    let path = c.app.url(&format!(
        "/v1/service/users/{user}/integrations/outlook/token"
    ));
    let service_role = crate::support::sign_hs256(
        crate::support::JWT_SECRET,
        &serde_json::json!({"role": "service_role", "exp": crate::support::exp_in(600)}),
    );
    let (revoked, _) = celeste_connect::identity::service_key::generate("revoked").unwrap();
    for credential in [user_token(user), service_role, revoked] {
        let response = c
            .app
            .http
            .get(&path)
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
}

#[tokio::test]
async fn of_two_writers_from_one_version_the_second_writes_nothing() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        let store = c.app.store();
        let row = store
            .token_row(UserId(user), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let lease = Duration::from_secs(30);
        let claimed = store
            .claim_refresh_lease(row.id, first, lease)
            .await
            .unwrap()
            .expect("first claims");
        assert!(
            store
                .claim_refresh_lease(row.id, second, lease)
                .await
                .unwrap()
                .is_none(),
            "lease is exclusive"
        );
        let ring = test_keyring();
        let write = |marker: &str| Refreshed {
            access_token: ring
                .seal(
                    &token_place("access_token", UserId(user), ProviderId::Microsoft),
                    marker.as_bytes(),
                )
                .unwrap(),
            refresh_token: ring
                .seal(
                    &token_place("refresh_token", UserId(user), ProviderId::Microsoft),
                    b"rt",
                )
                .unwrap(),
            key_id: "t1".into(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            scopes: None,
        };
        assert!(
            store
                .store_refreshed(row.id, claimed.version, first, &write("first"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .store_refreshed(row.id, claimed.version, first, &write("second"))
                .await
                .unwrap(),
            "{backend:?}"
        );
        assert!(
            !store
                .store_refreshed(row.id, claimed.version, second, &write("third"))
                .await
                .unwrap()
        );
        let body = token_json(&c, user, "").await;
        assert_eq!(body["access_token"], "first", "{backend:?}");
    }
}

#[tokio::test]
async fn a_refresher_that_died_before_writing_is_recovered_with_one_refresh() {
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        s.refresh.lease = Duration::from_secs(2);
    })
    .await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    c.set_expiry(user, -60).await;

    // A replica claims the lease and gets the provider's answer, then dies before its write.
    let store = c.app.store();
    let row = store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .unwrap();
    let dead = Uuid::new_v4();
    store
        .claim_refresh_lease(row.id, dead, Duration::from_secs(2))
        .await
        .unwrap()
        .expect("claimed");
    let old_refresh = stored_refresh_token(&row);
    let token_url = c.emulator_base().join("common/oauth2/v2.0/token").unwrap();
    let answer = c
        .app
        .http
        .post(token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", old_refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(c.refreshes(), 1);

    // The next request waits out the dead lease, refreshes once with the stored (still valid)
    // refresh token, and succeeds; both old and new values never mix.
    let started = Instant::now();
    let body = token_json(&c, user, "").await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the lease"
    );
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("TOKMARK-at-")
    );
    assert_eq!(c.refreshes(), 2, "exactly one more refresh");
    let row = store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.version, 3,
        "connect, the expiry edit, and exactly one refresh write"
    );
}

/// Starts `celeste-connect serve` as its own process on the test database and emulator.
pub struct ServiceProcess {
    pub child: std::process::Child,
    pub base: String,
    /// Kept open so the process never writes to a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_service(c: &Connected, service_key_entry: &str) -> ServiceProcess {
    spawn_service_with(c, service_key_entry, &[])
}

/// [`spawn_service`] with more variables set.
pub fn spawn_service_with(
    c: &Connected,
    service_key_entry: &str,
    extra_env: &[(&str, &str)],
) -> ServiceProcess {
    use std::io::BufRead;
    let emulator = c.emulator_base().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_celeste-connect"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", &c.app.db.url)
        .env("CONNECT_LISTEN", "127.0.0.1:0")
        .env("CONNECT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("CONNECT_PUBLIC_URL", c.app.base.as_str())
        .env("CONNECT_APP_ORIGINS", APP_ORIGIN)
        .env("CONNECT_JWT_SECRET", crate::support::JWT_SECRET)
        .env("CONNECT_SERVICE_KEYS", service_key_entry)
        .env(
            "CONNECT_ENCRYPTION_KEYS",
            secrecy::ExposeSecret::expose_secret(&*TEST_KEY_ENTRY),
        )
        .env("CONNECT_DB_POOL_SIZE", "5")
        .env("CONNECT_KEEPALIVE_IDLE_HOURS", "0")
        // The storms here are one user's thousand fetches at once, by design.
        .env("CONNECT_RATE_LIMIT_TOKEN_PER_USER", "off")
        .env("MICROSOFT_CLIENT_ID", CLIENT_ID)
        .env("MICROSOFT_CLIENT_SECRET", CLIENT_SECRET)
        .env("MICROSOFT_AUTHORITY", &emulator)
        .env("MICROSOFT_GRAPH_URL", &emulator)
        .envs(extra_env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    ServiceProcess {
        child,
        base,
        _stdout: reader,
    }
}

#[tokio::test]
async fn a_thousand_concurrent_fetches_across_three_processes_refresh_exactly_once() {
    let (c, user) = connected(Backend::Postgres).await;
    let (key, entry) = celeste_connect::identity::service_key::generate("storm").unwrap();
    let processes: Vec<ServiceProcess> = (0..3).map(|_| spawn_service(&c, &entry)).collect();
    c.emulator.set_faults(Faults {
        latency_ms: 2000,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    c.set_expiry(user, -60).await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(400)
        .build()
        .unwrap();
    let started = Instant::now();
    let requests = (0..1000).map(|i| {
        let url = format!(
            "{}/v1/service/users/{user}/integrations/outlook/token",
            processes[i % 3].base
        );
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(key).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (
                status,
                body["access_token"].as_str().unwrap_or_default().to_owned(),
            )
        })
    });
    let results: Vec<(u16, String)> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let elapsed = started.elapsed();

    let failures: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let tokens: HashSet<&str> = results.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(tokens.len(), 1, "every caller gets the same new token");
    assert!(tokens.iter().all(|t| t.starts_with("TOKMARK-at-")));
    assert_eq!(c.refreshes(), 1, "the provider saw exactly one refresh");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    drop(processes);
}

#[tokio::test]
async fn the_proxy_calls_graph_with_the_users_token() {
    for backend in BACKENDS {
        let (c, user) = connected(backend).await;
        let response = c
            .app
            .http
            .get(c.app.url(&format!("/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me/messages?$top=3&$select=subject,from")))
            .bearer_auth(&c.app.service_key)
            .header("cookie", "leak=1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{backend:?}");
        assert!(response.headers().get("set-cookie").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["value"].as_array().unwrap().len(), 3);
        assert!(body["@odata.nextLink"].as_str().is_some());
        let me: Value = c
            .app
            .http
            .get(c.app.url(&format!(
                "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
            )))
            .bearer_auth(&c.app.service_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["mail"], "adele.vance@contoso.example");
    }
}

#[tokio::test]
async fn the_proxy_refreshes_once_and_retries_when_graph_refuses_the_token() {
    let (c, user) = connected(Backend::Sqlite).await;
    c.emulator.expire_access_tokens(ADELE);
    let response = c.proxy_get(user, "v1.0/me").await;
    assert_eq!(response.status(), 200);
    assert_eq!(c.refreshes(), 1);
}

#[tokio::test]
async fn the_proxy_passes_throttling_through() {
    let (c, user) = connected(Backend::Sqlite).await;
    c.emulator.set_faults(Faults {
        graph: Some(HttpFault::throttled(7)),
        ..Faults::default()
    });
    let response = c.proxy_get(user, "v1.0/me/messages").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests", "Graph's own body");
}

#[tokio::test]
async fn the_proxy_reaches_nothing_but_the_providers_api() {
    let (c, user) = connected(Backend::Sqlite).await;
    // Sent as raw bytes: an HTTP client library would resolve the dot segments itself.
    let address = c.app.base.trim_start_matches("http://").to_owned();
    for rest in [
        "%2e%2e/%2e%2e/v1/health",
        "v1.0/%2E%2E/x",
        "v1.0%2f..%2f..%2fx",
        "https:%2f%2fevil.example/x",
        "v1.0\\..\\x",
        "http:evil.example",
    ] {
        let request = format!(
            "GET /v1/service/users/{user}/integrations/outlook/proxy/{rest} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            c.app.service_key
        );
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{rest}: {}",
            answer.lines().next().unwrap_or_default()
        );
    }
    let response = c
        .app
        .http
        .get(c.app.url(&format!(
            "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
        )))
        .bearer_auth(user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a user token is not a service key");
}

#[tokio::test]
async fn keep_alive_refreshes_idle_connections_once_across_replicas() {
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        s.refresh.keepalive_idle = Some(Duration::from_secs(7 * 24 * 3600));
    })
    .await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for u in &users {
        assert_eq!(c.connect(*u, ADELE).await.status(), 200);
    }
    for u in &users[..2] {
        c.app
            .exec(
                "update connect.integration_tokens set last_refreshed_at = now() - interval '8 days' where user_id = $1::uuid and $2 = $2",
                "",
                *u,
                0,
            )
            .await;
    }
    // A second replica on the same database.
    let mut other = c.app.state.settings.clone();
    other.migrate_on_start = false;
    let replica = celeste_connect::http::AppState::build(other).await.unwrap();
    let (_running, running) = tokio::sync::watch::channel(false);
    let (a, b) = tokio::join!(
        celeste_connect::refresher::run_once(&c.app.state.broker, &running),
        celeste_connect::refresher::run_once(&replica.broker, &running)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.claimed + b.claimed, 2, "{a:?} {b:?}");
    assert_eq!(a.refreshed + b.refreshed, 2);
    assert_eq!(c.refreshes(), 2, "each idle connection refreshed once");
    let again = celeste_connect::refresher::run_once(&c.app.state.broker, &running)
        .await
        .unwrap();
    assert_eq!(again.claimed, 0, "nothing idle any more");
}
