//! `seed`: N connections "through the service's own code path". The service's migrations
//! (`Store::migrate`) create the schema; every access and refresh token is sealed by the
//! service's vault (`Keyring::seal`) at the place the connect flow seals it
//! (`broker::connect::token_place`), so the service opens them exactly as it opens tokens it
//! stored itself. Rows are bulk-inserted: PostgreSQL with `UNNEST` batches on a few
//! connections, SQLite with multi-row inserts in large transactions. It also writes a sample of
//! user ids and one ready-made HS256 user JWT per sampled user, for the load generator.
//! Options make the same rows for Google or Dropbox (`--provider`), expiring within seconds of
//! each other (`--expires-in-secs`, `--expires-spread-secs`), idle for the keep-alive worker
//! (`--last-refreshed-offset-secs`), and all holding one refresh token the emulator issued
//! (`--refresh-token-file`), so the emulator honours their refreshes.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use celeste_connect::broker::connect::token_place;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::Store;
use celeste_connect::vault::Keyring;
use futures::{StreamExt, TryStreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::record::{self, Record};

/// Graph permissions as the emulator (and Microsoft) report them for the service's request.
const MICROSOFT_SCOPES: [&str; 3] = [
    "https://graph.microsoft.com/Mail.Read",
    "https://graph.microsoft.com/User.Read",
    "https://graph.microsoft.com/MailboxSettings.Read",
];

/// SQLite allows 32 766 bound values per statement; 12 columns × 1 000 rows stays well below.
const SQLITE_ROWS_PER_STATEMENT: usize = 1_000;

#[derive(clap::Args)]
pub struct SeedArgs {
    /// `postgres://…` (as the schema owner) or `sqlite://path`.
    #[arg(long)]
    database_url: String,
    /// Connections to insert.
    #[arg(long)]
    count: u64,
    /// `id:base64key,…`, as CONNECT_ENCRYPTION_KEYS; the first key seals.
    #[arg(long)]
    encryption_keys: String,
    /// The HS256 secret the service verifies user JWTs with (CONNECT_JWT_SECRET).
    #[arg(long)]
    jwt_secret: String,
    /// Where `users.txt` and `jwts.txt` (aligned, one per line) go.
    #[arg(long)]
    out_dir: PathBuf,
    /// How many users (spread evenly over all N) get a line in `users.txt`/`jwts.txt`.
    #[arg(long, default_value_t = 20_000)]
    sample: u64,
    /// Length of each plaintext access token (Microsoft's are 1–2.5 KB).
    #[arg(long, default_value_t = 1_200)]
    access_token_len: usize,
    /// Length of each plaintext refresh token.
    #[arg(long, default_value_t = 600)]
    refresh_token_len: usize,
    /// Every token starts with `{marker}-at-` or `{marker}-rt-`.
    #[arg(long, default_value = "BENCHTOK")]
    marker: String,
    /// Rows per insert batch.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Results file to record the seeding time in.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Label of the seeding pass in the results.
    #[arg(long, default_value = "seed")]
    label: String,
    /// The provider of every row: `microsoft`, `google` or `dropbox`.
    #[arg(long, default_value = "microsoft", value_parser = parse_provider)]
    provider: ProviderId,
    /// Every access token expires this many seconds after seeding starts.
    #[arg(long, default_value_t = 3_600)]
    expires_in_secs: i64,
    /// Spread the expiry times evenly over this many seconds after `--expires-in-secs`.
    #[arg(long, default_value_t = 0)]
    expires_spread_secs: i64,
    /// `last_refreshed_at` = the row's `expires_at` plus this (negative: before it); absent:
    /// now. With minus (refresh skew + keep-alive idle age), a row becomes due for the
    /// keep-alive worker at the moment its access token becomes due for refresh on use.
    #[arg(long, allow_hyphen_values = true)]
    last_refreshed_offset_secs: Option<i64>,
    /// A file holding one plaintext refresh token that every row gets (sealed at its own
    /// place), instead of a generated one: an emulator-issued token keeps working after each
    /// use, so every row's refresh succeeds.
    #[arg(long)]
    refresh_token_file: Option<PathBuf>,
}

pub fn parse_provider(value: &str) -> Result<ProviderId, String> {
    ProviderId::from_db(value)
        .or_else(|| ProviderId::from_path(value))
        .ok_or_else(|| format!("unknown provider {value:?}"))
}

/// The scopes stored with a seeded row: what the provider reports granting.
fn scopes(provider: ProviderId) -> Vec<String> {
    match provider {
        ProviderId::Microsoft => MICROSOFT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        other => other
            .spec()
            .default_scopes
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    }
}

fn email_domain(provider: ProviderId) -> &'static str {
    match provider {
        ProviderId::Microsoft => "contoso.example",
        ProviderId::Google => "gmail.example",
        ProviderId::Dropbox => "dropbox.example",
    }
}

/// One generated connection, tokens already sealed.
struct Row {
    user: Uuid,
    expires_at: OffsetDateTime,
    last_refreshed_at: OffsetDateTime,
    access_token: Vec<u8>,
    refresh_token: Vec<u8>,
    provider_user_id: String,
    email: String,
    display_name: String,
}

struct Generator {
    keyring: Keyring,
    provider: ProviderId,
    /// The plaintext refresh token of every row, when given.
    refresh_token: Option<String>,
    /// When seeding started; expiry and refresh times are relative to it.
    started: OffsetDateTime,
    expires_in: time::Duration,
    /// Expiry spread: row `i` of `count` expires `spread * i / count` later.
    spread: time::Duration,
    count: u64,
    last_refreshed_offset: Option<time::Duration>,
    marker: String,
    access_len: usize,
    refresh_len: usize,
    stride: u64,
    sample: u64,
}

impl Generator {
    fn token(&self, kind: &str, len: usize, rng: &mut impl RngCore) -> String {
        let mut raw = vec![0u8; len.div_ceil(4) * 3];
        rng.fill_bytes(&mut raw);
        let mut token = format!("{}-{kind}-{}", self.marker, URL_SAFE_NO_PAD.encode(&raw));
        token.truncate(len.max(self.marker.len() + 4));
        token
    }

    /// Rows `start..start+len` and the sampled users among them.
    fn batch(&self, start: u64, len: u64) -> anyhow::Result<(Vec<Row>, Vec<Uuid>)> {
        let mut rng = rand::rng();
        let mut rows = Vec::with_capacity(usize::try_from(len)?);
        let mut sampled = Vec::new();
        for index in start..start + len {
            let user = Uuid::new_v4();
            let id = UserId(user);
            let seal = |column: &'static str, plaintext: String| {
                self.keyring
                    .seal(
                        &token_place(column, id, self.provider),
                        plaintext.as_bytes(),
                    )
                    .map_err(|e| anyhow::anyhow!("sealing: {e}"))
            };
            let access_token = seal("access_token", self.token("at", self.access_len, &mut rng))?;
            let refresh_plain = match &self.refresh_token {
                Some(token) => token.clone(),
                None => self.token("rt", self.refresh_len, &mut rng),
            };
            let refresh_token = seal("refresh_token", refresh_plain)?;
            let offset = self.spread * (index as f64 / self.count.max(1) as f64);
            let expires_at = self.started + self.expires_in + offset;
            let last_refreshed_at = self
                .last_refreshed_offset
                .map_or_else(OffsetDateTime::now_utc, |o| expires_at + o);
            if index % self.stride == 0 && index / self.stride < self.sample {
                sampled.push(user);
            }
            rows.push(Row {
                user,
                expires_at,
                last_refreshed_at,
                access_token,
                refresh_token,
                provider_user_id: Uuid::new_v4().to_string(),
                email: format!("user{index}@{}", email_domain(self.provider)),
                display_name: format!("Bench User {index}"),
            });
        }
        Ok((rows, sampled))
    }
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let keyring = Keyring::parse(&args.encryption_keys)
        .map_err(|e| anyhow::anyhow!("--encryption-keys: {e}"))?;
    let key_id = keyring.active_key_id().to_owned();
    let sample = args.sample.min(args.count);
    let refresh_token = match &args.refresh_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let generator = Generator {
        keyring,
        provider: args.provider,
        refresh_token,
        started: OffsetDateTime::now_utc(),
        expires_in: time::Duration::seconds(args.expires_in_secs),
        spread: time::Duration::seconds(args.expires_spread_secs),
        count: args.count,
        last_refreshed_offset: args.last_refreshed_offset_secs.map(time::Duration::seconds),
        marker: args.marker.clone(),
        access_len: args.access_token_len,
        refresh_len: args.refresh_token_len,
        stride: (args.count / sample.max(1)).max(1),
        sample,
    };
    Store::migrate(&args.database_url)
        .await
        .context("applying the service's migrations")?;

    let batch = u64::try_from(args.batch.max(1))?;
    let batches: Vec<(u64, u64)> = (0..args.count.div_ceil(batch))
        .map(|b| (b * batch, batch.min(args.count - b * batch)))
        .collect();
    let backend;
    let mut sampled: Vec<Uuid> = if args.database_url.starts_with("postgres") {
        backend = "postgres";
        seed_postgres(&args, &generator, &batches, &key_id).await?
    } else if args.database_url.starts_with("sqlite:") {
        backend = "sqlite";
        seed_sqlite(&args, &generator, &batches, &key_id).await?
    } else {
        bail!("--database-url must be postgres://… or sqlite://…");
    };
    sampled.truncate(usize::try_from(sample)?);
    write_samples(&args, &sampled)?;

    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeded {} {backend} {} connections in {seconds:.1} s ({:.0} rows/s); {} sample users in {}",
        args.count,
        args.provider,
        args.count as f64 / seconds.max(1e-9),
        sampled.len(),
        args.out_dir.display()
    );
    if let Some(results) = &args.results {
        record::append(
            results,
            &Record::Seed {
                label: args.label.clone(),
                backend: backend.to_owned(),
                count: args.count,
                seconds,
            },
        )?;
    }
    Ok(())
}

async fn seed_postgres(
    args: &SeedArgs,
    generator: &Generator,
    batches: &[(u64, u64)],
    key_id: &str,
) -> anyhow::Result<Vec<Uuid>> {
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    // The schema owner inserts (as a superuser or owner, row-level security does not get in
    // the way); the service later reads as `connect_service`, like any row it wrote itself.
    sqlx::raw_sql("set synchronous_commit = off")
        .execute(&pool)
        .await?;
    let scopes = scopes(args.provider);
    let sampled: Vec<Vec<Uuid>> = futures::stream::iter(batches.iter().copied())
        .map(|(start, len)| {
            let pool = &pool;
            let scopes = &scopes;
            async move {
                let (rows, sampled) = generator.batch(start, len)?;
                let mut users = Vec::with_capacity(rows.len());
                let mut access = Vec::with_capacity(rows.len());
                let mut refresh = Vec::with_capacity(rows.len());
                let mut provider_ids = Vec::with_capacity(rows.len());
                let mut emails = Vec::with_capacity(rows.len());
                let mut names = Vec::with_capacity(rows.len());
                let mut expiries = Vec::with_capacity(rows.len());
                let mut refreshed = Vec::with_capacity(rows.len());
                for row in rows {
                    users.push(row.user);
                    expiries.push(row.expires_at);
                    refreshed.push(row.last_refreshed_at);
                    access.push(row.access_token);
                    refresh.push(row.refresh_token);
                    provider_ids.push(row.provider_user_id);
                    emails.push(row.email);
                    names.push(row.display_name);
                }
                sqlx::query(
                    "insert into connect.integration_tokens \
                       (user_id, provider, access_token, refresh_token, key_id, expires_at, \
                        provider_user_id, provider_email, display_name, scopes, status, \
                        last_refreshed_at) \
                     select t.u, $10, t.a, t.r, $4, t.x, t.p, t.e, t.d, $9, 'connected', t.l \
                     from unnest($1::uuid[], $2::bytea[], $3::bytea[], $6::text[], $7::text[], \
                                 $8::text[], $5::timestamptz[], $11::timestamptz[]) \
                       as t(u, a, r, p, e, d, x, l)",
                )
                .bind(users)
                .bind(access)
                .bind(refresh)
                .bind(key_id)
                .bind(expiries)
                .bind(provider_ids)
                .bind(emails)
                .bind(names)
                .bind(scopes)
                .bind(args.provider.as_str())
                .bind(refreshed)
                .execute(pool)
                .await
                .context("inserting a batch")?;
                anyhow::Ok(sampled)
            }
        })
        .buffered(3)
        .try_collect()
        .await?;
    // Fresh statistics, hint bits and visibility map, as a long-lived table would have.
    sqlx::raw_sql("vacuum (analyze) connect.integration_tokens")
        .execute(&pool)
        .await
        .context("vacuum analyze")?;
    pool.close().await;
    Ok(sampled.into_iter().flatten().collect())
}

async fn seed_sqlite(
    args: &SeedArgs,
    generator: &Generator,
    batches: &[(u64, u64)],
    key_id: &str,
) -> anyhow::Result<Vec<Uuid>> {
    let options = SqliteConnectOptions::from_str(&args.database_url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("opening SQLite")?;
    let scopes = serde_json::to_string(&scopes(args.provider))?;
    let mut sampled = Vec::new();
    for &(start, len) in batches {
        let (rows, batch_sampled) = generator.batch(start, len)?;
        sampled.extend(batch_sampled);
        let mut tx = pool.begin().await?;
        for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "insert into integration_tokens (id, user_id, provider, access_token, \
                 refresh_token, key_id, expires_at, provider_user_id, provider_email, \
                 display_name, scopes, status, last_refreshed_at) ",
            );
            builder.push_values(chunk, |mut b, row| {
                b.push_bind(Uuid::new_v4().to_string())
                    .push_bind(row.user.to_string())
                    .push_bind(args.provider.as_str())
                    .push_bind(row.access_token.as_slice())
                    .push_bind(row.refresh_token.as_slice())
                    .push_bind(key_id)
                    .push_bind(row.expires_at.unix_timestamp())
                    .push_bind(row.provider_user_id.as_str())
                    .push_bind(row.email.as_str())
                    .push_bind(row.display_name.as_str())
                    .push_bind(scopes.as_str())
                    .push_bind("connected")
                    .push_bind(row.last_refreshed_at.unix_timestamp());
            });
            builder
                .build()
                .execute(&mut *tx)
                .await
                .context("inserting a batch")?;
        }
        tx.commit().await?;
    }
    sqlx::raw_sql("analyze; pragma wal_checkpoint(truncate)")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(sampled)
}

fn write_samples(args: &SeedArgs, users: &[Uuid]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let key = EncodingKey::from_secret(args.jwt_secret.as_bytes());
    let header = Header::new(Algorithm::HS256);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut user_file = BufWriter::new(std::fs::File::create(args.out_dir.join("users.txt"))?);
    let mut jwt_file = BufWriter::new(std::fs::File::create(args.out_dir.join("jwts.txt"))?);
    for user in users {
        writeln!(user_file, "{user}")?;
        writeln!(jwt_file, "{}", user_jwt(&header, &key, *user, now)?)?;
    }
    user_file.flush()?;
    jwt_file.flush()?;
    Ok(())
}

/// A Supabase-style access token for `user`, valid for a day.
pub fn user_jwt(
    header: &Header,
    key: &EncodingKey,
    user: Uuid,
    now: i64,
) -> anyhow::Result<String> {
    let claims = serde_json::json!({
        "sub": user,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 86_400,
        "email": format!("{user}@bench.example"),
        "is_anonymous": false,
    });
    Ok(jsonwebtoken::encode(header, &claims, key)?)
}

#[derive(clap::Args)]
pub struct RefreshTokenArgs {
    /// `postgres://…` as the schema owner.
    #[arg(long)]
    database_url: String,
    /// The user whose stored refresh token is wanted (connected through the OAuth flow).
    #[arg(long)]
    user: Uuid,
    #[arg(long, default_value = "microsoft", value_parser = parse_provider)]
    provider: ProviderId,
    /// `id:base64key,…`, as CONNECT_ENCRYPTION_KEYS.
    #[arg(long, env = "CONNECT_ENCRYPTION_KEYS", hide_env_values = true)]
    encryption_keys: String,
    /// Where the plaintext refresh token goes (created with mode 0600).
    #[arg(long)]
    out: PathBuf,
}

/// `refresh-token`: opens the refresh token the service sealed for a user with the service's
/// vault and writes it to a file, for `seed --refresh-token-file`.
pub async fn refresh_token(args: RefreshTokenArgs) -> anyhow::Result<()> {
    let keyring = Keyring::parse(&args.encryption_keys)
        .map_err(|e| anyhow::anyhow!("--encryption-keys: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let sealed: Option<Vec<u8>> = sqlx::query_scalar(
        "select refresh_token from connect.integration_tokens where user_id = $1 and provider = $2",
    )
    .bind(args.user)
    .bind(args.provider.as_str())
    .fetch_optional(&pool)
    .await?
    .flatten();
    pool.close().await;
    let sealed = sealed.with_context(|| format!("no refresh token stored for {}", args.user))?;
    let plain = keyring
        .open(
            &token_place("refresh_token", UserId(args.user), args.provider),
            &sealed,
        )
        .map_err(|e| anyhow::anyhow!("opening the refresh token: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?
        .write_all(&plain)?;
    println!(
        "wrote the stored refresh token of {} to {}",
        args.user,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn generator(refresh_token: Option<&str>, offset: Option<i64>) -> Generator {
        Generator {
            keyring: Keyring::parse(KEYS).unwrap(),
            provider: ProviderId::Google,
            refresh_token: refresh_token.map(str::to_owned),
            started: OffsetDateTime::from_unix_timestamp(1_000_000).unwrap(),
            expires_in: time::Duration::seconds(330),
            spread: time::Duration::seconds(10),
            count: 10,
            last_refreshed_offset: offset.map(time::Duration::seconds),
            marker: "BENCHTOK".to_owned(),
            access_len: 100,
            refresh_len: 50,
            stride: 5,
            sample: 2,
        }
    }

    #[test]
    fn expiry_spreads_evenly_and_keep_alive_age_follows_it() {
        let (rows, sampled) = generator(None, Some(-3_900)).batch(0, 10).unwrap();
        assert_eq!(sampled.len(), 2);
        let expiries: Vec<i64> = rows.iter().map(|r| r.expires_at.unix_timestamp()).collect();
        assert_eq!(expiries.first(), Some(&1_000_330));
        assert_eq!(expiries.last(), Some(&1_000_339));
        assert!(expiries.windows(2).all(|w| w[0] <= w[1]), "{expiries:?}");
        for row in &rows {
            assert_eq!(
                row.expires_at - row.last_refreshed_at,
                time::Duration::seconds(3_900)
            );
        }
    }

    #[test]
    fn a_given_refresh_token_is_sealed_into_every_row_at_its_own_place() {
        let g = generator(Some("emulator-rt-1"), None);
        let (rows, _) = g.batch(0, 3).unwrap();
        for row in &rows {
            let place = token_place("refresh_token", UserId(row.user), ProviderId::Google);
            let plain = g.keyring.open(&place, &row.refresh_token).unwrap();
            assert_eq!(plain.as_slice(), b"emulator-rt-1");
            let other = token_place("refresh_token", UserId(row.user), ProviderId::Microsoft);
            assert!(g.keyring.open(&other, &row.refresh_token).is_err());
            let access = token_place("access_token", UserId(row.user), ProviderId::Google);
            let token = g.keyring.open(&access, &row.access_token).unwrap();
            assert!(token.starts_with(b"BENCHTOK-at-"));
        }
    }
}
