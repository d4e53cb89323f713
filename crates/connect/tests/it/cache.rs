//! The token cache is never wrong: a disconnected or reauth-needed connection is never served
//! from it, on the replica that made the change and on every other replica (PostgreSQL
//! LISTEN/NOTIFY), and it is flushed whenever its listener loses the database.

use std::time::{Duration, Instant};

use celeste_connect::http::AppState;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use provider_emulator::demo_accounts;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{BACKENDS, Backend, Connected, with_emulator};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";

async fn token(c: &Connected, user: Uuid) -> (u16, String) {
    let response = c.token(user, "").await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["access_token"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Waits (bounded) until `check` holds; the cache listener works asynchronously.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn replica_of(c: &Connected) -> AppState {
    let mut settings = c.app.state.settings.clone();
    settings.migrate_on_start = false;
    AppState::build(settings).await.unwrap()
}

#[tokio::test]
async fn a_disconnected_connection_is_never_served_from_the_cache() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let cache = &c.app.state.broker.cache;
        if backend == Backend::Postgres {
            eventually("the listener is up", || cache.is_enabled()).await;
        }
        // The notification of the connect's own insert may still be on its way and drop the
        // first entry (correctly: the cache only ever errs towards the database); a fetch after
        // it has arrived stays cached.
        let mut first = String::new();
        for _ in 0..100 {
            let (status, access) = token(&c, user).await;
            assert_eq!(status, 200);
            first = access;
            if cache.get(UserId(user), ProviderId::Microsoft).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            cache.get(UserId(user), ProviderId::Microsoft).is_some(),
            "{backend:?}: cached"
        );
        let refreshes = c.refreshes();
        assert_eq!(
            token(&c, user).await.1,
            first,
            "served again without a provider call"
        );
        assert_eq!(c.refreshes(), refreshes);
        assert_eq!(
            c.app
                .delete_as(user, "/v1/integrations/outlook/disconnect")
                .await
                .status(),
            204
        );
        assert_eq!(token(&c, user).await.0, 404, "{backend:?}: gone at once");

        // Reconnecting serves the new connection's token, not the old one.
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let (status, second) = token(&c, user).await;
        assert_eq!(status, 200);
        assert_ne!(second, first, "{backend:?}");
    }
}

#[tokio::test]
async fn a_connection_that_needs_reauth_is_never_served_from_the_cache() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        if backend == Backend::Postgres {
            eventually("the listener is up", || {
                c.app.state.broker.cache.is_enabled()
            })
            .await;
        }
        assert_eq!(token(&c, user).await.0, 200);
        c.emulator.revoke_grant(ADELE);
        // Inside the skew: the next request refreshes, the provider refuses.
        c.set_expiry(user, 60).await;
        assert_eq!(token(&c, user).await.0, 409);
        assert!(
            c.app
                .state
                .broker
                .cache
                .get(UserId(user), ProviderId::Microsoft)
                .is_none()
        );
        assert_eq!(token(&c, user).await.0, 409, "{backend:?}");
    }
}

#[tokio::test]
async fn other_replicas_drop_their_entry_when_one_replica_disconnects_or_marks_reauth() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(c.connect(alice, ADELE).await.status(), 200);
    assert_eq!(c.connect(bob, ADELE).await.status(), 200);
    let other = replica_of(&c).await;
    let here = &c.app.state;
    eventually("both listeners are up", || {
        here.broker.cache.is_enabled() && other.broker.cache.is_enabled()
    })
    .await;

    // Both users' tokens cached on this replica (fetched again if the notification of a
    // connect's insert arrived after the first fetch and dropped its entry).
    for _ in 0..100 {
        assert_eq!(token(&c, alice).await.0, 200);
        assert_eq!(token(&c, bob).await.0, 200);
        if here.broker.cache.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(here.broker.cache.len(), 2);

    // The other replica disconnects alice: the notification removes her entry here.
    celeste_connect::broker::disconnect(
        &other.broker,
        UserId(alice),
        ProviderId::Microsoft,
        celeste_connect::activity::Actor::User,
    )
    .await
    .unwrap();
    eventually("alice's entry is dropped", || {
        here.broker
            .cache
            .get(UserId(alice), ProviderId::Microsoft)
            .is_none()
    })
    .await;
    assert_eq!(token(&c, alice).await.0, 404);
    assert!(
        here.broker
            .cache
            .get(UserId(bob), ProviderId::Microsoft)
            .is_some(),
        "bob's entry stays"
    );

    // The other replica finds bob's grant revoked while refreshing: needs_reauth everywhere.
    c.emulator.revoke_grant(ADELE);
    c.app
        .exec(
            "update connect.integration_tokens set expires_at = now() - interval '1 minute', version = version + 1 where user_id = $1::uuid and $2 = $2",
            "",
            bob,
            0,
        )
        .await;
    eventually("bob's entry is dropped after the expiry write", || {
        here.broker
            .cache
            .get(UserId(bob), ProviderId::Microsoft)
            .is_none()
    })
    .await;
    let answer = celeste_connect::broker::tokens::fresh_token(
        &other.broker,
        UserId(bob),
        ProviderId::Microsoft,
        Duration::ZERO,
        None,
    )
    .await;
    assert!(matches!(
        answer,
        Err(celeste_connect::error::Error::ReauthRequired)
    ));
    assert_eq!(token(&c, bob).await.0, 409);
}

#[tokio::test]
async fn the_cache_is_flushed_and_bypassed_while_its_listener_is_down() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let cache = &c.app.state.broker.cache;
    eventually("the listener is up", || cache.is_enabled()).await;
    // The connect's own notification may still be on its way and veto the first put.
    for _ in 0..100 {
        assert_eq!(token(&c, user).await.0, 200);
        if cache.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.len(), 1);

    kill_cache_listener(&c.app.db.url).await;
    eventually("the cache was flushed", || cache.is_empty()).await;
    // Requests keep working (from the database), and the listener comes back.
    assert_eq!(token(&c, user).await.0, 200);
    eventually("the listener is back", || cache.is_enabled()).await;
}

/// Kills the cache listener's database session of the service on `database_url` (what a
/// database restart does to it).
pub async fn kill_cache_listener(database_url: &str) {
    let database = database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&crate::support::admin_url())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and query ilike 'listen%'",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the listener's session was found");
}
