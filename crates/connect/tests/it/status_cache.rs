//! The status cache (what a settings page reads, from memory) is never wrong: the replica that
//! changes a connection shows it at once, every other replica as soon as PostgreSQL's
//! notification arrives (a new row included, though the notification names no user), and with
//! the cache off (and always on SQLite) every read is the user-scoped read.

use std::time::Duration;

use celeste_connect::model::UserId;
use provider_emulator::demo_accounts;
use serde_json::Value;
use uuid::Uuid;

use crate::cache::{eventually, kill_cache_listener};
use crate::support::{
    ALL_BACKENDS, BACKENDS, Backend, Connected, TestApp, TestDb, with_emulator,
    with_emulator_adjusted,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
const STATUS: &str = "/v1/integrations/outlook/status";

async fn status(app: &TestApp, user: Uuid) -> Value {
    let response = app.get_as(user, STATUS).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Reads until the answer is kept in memory (on PostgreSQL the notification of a write made
/// just before may still be on its way and drop the first entry), and returns it.
async fn cached_status(app: &TestApp, user: Uuid) -> Value {
    let statuses = &app.state.broker.statuses;
    if app.db.url.starts_with("sqlite") {
        // No status cache on SQLite: every read is the database's.
        assert!(!statuses.is_enabled());
        return status(app, user).await;
    }
    for _ in 0..200 {
        let answer = status(app, user).await;
        if statuses.get(UserId(user)).is_some() {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the status was never kept in memory");
}

/// Changes the stored email behind the service's back, without a new version: no notification,
/// no local write. Only a read from the database can see it.
async fn change_email_silently(app: &TestApp, user: Uuid, email: &str) {
    app.exec(
        &format!("update connect.integration_tokens set provider_email = '{email}' where user_id = $1::uuid and $2 > 0"),
        &format!("update integration_tokens set provider_email = '{email}' where user_id = $1 and $2 > 0"),
        user,
        1,
    )
    .await;
}

#[tokio::test]
async fn status_reads_come_from_memory_and_without_the_cache_from_the_database() {
    for backend in ALL_BACKENDS {
        for cache_on in [true, false] {
            // SQLite has no status cache, whatever the setting.
            let cached = cache_on && backend != Backend::Sqlite;
            let app = TestApp::start_with(TestDb::new(backend).await, |s| {
                if !cache_on {
                    s.status_cache_capacity = 0;
                }
            })
            .await;
            let statuses = &app.state.broker.statuses;
            if cached && backend != Backend::Sqlite {
                eventually("the listener is up", || statuses.is_enabled()).await;
            }
            let alice = Uuid::new_v4();
            app.seed_connection(alice, "alice@example.com").await;
            let first = if cached {
                cached_status(&app, alice).await
            } else {
                status(&app, alice).await
            };
            assert_eq!(first["provider_email"], "alice@example.com");
            change_email_silently(&app, alice, "changed@example.com").await;
            let (expected, what) = if cached {
                ("alice@example.com", "served from memory")
            } else {
                ("changed@example.com", "read from the database")
            };
            for _ in 0..3 {
                assert_eq!(
                    status(&app, alice).await["provider_email"],
                    expected,
                    "{backend:?}: {what}"
                );
                let list: Value = app
                    .get_as(alice, "/v1/integrations")
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    list["integrations"][0]["provider_email"], expected,
                    "{backend:?}: the list, {what}"
                );
            }
            assert_eq!(statuses.get(UserId(alice)).is_some(), cached);
            // Row-level security decides on a miss: bob sees none of alice's connection.
            let bob = status(&app, Uuid::new_v4()).await;
            assert_eq!(bob["status"], "not_connected");
            assert_eq!(bob["provider_email"], Value::Null);
        }
    }
}

#[tokio::test]
async fn the_replica_that_changes_a_connection_shows_it_at_once() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        if backend == Backend::Postgres {
            let statuses = &c.app.state.broker.statuses;
            eventually("the listener is up", || statuses.is_enabled()).await;
        }
        assert_eq!(cached_status(&c.app, user).await["status"], "not_connected");
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        // No wait: the connect itself dropped the entry before answering.
        let connected = status(&c.app, user).await;
        assert_eq!(connected["status"], "connected", "{backend:?}");
        assert!(connected["provider_email"].is_string());
        cached_status(&c.app, user).await;
        assert_eq!(
            c.app
                .delete_as(user, "/v1/integrations/outlook/disconnect")
                .await
                .status(),
            204
        );
        assert_eq!(
            status(&c.app, user).await["status"],
            "not_connected",
            "{backend:?}: disconnected at once"
        );
        cached_status(&c.app, user).await;
        // needs_reauth, found by a token fetch on this replica, shows at once too.
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        cached_status(&c.app, user).await;
        c.emulator.revoke_grant(ADELE);
        c.set_expiry(user, 60).await;
        assert_eq!(c.token(user, "").await.status(), 409);
        assert_eq!(
            status(&c.app, user).await["status"],
            "needs_reauth",
            "{backend:?}"
        );
    }
}

/// Waits until `user`'s status on `app` satisfies `check` (another replica's write reaches this
/// one through PostgreSQL's notification).
async fn until_status(app: &TestApp, user: Uuid, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check(&status(app, user).await) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_replicas_writes_reach_cached_statuses() {
    let c: Connected = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |_| {}).await;
    let statuses = &c.app.state.broker.statuses;
    eventually("the listener is up", || statuses.is_enabled()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    // Both cached as not connected; then a row is inserted for alice by another writer. The
    // notification names only the new row, so every entry goes (bob's too), and alice's next
    // read finds her connection.
    assert_eq!(
        cached_status(&c.app, alice).await["status"],
        "not_connected"
    );
    cached_status(&c.app, bob).await;
    // Written through the store directly: exactly what another replica's write looks like here
    // (no local invalidation, only the notification).
    crate::support::seed_connection(c.app.store(), alice, "alice@example.com").await;
    until_status(&c.app, alice, "alice's new connection shows", |s| {
        s["status"] == "connected"
    })
    .await;
    assert_eq!(status(&c.app, bob).await["status"], "not_connected");

    // An update with a new version (what a refresh or a reconnect elsewhere writes) drops
    // alice's entry only.
    cached_status(&c.app, alice).await;
    cached_status(&c.app, bob).await;
    c.app
        .exec(
            "update connect.integration_tokens set provider_email = 'other@example.com', version = version + 1 where user_id = $1::uuid and $2 > 0",
            "",
            alice,
            1,
        )
        .await;
    until_status(&c.app, alice, "the new email shows", |s| {
        s["provider_email"] == "other@example.com"
    })
    .await;
    assert!(
        statuses.get(UserId(bob)).is_some(),
        "bob's entry stays: the change named alice's row"
    );

    // A delete elsewhere.
    cached_status(&c.app, alice).await;
    c.app
        .exec(
            "delete from connect.integration_tokens where user_id = $1::uuid and $2 > 0",
            "",
            alice,
            1,
        )
        .await;
    until_status(&c.app, alice, "the disconnect shows", |s| {
        s["status"] == "not_connected"
    })
    .await;
}

#[tokio::test]
async fn a_listener_that_lost_its_connection_empties_the_status_cache() {
    let app = TestApp::start(Backend::Postgres).await;
    let statuses = &app.state.broker.statuses;
    eventually("the listener is up", || statuses.is_enabled()).await;
    let alice = Uuid::new_v4();
    app.seed_connection(alice, "alice@example.com").await;
    cached_status(&app, alice).await;

    kill_cache_listener(&app.db.url).await;
    eventually("the status cache was emptied", || statuses.is_empty()).await;
    // What the listener cannot hear while it is down is read from the database.
    change_email_silently(&app, alice, "changed@example.com").await;
    assert_eq!(
        status(&app, alice).await["provider_email"],
        "changed@example.com"
    );
    eventually("the listener is back", || statuses.is_enabled()).await;
    assert_eq!(
        cached_status(&app, alice).await["provider_email"],
        "changed@example.com"
    );
}
