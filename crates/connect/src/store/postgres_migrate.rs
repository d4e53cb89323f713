//! Applying the PostgreSQL migrations (`migrations/postgres/`), and saying exactly where and why
//! one fails: the migration file, the statement and its line, the database's reason, and — when a
//! privilege is missing — which role to run `celeste-connect migrate` as instead. It runs as the
//! role `DATABASE_URL` names, on a connection of its own; it never touches the service's pools.
//! The bookkeeping table lives in schema `connect`, not in Supabase's exposed `public`.

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use std::fmt;
use std::str::FromStr;

use super::StoreResult;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// SHA-384 of `0001_init.sql` as first released. That release also granted `authenticated` to
/// `connect_service` and gave `public.user_has_integration` to `connect_service`, which
/// Supabase's `postgres` may not do; the file lost those two statements and `0002_own_roles.sql`
/// undoes their effect where they ran, so an installation that applied the first release is in
/// the same state after 0002 as a fresh one (docs/decisions.md, "Migrations").
const FIRST_RELEASE_OF_0001_SHA384: &str = "3ebf5c969da07c580951f514a4c05c774e9a21144154b896424949ec344d6a1e64f5d03cbe10130fd564a2cf04b133f3";

/// Why `migrate` stopped, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A statement of a migration file failed; the migration was rolled back.
    #[error("migration {file} failed at line {line} (`{statement}`): {reason}{advice}")]
    Statement {
        file: String,
        line: usize,
        /// The statement's first line.
        statement: String,
        reason: String,
        advice: Advice,
    },
    /// Preparing schema `connect` or the migrations' bookkeeping failed.
    #[error("preparing schema connect for migrations failed: {reason}{advice}")]
    Setup { reason: String, advice: Advice },
}

/// What to do about a failure, when the database said a privilege was missing.
#[derive(Debug, Default)]
pub struct Advice(Option<String>);

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(advice) => write!(f, ". {advice}"),
            None => Ok(()),
        }
    }
}

/// The version and checksum of every embedded migration, in order (what identifies a schema).
pub fn migration_checksums() -> impl Iterator<Item = (i64, &'static [u8])> {
    MIGRATOR.iter().map(|m| (m.version, m.checksum.as_ref()))
}

/// The session advisory lock `migrate` holds (any fixed number: "celeste" in ASCII).
const MIGRATE_LOCK: i64 = 0x63_656c_6573_7465;

/// Applies the embedded migrations as the URL's role.
pub(super) async fn migrate(url: &str) -> StoreResult<()> {
    let options = PgConnectOptions::from_str(url)?.application_name("celeste-connect-migrate");
    let mut conn = PgConnection::connect_with(&options).await?;
    // Replicas starting together on a new database take turns: the preparation and the final
    // REVOKE run outside sqlx's own migration lock, and concurrent GRANT/REVOKE on one table
    // fail with "tuple concurrently updated". Released when the connection closes.
    if let Err(e) = sqlx::query("select pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut conn)
        .await
    {
        return Err(setup_error(&mut conn, e).await.into());
    }
    if let Err(e) = prepare(&mut conn).await {
        return Err(setup_error(&mut conn, e).await.into());
    }
    match MIGRATOR.run(&mut conn).await {
        Ok(()) => {}
        Err(sqlx::migrate::MigrateError::ExecuteMigration(e, version)) => {
            return Err(statement_error(&mut conn, version, e).await.into());
        }
        Err(sqlx::migrate::MigrateError::Execute(e)) if e.as_database_error().is_some() => {
            return Err(setup_error(&mut conn, e).await.into());
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = sqlx::raw_sql(
        "revoke all on connect._sqlx_migrations from public, anon, authenticated; \
         alter table connect._sqlx_migrations enable row level security",
    )
    .execute(&mut conn)
    .await
    {
        return Err(setup_error(&mut conn, e).await.into());
    }
    conn.close().await?;
    Ok(())
}

/// Schema `connect` for the bookkeeping table, and the first release's 0001 accepted as 0001.
async fn prepare(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("create schema if not exists connect; set search_path = connect")
        .execute(&mut *conn)
        .await?;
    let bookkeeping: bool =
        sqlx::query_scalar("select to_regclass('connect._sqlx_migrations') is not null")
            .fetch_one(&mut *conn)
            .await?;
    let Some(init) = MIGRATOR.iter().find(|m| m.version == 1) else {
        return Ok(());
    };
    if !bookkeeping {
        return Ok(());
    }
    // Read first, so a start that has nothing to accept writes nothing.
    let released: bool = sqlx::query_scalar(
        "select exists (select 1 from connect._sqlx_migrations \
                        where version = 1 and checksum = decode($1, 'hex'))",
    )
    .bind(FIRST_RELEASE_OF_0001_SHA384)
    .fetch_one(&mut *conn)
    .await?;
    if released {
        sqlx::query(
            "update connect._sqlx_migrations set checksum = $1 \
             where version = 1 and checksum = decode($2, 'hex')",
        )
        .bind(init.checksum.as_ref())
        .bind(FIRST_RELEASE_OF_0001_SHA384)
        .execute(&mut *conn)
        .await?;
        tracing::info!("0001_init.sql as first released is applied; 0002 brings it up to date");
    }
    Ok(())
}

async fn setup_error(conn: &mut PgConnection, e: sqlx::Error) -> MigrationError {
    MigrationError::Setup {
        advice: advice(conn, &e).await,
        reason: reason(&e),
    }
}

/// Finds the failing statement by replaying the migration, one statement at a time, in a
/// transaction that is rolled back (the failed run left nothing behind either).
async fn statement_error(conn: &mut PgConnection, version: i64, e: sqlx::Error) -> MigrationError {
    let migration = MIGRATOR.iter().find(|m| m.version == version);
    let file = migration.map_or_else(
        || format!("{version}"),
        |m| format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_")),
    );
    let mut failure = None;
    if let Some(m) = migration
        && let Ok(mut tx) = conn.begin().await
    {
        for statement in statements(m.sql.as_str()) {
            if let Err(replayed) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.text.to_owned()))
                .execute(&mut *tx)
                .await
            {
                failure = Some((statement, replayed));
                break;
            }
        }
        let _ = tx.rollback().await;
    }
    let (line, statement, e) = match failure {
        Some((statement, replayed)) => (
            statement.line,
            statement.text.lines().next().unwrap_or_default().to_owned(),
            replayed,
        ),
        None => (0, String::from("?"), e),
    };
    MigrationError::Statement {
        file,
        line,
        statement,
        advice: advice(conn, &e).await,
        reason: reason(&e),
    }
}

/// The database's message, with its detail and hint and the SQLSTATE.
fn reason(e: &sqlx::Error) -> String {
    let Some(db) = e.as_database_error() else {
        return e.to_string();
    };
    let mut reason = db.message().to_owned();
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            reason.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = pg.hint() {
            reason.push_str(&format!("; hint: {hint}"));
        }
    }
    if let Some(code) = db.code() {
        reason.push_str(&format!(" [SQLSTATE {code}]"));
    }
    reason
}

/// For a missing privilege (SQLSTATE 42501): which role to migrate as instead.
async fn advice(conn: &mut PgConnection, e: &sqlx::Error) -> Advice {
    let missing_privilege = e
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42501");
    if !missing_privilege {
        return Advice::default();
    }
    let roles: Result<(String, Option<String>, String, String), sqlx::Error> = sqlx::query_as(
        "select current_user::text, \
                (select pg_get_userbyid(nspowner)::text from pg_namespace where nspname = 'connect'), \
                current_database()::text, \
                (select pg_get_userbyid(datdba)::text from pg_database where datname = current_database())",
    )
    .fetch_one(&mut *conn)
    .await;
    let Ok((current, schema_owner, database, database_owner)) = roles else {
        return Advice(Some(
            "run `celeste-connect migrate` as the role that owns schema connect \
             (on Supabase: `postgres`)"
                .into(),
        ));
    };
    Advice(Some(match schema_owner {
        Some(owner) if owner == current => format!(
            "role `{current}` owns schema connect but lacks this privilege: grant it to \
             `{current}`, or run `celeste-connect migrate` as a superuser (on Supabase: as \
             `postgres`)"
        ),
        Some(owner) => format!(
            "role `{current}` may not do this: run `celeste-connect migrate` with a DATABASE_URL \
             naming role `{owner}`, the owner of schema connect"
        ),
        None => format!(
            "role `{current}` may not do this: run `celeste-connect migrate` with a DATABASE_URL \
             naming a role that may create schemas in database `{database}` and create roles \
             (on Supabase: `postgres`; elsewhere the database's owner `{database_owner}` or a \
             superuser)"
        ),
    }))
}

/// One statement of a migration file and the line it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
struct Statement<'a> {
    line: usize,
    text: &'a str,
}

/// Splits SQL into statements at top-level semicolons, minding comments, quoted strings and
/// identifiers, and dollar-quoted bodies (functions, `do` blocks).
fn statements(sql: &str) -> Vec<Statement<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i = sql[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2);
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let begin = *start.get_or_insert(i);
        match c {
            b';' => {
                push(sql, begin, i, &mut out);
                start = None;
                i += 1;
            }
            b'\'' | b'"' => {
                // A doubled quote inside is an escaped quote: the loop sees two strings.
                i = sql[i + 1..]
                    .find(c as char)
                    .map_or(bytes.len(), |n| i + 1 + n + 1);
            }
            b'$' => {
                let tag_len = sql[i + 1..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(0);
                let tag_end = i + 1 + tag_len;
                let is_tag = bytes.get(tag_end) == Some(&b'$')
                    && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if is_tag {
                    let tag = &sql[i..=tag_end];
                    i = sql[tag_end + 1..]
                        .find(tag)
                        .map_or(bytes.len(), |n| tag_end + 1 + n + tag.len());
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if let Some(begin) = start {
        push(sql, begin, bytes.len(), &mut out);
    }
    out
}

fn push<'a>(sql: &'a str, from: usize, to: usize, out: &mut Vec<Statement<'a>>) {
    let text = sql[from..to].trim();
    if !text.is_empty() {
        let line = sql[..from].matches('\n').count() + 1;
        out.push(Statement { line, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = "-- a comment; not a statement\ncreate schema x;\n\
                   create function f() returns int language sql as $$ select 1; $$;\n\
                   do $body$ begin perform 'a;b'; end $body$;\n\
                   /* block; comment */ grant \"we;ird\" to y;\nselect $1";
        let found = statements(sql);
        assert_eq!(
            found.iter().map(|s| (s.line, s.text)).collect::<Vec<_>>(),
            [
                (2, "create schema x"),
                (
                    3,
                    "create function f() returns int language sql as $$ select 1; $$"
                ),
                (4, "do $body$ begin perform 'a;b'; end $body$"),
                (5, "grant \"we;ird\" to y"),
                (6, "select $1"),
            ]
        );
    }

    #[test]
    fn every_embedded_migration_splits_into_statements_that_end_cleanly() {
        for m in MIGRATOR.iter() {
            let found = statements(m.sql.as_str());
            assert!(!found.is_empty(), "{}", m.description);
            assert!(found.iter().all(|s| !s.text.ends_with(';')));
        }
    }
}
