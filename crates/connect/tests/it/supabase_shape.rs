//! A database shaped the way supabase/postgres builds one, for [`Backend::Supabase`]: bootstrap
//! superuser `supabase_admin`; `postgres` NOSUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS,
//! the role users are given; the API roles `anon`, `authenticated` and `service_role` (only the
//! last BYPASSRLS); `authenticator`, the NOINHERIT login PostgREST uses, granted the three;
//! schema `auth` with `auth.uid()` / `auth.jwt()` reading `request.jwt.claims`; Supabase's
//! default privileges (ALL on new tables, sequences and routines in `public` to the API roles);
//! and an app table, `public.app_notes`, with the usual `user_id = auth.uid()` policy.
//!
//! Roles are cluster-wide and `postgres` is a superuser on the shared test server, so this shape
//! lives in a throwaway cluster of its own ([`Cluster`]), one per test process, with one database
//! per test copied from a template that is migrated once, as `postgres`.
//!
//! [`Backend::Supabase`]: crate::support::Backend::Supabase

use celeste_connect::store::Store;
use tokio::sync::{Mutex, OnceCell};

use crate::cluster::Cluster;

pub const SUPERUSER: &str = "supabase_admin";

/// The role Supabase gives its users, and the one the tests migrate and run the service as.
pub const OWNER: &str = "postgres";

const TEMPLATE: &str = "supabase_shaped_template";

/// Cluster-wide: the roles (supabase/postgres's initial schema, with `postgres` demoted).
const ROLES: &str = r#"
create role postgres login nosuperuser createdb createrole replication bypassrls;
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
-- supabase/postgres 20230529180330_alter_api_roles_for_inherit
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;
create role authenticator login noinherit;
grant anon, authenticated, service_role to authenticator;
-- As Supabase grants them on PostgreSQL 16+ (20250605172253); lets `postgres` act as them.
grant anon, authenticated, service_role to postgres with admin option;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
"#;

/// Per database, as `supabase_admin`: privileges in `public`, schema `auth`.
const DATABASE: &str = r#"
do $$ begin execute format('grant all on database %I to postgres', current_database()); end $$;
grant usage on schema public to postgres, anon, authenticated, service_role;
grant create on schema public to postgres;
alter default privileges in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;

create schema auth authorization supabase_admin;
create function auth.uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
create function auth.role() returns text language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
create function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;
grant usage on schema auth to postgres, anon, authenticated, service_role;
"#;

/// The host app's own table, created by its developer (as `postgres`, as in the SQL editor).
const APP: &str = r#"
create table public.app_notes (
  id bigint generated always as identity primary key,
  user_id uuid not null default auth.uid(),
  body text not null
);
alter table public.app_notes enable row level security;
create policy "Users manage their own notes" on public.app_notes
  for all to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
"#;

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
static CREATE: Mutex<u64> = Mutex::const_new(0);

/// The process's Supabase-shaped cluster, started (and its template built) on first use.
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let cluster = tokio::task::spawn_blocking(|| Cluster::start(SUPERUSER))
                .await
                .expect("the Supabase-shaped cluster starts");
            cluster.exec("postgres", ROLES).await;
            cluster
                .exec("postgres", &format!("create database {TEMPLATE}"))
                .await;
            shape_database(&cluster, TEMPLATE).await;
            Store::migrate(&cluster.url(OWNER, TEMPLATE))
                .await
                .expect("the migrations apply as Supabase's `postgres`");
            cluster
        })
        .await
}

/// Gives a new, empty database Supabase's privileges, schema `auth` and the app's table.
pub async fn shape_database(cluster: &Cluster, database: &str) {
    cluster.exec(database, DATABASE).await;
    exec_as(cluster, OWNER, database, APP).await;
}

/// Runs SQL as `role` (several statements allowed).
pub async fn exec_as(cluster: &Cluster, role: &str, database: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&cluster.url(role, database))
        .await
        .expect("the Supabase-shaped cluster accepts connections");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    let _ = conn.close().await;
}

/// A fresh migrated database of its own: (`postgres`'s URL, the superuser's URL to drop it).
pub async fn new_database() -> (String, String) {
    let cluster = cluster().await;
    let name = {
        let mut next = CREATE.lock().await;
        *next += 1;
        let name = format!("cc_t_supabase_{next}");
        cluster
            .exec(
                "postgres",
                &format!("create database {name} template {TEMPLATE}"),
            )
            .await;
        name
    };
    cluster
        .exec(&name, "do $$ begin execute format('grant all on database %I to postgres', current_database()); end $$")
        .await;
    (cluster.url(OWNER, &name), cluster.admin_url("postgres"))
}
