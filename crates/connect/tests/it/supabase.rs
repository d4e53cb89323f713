//! Celeste Connect on a database shaped as Supabase builds one ([`crate::supabase_shape`]):
//! migrating as Supabase's `postgres` (not a superuser), errors that say where and which role to
//! use, and Data API requests made as PostgREST makes them — one transaction as `authenticator`,
//! `set local role anon|authenticated`, the JWT's claims in `request.jwt.claims` — with schema
//! `connect` not exposed (the default) and exposed with the grants of Supabase's custom-schema
//! guide. Neither anon nor another user reads, writes or calls anything of a user's; no API role
//! reads a token column, except `service_role` once `connect` is exposed, and then ciphertext
//! only; the login role the docs recommend for `serve` reads nothing of the app's own tables.

use celeste_connect::broker::connect::token_place;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::{NewConnection, Store, StoreOptions};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use crate::postgres_rls::migrated_catalog;
use crate::supabase_shape::{self, OWNER};
use crate::support::{Backend, TestDb, seed_connection, test_keyring, url_as};

/// What Supabase's "Using custom schemas" guide has operators run to expose a schema.
const EXPOSE_AS_THE_GUIDE_SAYS: &str = "
grant usage on schema connect to anon, authenticated, service_role;
grant all on all tables in schema connect to anon, authenticated, service_role;
grant all on all routines in schema connect to anon, authenticated, service_role;
grant all on all sequences in schema connect to anon, authenticated, service_role;
alter default privileges for role postgres in schema connect grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema connect grant all on routines to anon, authenticated, service_role;
alter default privileges for role postgres in schema connect grant all on sequences to anon, authenticated, service_role;
";

fn sqlstate(err: &sqlx::Error) -> String {
    err.as_database_error()
        .and_then(|e| e.code())
        .map_or_else(|| err.to_string(), |c| c.into_owned())
}

/// An unmigrated Supabase-shaped database: its name and `postgres`'s URL. (Left to the
/// cluster's end: the cluster is the process's own.)
async fn fresh_database() -> (String, String) {
    let cluster = supabase_shape::cluster().await;
    let name = format!("fresh_{}", Uuid::new_v4().simple());
    cluster
        .exec("postgres", &format!("create database {name}"))
        .await;
    supabase_shape::shape_database(cluster, &name).await;
    let url = cluster.url(OWNER, &name);
    (name, url)
}

async fn store(url: &str) -> Store {
    Store::connect(
        url,
        StoreOptions {
            pool_size: 1,
            read_pool_size: 1,
            migrate: false,
        },
    )
    .await
    .unwrap()
}

/// What a Data API request did: rows read, or rows written, or the SQLSTATE it failed with.
#[derive(Debug)]
enum Answer {
    Rows(Vec<sqlx::postgres::PgRow>),
    Written(u64),
    Refused(String),
}

impl Answer {
    /// Nothing read, nothing written.
    fn is_nothing(&self) -> bool {
        match self {
            Answer::Rows(rows) => rows.is_empty(),
            Answer::Written(n) => *n == 0,
            Answer::Refused(_) => true,
        }
    }
}

/// One Data API request as PostgREST makes it: a transaction as `authenticator`, the JWT's role
/// set locally, its claims in `request.jwt.claims`, the statement, commit.
async fn data_api(db: &TestDb, claims: &Value, sql: &str) -> Answer {
    let mut conn = PgConnection::connect(&url_as(&db.url, "authenticator"))
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let role = claims["role"].as_str().unwrap();
    sqlx::query("select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)")
        .bind(role)
        .bind(claims.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let is_read = sql.trim_start().starts_with("select");
    let answer = if is_read {
        match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut *tx)
            .await
        {
            Ok(rows) => Answer::Rows(rows),
            Err(e) => Answer::Refused(sqlstate(&e)),
        }
    } else {
        match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut *tx)
            .await
        {
            Ok(done) => Answer::Written(done.rows_affected()),
            Err(e) => Answer::Refused(sqlstate(&e)),
        }
    };
    if matches!(answer, Answer::Refused(_)) {
        tx.rollback().await.unwrap();
    } else {
        tx.commit().await.unwrap();
    }
    answer
}

fn anon() -> Value {
    json!({"role": "anon", "iss": "supabase"})
}

fn signed_in(user: Uuid) -> Value {
    json!({"sub": user, "role": "authenticated", "aud": "authenticated", "iss": "supabase"})
}

/// Every row of the service's tables, as their owner sees them.
async fn everything(db: &TestDb) -> (String, String) {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_as(
        "select coalesce((select md5(string_agg(t::text, ',' order by t.id)) from connect.integration_tokens t), ''), \
                coalesce((select md5(string_agg(f::text, ',' order by f.state_hash)) from connect.oauth_flows f), '') \
                || coalesce((select md5(string_agg(a::text, ',' order by a.id)) from connect.activity a), '') \
                || coalesce((select md5(string_agg(j::text, ',' order by j.id)) from connect.activity_journal j), '') \
                || coalesce((select md5(string_agg(b::text, ',' order by b.id)) from connect.activity_batches b), '')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Alice connected, with a connect flow under way; Bob signed in, not connected.
async fn alice_and_bob(exposed: bool) -> (TestDb, Uuid, Uuid) {
    let db = TestDb::new(Backend::Supabase).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let service = store(&db.url).await;
    seed_connection(&service, alice, "alice@contoso.example").await;
    service.close().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "insert into connect.oauth_flows (state_hash, user_id, provider, pkce_verifier, key_id, \
           binding_hash, app_origin, expires_at) \
         values (sha256(gen_random_uuid()::text::bytea), $1, 'microsoft', 'sealed', 'k1', \
           sha256('b'), 'https://app.example', now() + interval '10 minutes')",
    )
    .bind(alice)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into connect.activity (minute, user_id, provider, kind, actor, outcome, events, \
           first_seen, last_seen) values (date_trunc('minute', now()), $1, 'microsoft', 'token', \
           'n8n', 'ok', 3, now(), now())",
    )
    .bind(alice)
    .execute(&mut conn)
    .await
    .unwrap();
    if exposed {
        sqlx::raw_sql(EXPOSE_AS_THE_GUIDE_SAYS)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    (db, alice, bob)
}

async fn nobody_reaches_alices_connection(exposed: bool) {
    let (db, alice, bob) = alice_and_bob(exposed).await;
    let before = everything(&db).await;
    let attacks = [
        "select * from connect.integration_tokens".to_owned(),
        format!(
            "select user_id, provider_email, display_name, scopes, status from connect.integration_tokens where user_id = '{alice}'"
        ),
        "select access_token, refresh_token from connect.integration_tokens".to_owned(),
        "select * from connect.oauth_flows".to_owned(),
        format!("select * from connect.read_own_connections('{alice}', null)"),
        format!("select * from connect.read_own_statuses('{alice}', null)"),
        "select * from connect.activity".to_owned(),
        format!("select * from connect.read_own_activity('{alice}', 'microsoft', 20)"),
        "update connect.activity set events = 1".to_owned(),
        "select * from connect.activity_journal".to_owned(),
        format!(
            "insert into connect.activity_journal (minute, user_id, provider, kind, actor, method, path, outcome, events, first_seen, last_seen) values (array[now()], array['{alice}'::uuid], array['microsoft'], array['token'], array['evil'], array[''], array[''], array['ok'], array[1::int8], array[now()], array[now()])"
        ),
        "delete from connect.activity_journal".to_owned(),
        "select * from connect.activity_batches".to_owned(),
        "insert into connect.activity_batches (counts) values ('\\x01'::bytea)".to_owned(),
        "delete from connect.activity_batches".to_owned(),
        "delete from connect.activity".to_owned(),
        format!(
            "insert into connect.activity (minute, user_id, provider, kind, actor, outcome, events, first_seen, last_seen) values (now(), '{alice}', 'microsoft', 'token', 'evil', 'ok', 1, now(), now())"
        ),
        format!(
            "select * from connect.read_own_connections(p_user := '{alice}', p_provider := 'microsoft')"
        ),
        format!(
            "select * from connect.read_own_statuses(p_user := '{alice}', p_provider := 'microsoft')"
        ),
        "select * from connect._sqlx_migrations".to_owned(),
        format!(
            "insert into connect.integration_tokens (user_id, provider, access_token, key_id, expires_at, provider_user_id) values ('{alice}', 'google', 'x', 'k1', now(), 'p')"
        ),
        format!(
            "update connect.integration_tokens set provider_email = 'evil@example.com' where user_id = '{alice}'"
        ),
        "update connect.integration_tokens set status = 'needs_reauth'".to_owned(),
        format!("delete from connect.integration_tokens where user_id = '{alice}'"),
        "delete from connect.oauth_flows".to_owned(),
        "update connect.oauth_flows set app_origin = 'https://evil.example'".to_owned(),
        format!(
            "insert into connect.oauth_flows (state_hash, user_id, provider, pkce_verifier, key_id, binding_hash, app_origin, expires_at) values ('x', '{alice}', 'microsoft', 'v', 'k1', 'b', 'https://evil.example', now() + interval '1 hour')"
        ),
        "select * from connect.webhook_events".to_owned(),
        "select * from connect.webhook_deliveries".to_owned(),
        "select * from connect.webhook_endpoints".to_owned(),
        "insert into connect.webhook_endpoints (name, disabled_at) values ('hooks', now())"
            .to_owned(),
        "update connect.webhook_deliveries set status = 'pending', next_attempt_at = now()"
            .to_owned(),
        "delete from connect.webhook_events".to_owned(),
    ];
    for caller in [anon(), signed_in(bob)] {
        for attack in &attacks {
            let answer = data_api(&db, &caller, attack).await;
            assert!(
                answer.is_nothing(),
                "exposed={exposed}, {caller}: {attack}: {answer:?}"
            );
        }
        // Becoming the service, or its reader, is refused.
        for role in ["connect_service", "connect_user_reader", "postgres"] {
            let answer = data_api(&db, &caller, &format!("set local role {role}")).await;
            assert!(
                matches!(answer, Answer::Refused(ref code) if code == "42501"),
                "exposed={exposed}, {caller}: set role {role}: {answer:?}"
            );
        }
    }
    assert_eq!(everything(&db).await, before, "exposed={exposed}");

    // user_has_integration answers for the caller, and only for the caller.
    let has = |answer: Answer| match answer {
        Answer::Rows(rows) => Some(rows[0].get::<bool, _>(0)),
        _ => None,
    };
    for function in [
        "public.user_has_integration",
        "connect.user_has_integration",
    ] {
        let ask = format!("select {function}('outlook')");
        assert_eq!(
            has(data_api(&db, &signed_in(alice), &ask).await),
            Some(true),
            "{function}"
        );
        assert_eq!(
            has(data_api(&db, &signed_in(bob), &ask).await),
            Some(false),
            "{function}"
        );
        assert_eq!(
            has(data_api(&db, &signed_in(Uuid::new_v4()), &ask).await),
            Some(false),
            "{function}"
        );
        assert_ne!(
            has(data_api(&db, &anon(), &ask).await),
            Some(true),
            "{function}"
        );
    }
    // The seed's variant that took a user id does not exist.
    let answer = data_api(
        &db,
        &signed_in(bob),
        &format!("select public.user_has_integration('{alice}'::uuid, 'microsoft')"),
    )
    .await;
    assert!(matches!(answer, Answer::Refused(ref code) if code == "42883"));
}

#[tokio::test]
async fn data_api_requests_reach_nothing_of_another_user_with_connect_not_exposed() {
    nobody_reaches_alices_connection(false).await;
}

#[tokio::test]
async fn data_api_requests_reach_nothing_of_another_user_with_connect_exposed_as_the_guide_says() {
    nobody_reaches_alices_connection(true).await;
}

#[tokio::test]
async fn taking_back_the_guides_grants_as_docs_say_restores_the_migrated_privileges() {
    let db = TestDb::new(Backend::Supabase).await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let migrated = migrated_catalog(&mut conn).await;
    sqlx::raw_sql(EXPOSE_AS_THE_GUIDE_SAYS)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_ne!(migrated_catalog(&mut conn).await, migrated);
    // The SQL docs/supabase.md gives, as it is there.
    let docs = include_str!("../../../../docs/supabase.md");
    let take_back = docs
        .split("If you exposed it already, take the grants back")
        .nth(1)
        .and_then(|rest| rest.split("```sql").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("docs/supabase.md gives the SQL that takes the grants back");
    sqlx::raw_sql(sqlx::AssertSqlSafe(take_back.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(migrated_catalog(&mut conn).await, migrated);
}

#[tokio::test]
async fn no_api_role_reads_a_token_column_and_service_role_sees_only_ciphertext_when_exposed() {
    let plaintext = "eyJ0eXAiOiJKV1QiLCJub25jZSI6InBsYWludGV4dC1hY2Nlc3MtdG9rZW4ifQ";
    let tokens = [
        "select access_token from connect.integration_tokens",
        "select refresh_token from connect.integration_tokens",
        "select pkce_verifier from connect.oauth_flows",
    ];
    for exposed in [false, true] {
        let (db, alice, bob) = alice_and_bob(exposed).await;
        // Alice's tokens as the connect flow stores them: sealed by the service's key ring.
        let ring = test_keyring();
        let seal = |column: &'static str| {
            ring.seal(
                &token_place(column, UserId(alice), ProviderId::Microsoft),
                plaintext.as_bytes(),
            )
            .unwrap()
        };
        let service = store(&db.url).await;
        service
            .upsert_connection(&NewConnection {
                user_id: UserId(alice),
                provider: ProviderId::Microsoft,
                access_token: seal("access_token"),
                refresh_token: Some(seal("refresh_token")),
                key_id: ring.active_key_id().to_owned(),
                expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                provider_user_id: "ms-alice".into(),
                provider_email: Some("alice@contoso.example".into()),
                display_name: None,
                scopes: vec![],
            })
            .await
            .unwrap();
        service.close().await;

        for caller in [anon(), signed_in(alice), signed_in(bob)] {
            for sql in tokens {
                let answer = data_api(&db, &caller, sql).await;
                assert!(
                    answer.is_nothing(),
                    "exposed={exposed}, {caller}: {sql}: {answer:?}"
                );
            }
        }
        let service_role = json!({"role": "service_role", "iss": "supabase"});
        for sql in tokens {
            let answer = data_api(&db, &service_role, sql).await;
            if !exposed {
                assert!(
                    matches!(answer, Answer::Refused(ref code) if code == "42501"),
                    "{sql}: {answer:?}"
                );
                continue;
            }
            // service_role bypasses row-level security, and the guide grants it every column:
            // what it gets is ciphertext that only the service's key opens.
            let Answer::Rows(rows) = answer else {
                panic!("{sql}: {answer:?}")
            };
            for row in rows {
                let Some(sealed) = row.get::<Option<Vec<u8>>, _>(0) else {
                    continue;
                };
                assert!(
                    !sealed
                        .windows(plaintext.len())
                        .any(|w| w == plaintext.as_bytes()),
                    "{sql}: plaintext in the column"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_recommended_login_reads_nothing_of_the_app_whatever_role_or_claims_it_sets() {
    let db = TestDb::new(Backend::Supabase).await;
    let alice = Uuid::new_v4();
    let login = format!("cc_login_{}", Uuid::new_v4().simple());
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    // docs/operations.md and docs/supabase.md: a login that can do nothing but become the service.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create role {login} login noinherit; grant connect_service to {login}; \
         insert into public.app_notes (user_id, body) values ('{alice}', 'alice''s private note')"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    // The app's policy works as the app expects: Alice reads her note through the Data API.
    let Answer::Rows(own) =
        data_api(&db, &signed_in(alice), "select body from public.app_notes").await
    else {
        panic!("alice reads her notes")
    };
    assert_eq!(own.len(), 1);

    let mut conn = PgConnection::connect(&url_as(&db.url, &login))
        .await
        .unwrap();
    let claims = signed_in(alice).to_string();
    for role in [
        None,
        Some("connect_service"),
        Some("connect_user_reader"),
        Some("authenticated"),
        Some("anon"),
        Some("service_role"),
        Some("authenticator"),
        Some("postgres"),
        Some("supabase_admin"),
    ] {
        for sql in [
            "select body from public.app_notes",
            "insert into public.app_notes (user_id, body) values (auth.uid(), 'planted')",
            "update public.app_notes set body = 'changed'",
            "delete from public.app_notes",
        ] {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("select set_config('request.jwt.claims', $1, true)")
                .bind(&claims)
                .execute(&mut *tx)
                .await
                .unwrap();
            let became = match role {
                Some(role) => sqlx::raw_sql(sqlx::AssertSqlSafe(format!("set local role {role}")))
                    .execute(&mut *tx)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            };
            if became.is_err() {
                tx.rollback().await.unwrap();
                continue;
            }
            let answer = match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut *tx)
                .await
            {
                Ok(rows) if sql.starts_with("select") => Answer::Rows(rows),
                Ok(_) => Answer::Written(1),
                Err(e) => Answer::Refused(sqlstate(&e)),
            };
            assert!(
                matches!(answer, Answer::Refused(ref code) if code == "42501"),
                "{login} as {role:?}: {sql}: {answer:?}"
            );
            tx.rollback().await.unwrap();
        }
    }
    conn.close().await.unwrap();
    let notes: Vec<String> = sqlx::query_scalar("select body from public.app_notes")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    assert_eq!(notes, ["alice's private note"]);
}

#[tokio::test]
async fn migrates_as_supabases_postgres_on_a_fresh_database_and_again() {
    let (_, url) = fresh_database().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let (superuser, createrole): (bool, bool) =
        sqlx::query_as("select rolsuper, rolcreaterole from pg_roles where rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (superuser, createrole),
        (false, true),
        "Supabase's postgres"
    );
    Store::migrate(&url)
        .await
        .expect("migrates as Supabase's postgres");
    Store::migrate(&url).await.expect("and again");
    let applied: i64 = sqlx::query_scalar("select count(*) from connect._sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        applied,
        celeste_connect::store::postgres::migration_checksums().count() as i64
    );
    // `serve` with the same URL works: it acts as connect_service.
    let alice = Uuid::new_v4();
    let service = store(&url).await;
    seed_connection(&service, alice, "alice@contoso.example").await;
    assert_eq!(
        service.user_connections(UserId(alice)).await.unwrap().len(),
        1
    );
    service.close().await;
}

#[tokio::test]
async fn migrate_as_a_role_that_cannot_says_which_role_to_use() {
    // Before anything was migrated: PostgREST's login.
    let (_, url) = fresh_database().await;
    let err = Store::migrate(&url_as(&url, "authenticator"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("`postgres`"), "{err}");
    assert!(err.contains("`authenticator`"), "{err}");

    // After: the service's own login, which owns nothing.
    let db = TestDb::new(Backend::Supabase).await;
    let login = format!("cc_login_{}", Uuid::new_v4().simple());
    let mut owner = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create role {login} login noinherit; grant connect_service to {login}"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let err = Store::migrate(&url_as(&db.url, &login))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        err.contains("naming role `postgres`, the owner of schema connect"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_migration_statement_is_named_with_its_file_line_and_missing_privilege() {
    // A role that may create schemas in the database but cannot grant roles.
    let (name, url) = fresh_database().await;
    let role = format!("cc_app_owner_{}", Uuid::new_v4().simple());
    supabase_shape::cluster()
        .await
        .exec(
            &name,
            &format!("create role {role} login; grant create on database {name} to {role}"),
        )
        .await;
    let err = Store::migrate(&url_as(&url, &role))
        .await
        .unwrap_err()
        .to_string();
    let file = include_str!("../../migrations/postgres/0001_init.sql");
    let statement = "grant connect_service to current_user";
    let line = file
        .lines()
        .position(|l| l.starts_with(statement))
        .expect("the statement is in the file")
        + 1;
    assert!(
        err.contains(&format!(
            "migration 0001_init.sql failed at line {line} (`{statement}`)"
        )),
        "{err}"
    );
    assert!(err.contains("connect_service"), "{err}");
    assert!(err.contains("SQLSTATE 42501"), "{err}");
    assert!(err.contains(&format!("role `{role}`")), "{err}");
}
