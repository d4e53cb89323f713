//! The activity log, on SQLite and PostgreSQL: exact counts under concurrent callers, written
//! within about a second, nothing lost on a graceful shutdown, path templates in place of the
//! provider's ids and queries, the operator's filters and paging, the user's own history (and
//! nobody else's), the retention prune, and the switch that turns it off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use celeste_connect::activity::worker::{PRUNE_BATCH, prune};
use celeste_connect::activity::{
    ActivityEntry, ActivityFilter, ActivityKey, Actor, Kind, Recorder, Tally,
};
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::Store;
use celeste_connect::store::activity_batch::Batch;
use provider_emulator::demo_accounts;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    ALL_BACKENDS, BACKENDS, Backend, POSTGRES_BACKENDS, TestApp, TestDb, error_code, user_token,
    with_emulator_adjusted,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";

/// Every stored row of `user`, newest first.
async fn rows_of(store: &Store, user: Uuid) -> Vec<ActivityEntry> {
    store
        .query_activity(&ActivityFilter {
            user: Some(UserId(user)),
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Appends `n` journal values of this version's form that do not decode.
async fn plant_damaged_values(owner: &mut sqlx::PgConnection, n: usize) {
    for _ in 0..n {
        sqlx::query("insert into connect.activity_batches (counts) values ('\\x01ffff'::bytea)")
            .execute(&mut *owner)
            .await
            .unwrap();
    }
}

fn events(rows: &[ActivityEntry], kind: Kind) -> i64 {
    rows.iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.count)
        .sum()
}

/// Polls until `done` holds for `user`'s stored rows (at most 20 s; no assertion on speed).
async fn stored_eventually(
    store: &Store,
    user: Uuid,
    done: impl Fn(&[ActivityEntry]) -> bool,
) -> Vec<ActivityEntry> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = rows_of(store, user).await;
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "not written: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_token_fetches_are_counted_exactly_and_written_within_a_second() {
    for backend in BACKENDS {
        let c = with_emulator_adjusted(backend, demo_accounts(), |_| {}).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let http = c.app.http.clone();
                let url = c.app.url(&format!(
                    "/v1/service/users/{user}/integrations/outlook/token"
                ));
                let key = c.app.service_key.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let r = http.get(&url).bearer_auth(&key).send().await.unwrap();
                        assert_eq!(r.status(), 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rows = stored_eventually(c.app.store(), user, |rows| {
            events(rows, Kind::Token) >= 200 && events(rows, Kind::Connected) == 1
        })
        .await;
        assert_eq!(events(&rows, Kind::Token), 200, "{backend:?}");
        let tokens: Vec<&ActivityEntry> = rows.iter().filter(|r| r.kind == Kind::Token).collect();
        assert!(tokens.iter().all(|r| r.key_name.as_deref() == Some("tests")
            && r.actor == "key"
            && r.outcome == "ok"
            && r.provider == "microsoft"
            && r.method.is_none()
            && r.first_seen <= r.last_seen));
        assert!(tokens.len() <= 2, "one row per minute: {tokens:?}");
        let connected: Vec<&ActivityEntry> =
            rows.iter().filter(|r| r.kind == Kind::Connected).collect();
        assert_eq!(connected[0].actor, "user");
        assert_eq!(connected[0].key_name, None);
    }
}

#[tokio::test]
async fn recorder_counts_are_exact_under_concurrent_threads() {
    let recorder = Arc::new(Recorder::new(true));
    let users: Vec<UserId> = (0..4).map(|_| UserId(Uuid::new_v4())).collect();
    let key: Arc<str> = Arc::from("n8n");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (recorder, users, key) = (recorder.clone(), users.clone(), key.clone());
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    recorder.record(
                        users[(t + i) % users.len()],
                        ProviderId::Microsoft,
                        Kind::Token,
                        Actor::Key(key.clone()),
                        None,
                        "ok",
                    );
                }
            })
        })
        .collect();
    // Take while they record: nothing may be lost or counted twice between the takes.
    let mut total = 0u64;
    for _ in 0..20 {
        total += recorder.take().iter().map(|(_, t)| t.count).sum::<u64>();
        std::thread::yield_now();
    }
    for t in threads {
        t.join().unwrap();
    }
    total += recorder.take().iter().map(|(_, t)| t.count).sum::<u64>();
    assert_eq!(total, 40_000);
}

#[tokio::test]
async fn a_graceful_shutdown_writes_every_count_it_holds() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        // No periodic flush in this run: only the shutdown can write.
        let mut c = crate::support::with_emulator_on(db.clone(), demo_accounts(), |s| {
            s.activity.flush_every = Duration::from_secs(3600);
        })
        .await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        for _ in 0..37 {
            assert_eq!(c.token(user, "").await.status(), 200);
        }
        assert_eq!(c.proxy_get(user, "v1.0/me").await.status(), 200);
        assert!(
            rows_of(c.app.store(), user).await.is_empty(),
            "nothing written before the shutdown"
        );
        c.app.shut_down().await;

        let store = Store::connect(&db.url, Default::default()).await.unwrap();
        let rows = rows_of(&store, user).await;
        assert_eq!(events(&rows, Kind::Token), 37, "{backend:?}: {rows:?}");
        assert_eq!(events(&rows, Kind::Proxy), 1);
        assert_eq!(events(&rows, Kind::Connected), 1);
        store.close().await;
    }
}

#[tokio::test]
async fn proxied_calls_are_recorded_by_path_template_without_ids_or_queries() {
    for backend in BACKENDS {
        let c = with_emulator_adjusted(backend, demo_accounts(), |_| {}).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let answer = c
            .proxy_get(user, "v1.0/me/messages?$top=2&$search=%22invoice%22")
            .await;
        let first_class = format!("{}xx", answer.status().as_u16() / 100);
        let id = "AAMkAGI2TG93AAA%3D";
        let answer = c
            .proxy_get(user, &format!("v1.0/me/messages/{id}?$select=subject"))
            .await;
        let status_class = format!("{}xx", answer.status().as_u16() / 100);
        let rows =
            stored_eventually(c.app.store(), user, |rows| events(rows, Kind::Proxy) == 2).await;
        let mut calls: Vec<(String, String, String)> = rows
            .iter()
            .filter(|r| r.kind == Kind::Proxy)
            .map(|r| {
                (
                    r.method.clone().unwrap(),
                    r.path.clone().unwrap(),
                    r.outcome.clone(),
                )
            })
            .collect();
        calls.sort();
        assert_eq!(
            calls,
            [
                ("GET".into(), "/v1.0/me/messages".into(), first_class),
                ("GET".into(), "/v1.0/me/messages/{id}".into(), status_class),
            ],
            "{backend:?}"
        );
        let everything = format!("{rows:?}");
        for secret in ["invoice", "AAMkAGI2", "subject", "$top"] {
            assert!(!everything.contains(secret), "{secret} stored");
        }
    }
}

#[tokio::test]
async fn failed_fetches_are_recorded_with_their_error_code() {
    for backend in BACKENDS {
        let app = TestApp::start(backend).await;
        let user = Uuid::new_v4();
        let r = app
            .get_service(&format!(
                "/v1/service/users/{user}/integrations/outlook/token"
            ))
            .await;
        assert_eq!(error_code(r).await, "not_connected");
        let rows = stored_eventually(app.store(), user, |rows| !rows.is_empty()).await;
        assert_eq!(rows[0].kind, Kind::Token);
        assert_eq!(rows[0].outcome, "not_connected");
    }
}

fn key(minute: i64, user: Uuid, provider: ProviderId, kind: Kind, actor: &str) -> ActivityKey {
    ActivityKey {
        minute,
        user: UserId(user),
        provider,
        kind,
        actor: Actor::Key(Arc::from(actor)),
        method: None,
        path: None,
        outcome: "ok",
    }
}

fn tally(minute: i64, count: u64) -> Tally {
    Tally {
        count,
        first_ms: minute * 1000 + 5_000,
        last_ms: minute * 1000 + 50_000,
    }
}

#[tokio::test]
async fn operator_query_filters_by_user_key_provider_and_time_and_pages_newest_first() {
    for backend in BACKENDS {
        let app = TestApp::start(backend).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let now = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        let mut rows = Vec::new();
        for m in 0..30 {
            let minute = now - 60 * m;
            rows.push((
                key(minute, alice, ProviderId::Microsoft, Kind::Token, "n8n"),
                tally(minute, 2),
            ));
            rows.push((
                key(minute, bob, ProviderId::Google, Kind::Token, "backend"),
                tally(minute, 1),
            ));
        }
        app.store().add_activity(&rows).await.unwrap();
        // Adding the same minute again adds its counts.
        app.store().add_activity(&rows[..1]).await.unwrap();

        let page = |query: String| {
            let app = &app;
            async move {
                let r = app
                    .get_service(&format!("/v1/service/activity?{query}"))
                    .await;
                assert_eq!(r.status(), 200, "{query}");
                r.json::<Value>().await.unwrap()
            }
        };
        let alices = page(format!("user_id={alice}&limit=500")).await;
        let entries = alices["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 30);
        assert!(
            entries
                .iter()
                .all(|e| e["user_id"] == alice.to_string() && e["key_name"] == "n8n")
        );
        assert_eq!(entries[0]["count"], 4, "the newest minute was added twice");
        assert!(entries[0].get("id").is_none());

        let by_key = page("key=backend&provider=google&limit=500".into()).await;
        assert_eq!(by_key["entries"].as_array().unwrap().len(), 30);
        assert!(
            page("key=backend&provider=outlook".into()).await["entries"]
                .as_array()
                .unwrap()
                .is_empty()
        );

        let from = time::OffsetDateTime::from_unix_timestamp(now - 60 * 9).unwrap();
        let to = time::OffsetDateTime::from_unix_timestamp(now - 60 * 4).unwrap();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let ranged = page(format!("user_id={alice}&from={}&to={}", fmt(from), fmt(to))).await;
        assert_eq!(
            ranged["entries"].as_array().unwrap().len(),
            5,
            "minutes -9 … -5"
        );

        // Pages of 7 across both users: every row once, newest minute first.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("limit=7&cursor={c}"),
                None => "limit=7".into(),
            };
            let p = page(query).await;
            for e in p["entries"].as_array().unwrap() {
                seen.push((
                    e["minute"].as_str().unwrap().to_owned(),
                    e["user_id"].as_str().unwrap().to_owned(),
                ));
            }
            match p["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let ours: Vec<&(String, String)> = seen
            .iter()
            .filter(|(_, u)| *u == alice.to_string() || *u == bob.to_string())
            .collect();
        assert_eq!(ours.len(), 60, "{backend:?}");
        let minutes: Vec<&String> = seen.iter().map(|(m, _)| m).collect();
        let mut sorted = minutes.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(minutes, sorted, "newest first");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "no row twice");

        for bad in [
            "user_id=nope",
            "key=a:b",
            "provider=yahoo",
            "from=yesterday",
            "cursor=x",
            "limit=0",
            "limit=501",
        ] {
            let r = app
                .get_service(&format!("/v1/service/activity?{bad}"))
                .await;
            assert_eq!(r.status(), 400, "{bad}");
            assert_eq!(error_code(r).await, "invalid_request");
        }
        let r = app
            .http
            .get(app.url("/v1/service/activity"))
            .bearer_auth(user_token(alice))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a user token is not a service key");
    }
}

#[tokio::test]
async fn users_see_their_own_history_and_who_last_used_it_and_nobody_elses() {
    for backend in BACKENDS {
        let c = with_emulator_adjusted(backend, demo_accounts(), |_| {}).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(c.connect(alice, ADELE).await.status(), 200);
        assert_eq!(c.connect(bob, ADELE).await.status(), 200);
        assert_eq!(c.token(alice, "").await.status(), 200);
        assert_eq!(c.proxy_get(bob, "v1.0/me").await.status(), 200);
        let r = c
            .app
            .delete_as(alice, "/v1/integrations/outlook/disconnect")
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(c.connect(alice, ADELE).await.status(), 200);
        assert_eq!(c.connect(alice, ADELE).await.status(), 200);
        stored_eventually(c.app.store(), alice, |rows| {
            events(rows, Kind::Reconnected) == 1
        })
        .await;
        stored_eventually(c.app.store(), bob, |rows| events(rows, Kind::Proxy) == 1).await;

        let r = c
            .app
            .get_as(alice, "/v1/integrations/outlook/activity")
            .await;
        assert_eq!(r.status(), 200);
        let mine: Value = r.json().await.unwrap();
        assert_eq!(mine["provider"], "microsoft");
        assert_eq!(mine["last_used"]["key_name"], "tests");
        assert_eq!(mine["last_used"]["kind"], "token");
        let entries = mine["entries"].as_array().unwrap();
        let kinds: Vec<&str> = entries
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        for kind in ["connected", "token", "disconnected", "reconnected"] {
            assert!(kinds.contains(&kind), "{backend:?}: {kind} in {kinds:?}");
        }
        assert!(!kinds.contains(&"proxy"), "bob's call is not alice's");
        assert!(entries.iter().all(|e| e["user_id"] == alice.to_string()));

        // Someone who never connected sees nothing, and nothing of alice.
        let stranger: Value = c
            .app
            .get_as(Uuid::new_v4(), "/v1/integrations/outlook/activity")
            .await
            .json()
            .await
            .unwrap();
        assert!(stranger["entries"].as_array().unwrap().is_empty());
        assert!(stranger["last_used"].is_null());

        let r = c
            .app
            .http
            .get(c.app.url("/v1/integrations/outlook/activity"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .app
            .http
            .get(c.app.url("/v1/integrations/outlook/activity"))
            .bearer_auth(&c.app.service_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a service key is not a user");
        assert_eq!(
            c.app
                .get_as(alice, "/v1/integrations/yahoo/activity")
                .await
                .status(),
            404
        );
    }
}

#[tokio::test]
async fn retention_prunes_old_minutes_in_batches_and_keeps_the_rest() {
    for backend in BACKENDS {
        // The service's own pruner stays off: this test prunes by itself.
        let app = TestApp::start_with(TestDb::new(backend).await, |s| {
            s.activity.retention = None;
        })
        .await;
        let user = Uuid::new_v4();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        let old = now - 91 * 86_400;
        // More old rows than one prune statement deletes.
        let rows: Vec<(ActivityKey, Tally)> = (0..i64::from(PRUNE_BATCH) + 7)
            .map(|m| {
                (
                    key(
                        old - 60 * m,
                        user,
                        ProviderId::Microsoft,
                        Kind::Token,
                        "n8n",
                    ),
                    tally(old - 60 * m, 1),
                )
            })
            .chain([(
                key(
                    now - 89 * 86_400,
                    user,
                    ProviderId::Microsoft,
                    Kind::Proxy,
                    "n8n",
                ),
                tally(now, 1),
            )])
            .collect();
        for batch in rows.chunks(500) {
            app.store().add_activity(batch).await.unwrap();
        }
        let pruned = prune(app.store(), Duration::from_secs(90 * 86_400))
            .await
            .unwrap();
        assert_eq!(pruned, u64::from(PRUNE_BATCH) + 7, "{backend:?}");
        let left = rows_of(app.store(), user).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].kind, Kind::Proxy);
    }
}

#[tokio::test]
async fn with_activity_off_nothing_is_recorded() {
    for backend in [Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let mut c = crate::support::with_emulator_on(db.clone(), demo_accounts(), |s| {
            s.activity.enabled = false;
        })
        .await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        assert_eq!(c.token(user, "").await.status(), 200);
        c.app.shut_down().await;
        let store = Store::connect(&db.url, Default::default()).await.unwrap();
        assert!(rows_of(&store, user).await.is_empty());
        store.close().await;
    }
}

#[tokio::test]
async fn a_refused_grant_is_one_needs_reauth_row_by_the_service_beside_the_refused_fetches() {
    for backend in BACKENDS {
        let c = with_emulator_adjusted(backend, demo_accounts(), |_| {}).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        c.emulator.revoke_grant(ADELE);
        c.set_expiry(user, -60).await;
        for _ in 0..3 {
            assert_eq!(c.token(user, "").await.status(), 409);
        }
        let rows = stored_eventually(c.app.store(), user, |rows| {
            events(rows, Kind::NeedsReauth) == 1 && events(rows, Kind::Token) == 3
        })
        .await;
        let reauth: Vec<&ActivityEntry> = rows
            .iter()
            .filter(|r| r.kind == Kind::NeedsReauth)
            .collect();
        assert_eq!(
            (reauth[0].actor, reauth[0].key_name.as_deref()),
            ("service", None)
        );
        assert!(
            rows.iter()
                .filter(|r| r.kind == Kind::Token)
                .all(|r| r.outcome == "reauth_required"),
            "{backend:?}: {rows:?}"
        );
        let mine: Value = c
            .app
            .get_as(user, "/v1/integrations/outlook/activity")
            .await
            .json()
            .await
            .unwrap();
        assert!(
            mine["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "needs_reauth")
        );
    }
}

/// Counts still in the PostgreSQL journal (events, summed).
async fn journaled_events(db_url: &str) -> i64 {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db_url)
        .await
        .unwrap();
    let values: Vec<Vec<u8>> = sqlx::query_scalar("select counts from connect.activity_batches")
        .fetch_all(&mut c)
        .await
        .unwrap();
    values
        .iter()
        .map(|v| Batch::decode(v).unwrap().events())
        .sum()
}

#[tokio::test]
async fn replicas_journaling_and_folding_at_once_add_every_count_exactly_once() {
    for backend in ALL_BACKENDS {
        let db = TestDb::new(backend).await;
        let app = TestApp::start_with(db.clone(), |_| {}).await;
        // Four "replicas" journal while three of them (and the service's own flusher) fold.
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(Store::connect(&db.url, Default::default()).await.unwrap());
        }
        let users: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        let writers: Vec<_> = stores
            .iter()
            .cloned()
            .enumerate()
            .map(|(w, store)| {
                let users = users.clone();
                tokio::spawn(async move {
                    for batch in 0..10u64 {
                        // Every batch counts each user once or more, in the same two minutes.
                        let rows: Vec<(ActivityKey, Tally)> = users
                            .iter()
                            .enumerate()
                            .flat_map(|(i, u)| {
                                [minute, minute - 60].map(|m| {
                                    let count = 1 + (w as u64 + batch + i as u64) % 3;
                                    (
                                        key(m, *u, ProviderId::Microsoft, Kind::Token, "n8n"),
                                        tally(m, count),
                                    )
                                })
                            })
                            .collect();
                        // Journaled and never folded by their writer: a dead process's rows.
                        store.journal_activity(&rows).await.unwrap();
                    }
                })
            })
            .collect();
        let folders: Vec<_> = stores
            .iter()
            .take(3)
            .cloned()
            .map(|store| {
                tokio::spawn(async move {
                    for _ in 0..20 {
                        celeste_connect::activity::worker::fold_all(&store)
                            .await
                            .unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        for t in writers.into_iter().chain(folders) {
            t.await.unwrap();
        }
        celeste_connect::activity::worker::fold_all(&stores[0])
            .await
            .unwrap();
        let mut total = 0;
        for (i, user) in users.iter().enumerate() {
            let expected: i64 = (0..4u64)
                .flat_map(|w| (0..10u64).map(move |b| 2 * (1 + (w + b + i as u64) % 3)))
                .sum::<u64>() as i64;
            let rows = rows_of(&stores[0], *user).await;
            assert_eq!(
                events(&rows, Kind::Token),
                expected,
                "{backend:?} user {i}: {rows:?}"
            );
            assert_eq!(rows.len(), 2, "one row per minute: {rows:?}");
            total += expected;
        }
        assert!(total > 0);
        if backend != Backend::Sqlite {
            assert_eq!(journaled_events(&db.url).await, 0, "the journal is empty");
        }
        drop(app);
        for store in stores {
            store.close().await;
        }
    }
}

#[tokio::test]
async fn a_process_killed_after_journaling_has_its_counts_added_by_the_next_start() {
    // Neither the in-process service nor the killed process folds after its start.
    let c = crate::support::with_emulator_on(
        TestDb::new(Backend::Postgres).await,
        demo_accounts(),
        |s| s.activity.fold_every = Duration::from_secs(3600),
    )
    .await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let (key, entry) = celeste_connect::identity::service_key::generate("ops").unwrap();
    let mut first =
        crate::tokens::spawn_service_with(&c, &entry, &[("CONNECT_ACTIVITY_FOLD_SECS", "3600")]);
    let url = format!(
        "{}/v1/service/users/{user}/integrations/outlook/token",
        first.base
    );
    for _ in 0..25 {
        let r = c.app.http.get(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Flushed within about a second: in the journal, not yet in the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    while journaled_events(&c.app.db.url).await < 25 {
        assert!(Instant::now() < deadline, "never journaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no shutdown flush, no fold
    let _ = first.child.wait();
    assert_eq!(
        events(&rows_of(c.app.store(), user).await, Kind::Token),
        0,
        "nothing folded before the kill"
    );

    // The next process folds rows older than 2 × 1 s + 5 s that it did not write.
    let _second =
        crate::tokens::spawn_service_with(&c, &entry, &[("CONNECT_ACTIVITY_FOLD_SECS", "1")]);
    let rows = stored_eventually(c.app.store(), user, |rows| events(rows, Kind::Token) >= 25).await;
    assert_eq!(events(&rows, Kind::Token), 25, "{rows:?}");
    assert!(
        rows.iter()
            .filter(|r| r.kind == Kind::Token)
            .all(|r| r.key_name.as_deref() == Some("ops"))
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while journaled_events(&c.app.db.url).await > 0 {
        assert!(Instant::now() < deadline, "journal never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn replicas_starting_together_on_a_new_database_all_migrate_it() {
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let stores =
            futures::future::join_all((0..4).map(|_| Store::connect(&db.url, Default::default())))
                .await;
        for store in stores {
            store
                .unwrap_or_else(|e| panic!("{backend:?}: {e}"))
                .close()
                .await;
        }
    }
}

#[tokio::test]
async fn a_replicas_own_fold_adds_nothing_twice_when_another_took_its_rows() {
    use celeste_connect::activity::worker::{Journal, fold_all};
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url, Default::default()).await.unwrap();
        let other = Store::connect(&db.url, Default::default()).await.unwrap();
        let user = Uuid::new_v4();
        let recorder = Recorder::new(true);
        let name: Arc<str> = Arc::from("n8n");
        let record = |n: usize| {
            for _ in 0..n {
                recorder.record(
                    UserId(user),
                    ProviderId::Microsoft,
                    Kind::Token,
                    Actor::Key(name.clone()),
                    None,
                    "ok",
                );
            }
        };
        let mut journal = Journal::default();
        for n in [10, 20, 30] {
            record(n);
            journal.flush(&recorder, &store).await.unwrap();
        }
        // Another replica takes those three rows for a dead process's before this one folds.
        assert_eq!(fold_all(&other).await.unwrap(), 3);
        record(5);
        journal.flush(&recorder, &store).await.unwrap();
        // Its own fold finds three of its four rows gone: it adds the fourth from the journal.
        assert_eq!(journal.fold(&store, None).await.unwrap(), 1);
        assert_eq!(
            events(&rows_of(&store, user).await, Kind::Token),
            65,
            "{backend:?}"
        );
        // And the usual way: its summed counts, with its rows deleted.
        record(7);
        journal.flush(&recorder, &store).await.unwrap();
        assert_eq!(journaled_events(&db.url).await, 7);
        assert_eq!(journal.fold(&store, None).await.unwrap(), 1);
        assert_eq!(journaled_events(&db.url).await, 0);
        assert_eq!(
            events(&rows_of(&store, user).await, Kind::Token),
            72,
            "{backend:?}"
        );
        assert_eq!(
            journal.fold(&store, None).await.unwrap(),
            0,
            "nothing twice"
        );
        assert_eq!(events(&rows_of(&store, user).await, Kind::Token), 72);
        store.close().await;
        other.close().await;
    }
}

#[tokio::test]
async fn rows_an_older_version_journaled_are_added_and_unreadable_rows_are_left_without_holding_back_others()
 {
    use celeste_connect::activity::worker::fold_all;
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url, Default::default()).await.unwrap();
        let user = Uuid::new_v4();
        let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        // The journal's first form, as a replica of the previous version writes it: 4 + 2.
        for events in [4_i64, 2] {
            sqlx::query(
                "insert into connect.activity_journal \
                   (minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen) \
                 values (array[to_timestamp($3::float8)], array[$1::uuid], array['microsoft'], \
                   array['token'], array['n8n'], array[''], array[''], array['ok'], array[$2::int8], \
                   array[now()], array[now()])",
            )
            .bind(user)
            .bind(events)
            .bind(minute as f64)
            .execute(&mut owner)
            .await
            .unwrap();
        }
        // Damaged values of this version's form, more than one fold takes at a time, ahead of
        // the readable row: skipped, never holding it back.
        plant_damaged_values(&mut owner, 12).await;
        // This version's form: 3 more for the same row.
        store
            .journal_activity(&[(
                key(minute, user, ProviderId::Microsoft, Kind::Token, "n8n"),
                tally(minute, 3),
            )])
            .await
            .unwrap();
        // A value a newer version wrote (version byte 2): not this version's to read.
        sqlx::query("insert into connect.activity_batches (counts) values ('\\x02ff'::bytea)")
            .execute(&mut owner)
            .await
            .unwrap();

        assert_eq!(fold_all(&store).await.unwrap(), 3, "{backend:?}");
        let rows = rows_of(&store, user).await;
        assert_eq!(events(&rows, Kind::Token), 9, "{backend:?}: {rows:?}");
        assert_eq!(rows.len(), 1, "one row for the minute: {rows:?}");
        let left: Vec<Vec<u8>> =
            sqlx::query_scalar("select counts from connect.activity_batches order by id")
                .fetch_all(&mut owner)
                .await
                .unwrap();
        let mut expected = vec![vec![1_u8, 0xff, 0xff]; 12];
        expected.push(vec![2_u8, 0xff]);
        assert_eq!(
            left, expected,
            "{backend:?}: only the unreadable rows are left"
        );
        let legacy: i64 = sqlx::query_scalar("select count(*) from connect.activity_journal")
            .fetch_one(&mut owner)
            .await
            .unwrap();
        assert_eq!(legacy, 0, "the first form's rows are folded");
        assert_eq!(fold_all(&store).await.unwrap(), 0, "and it stays");
        store.close().await;
    }
}

#[tokio::test]
async fn a_fold_that_skips_damaged_rows_takes_each_readable_row_once() {
    use celeste_connect::activity::worker::{FOLD_BATCH, fold_all};
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.url, Default::default()).await.unwrap();
        let user = Uuid::new_v4();
        let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        // Three damaged values, then more readable ones than one pass of a fold takes: the
        // fold's first pass skips three and takes seven, its second must take new rows.
        plant_damaged_values(&mut owner, 3).await;
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        let readable = FOLD_BATCH as i64 + 2;
        for _ in 0..readable {
            store
                .journal_activity(&[(
                    key(minute, user, ProviderId::Microsoft, Kind::Token, "n8n"),
                    tally(minute, 1),
                )])
                .await
                .unwrap();
        }
        assert_eq!(
            fold_all(&store).await.unwrap(),
            readable as u64,
            "{backend:?}"
        );
        let rows = rows_of(&store, user).await;
        assert_eq!(
            events(&rows, Kind::Token),
            readable,
            "{backend:?}: {rows:?}"
        );
        let left: i64 = sqlx::query_scalar("select count(*) from connect.activity_batches")
            .fetch_one(&mut owner)
            .await
            .unwrap();
        assert_eq!(left, 3, "only the damaged rows are left");
        store.close().await;
    }
}

#[tokio::test]
async fn a_sqlite_flush_refused_part_way_writes_nothing_so_its_retry_counts_each_event_once() {
    use celeste_connect::store::UPSERT_BATCH;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect(&db.url, Default::default()).await.unwrap();
    let user = Uuid::new_v4();
    let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
    // More rows than one statement takes; the last (in the second statement) has no events,
    // which the log refuses.
    let mut rows: Vec<(ActivityKey, Tally)> = (0..UPSERT_BATCH + 10)
        .map(|n| {
            let actor = format!("key-{n}");
            (
                key(minute, user, ProviderId::Microsoft, Kind::Token, &actor),
                tally(minute, 1),
            )
        })
        .collect();
    rows.last_mut().unwrap().1 = tally(minute, 0);
    assert!(store.journal_activity(&rows).await.is_err());
    assert!(
        rows_of(&store, user).await.is_empty(),
        "the first statement's rows were not kept"
    );
    // What a flush does next: the same rows again, this time writable.
    rows.last_mut().unwrap().1 = tally(minute, 1);
    store.journal_activity(&rows).await.unwrap();
    let stored = rows_of(&store, user).await;
    assert_eq!(stored.len(), UPSERT_BATCH + 10);
    assert!(stored.iter().all(|r| r.count == 1), "each event once");
    store.close().await;
}
