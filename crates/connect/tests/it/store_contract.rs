//! The storage contract, one body run against both backends.

use celeste_connect::model::{ConnectionState, UserId};
use celeste_connect::provider::ProviderId;
use celeste_connect::store::{ListFilter, Store, StoreOptions};
use uuid::Uuid;

use crate::support::{ALL_BACKENDS, TestDb, seed_connection};

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
