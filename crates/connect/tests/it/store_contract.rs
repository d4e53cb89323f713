//! The storage contract, one body run against every backend: PostgreSQL (also shaped as
//! Supabase builds it), SQLite, and the in-memory store the use-case tests run on, so that
//! one cannot drift from the databases.

use std::time::Duration;

use celeste_connect::model::{ConnectionState, UserId};
use celeste_connect::provider::ProviderId;
use celeste_connect::store::{
    Flow, ListFilter, Refreshed, ReturnMode, Store, StoreOptions, TokenRow,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{ALL_BACKENDS, Backend, TestDb, seed_connection};

async fn open(db: &TestDb) -> Store {
    Store::connect(
        &db.url,
        StoreOptions {
            pool_size: 3,
            read_pool_size: 3,
            migrate: true,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn connection_lifecycle_behaves_the_same_on_both_backends() {
    for backend in ALL_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = open(&db).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());

        assert!(
            store
                .user_connection(UserId(alice), ProviderId::Microsoft)
                .await
                .unwrap()
                .is_none()
        );
        seed_connection(&store, alice, "alice@contoso.example").await;
        seed_connection(&store, bob, "bob@contoso.example").await;

        let first = store
            .user_connection(UserId(alice), ProviderId::Microsoft)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.state, ConnectionState::Connected, "{backend:?}");
        assert_eq!(
            first.provider_email.as_deref(),
            Some("alice@contoso.example")
        );
        assert_eq!(
            first.scopes,
            ["https://graph.microsoft.com/Mail.Read", "offline_access"]
        );

        // A reconnect replaces the row in place: still one row, new data.
        seed_connection(&store, alice, "alice.new@contoso.example").await;
        let mine = store.user_connections(UserId(alice)).await.unwrap();
        assert_eq!(mine.len(), 1, "{backend:?}: one row per user and provider");
        assert_eq!(
            mine[0].provider_email.as_deref(),
            Some("alice.new@contoso.example")
        );
        assert_eq!(
            mine[0].created_at, first.created_at,
            "{backend:?}: connected_at survives a reconnect"
        );

        // Deleting is idempotent and touches only the caller's row.
        assert!(
            store
                .delete_connection(
                    UserId(alice),
                    ProviderId::Microsoft,
                    celeste_connect::webhooks::event::DisconnectedBy::User,
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_connection(
                    UserId(alice),
                    ProviderId::Microsoft,
                    celeste_connect::webhooks::event::DisconnectedBy::User,
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .user_connection(UserId(alice), ProviderId::Microsoft)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .user_connection(UserId(bob), ProviderId::Microsoft)
                .await
                .unwrap()
                .is_some()
        );
        store.ping().await.unwrap();
        store.close().await;
    }
}

#[tokio::test]
async fn listing_pages_through_every_connection_once() {
    for backend in ALL_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = open(&db).await;
        let mut users: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();
        for u in &users {
            seed_connection(&store, *u, &format!("{u}@example.com")).await;
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_connections(&ListFilter {
                    provider: Some(ProviderId::Microsoft),
                    state: None,
                    after,
                    limit: 3,
                })
                .await
                .unwrap();
            seen.extend(page.iter().map(|c| c.user_id));
            if page.len() < 3 {
                break;
            }
            after = page.last().map(|c| c.id);
        }
        seen.sort();
        users.sort();
        assert_eq!(seen, users, "{backend:?}");
        let reauth = store
            .list_connections(&ListFilter {
                provider: None,
                state: Some(ConnectionState::NeedsReauth),
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(reauth.is_empty(), "{backend:?}");
    }
}

#[tokio::test]
async fn migrations_apply_twice_without_change() {
    for backend in ALL_BACKENDS {
        let db = TestDb::new(backend).await;
        Store::migrate(&db.url).await.unwrap();
        Store::migrate(&db.url).await.unwrap();
        let store = open(&db).await;
        store.ping().await.unwrap();
    }
}

/// Whether another user is connected to the same provider account (asked at a Google
/// disconnect) is answered from the `(provider, provider_user_id)` index on both databases, not
/// by reading the whole table.
#[tokio::test]
async fn the_shared_account_question_is_answered_from_an_index() {
    use sqlx::Connection;
    let condition = "where provider = 'google' and provider_user_id = 'g-1' \
                     and user_id <> '00000000-0000-0000-0000-000000000001'";

    let db = TestDb::new(Backend::Postgres).await;
    Store::migrate(&db.url).await.unwrap();
    let mut pg = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // An empty table is read whole whatever indexes it has; with sequential scans priced out
    // the plan shows whether an index fits the question.
    sqlx::query("set enable_seqscan = off")
        .execute(&mut pg)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "explain select exists (select 1 from connect.integration_tokens {condition})"
    )))
    .fetch_all(&mut pg)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("integration_tokens_account"), "{plan}");

    let db = TestDb::new(Backend::Sqlite).await;
    Store::migrate(&db.url).await.unwrap();
    let mut lite = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "explain query plan select exists (select 1 from integration_tokens {condition})"
    )))
    .fetch_all(&mut lite)
    .await
    .unwrap();
    let plan: Vec<&str> = plan
        .iter()
        .map(|(_, _, _, detail)| detail.as_str())
        .collect();
    assert!(
        plan.iter()
            .any(|d| d.contains("USING") && d.contains("integration_tokens_account")),
        "{plan:?}"
    );
}

/// The stores the contract is checked on: in memory, SQLite and PostgreSQL (each database kept
/// alive beside its store).
async fn each_store() -> Vec<(&'static str, Store, Option<TestDb>)> {
    let mut stores = vec![("memory", Store::memory(), None)];
    for (label, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
        let db = TestDb::new(backend).await;
        stores.push((label, open(&db).await, Some(db)));
    }
    stores
}

async fn row_of(store: &Store, user: Uuid) -> TokenRow {
    store
        .token_row(UserId(user), ProviderId::Microsoft)
        .await
        .unwrap()
        .expect("seeded")
}

fn refreshed(marker: &str) -> Refreshed {
    Refreshed {
        access_token: format!("sealed-at-{marker}").into_bytes(),
        refresh_token: format!("sealed-rt-{marker}").into_bytes(),
        key_id: "k1".into(),
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        scopes: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_reconnect_replaces_the_row_bumps_its_version_and_clears_lease_and_cooldown() {
    for (label, store, _db) in each_store().await {
        let user = Uuid::new_v4();
        seed_connection(&store, user, "first@example.com").await;
        let first = row_of(&store, user).await;
        let (owner, soon) = (
            Uuid::new_v4(),
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        );
        store
            .claim_refresh_lease(first.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .release_refresh_lease(first.id, owner, Some(soon), Some("unavailable"))
            .await
            .unwrap();
        assert!(
            row_of(&store, user).await.cooldown_until.is_some(),
            "{label}"
        );

        seed_connection(&store, user, "second@example.com").await;
        let second = row_of(&store, user).await;
        assert_eq!(second.id, first.id, "{label}: the same row");
        assert!(second.version > first.version, "{label}: version bumped");
        assert_eq!(second.provider_email.as_deref(), Some("second@example.com"));
        assert_eq!(second.cooldown_until, None, "{label}: cooldown cleared");
        assert!(
            store
                .claim_refresh_lease(second.id, Uuid::new_v4(), LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}: claimable at once"
        );
    }
}

#[tokio::test]
async fn a_refresh_write_wins_once_and_only_for_the_lease_holder() {
    for (label, store, _db) in each_store().await {
        let user = Uuid::new_v4();
        seed_connection(&store, user, "cas@example.com").await;
        let row = row_of(&store, user).await;
        let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
        let claimed = store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.version, row.version, "{label}");

        assert!(
            !store
                .store_refreshed(row.id, row.version, stranger, &refreshed("x"))
                .await
                .unwrap(),
            "{label}: not the lease holder"
        );
        assert!(
            store
                .store_refreshed(row.id, row.version, owner, &refreshed("one"))
                .await
                .unwrap(),
            "{label}"
        );
        assert!(
            !store
                .store_refreshed(row.id, row.version, owner, &refreshed("two"))
                .await
                .unwrap(),
            "{label}: the version moved on"
        );
        let after = row_of(&store, user).await;
        assert_eq!(after.version, row.version + 1, "{label}");
        assert_eq!(after.access_token, b"sealed-at-one", "{label}");
        assert_eq!(
            after.refresh_token.as_deref(),
            Some(&b"sealed-rt-one"[..]),
            "{label}"
        );
        assert_eq!(
            after.scopes, row.scopes,
            "{label}: scopes kept when none were said"
        );
        // The write gave the lease back.
        assert!(
            store
                .claim_refresh_lease(row.id, stranger, LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn a_live_lease_excludes_others_and_an_expired_one_does_not() {
    for (label, store, _db) in each_store().await {
        let user = Uuid::new_v4();
        seed_connection(&store, user, "lease@example.com").await;
        let id = row_of(&store, user).await.id;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(
            store
                .claim_refresh_lease(id, a, LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
        assert!(
            store
                .claim_refresh_lease(id, b, LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}: held by a"
        );
        assert!(
            store
                .claim_refresh_lease(id, a, LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}: not even a again"
        );
        // Releasing someone else's lease changes nothing.
        store
            .release_refresh_lease(id, b, None, None)
            .await
            .unwrap();
        assert!(
            store
                .claim_refresh_lease(id, b, LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}"
        );
        store
            .release_refresh_lease(id, a, None, None)
            .await
            .unwrap();
        // A lease of no length has expired by the next statement: claimable again.
        assert!(
            store
                .claim_refresh_lease(id, b, Duration::ZERO)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
        assert!(
            store
                .claim_refresh_lease(id, a, LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}: b's lease expired"
        );
    }
}

#[tokio::test]
async fn a_cooldown_refuses_claims_until_it_ends() {
    for (label, store, _db) in each_store().await {
        let (user, idle) = (Uuid::new_v4(), Uuid::new_v4());
        seed_connection(&store, user, "cool@example.com").await;
        let id = row_of(&store, user).await.id;
        let owner = Uuid::new_v4();
        store
            .claim_refresh_lease(id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        let until = OffsetDateTime::now_utc() + time::Duration::minutes(5);
        store
            .release_refresh_lease(id, owner, Some(until), Some("unavailable: 503"))
            .await
            .unwrap();
        assert!(
            store
                .claim_refresh_lease(id, Uuid::new_v4(), LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}"
        );
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let claimed = store
            .claim_idle_connections(later, 10, idle, LEASE)
            .await
            .unwrap();
        assert!(claimed.is_empty(), "{label}: the keep-alive skips it too");

        // A cooldown that has ended does not hold anything back.
        seed_connection(&store, user, "cool@example.com").await;
        store
            .claim_refresh_lease(id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        let past = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        store
            .release_refresh_lease(id, owner, Some(past), None)
            .await
            .unwrap();
        assert!(
            store
                .claim_refresh_lease(id, Uuid::new_v4(), LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn a_flow_can_be_taken_once() {
    for (label, store, _db) in each_store().await {
        let user = Uuid::new_v4();
        let mut state_hash = [0; 32];
        state_hash[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        let flow = Flow {
            state_hash,
            user_id: UserId(user),
            provider: ProviderId::Google,
            pkce_verifier: b"sealed-verifier".to_vec(),
            key_id: "k1".into(),
            binding_hash: [7; 32],
            app_origin: "https://app.example.com".into(),
            return_mode: ReturnMode::Redirect,
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(10),
        };
        store.insert_flow(&flow).await.unwrap();
        assert!(
            store.take_flow(&[9; 32]).await.unwrap().is_none(),
            "{label}: unknown state"
        );
        let taken = store
            .take_flow(&flow.state_hash)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(taken.user_id, UserId(user), "{label}");
        assert_eq!(taken.provider, ProviderId::Google, "{label}");
        assert_eq!(taken.pkce_verifier, flow.pkce_verifier, "{label}");
        assert_eq!(taken.binding_hash, flow.binding_hash, "{label}");
        assert_eq!(taken.app_origin, flow.app_origin, "{label}");
        assert_eq!(taken.return_mode, ReturnMode::Redirect, "{label}");
        assert_eq!(
            taken.expires_at.unix_timestamp(),
            flow.expires_at.unix_timestamp(),
            "{label}"
        );
        assert!(
            store.take_flow(&flow.state_hash).await.unwrap().is_none(),
            "{label}: used once"
        );
    }
}

#[tokio::test]
async fn idle_claims_of_two_owners_never_overlap() {
    for (label, store, _db) in each_store().await {
        for i in 0..6 {
            seed_connection(&store, Uuid::new_v4(), &format!("idle{i}@example.com")).await;
        }
        let idle_since = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (first, second) = tokio::join!(
            store.claim_idle_connections(idle_since, 4, a, LEASE),
            store.claim_idle_connections(idle_since, 4, b, LEASE),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        let mut ids: Vec<Uuid> = first.iter().chain(&second).map(|r| r.id).collect();
        assert_eq!(
            ids.len(),
            6,
            "{label}: every idle row claimed once: {} + {}",
            first.len(),
            second.len()
        );
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6, "{label}: no row claimed twice");
        assert!(
            store
                .claim_idle_connections(idle_since, 4, c, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
        // Rows refreshed after `idle_since` are not idle.
        let recent = OffsetDateTime::now_utc() - time::Duration::hours(1);
        store.release_leases_of(a).await.unwrap();
        store.release_leases_of(b).await.unwrap();
        assert!(
            store
                .claim_idle_connections(recent, 10, c, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
    }
}

#[tokio::test]
async fn needs_reauth_is_one_transition() {
    for (label, store, _db) in each_store().await {
        let user = Uuid::new_v4();
        seed_connection(&store, user, "reauth@example.com").await;
        let row = row_of(&store, user).await;
        let owner = Uuid::new_v4();
        store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !store
                .mark_needs_reauth(row.id, row.version, Uuid::new_v4(), "invalid_grant")
                .await
                .unwrap(),
            "{label}: only the lease holder"
        );
        assert!(
            store
                .mark_needs_reauth(row.id, row.version, owner, "invalid_grant")
                .await
                .unwrap(),
            "{label}"
        );
        assert!(
            !store
                .mark_needs_reauth(row.id, row.version, owner, "invalid_grant")
                .await
                .unwrap(),
            "{label}: once"
        );
        let after = row_of(&store, user).await;
        assert_eq!(after.state, ConnectionState::NeedsReauth, "{label}");
        assert_eq!(after.version, row.version + 1, "{label}");
        assert!(
            store
                .claim_refresh_lease(row.id, owner, LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}: nothing to refresh"
        );
        let listed = store
            .list_connections(&ListFilter {
                provider: None,
                state: Some(ConnectionState::NeedsReauth),
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{label}");
        assert_eq!(listed[0].user_id, user, "{label}");
    }
}

#[tokio::test]
async fn releasing_an_owners_leases_frees_only_that_owners_rows() {
    for (label, store, _db) in each_store().await {
        let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for u in &users {
            seed_connection(&store, *u, &format!("{u}@example.com")).await;
        }
        let mut ids = Vec::new();
        for u in &users {
            ids.push(row_of(&store, *u).await.id);
        }
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store
            .claim_refresh_lease(ids[0], a, LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .claim_refresh_lease(ids[1], a, LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .claim_refresh_lease(ids[2], b, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.release_leases_of(a).await.unwrap(), 2, "{label}");
        assert_eq!(store.release_leases_of(a).await.unwrap(), 0, "{label}");
        assert!(
            store
                .claim_refresh_lease(ids[0], c, LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
        assert!(
            store
                .claim_refresh_lease(ids[1], c, LEASE)
                .await
                .unwrap()
                .is_some(),
            "{label}"
        );
        assert!(
            store
                .claim_refresh_lease(ids[2], c, LEASE)
                .await
                .unwrap()
                .is_none(),
            "{label}: b's stays"
        );
    }
}

#[tokio::test]
async fn resealing_moves_key_ids_and_loses_to_a_write_in_between() {
    for (label, store, _db) in each_store().await {
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        seed_connection(&store, user, "keys@example.com").await;
        seed_connection(&store, other, "keys2@example.com").await;
        assert_eq!(store.key_ids_in_use().await.unwrap(), ["k1"], "{label}");
        let old = store.connections_not_on_key("k2", 10).await.unwrap();
        assert_eq!(old.len(), 2, "{label}");
        let mine = old.iter().find(|c| c.user_id == UserId(user)).unwrap();
        assert!(
            store
                .reseal_connection(mine, b"at-k2", Some(b"rt-k2"), "k2")
                .await
                .unwrap(),
            "{label}"
        );
        assert!(
            !store
                .reseal_connection(mine, b"at-k2", Some(b"rt-k2"), "k2")
                .await
                .unwrap(),
            "{label}: already moved"
        );
        assert_eq!(
            store.key_ids_in_use().await.unwrap(),
            ["k1", "k2"],
            "{label}"
        );
        let on_k2 = store.one_sealed_with("k2").await.unwrap().unwrap();
        assert_eq!(on_k2.user_id, UserId(user), "{label}");
        assert_eq!(on_k2.access_token, b"at-k2", "{label}");

        // A refresh between reading and re-sealing wins.
        let theirs = store
            .connections_not_on_key("k2", 10)
            .await
            .unwrap()
            .remove(0);
        let owner = Uuid::new_v4();
        store
            .claim_refresh_lease(theirs.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .store_refreshed(theirs.id, theirs.version, owner, &refreshed("new"))
                .await
                .unwrap(),
            "{label}"
        );
        assert!(
            !store
                .reseal_connection(&theirs, b"stale", None, "k2")
                .await
                .unwrap(),
            "{label}"
        );
        assert_eq!(
            row_of(&store, other).await.access_token,
            b"sealed-at-new",
            "{label}"
        );
    }
}

/// The webhook outbox on every backend: each state change writes its event with one delivery
/// per endpoint, in the same write; claims are exclusive while their lease lives; only the
/// claim's holder records an attempt; a 410 disables the endpoint; a retry starts over.
#[tokio::test]
async fn the_outbox_records_each_change_and_hands_each_delivery_to_one_claimant() {
    use celeste_connect::store::{AttemptOutcome, DeliveryFilter, DeliveryStatus, Outbox};
    use celeste_connect::webhooks::event::DisconnectedBy;
    for (label, store, _db) in each_store().await {
        let store = store.with_outbox(std::sync::Arc::new(Outbox {
            endpoints: vec!["a".into(), "b".into()],
            failing_after: Duration::ZERO,
            written: Default::default(),
        }));
        let user = Uuid::new_v4();
        seed_connection(&store, user, "outbox@example.com").await;
        seed_connection(&store, user, "outbox@example.com").await;
        let row = row_of(&store, user).await;
        // A failing refresh (a cooldown): refresh_failing once, then recovered.
        let owner = Uuid::new_v4();
        store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .release_refresh_lease(
                row.id,
                owner,
                Some(OffsetDateTime::now_utc()),
                Some("unavailable: HTTP 503"),
            )
            .await
            .unwrap();
        let row = row_of(&store, user).await;
        store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .release_refresh_lease(
                row.id,
                owner,
                Some(OffsetDateTime::now_utc()),
                Some("unavailable: HTTP 503"),
            )
            .await
            .unwrap();
        store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .store_refreshed(row.id, row.version, owner, &refreshed("ok"))
                .await
                .unwrap()
        );
        let row = row_of(&store, user).await;
        store
            .claim_refresh_lease(row.id, owner, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .mark_needs_reauth(row.id, row.version, owner, "invalid_grant AADSTS70008")
                .await
                .unwrap()
        );
        assert!(
            store
                .delete_connection(
                    UserId(user),
                    ProviderId::Microsoft,
                    DisconnectedBy::Operator
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_connection(
                    UserId(user),
                    ProviderId::Microsoft,
                    DisconnectedBy::Operator
                )
                .await
                .unwrap()
        );

        let all = |endpoint: &str| DeliveryFilter {
            endpoint: Some(endpoint.to_owned()),
            limit: 100,
            ..DeliveryFilter::default()
        };
        let mut a = store.list_deliveries(&all("a")).await.unwrap();
        a.reverse();
        let types: Vec<&str> = a.iter().map(|d| d.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "connection.created",
                "connection.reconnected",
                "connection.refresh_failing",
                "connection.recovered",
                "connection.needs_reauth",
                "connection.disconnected"
            ],
            "{label}"
        );
        let b = store.list_deliveries(&all("b")).await.unwrap();
        assert_eq!(b.len(), a.len(), "{label}: one delivery per endpoint");
        let body = |i: usize| serde_json::from_str::<serde_json::Value>(&a[i].body).unwrap();
        assert_eq!(
            body(1)["data"]["previous_account_changed"],
            false,
            "{label}"
        );
        assert_eq!(body(2)["data"]["reason"], "HTTP 503", "{label}");
        assert_eq!(body(4)["data"]["reason"], "invalid_grant", "{label}");
        assert_eq!(body(4)["data"]["provider_code"], "AADSTS70008", "{label}");
        assert_eq!(body(5)["data"]["by"], "operator", "{label}");
        assert_eq!(
            body(5)["data"]["connection_id"],
            row.id.to_string(),
            "{label}"
        );
        for d in &a {
            assert_eq!(d.status, DeliveryStatus::Pending, "{label}");
            assert!(
                !d.body.contains("sealed-"),
                "{label}: no token in {}",
                d.body
            );
        }

        // Claims: all due ones to the first claimant, none to the second while leased.
        let endpoints = vec!["a".to_owned()];
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let claimed = store
            .claim_deliveries(&endpoints, 100, first, LEASE)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 6, "{label}");
        assert!(
            store
                .claim_deliveries(&endpoints, 100, second, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "{label}"
        );
        let gone = AttemptOutcome {
            status: DeliveryStatus::Failed,
            next_attempt_at: None,
            http_status: Some(410),
            error: None,
            response: None,
            disable_endpoint: Some("hash".into()),
        };
        assert!(
            !store
                .finish_delivery(claimed[0].id, "a", second, &gone)
                .await
                .unwrap(),
            "{label}: not the holder"
        );
        assert!(
            store
                .finish_delivery(claimed[0].id, "a", first, &gone)
                .await
                .unwrap(),
            "{label}"
        );
        let disabled = store.disabled_endpoints().await.unwrap();
        assert_eq!(disabled.len(), 1, "{label}");
        assert_eq!(
            (disabled[0].name.as_str(), disabled[0].url_sha256.as_deref()),
            ("a", Some("hash"))
        );
        let failed = store.delivery(claimed[0].id).await.unwrap().unwrap();
        assert_eq!(
            (failed.status, failed.attempts, failed.last_status),
            (DeliveryStatus::Failed, 1, Some(410)),
            "{label}"
        );
        assert_eq!(
            store.release_deliveries_of(first).await.unwrap(),
            5,
            "{label}"
        );
        let held = store
            .claim_deliveries(&endpoints, 2, second, LEASE)
            .await
            .unwrap();
        assert_eq!(held.len(), 2, "{label}");

        // A retry starts the schedule over.
        let again = store.retry_delivery(claimed[0].id).await.unwrap().unwrap();
        assert!(again.queued, "{label}");
        assert_eq!(
            (again.record.status, again.record.attempts),
            (DeliveryStatus::Pending, 0),
            "{label}"
        );
        // Not under an attempt holding the lease: nothing changes, and the caller is told.
        let before = store.delivery(held[0].id).await.unwrap().unwrap();
        let busy = store.retry_delivery(held[0].id).await.unwrap().unwrap();
        assert!(!busy.queued, "{label}");
        assert_eq!(
            (
                busy.record.status,
                busy.record.attempts,
                busy.record.next_attempt_at
            ),
            (before.status, before.attempts, before.next_attempt_at),
            "{label}"
        );
        assert!(store.enable_endpoint("a").await.unwrap(), "{label}");
        assert!(!store.enable_endpoint("a").await.unwrap(), "{label}");
        let backlog = store.delivery_backlog().await.unwrap();
        assert_eq!(backlog.pending, 12, "{label}");
        assert!(backlog.oldest_created_at.is_some());
    }
}

#[tokio::test]
async fn activity_counts_add_up_page_newest_first_stay_per_user_and_prune_alike() {
    use celeste_connect::activity::{ActivityFilter, ActivityKey, Actor, Kind, Tally};
    for (label, store, _db) in each_store().await {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let now = OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
        let row = |minute: i64, user: Uuid, kind: Kind| {
            let key = ActivityKey {
                minute,
                user: UserId(user),
                provider: ProviderId::Microsoft,
                kind,
                actor: Actor::Key(std::sync::Arc::from("n8n")),
                method: None,
                path: None,
                outcome: "ok",
            };
            let tally = Tally {
                count: 2,
                first_ms: minute * 1000 + 1000,
                last_ms: minute * 1000 + 2000,
            };
            (key, tally)
        };
        let rows: Vec<_> = (0..5)
            .map(|m| row(now - 60 * m, alice, Kind::Token))
            .chain([
                row(now, bob, Kind::Proxy),
                row(now - 200 * 86_400, alice, Kind::Token),
            ])
            .collect();
        store.add_activity(&rows).await.unwrap();
        store.add_activity(&rows[..1]).await.unwrap();

        let page = |before| ActivityFilter {
            user: Some(UserId(alice)),
            before,
            limit: 2,
            ..Default::default()
        };
        let first = store.query_activity(&page(None)).await.unwrap();
        assert_eq!(first.len(), 2, "{label}");
        assert_eq!(first[0].count, 4, "{label}: counts add up");
        assert!(first[0].minute > first[1].minute, "{label}: newest first");
        let last = first.last().unwrap();
        let second = store
            .query_activity(&page(Some((last.minute.unix_timestamp(), last.id))))
            .await
            .unwrap();
        assert!(second.iter().all(|e| e.minute < last.minute), "{label}");

        let own = store
            .user_activity(UserId(bob), ProviderId::Microsoft, 20)
            .await
            .unwrap();
        assert_eq!(own.len(), 1, "{label}: bob sees his row only");
        assert_eq!(own[0].kind, Kind::Proxy);

        let pruned = store
            .prune_activity(OffsetDateTime::now_utc() - time::Duration::days(90), 100)
            .await
            .unwrap();
        assert_eq!(pruned, 1, "{label}");
    }
}
