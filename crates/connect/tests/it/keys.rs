//! Encryption keys in operation (security.md §8 E5, E6): the service refuses to start with a
//! missing or wrong key, and `rotate-key` moves every row to the new key, resumably and
//! idempotently, with reads working throughout.

use std::sync::Arc;

use celeste_connect::app::StartError;
use celeste_connect::broker::rotate::{Rotation, rotate_keys};
use celeste_connect::config::ServeArgs;
use celeste_connect::http::AppState;
use celeste_connect::vault::{Keyring, generate_entry};
use clap::Parser;
use secrecy::ExposeSecret;
use sqlx::Connection;
use uuid::Uuid;

use crate::support::{BACKENDS, Backend, settings, url_as, with_emulator};

fn ring(entries: &[&secrecy::SecretString]) -> Arc<Keyring> {
    let list: Vec<&str> = entries.iter().map(|e| e.expose_secret()).collect();
    Arc::new(Keyring::parse(&list.join(",")).unwrap())
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn serve_refuses_to_start_without_a_key_and_prints_a_fresh_one() {
    let cli = Cli::try_parse_from([
        "celeste-connect",
        "--database-url",
        "sqlite://x.db",
        "--public-url",
        "https://api.example.com",
        "--app-origins",
        "https://app.example.com",
        "--jwt-secret",
        "a-real-looking-secret-value-123456",
    ])
    .unwrap();
    let err = cli.serve.into_settings().unwrap_err().to_string();
    assert!(err.contains("CONNECT_ENCRYPTION_KEYS is not set"), "{err}");
    assert!(
        err.contains("CONNECT_ENCRYPTION_KEYS=k1:"),
        "a generated example: {err}"
    );

    let cli = Cli::try_parse_from([
        "celeste-connect",
        "--database-url",
        "sqlite://x.db",
        "--public-url",
        "https://api.example.com",
        "--app-origins",
        "https://app.example.com",
        "--jwt-secret",
        "a-real-looking-secret-value-123456",
        "--encryption-keys",
        "k1:c2hvcnQ=",
    ])
    .unwrap();
    assert!(
        cli.serve
            .into_settings()
            .unwrap_err()
            .to_string()
            .contains("32 bytes")
    );

    let cli = Cli::try_parse_from([
        "celeste-connect",
        "--database-url",
        "sqlite://x.db",
        "--public-url",
        "https://api.example.com",
        "--app-origins",
        "https://app.example.com",
        "--jwt-secret",
        "a-real-looking-secret-value-123456",
        "--encryption-keys",
        generate_entry("k1").unwrap().expose_secret(),
        "--microsoft-client-id",
        "41f6dc82-8127-4330-97e0-c6b26e6aa967",
        "--microsoft-client-secret",
        "<your-azure-client-secret>",
    ])
    .unwrap();
    let err = cli.serve.into_settings().unwrap_err().to_string();
    assert!(
        err.contains("MICROSOFT_CLIENT_SECRET looks like a placeholder"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_key_for_stored_tokens_stops_the_start() {
    for backend in BACKENDS {
        let c = with_emulator(backend, provider_emulator::demo_accounts()).await;
        assert_eq!(
            c.connect(Uuid::new_v4(), "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d")
                .await
                .status(),
            200
        );
        let public = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let db = c.app.db.clone();

        // The ring lost the key the rows were sealed with.
        let mut s = settings(&db, &public);
        s.keyring = ring(&[&generate_entry("other").unwrap()]);
        let err = AppState::build(s).await.err().expect("refuses to start");
        assert!(
            matches!(err, StartError::Keys(ref m) if m.contains("not in CONNECT_ENCRYPTION_KEYS")),
            "{backend:?}: {err}"
        );

        // Same key id, different key material.
        let mut s = settings(&db, &public);
        s.keyring = ring(&[&generate_entry("t1").unwrap()]);
        let err = AppState::build(s).await.err().expect("refuses to start");
        assert!(
            matches!(err, StartError::Keys(ref m) if m.contains("wrong key")),
            "{backend:?}: {err}"
        );
    }
}

#[tokio::test]
async fn rotation_moves_every_row_to_the_new_key_and_a_rerun_does_nothing() {
    for backend in BACKENDS {
        let c = with_emulator(backend, provider_emulator::demo_accounts()).await;
        let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for u in &users {
            assert_eq!(
                c.connect(*u, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
                    .await
                    .status(),
                200
            );
        }
        let store = c.app.store();
        assert_eq!(store.key_ids_in_use().await.unwrap(), ["t1"]);

        // New key first, old key kept for reading.
        let new = generate_entry("t2").unwrap();
        let both = Arc::new(
            Keyring::parse(&format!("{},{}", new.expose_secret(), exported_test_key())).unwrap(),
        );
        let done = rotate_keys(store, &both, 2).await.unwrap();
        assert_eq!(
            done,
            Rotation {
                resealed: 5,
                skipped: 0
            },
            "{backend:?}"
        );
        assert_eq!(store.key_ids_in_use().await.unwrap(), ["t2"]);
        assert_eq!(
            rotate_keys(store, &both, 2).await.unwrap(),
            Rotation::default(),
            "a rerun is a no-op"
        );

        // The old key can go: a service with only the new key starts and reads every row.
        let public = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let db = c.app.db.clone();
        let mut s = settings(&db, &public);
        s.keyring = ring(&[&new]);
        let state = AppState::build(s)
            .await
            .expect("starts on the new key alone");
        for u in &users {
            let row = state
                .broker
                .store
                .one_sealed_with("t2")
                .await
                .unwrap()
                .unwrap();
            let place = celeste_connect::broker::connect::token_place(
                "access_token",
                row.user_id,
                row.provider,
            );
            assert!(state.broker.keyring.open(&place, &row.access_token).is_ok());
            let status = celeste_connect::broker::status(
                &state.broker,
                celeste_connect::model::UserId(*u),
                celeste_connect::provider::ProviderId::Microsoft,
            )
            .await
            .unwrap();
            assert!(status.connected);
        }
    }
}

/// The test key ring's key as a configuration entry.
fn exported_test_key() -> String {
    crate::support::TEST_KEY_ENTRY.expose_secret().to_owned()
}

/// `migrate` and `rotate-key` as an operator runs them: the database URL from
/// `DATABASE_URL_FILE` as `serve` takes it, `rotate-key` as the least-privileged login
/// docs/operations.md recommends (it can become the service and nothing else, so it can create
/// no schema: `rotate-key` must not migrate).
#[tokio::test]
async fn migrate_and_rotate_key_read_the_database_url_from_a_file_and_rotate_as_the_login() {
    let c = with_emulator(Backend::Postgres, provider_emulator::demo_accounts()).await;
    for _ in 0..2 {
        let status = c
            .connect(Uuid::new_v4(), "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
            .await
            .status();
        assert_eq!(status, 200);
    }
    let login = format!("cc_login_{}", Uuid::new_v4().simple());
    let mut owner = sqlx::PgConnection::connect(&c.app.db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create role {login} login noinherit; grant connect_service to {login}"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (owner_file, login_file) = (dir.path().join("owner-url"), dir.path().join("login-url"));
    std::fs::write(&owner_file, format!("{}\n", c.app.db.url)).unwrap();
    std::fs::write(&login_file, format!("{}\n", url_as(&c.app.db.url, &login))).unwrap();
    let run = |args: &[&str], url_file: &std::path::Path, keys: Option<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_celeste-connect"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("DATABASE_URL_FILE", url_file)
            .current_dir(dir.path())
            .args(args);
        if let Some(keys) = keys {
            command.env("CONNECT_ENCRYPTION_KEYS", keys);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
        stdout
    };

    assert!(run(&["migrate"], &owner_file, None).contains("migrations applied"));
    let new = generate_entry("t2").unwrap();
    let keys = format!("{},{}", new.expose_secret(), exported_test_key());
    let stdout = run(&["rotate-key"], &login_file, Some(keys));
    assert!(
        stdout.contains("re-encrypted 2 connection(s) under key t2"),
        "{stdout}"
    );
    assert_eq!(c.app.store().key_ids_in_use().await.unwrap(), ["t2"]);
}
