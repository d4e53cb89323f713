//! Row-level security and roles on a real PostgreSQL server (security.md §8, A2–A10), plain and
//! shaped as Supabase builds it (migrated there as `postgres`, not a superuser): what the `anon`
//! and `authenticated` roles can and cannot do, who the service runs as, that its roles borrow
//! nothing from the host app, and that no user identity survives in a pooled connection.

use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::{Store, StoreOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::{Backend, POSTGRES_BACKENDS, TestDb, seed_connection, url_as};

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

async fn owner(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.url).await.unwrap()
}

/// A database with two users' connections; returns (db, alice, bob).
async fn two_users(backend: Backend) -> (TestDb, Uuid, Uuid) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(
        &db.url,
        StoreOptions {
            pool_size: 2,
            read_pool_size: 2,
            migrate: false,
        },
    )
    .await
    .unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    seed_connection(&store, alice, "alice@contoso.example").await;
    seed_connection(&store, bob, "bob@contoso.example").await;
    store.close().await;
    (db, alice, bob)
}

/// Runs `sql` in a transaction as `role` with `sub` in the claims; returns the error's SQLSTATE.
async fn as_role(
    conn: &mut PgConnection,
    role: &str,
    sub: Option<Uuid>,
    sql: &str,
) -> Result<Vec<sqlx::postgres::PgRow>, String> {
    let mut tx = conn.begin().await.unwrap();
    let claims = sub
        .map(|s| serde_json::json!({"sub": s, "role": role}).to_string())
        .unwrap_or_default();
    sqlx::query("select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)")
        .bind(role)
        .bind(claims)
        .execute(&mut *tx)
        .await
        .unwrap();
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    result.map_err(|e| sqlstate(&e).unwrap_or_else(|| e.to_string()))
}

#[tokio::test]
async fn anon_can_touch_nothing() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, _) = two_users(backend).await;
        let mut conn = owner(&db).await;
        for sql in [
            "select user_id from connect.integration_tokens",
            "select state_hash from connect.oauth_flows",
            "delete from connect.integration_tokens",
            "select public.user_has_integration('outlook')",
            "select version from connect._sqlx_migrations",
            "select body from connect.webhook_events",
            "select * from connect.webhook_deliveries",
            "update connect.webhook_deliveries set status = 'pending'",
            "insert into connect.webhook_endpoints (name) values ('x')",
        ] {
            assert_eq!(
                as_role(&mut conn, "anon", Some(alice), sql)
                    .await
                    .err()
                    .as_deref(),
                Some("42501"),
                "{sql}"
            );
        }
    }
}

#[tokio::test]
async fn user_read_role_reads_only_own_non_secret_columns() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, bob) = two_users(backend).await;
        let mut conn = owner(&db).await;
        // No WHERE clause: row-level security alone limits the answer to the caller's row.
        let rows = as_role(
            &mut conn,
            "connect_user_reader",
            Some(alice),
            "select user_id, provider_email from connect.integration_tokens",
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(sqlx::Row::get::<Uuid, _>(&rows[0], "user_id"), alice);

        for sql in [
            "select access_token from connect.integration_tokens",
            "select refresh_token from connect.integration_tokens",
            "select * from connect.integration_tokens",
            "select pkce_verifier from connect.oauth_flows",
            "select body from connect.webhook_events",
            "select * from connect.webhook_deliveries",
            "select * from connect.webhook_endpoints",
            "delete from connect.webhook_deliveries",
            "update connect.webhook_endpoints set disabled_at = null",
            "select refresh_failing_since from connect.integration_tokens",
        ] {
            for role in ["connect_user_reader", "authenticated"] {
                assert_eq!(
                    as_role(&mut conn, role, Some(alice), sql)
                        .await
                        .err()
                        .as_deref(),
                    Some("42501"),
                    "{role}: {sql}"
                );
            }
        }
        // Supabase's `authenticated` has nothing in schema connect, not even its own rows.
        assert_eq!(
            as_role(
                &mut conn,
                "authenticated",
                Some(alice),
                "select user_id from connect.integration_tokens"
            )
            .await
            .err()
            .as_deref(),
            Some("42501")
        );
        // The service's read functions are the service's: a user cannot call them with
        // someone's id (the previous release's, kept for rolling upgrades, and the current one).
        for function in ["read_own_connections", "read_own_statuses"] {
            let other = format!("select * from connect.{function}('{bob}', null)");
            for (role, claims) in [
                ("authenticated", Some(alice)),
                ("anon", None),
                ("connect_user_reader", Some(alice)),
            ] {
                assert_eq!(
                    as_role(&mut conn, role, claims, &other)
                        .await
                        .err()
                        .as_deref(),
                    Some("42501"),
                    "{role} calling {function}"
                );
            }
        }
        // Without claims, nothing matches (fails closed).
        let none = as_role(
            &mut conn,
            "connect_user_reader",
            None,
            "select user_id from connect.integration_tokens",
        )
        .await
        .unwrap();
        assert!(none.is_empty());
    }
}

/// One activity row each for alice and bob, written as the service writes them.
async fn activity_of(db: &TestDb, users: [Uuid; 2]) {
    use celeste_connect::activity::{ActivityKey, Actor, Kind, Tally};
    let store = Store::connect(
        &db.url,
        StoreOptions {
            pool_size: 1,
            read_pool_size: 1,
            migrate: false,
        },
    )
    .await
    .unwrap();
    let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
    let rows: Vec<(ActivityKey, Tally)> = users
        .iter()
        .map(|u| {
            let key = ActivityKey {
                minute,
                user: UserId(*u),
                provider: ProviderId::Microsoft,
                kind: Kind::Token,
                actor: Actor::Key(std::sync::Arc::from("n8n")),
                method: None,
                path: None,
                outcome: "ok",
            };
            let tally = Tally {
                count: 1,
                first_ms: minute * 1000,
                last_ms: minute * 1000,
            };
            (key, tally)
        })
        .collect();
    store.add_activity(&rows).await.unwrap();
    // Read through the service's user read (RLS): each sees their own row only.
    for u in users {
        let own = store
            .user_activity(UserId(u), ProviderId::Microsoft, 20)
            .await
            .unwrap();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].user_id, u);
    }
    store.close().await;
}

#[tokio::test]
async fn activity_is_read_as_the_user_alone_and_client_roles_read_nothing() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, bob) = two_users(backend).await;
        activity_of(&db, [alice, bob]).await;
        let mut conn = owner(&db).await;
        // No WHERE clause: row-level security alone limits the answer to the caller's rows.
        let rows = as_role(
            &mut conn,
            "connect_user_reader",
            Some(alice),
            "select user_id from connect.activity",
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(sqlx::Row::get::<Uuid, _>(&rows[0], "user_id"), alice);
        let none = as_role(
            &mut conn,
            "connect_user_reader",
            None,
            "select * from connect.activity",
        )
        .await
        .unwrap();
        assert!(none.is_empty(), "no claims, no rows");
        for role in ["anon", "authenticated"] {
            for sql in [
                "select * from connect.activity".to_owned(),
                "delete from connect.activity".to_owned(),
                format!("select * from connect.read_own_activity('{bob}', 'microsoft', 20)"),
            ] {
                assert_eq!(
                    as_role(&mut conn, role, Some(alice), &sql)
                        .await
                        .err()
                        .as_deref(),
                    Some("42501"),
                    "{role}: {sql}"
                );
            }
        }
        // The user reader cannot call the service's function with someone else's id, nor write.
        for sql in [
            format!("select * from connect.read_own_activity('{bob}', 'microsoft', 20)"),
            "update connect.activity set events = 1000".to_owned(),
            "delete from connect.activity".to_owned(),
        ] {
            assert_eq!(
                as_role(&mut conn, "connect_user_reader", Some(alice), &sql)
                    .await
                    .err()
                    .as_deref(),
                Some("42501"),
                "{sql}"
            );
        }
    }
}

#[tokio::test]
async fn signed_in_user_cannot_plant_change_or_delete_rows() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, bob) = two_users(backend).await;
        let mut conn = owner(&db).await;
        let before: Vec<(Uuid, String)> = sqlx::query_as(
            "select user_id, md5(access_token::text) from connect.integration_tokens order by user_id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for sql in [
            format!(
                "insert into connect.integration_tokens (user_id, provider, access_token, key_id, expires_at, provider_user_id) values ('{alice}', 'google', 'x', 'k', now(), 'p')"
            ),
            format!(
                "update connect.integration_tokens set provider_email = 'evil@example.com' where user_id = '{bob}'"
            ),
            format!(
                "update connect.integration_tokens set provider_email = 'me@example.com' where user_id = '{alice}'"
            ),
            "delete from connect.integration_tokens".to_owned(),
        ] {
            assert_eq!(
                as_role(&mut conn, "authenticated", Some(alice), &sql)
                    .await
                    .err()
                    .as_deref(),
                Some("42501"),
                "{sql}"
            );
        }
        let after: Vec<(Uuid, String)> = sqlx::query_as(
            "select user_id, md5(access_token::text) from connect.integration_tokens order by user_id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(before, after);
    }
}

#[tokio::test]
async fn user_has_integration_answers_for_the_caller_only() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, _) = two_users(backend).await;
        let mut conn = owner(&db).await;
        let stranger = Uuid::new_v4();
        let ask =
            |provider: &str| format!("select public.user_has_integration('{provider}') as has");
        let has = |rows: Vec<sqlx::postgres::PgRow>| sqlx::Row::get::<bool, _>(&rows[0], "has");
        assert!(has(as_role(
            &mut conn,
            "authenticated",
            Some(alice),
            &ask("outlook")
        )
        .await
        .unwrap()));
        assert!(has(as_role(
            &mut conn,
            "authenticated",
            Some(alice),
            &ask("microsoft")
        )
        .await
        .unwrap()));
        assert!(!has(as_role(
            &mut conn,
            "authenticated",
            Some(alice),
            &ask("google")
        )
        .await
        .unwrap()));
        assert!(!has(as_role(
            &mut conn,
            "authenticated",
            Some(stranger),
            &ask("outlook")
        )
        .await
        .unwrap()));
        // The seed's variant that took a user id does not exist.
        let two_args = format!("select public.user_has_integration('{alice}'::uuid, 'microsoft')");
        assert_eq!(
            as_role(&mut conn, "authenticated", Some(stranger), &two_args)
                .await
                .err()
                .as_deref(),
            Some("42883")
        );
    }
}

#[tokio::test]
async fn catalog_grants_nothing_to_client_roles_and_forces_rls() {
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let mut conn = owner(&db).await;
        let table_grants: Vec<(String, String, String)> = sqlx::query_as(
            "select grantee::text, table_name::text, privilege_type::text from information_schema.role_table_grants \
             where table_schema = 'connect' and grantee in ('anon', 'authenticated', 'PUBLIC')",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(table_grants.is_empty(), "{table_grants:?}");

        let mut columns: Vec<String> = sqlx::query_scalar(
            "select column_name::text from information_schema.column_privileges \
             where table_schema = 'connect' and grantee = 'connect_user_reader' and privilege_type = 'SELECT' \
               and table_name = 'integration_tokens'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        columns.sort();
        assert_eq!(
            columns,
            [
                "created_at",
                "display_name",
                "id",
                "last_refreshed_at",
                "provider",
                "provider_email",
                "scopes",
                "status",
                "updated_at",
                "user_id"
            ]
        );
        let other_column_grants: i64 = sqlx::query_scalar(
            "select count(*) from information_schema.column_privileges where table_schema = 'connect' \
             and (grantee in ('anon', 'authenticated', 'PUBLIC') \
                  or (grantee = 'connect_user_reader' and privilege_type <> 'SELECT'))",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(other_column_grants, 0);

        let rls: Vec<(String, bool, bool)> = sqlx::query_as(
            "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'connect' and c.relkind = 'r' and c.relname <> '_sqlx_migrations' order by 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            rls,
            [
                ("activity".to_owned(), true, true),
                ("activity_batches".to_owned(), true, true),
                ("activity_journal".to_owned(), true, true),
                ("integration_tokens".to_owned(), true, true),
                ("oauth_flows".to_owned(), true, true),
                ("webhook_deliveries".to_owned(), true, true),
                ("webhook_endpoints".to_owned(), true, true),
                ("webhook_events".to_owned(), true, true)
            ]
        );
        // The outbox belongs to the service's role alone: no other role holds any privilege.
        let outbox_grants: Vec<(String, String, String)> = sqlx::query_as(
            "select grantee::text, table_name::text, privilege_type::text from information_schema.role_table_grants \
             where table_schema = 'connect' and table_name like 'webhook\\_%' \
               and grantee not in ('connect_service', current_user) order by 1, 2, 3",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(outbox_grants.is_empty(), "{outbox_grants:?}");
        let service_grants: Vec<String> = sqlx::query_scalar(
            "select table_name::text || ':' || string_agg(privilege_type::text, ',' order by privilege_type) \
             from information_schema.role_table_grants \
             where table_schema = 'connect' and table_name like 'webhook\\_%' and grantee = 'connect_service' \
             group by table_name order by 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            service_grants,
            [
                "webhook_deliveries:DELETE,INSERT,SELECT,UPDATE",
                "webhook_endpoints:DELETE,INSERT,SELECT,UPDATE",
                "webhook_events:DELETE,INSERT,SELECT,UPDATE"
            ]
        );

        let definers_without_search_path: Vec<String> = sqlx::query_scalar(
            "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where n.nspname in ('connect', 'public') and p.prosecdef \
               and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(
            definers_without_search_path.is_empty(),
            "{definers_without_search_path:?}"
        );
    }
}

#[tokio::test]
async fn service_runs_as_a_role_that_is_not_superuser_owner_or_bypassrls() {
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let store = Store::connect(
            &db.url,
            StoreOptions {
                pool_size: 2,
                read_pool_size: 2,
                migrate: false,
            },
        )
        .await
        .unwrap();
        let Store::Postgres(pg) = &store else {
            panic!("postgres store")
        };
        let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "select r.rolname::text, r.rolsuper, r.rolbypassrls from pg_roles r where r.rolname = current_user",
        )
        .fetch_one(pg.pool())
        .await
        .unwrap();
        assert_eq!(
            (role.as_str(), superuser, bypass),
            ("connect_service", false, false)
        );
        let owners: Vec<String> = sqlx::query_scalar(
            "select tableowner::text from pg_tables where schemaname = 'connect'",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap();
        assert!(
            !owners.is_empty() && owners.iter().all(|o| o != "connect_service"),
            "{owners:?}"
        );
    }
}

#[tokio::test]
async fn pooled_connection_keeps_no_user_identity_after_success_error_or_panic() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, _) = two_users(backend).await;
        let store = Store::connect(
            &db.url,
            StoreOptions {
                pool_size: 1,
                read_pool_size: 1,
                migrate: false,
            },
        )
        .await
        .unwrap();
        let Store::Postgres(pg) = store.clone() else {
            panic!("postgres store")
        };
        let identity = || async {
            sqlx::query_as::<_, (String, String)>(
                "select current_user::text, coalesce(current_setting('request.jwt.claims', true), '')",
            )
            .fetch_one(pg.pool())
            .await
            .unwrap()
        };
        let clean = ("connect_service".to_owned(), String::new());
        // The user-read pool's one connection, which served the reads below.
        let read_identity = || async {
            let mut conn = pg.user_read_connection().await.unwrap();
            sqlx::query_as::<_, (String, String)>(
                "select current_user::text, coalesce(current_setting('request.jwt.claims', true), '')",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap()
        };

        // 1. User-scoped reads that succeed (one provider, then all).
        assert_eq!(
            store.user_connections(UserId(alice)).await.unwrap().len(),
            1
        );
        assert!(
            store
                .user_connection(UserId(alice), ProviderId::Microsoft)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(read_identity().await, clean);
        assert_eq!(identity().await, clean);

        // 2. A user-scoped transaction that fails midway and is dropped.
        {
            let mut tx = pg.begin_as_user(UserId(alice)).await.unwrap();
            let err = sqlx::query("select access_token from connect.integration_tokens")
                .fetch_all(&mut *tx)
                .await
                .unwrap_err();
            assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
        }
        assert_eq!(identity().await, clean);

        // 3. A task that panics while holding a user-scoped transaction.
        let pg2 = pg.clone();
        let joined = tokio::spawn(async move {
            let mut tx = pg2.begin_as_user(UserId(alice)).await.unwrap();
            sqlx::query("select 1").execute(&mut *tx).await.unwrap();
            panic!("handler bug while acting as a user");
        })
        .await;
        assert!(joined.is_err());
        assert_eq!(identity().await, clean);
        assert_eq!(read_identity().await, clean);
    }
}

#[tokio::test]
async fn user_reads_survive_their_connections_being_closed_by_the_server() {
    for backend in POSTGRES_BACKENDS {
        // What a database restart does to idle pooled connections: the server closes them. The next
        // reads must not fail because of it.
        let (db, alice, bob) = two_users(backend).await;
        let store = Store::connect(
            &db.url,
            StoreOptions {
                pool_size: 1,
                read_pool_size: 2,
                migrate: false,
            },
        )
        .await
        .unwrap();
        // Two reads at once: both user-read connections are open and back in the pool.
        let (a, b) = tokio::join!(
            store.user_connections(UserId(alice)),
            store.user_connections(UserId(bob))
        );
        assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1));

        let mut admin = owner(&db).await;
        let readers = "select count(*) from pg_stat_activity \
                       where datname = current_database() and application_name = 'celeste-connect-reads'";
        assert_eq!(
            sqlx::query_scalar::<_, i64>(readers)
                .fetch_one(&mut admin)
                .await
                .unwrap(),
            2
        );
        let killed: Vec<bool> = sqlx::query_scalar(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = current_database() and application_name = 'celeste-connect-reads'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(killed, [true, true]);
        // Wait until the server has really closed both.
        for _ in 0..100 {
            if sqlx::query_scalar::<_, i64>(readers)
                .fetch_one(&mut admin)
                .await
                .unwrap()
                == 0
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        for user in [alice, bob, alice] {
            let rows = store
                .user_connections(UserId(user))
                .await
                .expect("read after the kill");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].user_id, UserId(user));
        }
        store.close().await;
    }
}

#[tokio::test]
async fn login_role_without_set_role_reads_nothing_and_the_service_still_works() {
    for backend in POSTGRES_BACKENDS {
        let (db, alice, _) = two_users(backend).await;
        let mut conn = owner(&db).await;
        let login = format!("cc_login_{}", Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create role {login} login noinherit; grant connect_service to {login};"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let login_url = url_as(&db.url, &login);

        // Straight in as the login role (no SET ROLE): permission denied, not "sees everything".
        let mut raw = PgConnection::connect(&login_url).await.unwrap();
        let err = sqlx::query("select 1 from connect.integration_tokens")
            .fetch_all(&mut raw)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
        raw.close().await.unwrap();

        // The service, given that login and no DDL rights, switches role and works.
        let store = Store::connect(
            &login_url,
            StoreOptions {
                pool_size: 1,
                read_pool_size: 1,
                migrate: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            store.user_connections(UserId(alice)).await.unwrap().len(),
            1
        );
        store.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop role {login}")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_migration_files_themselves_apply_twice_without_error_or_change() {
    for backend in POSTGRES_BACKENDS {
        let db = TestDb::new(backend).await;
        let mut conn = owner(&db).await;
        let catalog = "select count(*) from pg_policy p join pg_class c on c.oid = p.polrelid \
                       join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'connect'";
        let before: i64 = sqlx::query_scalar(catalog)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        for _ in 0..2 {
            for sql in [
                include_str!("../../migrations/postgres/0001_init.sql"),
                include_str!("../../migrations/postgres/0002_own_roles.sql"),
                include_str!("../../migrations/postgres/0004_webhooks.sql"),
                include_str!("../../migrations/postgres/0005_activity.sql"),
                include_str!("../../migrations/postgres/0006_read_own_statuses.sql"),
                include_str!("../../migrations/postgres/0007_activity_fillfactor.sql"),
                include_str!("../../migrations/postgres/0008_activity_journal.sql"),
                include_str!("../../migrations/postgres/0009_activity_batches.sql"),
                include_str!("../../migrations/postgres/0010_account_index.sql"),
            ] {
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .expect("the files re-apply cleanly");
            }
        }
        let after: i64 = sqlx::query_scalar(catalog)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!((before, after), (10, 10), "same policies, none duplicated");
    }
}

/// The service's roles, whatever the cluster held before: what they are members of, what they
/// own, and that nothing outside schema `connect` is granted to them.
async fn assert_service_roles_borrow_nothing(conn: &mut PgConnection) {
    let memberships: Vec<(String, String)> = sqlx::query_as(
        "select u.rolname::text, g.rolname::text from pg_auth_members a \
         join pg_roles g on g.oid = a.roleid join pg_roles u on u.oid = a.member \
         where u.rolname in ('connect_service', 'connect_user_reader') order by 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        memberships,
        [(
            "connect_service".to_owned(),
            "connect_user_reader".to_owned()
        )]
    );
    let attributes: Vec<(String, bool, bool, bool, bool)> = sqlx::query_as(
        "select rolname::text, rolcanlogin, rolsuper, rolbypassrls, rolinherit from pg_roles \
         where rolname in ('connect_service', 'connect_user_reader') order by 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        attributes,
        [
            ("connect_service".to_owned(), false, false, false, false),
            ("connect_user_reader".to_owned(), false, false, false, false)
        ]
    );
    let owned: Vec<(String, String)> = sqlx::query_as(
        "select pg_get_userbyid(relowner)::text, oid::regclass::text from pg_class \
           where pg_get_userbyid(relowner) in ('connect_service', 'connect_user_reader') \
         union all select pg_get_userbyid(proowner)::text, oid::regprocedure::text from pg_proc \
           where pg_get_userbyid(proowner) in ('connect_service', 'connect_user_reader') \
         union all select pg_get_userbyid(nspowner)::text, nspname::text from pg_namespace \
           where pg_get_userbyid(nspowner) in ('connect_service', 'connect_user_reader')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        owned,
        [(
            "connect_user_reader".to_owned(),
            "connect.user_has_integration(text)".to_owned()
        )]
    );
    let outside: Vec<(String, String, String)> = sqlx::query_as(
        "select grantee::text, table_schema::text, table_name::text from information_schema.role_table_grants \
           where grantee in ('connect_service', 'connect_user_reader') and table_schema <> 'connect' \
         union all select grantee::text, routine_schema::text, routine_name::text \
           from information_schema.role_routine_grants \
           where grantee in ('connect_service', 'connect_user_reader') and routine_schema <> 'connect'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(outside.is_empty(), "{outside:?}");
}

/// Everything the migrations decide about schema `connect` and `public.user_has_integration`:
/// owners, privileges (with their grantors), row-level security, policies, default privileges
/// and function bodies, one line each, sorted.
pub(crate) async fn migrated_catalog(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "select 'schema ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '') \
           from pg_namespace where nspname = 'connect' \
         union all select 'relation ' || c.oid::regclass::text || ' ' || pg_get_userbyid(c.relowner) || ' ' \
           || coalesce(c.relacl::text, '') || ' rls=' || c.relrowsecurity || ' forced=' || c.relforcerowsecurity \
           from pg_class c where c.relnamespace = 'connect'::regnamespace and c.relkind in ('r', 'v', 'S') \
         union all select 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' ' || a.attacl::text \
           from pg_attribute a join pg_class c on c.oid = a.attrelid \
           where c.relnamespace = 'connect'::regnamespace and a.attacl is not null \
         union all select 'function ' || p.oid::regprocedure::text || ' ' || pg_get_userbyid(p.proowner) || ' ' \
           || coalesce(p.proacl::text, '') || ' definer=' || p.prosecdef || ' ' || md5(p.prosrc) \
           || ' ' || coalesce(p.proconfig::text, '') \
           from pg_proc p where p.pronamespace = 'connect'::regnamespace \
              or p.oid = 'public.user_has_integration(text)'::regprocedure \
         union all select 'policy ' || p.polrelid::regclass::text || ' ' || p.polname || ' ' || p.polcmd::text \
           || ' ' || p.polroles::regrole[]::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') \
           || ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') \
           from pg_policy p join pg_class c on c.oid = p.polrelid where c.relnamespace = 'connect'::regnamespace \
         union all select 'default ' || pg_get_userbyid(d.defaclrole) || ' ' || d.defaclobjtype::text || ' ' \
           || d.defaclacl::text from pg_default_acl d where d.defaclnamespace = 'connect'::regnamespace \
         order by 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn service_roles_are_members_of_nothing_but_their_own_and_own_almost_nothing() {
    // On the Supabase-shaped cluster, which this process owns. Role memberships are cluster-wide,
    // and a shared server may meanwhile be used by a run of older code that grants them; plain
    // PostgreSQL is checked on a cluster of its own below, fresh and upgraded.
    let db = TestDb::new(Backend::Supabase).await;
    let mut conn = owner(&db).await;
    assert_service_roles_borrow_nothing(&mut conn).await;
}

#[tokio::test]
async fn an_installation_of_the_first_release_migrates_to_the_same_roles_and_grants() {
    // Its own cluster: the first release grants `authenticated` to connect_service cluster-wide,
    // which other tests running meanwhile must never see.
    let cluster = crate::cluster::Cluster::start("postgres");
    cluster.exec("postgres", "create database app").await;
    let url = cluster.url("postgres", "app");
    let released = tempfile::tempdir().unwrap();
    std::fs::write(
        released.path().join("0001_init.sql"),
        include_str!("fixtures/postgres_0001_init_as_released.sql"),
    )
    .unwrap();
    let first_release = sqlx::migrate::Migrator::new(released.path()).await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("create schema connect; set search_path = connect")
        .execute(&mut conn)
        .await
        .unwrap();
    first_release.run(&mut conn).await.unwrap();
    sqlx::raw_sql("reset search_path")
        .execute(&mut conn)
        .await
        .unwrap();
    let borrowed: bool =
        sqlx::query_scalar("select pg_has_role('connect_service', 'authenticated', 'member')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        borrowed,
        "the first release made the service a member of authenticated"
    );

    Store::migrate(&url)
        .await
        .expect("the current migrations apply over the first release");
    assert_service_roles_borrow_nothing(&mut conn).await;
    // The same schema, grants and policies as an installation that never ran the first release.
    cluster.exec("postgres", "create database fresh").await;
    let fresh_url = cluster.url("postgres", "fresh");
    Store::migrate(&fresh_url).await.unwrap();
    let mut fresh = PgConnection::connect(&fresh_url).await.unwrap();
    assert_service_roles_borrow_nothing(&mut fresh).await;
    assert_eq!(
        migrated_catalog(&mut conn).await,
        migrated_catalog(&mut fresh).await
    );
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("select version, checksum from connect._sqlx_migrations order by version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let current: Vec<(i64, Vec<u8>)> = celeste_connect::store::postgres::migration_checksums()
        .map(|(version, checksum)| (version, checksum.to_vec()))
        .collect();
    assert_eq!(applied, current);
    // And again: nothing left to do.
    Store::migrate(&url).await.unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let store = Store::connect(
        &url,
        StoreOptions {
            pool_size: 1,
            read_pool_size: 1,
            migrate: false,
        },
    )
    .await
    .unwrap();
    seed_connection(&store, alice, "alice@contoso.example").await;
    let rows = store.user_connections(UserId(alice)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        store
            .user_connections(UserId(bob))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}
