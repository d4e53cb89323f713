//! Signed connection webhooks, end to end: each connection change reaches a receiver signed per
//! Standard Webhooks with its exact payload (and no token); retries follow the schedule and a
//! receiver's Retry-After; a 410 disables the endpoint until it is enabled again; loopback
//! addresses and redirects are refused; two replicas never send one attempt at once; a `serve`
//! process killed after a change and before its delivery delivers it after a restart; and a
//! receiver down for an hour gets every event afterwards. Time is never waited out: where the
//! schedule would make a test wait (5 s, minutes, hours), the test moves the deliveries'
//! `next_attempt_at` (and `created_at`) back in SQL and wakes the worker, as the hours passing
//! would.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use celeste_connect::config::Settings;
use celeste_connect::webhooks::signing::SigningSecret;
use celeste_connect::webhooks::{Endpoint, WebhookSettings, net::Reach};
use provider_emulator::{Faults, HttpFault, demo_accounts};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    BACKENDS, Backend, Connected, TestApp, TestDb, captured_logs, error_code,
    with_emulator_adjusted, with_emulator_on,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
const LEE: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
/// The Standard Webhooks test secret; its base64 must never reach a log.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, &'static str),
    Redirect(String),
    /// Holds the request open for a minute.
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

#[derive(Default)]
struct Inner {
    hits: std::sync::Mutex<Vec<Hit>>,
    script: std::sync::Mutex<VecDeque<Reply>>,
    default: std::sync::Mutex<Option<Reply>>,
    in_flight: std::sync::Mutex<HashMap<String, u32>>,
    max_in_flight_per_id: AtomicU32,
    delay_ms: AtomicU32,
}

/// A webhook receiver on 127.0.0.1: records every request, answers from a script, then with a
/// default reply (200 unless set).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let router =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
                let inner = state.clone();
                async move { inner.answer(headers, body).await }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/connect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url, inner }
    }

    pub fn then(&self, reply: Reply) -> &Self {
        self.inner.script.lock().unwrap().push_back(reply);
        self
    }

    pub fn otherwise(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    pub fn delay(&self, ms: u32) {
        self.inner.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    pub fn max_in_flight_per_id(&self) -> u32 {
        self.inner.max_in_flight_per_id.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests arrived.
    pub async fn wait_for_hits(&self, count: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hits = self.hits();
            if hits.len() >= count {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {count} webhook requests, got {}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Inner {
    async fn answer(
        &self,
        headers: axum::http::HeaderMap,
        body: String,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let id = header("webhook-id");
        self.hits.lock().unwrap().push(Hit {
            id: id.clone(),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        let now = {
            let mut in_flight = self.in_flight.lock().unwrap();
            let n = in_flight.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        self.max_in_flight_per_id.fetch_max(now, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
        }
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| self.default.lock().unwrap().clone())
            .unwrap_or(Reply::Status(200));
        if matches!(reply, Reply::Hang) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        *self.in_flight.lock().unwrap().get_mut(&id).unwrap() -= 1;
        let status = |code: u16| axum::http::StatusCode::from_u16(code).unwrap();
        match reply {
            Reply::Status(code) => (status(code), "receiver says hello").into_response(),
            Reply::RetryAfter(code, after) => {
                (status(code), [("retry-after", after)], "busy").into_response()
            }
            Reply::Redirect(to) => (status(302), [("location", to)], "").into_response(),
            Reply::Hang => status(504).into_response(),
        }
    }
}

/// Whether one of the space-separated `v1,` signatures is the HMAC of `id.timestamp.body`
/// under `secret`, computed here independently of the service's code.
pub fn signed_with(hit: &Hit, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let expected = hmac::sign(
        &key,
        format!("{}.{}.{}", hit.id, hit.timestamp, hit.body).as_bytes(),
    );
    let expected = format!("v1,{}", b64.encode(expected.as_ref()));
    hit.signature.split(' ').any(|s| s == expected)
}

/// The endpoint `hooks` at `url` signed with [`SECRET`]; loopback allowed (the receiver is
/// on this machine) unless `reach` says otherwise.
pub fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        name: "hooks".into(),
        url: url.parse().unwrap(),
        secrets: vec![SigningSecret::parse(SECRET).unwrap()],
    }
}

pub fn local_reach() -> Reach {
    Reach {
        allow_http: true,
        allow_private_networks: true,
    }
}

fn with_receiver(settings: &mut Settings, url: &str) {
    settings.webhooks = WebhookSettings {
        endpoints: vec![endpoint(url)],
        reach: local_reach(),
        failing_after: Duration::ZERO,
        ..WebhookSettings::default()
    };
    // Refresh failures in these tests come one after the other.
    settings.refresh.cooldown = Duration::ZERO;
}

async fn service_with_receiver(backend: Backend, receiver: &Receiver) -> Connected {
    let url = receiver.url.clone();
    with_emulator_adjusted(backend, demo_accounts(), move |s| with_receiver(s, &url)).await
}

/// Runs `sql` (PostgreSQL or SQLite text, no parameters) on the test database.
pub async fn sql(app: &TestApp, pg: &str, sqlite: &str) {
    if app.db.url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(pg.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&app.db.url)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// One number from the test database.
async fn number(app: &TestApp, pg: &str, sqlite: &str) -> f64 {
    if app.db.url.starts_with("postgres") {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
            .await
            .unwrap();
        let n: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(pg.to_owned()))
            .fetch_one(&mut c)
            .await
            .unwrap();
        n.unwrap_or(f64::NAN)
    } else {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&app.db.url)
            .await
            .unwrap();
        let n: Option<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite.to_owned()))
            .fetch_one(&mut c)
            .await
            .unwrap();
        n.unwrap_or(f64::NAN)
    }
}

/// Moves every pending delivery's schedule (and creation) `secs` into the past, as that much
/// time passing would, and wakes the worker.
async fn time_passes(app: &TestApp, secs: f64) {
    sql(
        app,
        &format!(
            "update connect.webhook_deliveries set next_attempt_at = next_attempt_at - make_interval(secs => {secs}), \
               created_at = created_at - make_interval(secs => {secs}) where status = 'pending'; \
             update connect.webhook_events set created_at = created_at - make_interval(secs => {secs})"
        ),
        &format!(
            "update webhook_deliveries set next_attempt_at = next_attempt_at - {s}, created_at = created_at - {s} \
               where status = 'pending'; \
             update webhook_events set created_at = created_at - {s}",
            s = secs.ceil() as i64
        ),
    )
    .await;
    app.state.broker.store.outbox().written.notify_one();
}

/// Seconds until the earliest pending delivery is due (NaN: none pending).
async fn next_due_in(app: &TestApp) -> f64 {
    number(
        app,
        "select extract(epoch from min(next_attempt_at) - now())::float8 from connect.webhook_deliveries where status = 'pending'",
        "select cast(min(next_attempt_at) - unixepoch() as real) from webhook_deliveries where status = 'pending'",
    )
    .await
}

/// Waits until no pending delivery is due or claimed (the worker has caught up).
async fn worker_caught_up(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = number(
            app,
            "select count(*)::float8 from connect.webhook_deliveries where status = 'pending' \
               and (next_attempt_at <= now() or lease_owner is not null)",
            "select cast(count(*) as real) from webhook_deliveries where status = 'pending' \
               and (next_attempt_at <= unixepoch() or lease_owner is not null)",
        )
        .await;
        if busy == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "the worker never caught up");
        app.state.broker.store.outbox().written.notify_one();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn deliveries(app: &TestApp, query: &str) -> Value {
    let response = app
        .get_service(&format!("/v1/service/webhooks/deliveries{query}"))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn wait_for_delivery(app: &TestApp, status: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = deliveries(app, &format!("?status={status}")).await;
        if page["deliveries"].as_array().unwrap().len() >= count {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {count} {status} deliveries: {page}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The delivery log's pending deliveries once the first has an attempt on record. The receiver
/// sees a request before the worker records its answer, so neither a hit nor a pending
/// delivery (it is pending before its first attempt too) says the attempt was recorded.
async fn wait_for_pending_attempt(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = deliveries(app, "?status=pending").await;
        if page["deliveries"][0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "waited for an attempt on record: {page}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The connection id the service lists for `user`.
async fn connection_id(app: &TestApp, user: Uuid) -> String {
    let page: Value = app
        .get_service("/v1/service/integrations?limit=500")
        .await
        .json()
        .await
        .unwrap();
    page["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_id"] == user.to_string())
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .expect("the user is connected")
}

/// The next event the receiver gets beyond the `seen` ones: checks its signature, that its
/// `id` is the `webhook-id` and its timestamp is now, and returns it without those two.
async fn next_event(receiver: &Receiver, seen: &mut usize) -> Value {
    let hits = receiver.wait_for_hits(*seen + 1).await;
    let hit = &hits[*seen];
    *seen += 1;
    assert!(signed_with(hit, SECRET), "signature of {hit:?}");
    let ts: i64 = hit.timestamp.parse().unwrap();
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    let mut event: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(
        event["id"],
        hit.id.as_str(),
        "the payload's id is the webhook-id"
    );
    assert!(hit.id.starts_with("msg_"));
    let at = time::OffsetDateTime::parse(
        event["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds().abs() < 60);
    let object = event.as_object_mut().unwrap();
    object.remove("id");
    object.remove("timestamp");
    event
}

#[tokio::test]
async fn every_connection_change_reaches_the_receiver_signed_with_its_exact_payload() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        let c = service_with_receiver(backend, &receiver).await;
        let user = Uuid::new_v4();
        let mut seen = 0;
        let data = |id: &str, status: &str, reason: Value, extra: Value| {
            let mut data = json!({
                "connection_id": id, "user_id": user, "provider": "microsoft",
                "status": status, "reason": reason,
            });
            data.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            data
        };

        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let id = connection_id(&c.app, user).await;
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.created", "data": data(&id, "connected", Value::Null, json!({}))})
        );

        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.reconnected", "data": data(&id, "connected", Value::Null,
                json!({"previous_account_changed": false, "previous_status": "connected"}))}),
            "{backend:?}"
        );

        assert_eq!(c.connect(user, LEE).await.status(), 200);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.reconnected", "data": data(&id, "connected", Value::Null,
                json!({"previous_account_changed": true, "previous_status": "connected"}))})
        );

        c.emulator.revoke_grant(LEE);
        c.set_expiry(user, -60).await;
        assert_eq!(c.token(user, "").await.status(), 409);
        let event = next_event(&receiver, &mut seen).await;
        assert_eq!(
            event,
            json!({"type": "connection.needs_reauth", "data": data(&id, "needs_reauth", json!("invalid_grant"),
                json!({"provider_code": event["data"]["provider_code"]}))})
        );
        assert!(
            event["data"]["provider_code"]
                .as_str()
                .is_some_and(|code| code.starts_with("AADSTS")),
            "{event}"
        );

        assert_eq!(c.connect(user, LEE).await.status(), 200);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.reconnected", "data": data(&id, "connected", Value::Null,
                json!({"previous_account_changed": false, "previous_status": "needs_reauth"}))})
        );

        // The provider fails: refresh_failing once for the spell, then recovered.
        c.emulator.set_faults(Faults {
            token: Some(HttpFault::server_error(503)),
            ..Faults::default()
        });
        c.set_expiry(user, -60).await;
        assert_eq!(c.token(user, "").await.status(), 503);
        let event = next_event(&receiver, &mut seen).await;
        let since = event["data"]["failing_since"].clone();
        assert!(since.is_string(), "{event}");
        assert_eq!(
            event,
            json!({"type": "connection.refresh_failing", "data": data(&id, "connected", event["data"]["reason"].clone(),
                json!({"failing_since": since}))})
        );
        assert!(
            event["data"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("503")),
            "{event}"
        );
        assert_eq!(c.token(user, "").await.status(), 503);
        c.emulator.set_faults(Faults::default());
        assert_eq!(c.token(user, "").await.status(), 200);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.recovered", "data": data(&id, "connected", Value::Null,
                json!({"failing_since": since}))}),
            "one refresh_failing for the spell, then recovered"
        );

        let response = c
            .app
            .delete_as(user, "/v1/integrations/outlook/disconnect")
            .await;
        assert_eq!(response.status(), 204);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.disconnected", "data": data(&id, "not_connected", Value::Null, json!({"by": "user"}))})
        );

        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let id = connection_id(&c.app, user).await;
        assert_eq!(
            next_event(&receiver, &mut seen).await["type"],
            "connection.created"
        );
        let response = c
            .app
            .http
            .delete(
                c.app
                    .url(&format!("/v1/service/users/{user}/integrations/outlook")),
            )
            .bearer_auth(&c.app.service_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(
            next_event(&receiver, &mut seen).await,
            json!({"type": "connection.disconnected", "data": data(&id, "not_connected", Value::Null, json!({"by": "operator"}))})
        );
        // Nothing else was sent, and nothing twice.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(receiver.hits().len(), seen, "{backend:?}");

        // No token, client secret or signing secret in any payload or log line.
        let logs = captured_logs();
        for hit in receiver.hits() {
            for marker in ["TOKMARK", "CSMARK", "refresh_token", "access_token"] {
                assert!(!hit.body.contains(marker), "{marker} in {}", hit.body);
            }
            assert!(
                !hit.body.contains("contoso"),
                "no provider email in {}",
                hit.body
            );
        }
        for marker in [
            "TOKMARK",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "/hooks/connect",
        ] {
            assert!(!logs.contains(marker), "{marker} in the logs");
        }
    }
}

#[tokio::test]
async fn a_receiver_that_answers_500_then_200_gets_the_event_on_the_retry() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        receiver.then(Reply::Status(500));
        let c = service_with_receiver(backend, &receiver).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        receiver.wait_for_hits(1).await;
        let page = wait_for_pending_attempt(&c.app).await;
        let pending = &page["deliveries"][0];
        assert_eq!(pending["attempts"], 1);
        assert_eq!(pending["last_status"], 500);
        assert_eq!(pending["last_response"], "receiver says hello");
        // The schedule's first retry: 5 s ± 10 %.
        let due = next_due_in(&c.app).await;
        assert!((3.0..=6.5).contains(&due), "{backend:?}: due in {due}");

        time_passes(&c.app, 6.0).await;
        let hits = receiver.wait_for_hits(2).await;
        assert_eq!(
            hits[0].id, hits[1].id,
            "the retry carries the same webhook-id"
        );
        assert_eq!(hits[0].body, hits[1].body, "and the same body");
        assert!(hits.iter().all(|h| signed_with(h, SECRET)));
        let page = wait_for_delivery(&c.app, "delivered", 1).await;
        let delivered = &page["deliveries"][0];
        assert_eq!(delivered["attempts"], 2);
        assert_eq!(delivered["last_status"], 200);
        assert_eq!(delivered["payload"]["type"], "connection.created");
        assert!(delivered["delivered_at"].is_string());
    }
}

#[tokio::test]
async fn retry_after_is_honoured_when_longer_than_the_schedule() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        receiver.then(Reply::RetryAfter(503, "7200"));
        receiver.then(Reply::RetryAfter(429, "1"));
        let c = service_with_receiver(backend, &receiver).await;
        assert_eq!(c.connect(Uuid::new_v4(), ADELE).await.status(), 200);
        receiver.wait_for_hits(1).await;
        worker_caught_up(&c.app).await;
        let due = next_due_in(&c.app).await;
        assert!(
            (7190.0..=7201.0).contains(&due),
            "{backend:?}: due in {due}, not 5 s"
        );

        // A shorter Retry-After than the schedule's next delay (5 min) does not bring it forward.
        time_passes(&c.app, 7200.0).await;
        receiver.wait_for_hits(2).await;
        worker_caught_up(&c.app).await;
        let due = next_due_in(&c.app).await;
        assert!((260.0..=331.0).contains(&due), "{backend:?}: due in {due}");
    }
}

#[tokio::test]
async fn a_410_disables_the_endpoint_until_the_operator_enables_it_again() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        receiver.then(Reply::Status(410));
        let c = service_with_receiver(backend, &receiver).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        receiver.wait_for_hits(1).await;
        let failed = wait_for_delivery(&c.app, "failed", 1).await;
        assert_eq!(failed["deliveries"][0]["last_status"], 410);
        let endpoints: Value = c
            .app
            .get_service("/v1/service/webhooks/endpoints")
            .await
            .json()
            .await
            .unwrap();
        let hooks = &endpoints["endpoints"][0];
        assert_eq!(
            (hooks["name"].as_str(), hooks["enabled"].as_bool()),
            (Some("hooks"), Some(false)),
            "{endpoints}"
        );
        assert_eq!(hooks["disabled_reason"], "410 Gone");
        assert_eq!(
            hooks["origin"],
            receiver.url.trim_end_matches("/hooks/connect")
        );
        assert!(
            !endpoints.to_string().contains("/hooks/connect"),
            "no path shown"
        );

        // Later events wait; nothing is sent to a disabled endpoint, even when due.
        let response = c
            .app
            .delete_as(user, "/v1/integrations/outlook/disconnect")
            .await;
        assert_eq!(response.status(), 204);
        time_passes(&c.app, 60.0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            receiver.hits().len(),
            1,
            "{backend:?}: nothing sent while disabled"
        );
        wait_for_delivery(&c.app, "pending", 1).await;

        let enable = |name: &str| {
            c.app
                .http
                .post(
                    c.app
                        .url(&format!("/v1/service/webhooks/endpoints/{name}/enable")),
                )
                .bearer_auth(&c.app.service_key)
                .send()
        };
        assert_eq!(enable("nope").await.unwrap().status(), 404);
        let enabled = enable("hooks").await.unwrap();
        assert_eq!(enabled.status(), 200);
        let enabled: Value = enabled.json().await.unwrap();
        assert_eq!(enabled["enabled"], true);
        let hits = receiver.wait_for_hits(2).await;
        let event: Value = serde_json::from_str(&hits[1].body).unwrap();
        assert_eq!(event["type"], "connection.disconnected");
        wait_for_delivery(&c.app, "delivered", 1).await;

        // The metrics say what happened.
        let metrics = c
            .app
            .http
            .get(format!("{}/metrics", c.app.admin_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "webhook_delivered_total{endpoint=\"hooks\"}",
            "webhook_failed_total{endpoint=\"hooks\"}",
            "webhook_pending",
            "webhook_oldest_pending_age_seconds",
        ] {
            assert!(metrics.contains(name), "{name}: {metrics}");
        }
    }
}

#[tokio::test]
async fn loopback_is_refused_without_the_switch_and_redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for (url, refusal) in [
        (
            format!("http://localhost:{port}/hooks/connect"),
            "resolves only to loopback",
        ),
        (
            format!("http://127.0.0.1:{port}/hooks/connect"),
            "is a loopback",
        ),
        (
            format!("http://[::1]:{port}/hooks/connect"),
            "is a loopback",
        ),
    ] {
        let c = with_emulator_adjusted(Backend::Sqlite, demo_accounts(), |s| {
            with_receiver(s, &url);
            s.webhooks.reach.allow_private_networks = false;
        })
        .await;
        assert_eq!(c.connect(Uuid::new_v4(), ADELE).await.status(), 200);
        let page = wait_for_pending_attempt(&c.app).await;
        let error = page["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(refusal), "{url}: {error}");
        assert!(page["deliveries"][0]["last_status"].is_null());
    }
    assert!(
        receiver.hits().is_empty(),
        "the loopback receiver was never reached"
    );

    // A redirect is an answer, not a way elsewhere: the target is never asked.
    let target = Receiver::start().await;
    receiver.otherwise(Reply::Redirect(target.url.clone()));
    let c = service_with_receiver(Backend::Sqlite, &receiver).await;
    assert_eq!(c.connect(Uuid::new_v4(), ADELE).await.status(), 200);
    receiver.wait_for_hits(1).await;
    let page = wait_for_pending_attempt(&c.app).await;
    assert_eq!(page["deliveries"][0]["last_status"], 302);
    assert_eq!(page["deliveries"][0]["last_error"], "redirect not followed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(target.hits().is_empty(), "the redirect was not followed");
}

#[tokio::test]
async fn two_replicas_on_one_postgresql_never_send_the_same_attempt_at_once() {
    let receiver = Receiver::start().await;
    receiver.delay(150);
    let url = receiver.url.clone();
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        with_receiver(s, &url)
    })
    .await;
    let url = receiver.url.clone();
    let other = TestApp::start_with(c.app.db.clone(), |s| {
        with_receiver(s, &url);
        s.migrate_on_start = false;
    })
    .await;
    let events = 40;
    let writers: Vec<_> = (0..events)
        .map(|i| {
            let store = if i % 2 == 0 {
                c.app.state.broker.store.clone()
            } else {
                other.state.broker.store.clone()
            };
            tokio::spawn(async move {
                crate::support::seed_connection(&store, Uuid::new_v4(), "x@example.com").await;
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let hits = receiver.wait_for_hits(events).await;
    wait_for_delivery(&c.app, "delivered", events).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_now = receiver.hits();
    assert_eq!(hits_now.len(), events, "each event sent exactly once");
    let ids: std::collections::HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), events);
    assert_eq!(receiver.max_in_flight_per_id(), 1);
}

#[tokio::test]
async fn a_receiver_down_for_an_hour_gets_every_event_afterwards() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        receiver.otherwise(Reply::Status(503));
        let c = service_with_receiver(backend, &receiver).await;
        let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for user in &users {
            assert_eq!(c.connect(*user, ADELE).await.status(), 200);
        }
        receiver.wait_for_hits(users.len()).await;
        worker_caught_up(&c.app).await;

        // An hour passes, attempt by attempt, every one refused.
        let mut passed = 0.0;
        loop {
            let due = next_due_in(&c.app).await;
            assert!(!due.is_nan(), "deliveries are pending");
            let due = due.max(0.0);
            if passed + due > 3600.0 {
                break;
            }
            time_passes(&c.app, due).await;
            passed += due;
            worker_caught_up(&c.app).await;
        }
        // The rest of the hour, with no attempt due in it.
        time_passes(&c.app, 3600.0 - passed).await;
        worker_caught_up(&c.app).await;
        let backlog = c.app.state.broker.store.delivery_backlog().await.unwrap();
        assert_eq!(backlog.pending, users.len() as u64);
        let age: time::Duration =
            time::OffsetDateTime::now_utc() - backlog.oldest_created_at.unwrap();
        assert!(age.whole_seconds() >= 3590, "{age}");
        let refused = receiver.hits().len();
        assert_eq!(
            refused,
            users.len() * 4,
            "{backend:?}: 0 s, 5 s, 5 min, 35 min"
        );

        // The receiver is back: at its next scheduled attempt (2 h ± 10 % after the last),
        // each event arrives.
        receiver.otherwise(Reply::Status(200));
        loop {
            let due = next_due_in(&c.app).await;
            if due.is_nan() {
                break;
            }
            time_passes(&c.app, due.max(0.0)).await;
            worker_caught_up(&c.app).await;
        }
        let page = wait_for_delivery(&c.app, "delivered", users.len()).await;
        for delivery in page["deliveries"].as_array().unwrap() {
            assert_eq!(delivery["attempts"], 5, "{delivery}");
        }
        let delivered: std::collections::HashSet<String> = receiver.hits()[refused..]
            .iter()
            .map(|h| {
                serde_json::from_str::<Value>(&h.body).unwrap()["data"]["user_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let expected: std::collections::HashSet<String> =
            users.iter().map(ToString::to_string).collect();
        assert_eq!(
            delivered, expected,
            "{backend:?}: every event, after the hour"
        );
    }
}

#[tokio::test]
async fn the_delivery_log_filters_pages_and_resends() {
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        let c = service_with_receiver(backend, &receiver).await;
        for _ in 0..5 {
            assert_eq!(c.connect(Uuid::new_v4(), ADELE).await.status(), 200);
        }
        wait_for_delivery(&c.app, "delivered", 5).await;

        let first = deliveries(&c.app, "?limit=2&endpoint=hooks").await;
        assert_eq!(first["deliveries"].as_array().unwrap().len(), 2);
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let second = deliveries(&c.app, &format!("?limit=2&cursor={cursor}")).await;
        let third = deliveries(
            &c.app,
            &format!(
                "?limit=2&cursor={}",
                second["next_cursor"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(third["deliveries"].as_array().unwrap().len(), 1);
        assert!(third["next_cursor"].is_null());
        let mut ids: Vec<String> = [&first, &second, &third]
            .iter()
            .flat_map(|p| p["deliveries"].as_array().unwrap().clone())
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        let newest_first = ids.clone();
        ids.sort_by(|a, b| b.cmp(a));
        assert_eq!(ids, newest_first, "newest first");
        ids.dedup();
        assert_eq!(ids.len(), 5);

        let none = deliveries(&c.app, "?endpoint=other").await;
        assert!(none["deliveries"].as_array().unwrap().is_empty());
        let future = deliveries(&c.app, "?since=2999-01-01T00:00:00Z").await;
        assert!(future["deliveries"].as_array().unwrap().is_empty());
        let past = deliveries(
            &c.app,
            "?until=2999-01-01T00:00:00Z&since=2000-01-01T00:00:00Z",
        )
        .await;
        assert_eq!(past["deliveries"].as_array().unwrap().len(), 5);
        for bad in [
            "?status=lost",
            "?since=yesterday",
            "?cursor=x",
            "?limit=0",
            "?limit=201",
        ] {
            let response = c
                .app
                .get_service(&format!("/v1/service/webhooks/deliveries{bad}"))
                .await;
            assert_eq!(response.status(), 400, "{bad}");
            assert_eq!(error_code(response).await, "invalid_request");
        }
        let anonymous = c
            .app
            .http
            .get(c.app.url("/v1/service/webhooks/deliveries"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);

        // Resending a delivered event: the same webhook-id and body, signed afresh.
        let id = &newest_first[0];
        let retry = |id: String| {
            c.app
                .http
                .post(
                    c.app
                        .url(&format!("/v1/service/webhooks/deliveries/{id}/retry")),
                )
                .bearer_auth(&c.app.service_key)
                .send()
        };
        let answer = retry(id.clone()).await.unwrap();
        assert_eq!(answer.status(), 202);
        let queued: Value = answer.json().await.unwrap();
        assert_eq!(queued["status"], "pending");
        let hits = receiver.wait_for_hits(6).await;
        let resent = hits.last().unwrap();
        let original = hits
            .iter()
            .find(|h| h.id == queued["event_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (resent.id.as_str(), resent.body.as_str()),
            (original.id.as_str(), original.body.as_str())
        );
        assert!(signed_with(resent, SECRET));

        // An attempt in flight (a worker holds the lease): 409, and the schedule is untouched.
        let second = newest_first[1].clone();
        let before = deliveries(&c.app, "?limit=200").await;
        c.app
            .exec(
                "update connect.webhook_deliveries set lease_until = now() + interval '1 hour' where id = $1::uuid and $2 = $2",
                "update webhook_deliveries set lease_until = unixepoch() + 3600 where id = $1 and $2 = $2",
                Uuid::parse_str(&second).unwrap(),
                0,
            )
            .await;
        let busy = retry(second.clone()).await.unwrap();
        assert_eq!(busy.status(), 409);
        assert_eq!(error_code(busy).await, "delivery_in_flight");
        let after = deliveries(&c.app, "?limit=200").await;
        let find = |page: &Value| {
            page["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == second.as_str())
                .cloned()
                .unwrap()
        };
        assert_eq!(find(&after), find(&before), "nothing changed");

        assert_eq!(
            retry(Uuid::new_v4().to_string()).await.unwrap().status(),
            404
        );
        assert_eq!(retry("nope".into()).await.unwrap().status(), 400);
        let _ = &backend;
    }
}

#[tokio::test]
async fn without_endpoints_no_event_is_written() {
    for backend in BACKENDS {
        let c = with_emulator_adjusted(backend, demo_accounts(), |_| {}).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let events = number(
            &c.app,
            "select count(*)::float8 from connect.webhook_events",
            "select cast(count(*) as real) from webhook_events",
        )
        .await;
        assert_eq!(events, 0.0);
        let page = deliveries(&c.app, "").await;
        assert!(page["deliveries"].as_array().unwrap().is_empty());
    }
}

/// `celeste-connect serve` with the webhook endpoint `hooks` at `url`.
fn serve_with_webhooks(c: &Connected, entry: &str, url: &str) -> crate::tokens::ServiceProcess {
    crate::tokens::spawn_service_with(
        c,
        entry,
        &[
            ("CONNECT_WEBHOOK_ENDPOINTS", &format!("hooks:{url}")),
            ("CONNECT_WEBHOOK_SECRETS", &format!("hooks:{SECRET}")),
            ("CONNECT_WEBHOOK_ALLOW_HTTP", "true"),
            ("CONNECT_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
            // A claim outlives its replica by 2 × 2 s + 5 s.
            ("CONNECT_WEBHOOK_TIMEOUT_SECS", "2"),
        ],
    )
}

#[tokio::test]
async fn a_serve_process_killed_between_the_change_and_its_delivery_delivers_after_restart() {
    let receiver = Receiver::start().await;
    // The first attempt never completes: the process dies while sending it.
    receiver.then(Reply::Hang);
    let c = with_emulator_on(
        TestDb::new(Backend::Postgres).await,
        demo_accounts(),
        |_| {},
    )
    .await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    let (key, entry) = celeste_connect::identity::service_key::generate("ops").unwrap();

    let mut first = serve_with_webhooks(&c, &entry, &receiver.url);
    let response = c
        .app
        .http
        .delete(format!(
            "{}/v1/service/users/{user}/integrations/outlook",
            first.base
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let hits = receiver.wait_for_hits(1).await;
    first.child.kill().unwrap(); // SIGKILL
    let _ = first.child.wait();
    let page = deliveries(&c.app, "?status=pending").await;
    assert_eq!(
        page["deliveries"][0]["attempts"], 0,
        "the attempt was never recorded"
    );

    let killed_at = Instant::now();
    let _second = serve_with_webhooks(&c, &entry, &receiver.url);
    let after = receiver.wait_for_hits(2).await;
    assert_eq!(after[1].id, hits[0].id, "the same event, after the restart");
    assert!(signed_with(&after[1], SECRET));
    let event: Value = serde_json::from_str(&after[1].body).unwrap();
    assert_eq!(event["type"], "connection.disconnected");
    assert_eq!(event["data"]["by"], "operator");
    wait_for_delivery(&c.app, "delivered", 1).await;
    eprintln!("redelivered {:?} after the kill", killed_at.elapsed());
}

#[tokio::test]
async fn a_lease_still_held_keeps_other_workers_off() {
    // Claims are exclusive while their lease lives, and free again after it.
    for backend in BACKENDS {
        let receiver = Receiver::start().await;
        receiver.otherwise(Reply::Status(503));
        let c = service_with_receiver(backend, &receiver).await;
        assert_eq!(c.connect(Uuid::new_v4(), ADELE).await.status(), 200);
        receiver.wait_for_hits(1).await;
        worker_caught_up(&c.app).await;
        time_passes(&c.app, 10.0).await;
        let store = &c.app.state.broker.store;
        let names = vec!["hooks".to_owned()];
        let owner = Uuid::new_v4();
        // The service's own worker may have taken it first: whoever holds it, nobody else can.
        let mine = store
            .claim_deliveries(&names, 10, owner, Duration::from_secs(30))
            .await
            .unwrap();
        let again = store
            .claim_deliveries(&names, 10, Uuid::new_v4(), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(again.is_empty(), "{backend:?}");
        if let Some(claimed) = mine.first() {
            assert_eq!(claimed.attempts, 1);
            assert_eq!(store.release_deliveries_of(owner).await.unwrap(), 1);
        }
    }
}

/// The listeners (the caches' and the webhook worker's) keep their connections while they live.
/// They used to take them from the main pool: with `CONNECT_DB_POOL_SIZE=2` they held both, and
/// every request waited for a connection until it failed.
#[tokio::test]
async fn the_listeners_leave_the_main_pool_to_the_requests() {
    let app = TestApp::start_with(TestDb::new(Backend::Postgres).await, |s| {
        s.db_pool_size = 2;
        with_receiver(s, "http://127.0.0.1:9/hooks");
    })
    .await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() \
             and query ilike 'listen%'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if listening == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{listening} listener(s) up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        app.seed_connection(*user, "pool@example.com").await;
    }
    // The service's listing reads through the main pool, four at once.
    let answers =
        futures::future::join_all((0..4).map(|_| app.get_service("/v1/service/integrations")))
            .await;
    for answer in answers {
        assert_eq!(answer.status(), 200);
        let listed: Value = answer.json().await.unwrap();
        assert_eq!(
            listed["connections"].as_array().unwrap().len(),
            4,
            "{listed}"
        );
    }
}
