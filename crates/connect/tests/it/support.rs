//! Test harness: a throwaway PostgreSQL database per test (copied from a template migrated once
//! per run) or a SQLite file in a temp folder, and the whole service in-process on 127.0.0.1:0
//! (bound before it serves, so no test waits for readiness). PostgreSQL is the real server named
//! by CONNECT_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres); tests
//! fail, not skip, when it is not there.

use std::net::SocketAddr;
use std::sync::Arc;

use celeste_connect::app::App;
use celeste_connect::config::{JwtSettings, Settings};
use celeste_connect::http::AppState;
use celeste_connect::identity::service_key;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::{NewConnection, Store};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::{Mutex, OnceCell, oneshot};
use url::Url;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

pub fn admin_url() -> String {
    std::env::var("CONNECT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The same server, another database.
pub fn url_for(database: &str) -> String {
    let mut url = Url::parse(&admin_url()).expect("CONNECT_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// The same server and database, another login role (trust authentication).
pub fn url_as(url: &str, role: &str) -> String {
    let mut url = Url::parse(url).expect("url");
    url.set_username(role).expect("username");
    url.set_password(None).expect("password");
    url.to_string()
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static CREATE: Mutex<()> = Mutex::const_new(());

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL must be running (CONNECT_TEST_DATABASE_URL); .ci/run starts it")
}

/// Every database this test process creates is named `cc_t_<unix seconds>_<process tag>_<n>`,
/// so runs sharing one server (two `cargo test`s, or nextest's process per test) never touch
/// each other's databases: each drops its own when the test ends, and databases left by a run
/// that died are dropped by later runs once their timestamp is [`STALE_AFTER_SECS`] old.
static RUN_PREFIX: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    format!("cc_t_{now}_{}", &Uuid::new_v4().simple().to_string()[..8])
});
static NEXT_DB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const STALE_AFTER_SECS: i64 = 6 * 3600;

/// The migrated template every test database is copied from, one per migration content (so
/// concurrent runs of the same code share it and runs of different code do not collide).
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in celeste_connect::store::postgres::migration_checksums() {
        file.hash(&mut hasher);
    }
    format!("cc_tpl_{:016x}", hasher.finish())
}

/// Drops databases of earlier runs that are older than [`STALE_AFTER_SECS`] (by the timestamp
/// in their name); never a database of a run that may still be going.
async fn drop_stale(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'cc\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for name in names {
        let created = name
            .strip_prefix("cc_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|ts| ts.parse::<i64>().ok());
        // Names without a timestamp come from older versions of this harness.
        if created.is_none_or(|ts| now - ts > STALE_AFTER_SECS) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists \"{name}\" with (force)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// A fresh, migrated database of its own (dropped by [`TestDb`] when the test ends).
pub async fn new_pg_database() -> String {
    let template = TEMPLATE
        .get_or_init(|| async {
            let mut conn = admin().await;
            drop_stale(&mut conn).await;
            let name = template_name();
            // One creator per template across processes; the others wait and reuse it.
            sqlx::query("select pg_advisory_lock(hashtext($1))")
                .bind(&name)
                .execute(&mut conn)
                .await
                .unwrap();
            let exists: bool =
                sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if !exists {
                // Named like a test database, so a run that dies here leaves nothing for good.
                let building = &format!("{}_tpl", *RUN_PREFIX);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "create database \"{building}\""
                )))
                .execute(&mut conn)
                .await
                .unwrap();
                Store::migrate(&url_for(building))
                    .await
                    .expect("migrations apply to a fresh database");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "alter database \"{building}\" rename to \"{name}\""
                )))
                .execute(&mut conn)
                .await
                .unwrap();
            }
            sqlx::query("select pg_advisory_unlock(hashtext($1))")
                .bind(&name)
                .execute(&mut conn)
                .await
                .unwrap();
            name
        })
        .await;
    let _serial = CREATE.lock().await;
    let n = NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{}_{n}", *RUN_PREFIX);
    let mut conn = admin().await;
    // Another process copying the same template at this instant makes PostgreSQL refuse
    // ("source database is being accessed by other users"): try again briefly.
    let mut tries = 0;
    loop {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "create database \"{name}\" template \"{template}\""
        )))
        .execute(&mut conn)
        .await;
        match created {
            Ok(_) => break,
            Err(e) if tries < 100 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create database {name}: {e}"),
        }
    }
    url_for(&name)
}

/// Drops a test database, from a thread of its own (drops run outside async code), connecting
/// to the server as `admin` (a superuser URL).
fn drop_database_soon(url: &str, admin: String) {
    let Some(name) = url.rsplit('/').next().map(str::to_owned) else {
        return;
    };
    if !name.starts_with("cc_t_") {
        return;
    }
    let dropper = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop database if exists \"{name}\" with (force)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    });
    let _ = dropper.join();
}

/// Drops its PostgreSQL database when the last [`TestDb`] clone naming it goes (the second
/// field is the server's superuser URL).
struct DropDatabase(String, String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        drop_database_soon(&self.0, std::mem::take(&mut self.1));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    /// A database shaped as Supabase builds one ([`crate::supabase_shape`]), migrated and used
    /// as Supabase's `postgres` role, which is not a superuser there.
    Supabase,
}

impl Backend {
    /// PostgreSQL, plain or as Supabase shapes it.
    pub fn is_postgres(self) -> bool {
        matches!(self, Backend::Postgres | Backend::Supabase)
    }
}

pub const BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

/// Every backend, Supabase's shape included.
pub const ALL_BACKENDS: [Backend; 3] = [Backend::Postgres, Backend::Supabase, Backend::Sqlite];

/// Both kinds of PostgreSQL database.
pub const POSTGRES_BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Supabase];

/// A database for one test; the SQLite folder lives as long as any clone of this value.
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    _dir: Option<Arc<tempfile::TempDir>>,
    _drop: Option<Arc<DropDatabase>>,
}

impl TestDb {
    /// A database the caller owns and migrates (a throwaway cluster's, say).
    pub fn at(url: String) -> Self {
        TestDb {
            url,
            _dir: None,
            _drop: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let url = new_pg_database().await;
                TestDb {
                    _drop: Some(Arc::new(DropDatabase(url.clone(), admin_url()))),
                    url,
                    _dir: None,
                }
            }
            Backend::Supabase => {
                let (url, admin) = crate::supabase_shape::new_database().await;
                TestDb {
                    _drop: Some(Arc::new(DropDatabase(url.clone(), admin))),
                    url,
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("connect.db").display());
                TestDb {
                    url,
                    _dir: Some(Arc::new(dir)),
                    _drop: None,
                }
            }
        }
    }
}

/// The test key (`t1:base64`), one for the whole run.
pub static TEST_KEY_ENTRY: std::sync::LazyLock<SecretString> =
    std::sync::LazyLock::new(|| celeste_connect::vault::generate_entry("t1").unwrap());

/// One key ring for the whole run, so tests can open what the service sealed.
pub fn test_keyring() -> Arc<celeste_connect::vault::Keyring> {
    static RING: std::sync::OnceLock<Arc<celeste_connect::vault::Keyring>> =
        std::sync::OnceLock::new();
    RING.get_or_init(|| {
        Arc::new(
            celeste_connect::vault::Keyring::parse(secrecy::ExposeSecret::expose_secret(
                &*TEST_KEY_ENTRY,
            ))
            .unwrap(),
        )
    })
    .clone()
}

pub fn settings(db: &TestDb, public_url: &Url) -> Settings {
    Settings {
        database_url: SecretString::from(db.url.clone()),
        public_url: public_url.clone(),
        app_origins: vec!["http://app.localhost:3000".to_owned()],
        app_settings_url: Url::parse("http://app.localhost:3000/settings").unwrap(),
        jwt: JwtSettings {
            hs256_secret: Some(SecretString::from(JWT_SECRET.to_owned())),
            jwks_url: None,
            audience: "authenticated".into(),
            issuer: None,
            jwks_min_refetch: JwtSettings::DEFAULT_JWKS_MIN_REFETCH,
            jwks_max_age: JwtSettings::DEFAULT_JWKS_MAX_AGE,
        },
        service_keys: Vec::new(),
        keyring: test_keyring(),
        providers: vec![
            celeste_connect::provider::microsoft::on_emulator(
                &Url::parse("http://127.0.0.1:9/").unwrap(),
                "11111111-2222-3333-4444-555555555555",
                SecretString::from("test-client-secret".to_owned()),
            )
            .unwrap(),
        ],
        db_pool_size: 5,
        db_read_pool_size: 2,
        migrate_on_start: true,
        refresh: celeste_connect::config::RefreshSettings {
            keepalive_idle: None,
            ..Default::default()
        },
        token_cache_capacity: 10_000,
        status_cache_capacity: 10_000,
        demo: false,
        demo_coop: None,
        // Tests of limits set their own; the rest are about something else.
        rate_limits: celeste_connect::config::RateLimitSettings::unlimited(),
        webhooks: Default::default(),
        // Counts reach the log within about half a second on every backend.
        activity: celeste_connect::config::ActivitySettings {
            fold_every: std::time::Duration::from_millis(250),
            ..Default::default()
        },
    }
}

/// The service running in-process.
pub struct TestApp {
    pub base: String,
    pub admin_base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    /// Kept so a SQLite folder outlives the service.
    pub db: TestDb,
    pub service_key: String,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<Result<(), celeste_connect::app::StartError>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(TestDb::new(backend).await, |_| {}).await
    }

    pub async fn start_with(db: TestDb, adjust: impl FnOnce(&mut Settings)) -> Self {
        capture_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let admin_addr: SocketAddr = admin.local_addr().unwrap();
        let public_url = Url::parse(&format!("http://{addr}/")).unwrap();
        let (service_key, entry) = service_key::generate("tests").unwrap();
        let mut settings = settings(&db, &public_url);
        settings.service_keys = service_key::parse_service_keys(&entry).unwrap();
        adjust(&mut settings);
        let app = App::build(settings).await.expect("the service starts");
        let state = app.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.serve(listener, Some(admin), async move {
            let _ = stopped.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            admin_base: format!("http://{admin_addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            state,
            db,
            service_key,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Shuts the service down as SIGTERM would, and waits until `serve` has returned.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.unwrap().unwrap();
        }
    }

    /// Runs one statement against the test database (PostgreSQL or SQLite text), binding the
    /// user id (as text) and a number.
    pub async fn exec(&self, pg: &str, sqlite: &str, user: Uuid, n: i64) {
        if self.db.url.starts_with("postgres") {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.db.url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(pg.to_owned()))
                .bind(user.to_string())
                .bind(n)
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db.url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sqlite.to_owned()))
                .bind(user.to_string())
                .bind(n)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }

    pub fn store(&self) -> &Store {
        &self.state.broker.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET as `user`.
    pub async fn get_as(&self, user: Uuid, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(user_token(user))
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_as(&self, user: Uuid, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(user_token(user))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_service(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.service_key)
            .send()
            .await
            .unwrap()
    }

    /// Stores a connection for `user` as a connect through this service would (tokens sealed
    /// as the connect flow seals them, the caches told).
    pub async fn seed_connection(&self, user: Uuid, email: &str) {
        seed_connection(self.store(), user, email).await;
        self.state
            .broker
            .connection_changed(UserId(user), ProviderId::Microsoft);
    }
}

pub async fn seed_connection(store: &Store, user: Uuid, email: &str) {
    store
        .upsert_connection(&NewConnection {
            user_id: UserId(user),
            provider: ProviderId::Microsoft,
            access_token: format!("sealed-at-{user}").into_bytes(),
            refresh_token: Some(format!("sealed-rt-{user}").into_bytes()),
            key_id: "k1".into(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            provider_user_id: format!("ms-{user}"),
            provider_email: Some(email.to_owned()),
            display_name: Some(format!("Name of {email}")),
            scopes: vec![
                "https://graph.microsoft.com/Mail.Read".into(),
                "offline_access".into(),
            ],
        })
        .await
        .unwrap();
}

pub fn exp_in(secs: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + secs
}

/// A Supabase-style HS256 access token for `user`.
pub fn user_token(user: Uuid) -> String {
    sign_hs256(
        JWT_SECRET,
        &json!({
            "sub": user, "role": "authenticated", "aud": "authenticated", "exp": exp_in(3600),
            "email": "someone@example.com", "is_anonymous": false,
        }),
    )
}

pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The JSON error body's code, checking the envelope's shape on the way.
pub async fn error_code(response: reqwest::Response) -> String {
    let header_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("x-request-id header");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(
        body["request_id"], header_id,
        "body and header carry the same request id"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body["error"].as_str().expect("error code").to_owned()
}

/// The service with every provider pointed at a provider emulator of its own, running on its
/// own port, with this service's redirect URIs registered.
pub struct Connected {
    pub app: TestApp,
    pub emulator: provider_emulator::Emulator,
    /// Where the emulator listens (its Microsoft authority and Graph; Google and Dropbox
    /// below `google/` and `dropbox/`).
    pub base: Url,
}

pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_SECRET: &str = "test-client-secret-CSMARK";
pub const APP_ORIGIN: &str = "http://app.localhost:3000";

pub async fn with_emulator(
    backend: Backend,
    accounts: Vec<provider_emulator::TestAccount>,
) -> Connected {
    with_emulator_adjusted(backend, accounts, |_| {}).await
}

pub async fn with_emulator_adjusted(
    backend: Backend,
    accounts: Vec<provider_emulator::TestAccount>,
    adjust: impl FnOnce(&mut Settings),
) -> Connected {
    with_emulator_on(TestDb::new(backend).await, accounts, adjust).await
}

/// [`with_emulator_adjusted`] on a database of the caller's.
pub async fn with_emulator_on(
    db: TestDb,
    accounts: Vec<provider_emulator::TestAccount>,
    adjust: impl FnOnce(&mut Settings),
) -> Connected {
    let emulator = provider_emulator::Emulator::new(provider_emulator::EmulatorConfig {
        accounts,
        ..provider_emulator::EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let router = emulator.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::start_with(db, |s| {
        let secret = || SecretString::from(CLIENT_SECRET.to_owned());
        use celeste_connect::provider::{dropbox, google, microsoft};
        s.providers = vec![
            microsoft::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
            google::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
            dropbox::on_emulator(&base, CLIENT_ID, secret()).unwrap(),
        ];
        adjust(s);
    })
    .await;
    emulator.add_client(provider_emulator::RegisteredClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: ProviderId::ALL
            .iter()
            .map(|p| app.state.broker.redirect_uri(*p))
            .collect(),
    });
    Connected {
        app,
        emulator,
        base,
    }
}

/// A browser's view of one connect flow.
pub struct BrowserFlow {
    pub auth_url: Url,
    /// The browser-binding cookie the service set (`name=value`).
    pub cookie: String,
    pub state: String,
}

impl Connected {
    /// The app's page asks for an Outlook authorize URL, as `user`, from the app's origin.
    pub async fn start_flow(&self, user: Uuid, mode: &str) -> BrowserFlow {
        self.start_flow_for("outlook", user, mode).await
    }

    /// The app's page asks for the authorize URL of the provider at path `provider`.
    pub async fn start_flow_for(&self, provider: &str, user: Uuid, mode: &str) -> BrowserFlow {
        let response = self
            .app
            .http
            .get(
                self.app
                    .url(&format!("/v1/integrations/{provider}/auth-url?mode={mode}")),
            )
            .bearer_auth(user_token(user))
            .header("origin", APP_ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let cookie = response
            .headers()
            .get("set-cookie")
            .expect("binding cookie")
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        let auth_url = Url::parse(body["auth_url"].as_str().unwrap()).unwrap();
        let state = auth_url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        BrowserFlow {
            auth_url,
            cookie,
            state,
        }
    }

    /// The user answers the provider's consent page; returns where the provider redirects to.
    pub async fn consent(&self, flow: &BrowserFlow, account: Option<&str>, decision: &str) -> Url {
        let page = self
            .app
            .http
            .get(flow.auth_url.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the consent page shows");
        let mut form: Vec<(String, String)> = flow.auth_url.query_pairs().into_owned().collect();
        if let Some(account) = account {
            form.push(("account".into(), account.into()));
        }
        form.push(("decision".into(), decision.into()));
        let answer = self
            .app
            .http
            .post(flow.auth_url.as_str().split('?').next().unwrap())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302, "the provider redirects back");
        Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap()
    }

    /// The browser follows the provider's redirect to the callback, with `cookie` if any.
    pub async fn callback(&self, redirect: &Url, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.app.http.get(redirect.clone());
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// A whole successful Outlook connect for `user` with the emulator's account `account`.
    pub async fn connect(&self, user: Uuid, account: &str) -> reqwest::Response {
        self.connect_to("outlook", user, account).await
    }

    /// A whole connect to the provider at path `provider`.
    pub async fn connect_to(&self, provider: &str, user: Uuid, account: &str) -> reqwest::Response {
        let flow = self.start_flow_for(provider, user, "popup").await;
        let redirect = self.consent(&flow, Some(account), "accept").await;
        self.callback(&redirect, Some(&flow.cookie)).await
    }

    pub fn code_exchanges(&self) -> u64 {
        self.emulator.stats().grant("authorization_code")
    }

    /// Every request the provider's token endpoint received (also those a fault answered).
    pub fn token_calls(&self) -> u64 {
        self.emulator
            .stats()
            .endpoint(provider_emulator::endpoint::TOKEN)
    }

    /// Refresh-token requests the provider received.
    pub fn refreshes(&self) -> u64 {
        self.emulator.stats().grant("refresh_token")
    }

    /// The emulator's base URL (its authority and Graph).
    pub fn emulator_base(&self) -> Url {
        self.base.clone()
    }

    /// GET `rest` of Graph through the service's proxy for `user`, with the service key.
    pub async fn proxy_get(&self, user: Uuid, rest: &str) -> reqwest::Response {
        self.app
            .get_service(&format!(
                "/v1/service/users/{user}/integrations/outlook/proxy/{rest}"
            ))
            .await
    }

    /// GET the service token endpoint for `user`.
    pub async fn token(&self, user: Uuid, query: &str) -> reqwest::Response {
        self.token_for("outlook", user, query).await
    }

    /// GET the service token endpoint for `user` and the provider at path `provider`.
    pub async fn token_for(&self, provider: &str, user: Uuid, query: &str) -> reqwest::Response {
        self.app
            .get_service(&format!(
                "/v1/service/users/{user}/integrations/{provider}/token{query}"
            ))
            .await
    }

    /// Moves the stored access token's expiry to `secs` from now (negative: expired), as a
    /// real write would: a new version (so replicas are told) and no stale cache entry here.
    pub async fn set_expiry(&self, user: Uuid, secs: i64) {
        self.app.exec(
            "update connect.integration_tokens set expires_at = now() + make_interval(secs => $2::float8), version = version + 1 where user_id = $1::uuid",
            "update integration_tokens set expires_at = unixepoch() + cast($2 as integer), version = version + 1 where user_id = $1",
            user,
            secs,
        )
        .await;
        for provider in ProviderId::ALL {
            self.app
                .state
                .broker
                .cache
                .invalidate(UserId(user), provider);
        }
    }
}

/// Everything the process logged while tests ran (provider emulator excluded: it is the
/// provider, whose own logs are not ours).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the service, at debug level, to [`captured_logs`].
pub fn capture_logs() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,provider_emulator=off",
            ))
            .with_writer(|| LogSink)
            .with_ansi(false)
            .try_init();
    });
}
