//! Faults: the database stopped, restarted (`-m fast`, `-m immediate`), the provider slow or
//! failing, and replicas killed mid-refresh. Each test owns a throwaway PostgreSQL cluster, so
//! stopping it disturbs nothing else.

use std::time::{Duration, Instant};

use celeste_connect::config::Settings;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use provider_emulator::{Faults, HttpFault, LatencyTarget, demo_accounts};
use serde_json::Value;
use uuid::Uuid;

use crate::cache::eventually;
use crate::cluster::Cluster;
use crate::support::{
    BACKENDS, Backend, Connected, TestDb, error_code, user_token, with_emulator,
    with_emulator_adjusted, with_emulator_on,
};

#[tokio::test]
async fn a_test_cluster_survives_fast_and_immediate_restarts() {
    let cluster = Cluster::start("postgres");
    cluster
        .exec(
            "postgres",
            "create table t (n int); insert into t values (1)",
        )
        .await;
    cluster.stop_server("fast");
    cluster.start_server();
    cluster.exec("postgres", "insert into t values (2)").await;
    cluster.stop_server("immediate");
    cluster.start_server();
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.url("postgres", "postgres"))
            .await
            .unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2, "committed rows survive an immediate stop");
    assert!(cluster.log().contains("database system is ready"));
}

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";

/// The service (with the emulator) on a database of a throwaway cluster, migrated as its
/// superuser, with the token cache's listener up.
async fn on_cluster(cluster: &Cluster, adjust: impl FnOnce(&mut Settings)) -> Connected {
    cluster.exec("postgres", "create database connect").await;
    let url = cluster.admin_url("connect");
    celeste_connect::store::Store::migrate(&url).await.unwrap();
    let c = with_emulator_on(TestDb::at(url), demo_accounts(), adjust).await;
    eventually("the listener is up", || {
        c.app.state.broker.cache.is_enabled()
    })
    .await;
    c
}

/// Fetches `user`'s token until it is in the cache (the connect's own notification may drop
/// the first entry).
async fn cached_token(c: &Connected, user: Uuid) -> String {
    for _ in 0..100 {
        let response = c.token(user, "").await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        if c.app
            .state
            .broker
            .cache
            .get(UserId(user), ProviderId::Microsoft)
            .is_some()
        {
            return body["access_token"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the token never stayed in the cache");
}

/// What one request answered, and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body, started.elapsed())
}

#[tokio::test]
async fn a_database_outage_serves_tokens_in_memory_and_answers_503_fast() {
    let cluster = Cluster::start("postgres");
    let c = on_cluster(&cluster, |_| {}).await;
    let (cached_user, other_user) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(c.connect(cached_user, ADELE).await.status(), 200);
    assert_eq!(c.connect(other_user, ADELE).await.status(), 200);
    let token = cached_token(&c, cached_user).await;

    cluster.stop_server("fast");
    let token_url = |user: Uuid| {
        c.app
            .http
            .get(c.app.url(&format!(
                "/v1/service/users/{user}/integrations/outlook/token"
            )))
            .bearer_auth(&c.app.service_key)
    };
    let outage = Instant::now();
    let mut answers = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        let (status, _, body, took) = timed(token_url(cached_user)).await;
        assert_eq!(
            (status, body["access_token"].as_str()),
            (200, Some(token.as_str()))
        );
        assert!(
            took < Duration::from_secs(2),
            "a token in memory took {took:?}"
        );

        let (status, retry, body, took) = timed(token_url(other_user)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("storage_unavailable"))
        );
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            took < Duration::from_secs(2),
            "a token not in memory took {took:?}"
        );

        let status_request = c
            .app
            .http
            .get(c.app.url("/v1/integrations/outlook/status"))
            .bearer_auth(user_token(cached_user));
        let (status, retry, body, took) = timed(status_request).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("storage_unavailable"))
        );
        assert!(retry.is_some());
        assert!(took < Duration::from_secs(2), "status took {took:?}");

        let (status, retry, _, took) = timed(c.app.http.get(c.app.url("/v1/ready"))).await;
        assert_eq!(status, 503);
        assert!(retry.is_some());
        assert!(took < Duration::from_secs(2), "ready took {took:?}");
        answers += 1;
    }
    assert!(answers > 1);

    // The database comes back: everything recovers with no restart of the service.
    cluster.start_server();
    let back = Instant::now();
    loop {
        let (status, _, _, _) = timed(token_url(other_user)).await;
        let ready = c.app.http.get(c.app.url("/v1/ready")).send().await.unwrap();
        if status == 200 && ready.status() == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no recovery: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = c
        .app
        .get_as(cached_user, "/v1/integrations/outlook/status")
        .await;
    assert_eq!(status.status(), 200);
    eventually("the listener is back", || {
        c.app.state.broker.cache.is_enabled()
    })
    .await;
}

#[tokio::test]
async fn a_dead_replicas_lease_does_not_stall_callers_while_the_stored_token_works() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let before: Value = c.token(user, "").await.json().await.unwrap();
    // Two minutes left (inside the refresh skew), and a lease held by a replica that died.
    c.set_expiry(user, 120).await;
    c.app
        .exec(
            "update connect.integration_tokens set refresh_lease_owner = gen_random_uuid(), refresh_lease_until = now() + interval '30 seconds' where user_id = $1::uuid and $2 = $2",
            "",
            user,
            0,
        )
        .await;
    let started = Instant::now();
    let response = c.token(user, "").await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["access_token"], before["access_token"],
        "the stored token"
    );
    assert_eq!(c.refreshes(), 0);
    // A caller that needs longer than the stored token lives still waits for a refresh.
    let long =
        tokio::time::timeout(Duration::from_millis(500), c.token(user, "?min_ttl=600")).await;
    assert!(
        long.is_err(),
        "min_ttl beyond the stored token waits for the lease"
    );
}

#[tokio::test]
async fn the_claim_itself_respects_the_cooldown() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        c.app
            .exec(
                "update connect.integration_tokens set refresh_cooldown_until = now() + interval '30 seconds' where user_id = $1::uuid and $2 = $2",
                "update integration_tokens set refresh_cooldown_until = unixepoch() + 30 where user_id = $1 and $2 = $2",
                user,
                0,
            )
            .await;
        let row = c
            .app
            .store()
            .token_row(UserId(user), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        let claimed = c
            .app
            .store()
            .claim_refresh_lease(row.id, Uuid::new_v4(), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(claimed.is_none(), "{backend:?}: no lease during a cooldown");
    }
}

#[tokio::test]
async fn the_proxy_answers_503_when_graph_refuses_the_token_and_the_refresh_fails() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    c.emulator.expire_access_tokens(ADELE);
    c.emulator.set_faults(Faults {
        token: Some(HttpFault::server_error(503)),
        ..Faults::default()
    });
    let response = c.proxy_get(user, "v1.0/me").await;
    assert_eq!(response.status(), 503, "not Graph's 401");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(response).await, "provider_unavailable");
}

#[tokio::test]
async fn the_request_that_refreshes_caches_its_own_new_token() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        eventually("the cache is on", || c.app.state.broker.cache.is_enabled()).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        c.set_expiry(user, -60).await;
        let refreshed: Value = c.token(user, "").await.json().await.unwrap();
        assert_eq!(c.refreshes(), 1);
        let stored = c
            .app
            .store()
            .token_row(UserId(user), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        let cached = || {
            c.app
                .state
                .broker
                .cache
                .get(UserId(user), ProviderId::Microsoft)
                .map(|t| t.version)
        };
        assert_eq!(
            cached(),
            Some(stored.version),
            "{backend:?}: cached at once"
        );
        // The notification of our own write arrives and must not drop it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cached(), Some(stored.version), "{backend:?}: still cached");
        let again: Value = c.token(user, "").await.json().await.unwrap();
        assert_eq!(again["access_token"], refreshed["access_token"]);
        assert_eq!(c.refreshes(), 1);
    }
}

/// Polls until `user`'s row has a refresh lease held (or not).
async fn wait_for_lease(c: &Connected, user: Uuid, held: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_owner(c, user).await.is_some() != held {
        assert!(Instant::now() < deadline, "lease never became held={held}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn lease_owner(c: &Connected, user: Uuid) -> Option<Uuid> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&c.app.db.url)
        .await
        .unwrap();
    sqlx::query_scalar(
        "select refresh_lease_owner from connect.integration_tokens where user_id = $1",
    )
    .bind(user)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn shutdown_lets_a_refresh_finish_and_gives_its_lease_back() {
    let mut c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    c.set_expiry(user, -60).await;
    c.emulator.set_faults(Faults {
        latency_ms: 1500,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    // The caller gives up; the refresh it started goes on.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), c.token(user, "")).await;
    assert!(gave_up.is_err());
    wait_for_lease(&c, user, true).await;
    c.app.shut_down().await;
    assert_eq!(lease_owner(&c, user).await, None, "no lease left behind");
    assert_eq!(c.refreshes(), 1);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&c.app.db.url)
        .await
        .unwrap();
    let refreshed: bool = sqlx::query_scalar(
        "select expires_at > now() from connect.integration_tokens where user_id = $1",
    )
    .bind(user)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        refreshed,
        "the refresh under way was stored before the process ended"
    );
}

#[tokio::test]
async fn a_refresh_whose_write_meets_a_long_database_outage_still_answers_with_the_token() {
    let cluster = Cluster::start("postgres");
    let c = on_cluster(&cluster, |_| {}).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let old: Value = c.token(user, "").await.json().await.unwrap();
    c.set_expiry(user, -60).await;
    c.emulator.set_faults(Faults {
        latency_ms: 500,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    let fetch = tokio::spawn({
        let request = c
            .app
            .http
            .get(c.app.url(&format!(
                "/v1/service/users/{user}/integrations/outlook/token"
            )))
            .bearer_auth(&c.app.service_key);
        async move { request.send().await.unwrap() }
    });
    wait_for_lease(&c, user, true).await;
    // Down while the provider answers and for longer than any connection wait.
    cluster.stop_server("fast");
    tokio::time::sleep(Duration::from_secs(12)).await;
    cluster.start_server();
    let response = fetch.await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the provider's new token, not a 500"
    );
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["access_token"], old["access_token"]);
    assert_eq!(c.refreshes(), 1);
    // Once the database answers, the lease is given back and the connection works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_owner(&c, user).await.is_some() {
        assert!(Instant::now() < deadline, "the lease was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.emulator.set_faults(Faults::default());
    assert_eq!(c.token(user, "").await.status(), 200);
}

#[tokio::test]
async fn a_keep_alive_pass_never_refreshes_a_row_whose_lease_ran_out() {
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        s.refresh.keepalive_idle = Some(Duration::from_secs(3600));
        s.refresh.keepalive_concurrency = 1;
        s.refresh.lease = Duration::from_secs(2);
        s.refresh.provider_timeout = Duration::from_secs(1);
    })
    .await;
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        assert_eq!(c.connect(*user, ADELE).await.status(), 200);
        c.app
            .exec(
                "update connect.integration_tokens set last_refreshed_at = now() - interval '2 hours' where user_id = $1::uuid and $2 = $2",
                "",
                *user,
                0,
            )
            .await;
    }
    c.emulator.set_faults(Faults {
        latency_ms: 900,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    let mut settings = c.app.state.settings.clone();
    settings.migrate_on_start = false;
    let replica = celeste_connect::http::AppState::build(settings)
        .await
        .unwrap();
    let (_running, running) = tokio::sync::watch::channel(false);
    // One replica's pass; the other starts its own once the first one's lease has run out.
    let first = celeste_connect::refresher::run_once(&c.app.state.broker, &running);
    let second = async {
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let mut passes = 0;
        while celeste_connect::refresher::run_once(&replica.broker, &running)
            .await
            .unwrap()
            .claimed
            > 0
        {
            passes += 1;
        }
        passes
    };
    let (first, _) = tokio::join!(first, second);
    first.unwrap();
    let (_running2, running2) = tokio::sync::watch::channel(false);
    while celeste_connect::refresher::run_once(&c.app.state.broker, &running2)
        .await
        .unwrap()
        .claimed
        > 0
    {}
    assert_eq!(
        c.refreshes(),
        4,
        "each idle connection refreshed exactly once"
    );
}

#[tokio::test]
async fn a_replica_killed_mid_refresh_stalls_no_caller_while_the_stored_token_works() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let stored: Value = c.token(user, "").await.json().await.unwrap();
    let (key, entry) = celeste_connect::identity::service_key::generate("victim").unwrap();
    let mut victim = crate::tokens::spawn_service(&c, &entry);
    c.emulator.set_faults(Faults {
        latency_ms: 3000,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    c.set_expiry(user, 120).await;
    // The victim starts a refresh and dies holding its lease.
    let request = c
        .app
        .http
        .get(format!(
            "{}/v1/service/users/{user}/integrations/outlook/token",
            victim.base
        ))
        .bearer_auth(&key)
        .send();
    let pending = tokio::spawn(request);
    wait_for_lease(&c, user, true).await;
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    pending.abort();
    let started = Instant::now();
    let response = c.token(user, "").await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["access_token"], stored["access_token"]);
}

#[tokio::test]
async fn a_database_crash_and_restart_is_recovered_without_restarting_the_service() {
    let cluster = Cluster::start("postgres");
    let c = on_cluster(&cluster, |_| {}).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    cluster.stop_server("immediate");
    let down = c.app.get_as(user, "/v1/integrations/outlook/status").await;
    assert_eq!(down.status(), 503);
    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.app.get_as(user, "/v1/integrations/outlook/status").await;
        let token = c.token(user, "").await;
        if status.status() == 200 && token.status() == 200 {
            let body: Value = status.json().await.unwrap();
            assert_eq!(body["status"], "connected", "nothing lost");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after a crash restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the listener is back", || {
        c.app.state.broker.cache.is_enabled()
    })
    .await;
}

#[tokio::test]
async fn a_busy_pool_is_waited_for_not_taken_for_an_outage() {
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        s.db_pool_size = 1;
        // No cache listener: it would hold the only pooled connection.
        s.token_cache_capacity = 0;
        s.status_cache_capacity = 0;
    })
    .await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let celeste_connect::store::Store::Postgres(pg) = c.app.store() else {
        unreachable!()
    };
    // Someone holds the only connection for longer than one wait for it.
    let held = pg.pool().acquire().await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(held);
    });
    let started = Instant::now();
    let response = c.token(user, "").await;
    assert_eq!(response.status(), 200, "waited {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(2000));
    release.await.unwrap();
    assert!(!c.app.store().is_unreachable(), "no outage was declared");
}
