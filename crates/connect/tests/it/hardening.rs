//! What attacking the running service found (issue 11), each kept as the behaviour a user or an
//! operator would notice: fixed metrics labels whatever the request, a callback from nowhere
//! that cannot end the user's pending connect, proxy answers without the upstream's hop-by-hop
//! headers, provider numbers that cannot overflow a clock, and rate limits (429 `rate_limited`
//! with `Retry-After`) on every door a caller could hammer.

use axum::http::HeaderName;
use celeste_connect::broker::connect::token_place;
use celeste_connect::config::Rate;
use celeste_connect::model::UserId;
use celeste_connect::provider::ProviderId;
use celeste_connect::store::NewConnection;
use provider_emulator::{Faults, HttpFault, demo_accounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;
use uuid::Uuid;

use crate::support::{
    APP_ORIGIN, Backend, TestApp, TestDb, error_code, test_keyring, user_token, with_emulator,
    with_emulator_adjusted,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";

async fn admin_metrics(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn unauthenticated_requests_with_odd_methods_and_paths_add_no_metrics_labels() {
    let app = TestApp::start(Backend::Sqlite).await;
    let marker = format!("ZQ{}", &Uuid::new_v4().simple().to_string()[..10]).to_uppercase();

    // A short unknown method is answered as usual, under the label `other`.
    let short = reqwest::Method::from_bytes(marker.as_bytes()).unwrap();
    let response = app
        .http
        .request(short, app.url("/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());

    // Long methods are refused with the JSON envelope before any handler runs.
    for n in 0..20 {
        let long = format!("{marker}{}{n}", "X".repeat(1000));
        let method = reqwest::Method::from_bytes(long.as_bytes()).unwrap();
        let response = app
            .http
            .request(method, app.url("/v1/integrations"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(error_code(response).await, "invalid_request");
    }
    // Paths no route matches are one label, not one per path.
    let path_marker = format!("/p{}", Uuid::new_v4().simple());
    let response = app.http.get(app.url(&path_marker)).send().await.unwrap();
    assert_eq!(response.status(), 404);

    let metrics = admin_metrics(&app).await;
    assert!(!metrics.contains(&marker), "no method string as a label");
    assert!(
        !metrics.contains(&path_marker),
        "no request path as a label"
    );
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
}

#[tokio::test]
async fn a_callback_whose_state_matches_no_flow_leaves_the_pending_connect_alone() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;

    // Another origin sends the browser to the callback with states of its own.
    let callback = c.app.state.broker.redirect_uri(ProviderId::Microsoft);
    for state in ["B".repeat(43), "nonsense".to_owned()] {
        let url =
            Url::parse_with_params(&callback, &[("code", "x"), ("state", state.as_str())]).unwrap();
        let response = c.callback(&url, Some(&flow.cookie)).await;
        assert_eq!(response.status(), 400);
        assert!(
            response.headers().get("set-cookie").is_none(),
            "the binding cookie is left alone"
        );
        let html = response.text().await.unwrap();
        assert!(
            html.contains(r#"data-message-type="""#),
            "nothing is announced to the app's pages: {html}"
        );
        assert!(!html.contains("_AUTH_"), "no AUTH message: {html}");
        assert!(html.contains("invalid_state"), "the page shows its error");
    }

    // The user's own flow still completes in the same browser.
    let response = c.callback(&redirect, Some(&flow.cookie)).await;
    assert_eq!(response.status(), 200);
    let status: serde_json::Value = c
        .app
        .get_as(user, "/v1/integrations/outlook/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "connected");
}

/// An upstream that answers every request with the same raw HTTP/1.1 response.
async fn raw_upstream(response: &'static str) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    base
}

/// A service on SQLite whose Microsoft API base is `upstream`, and a user connected to it with
/// a token valid for an hour.
async fn app_proxying_to(upstream: &Url) -> (TestApp, Uuid) {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_with(db, |s| {
        s.providers[0].api_bases = vec![upstream.clone()];
    })
    .await;
    let user = Uuid::new_v4();
    seed_sealed_connection(&app, user).await;
    (app, user)
}

/// Stores a connection for `user` whose access token opens (sealed with the test key ring) and
/// is valid for an hour, so the proxy uses it without asking any provider.
async fn seed_sealed_connection(app: &TestApp, user: Uuid) {
    let ring = test_keyring();
    let seal = |column, value: &str| {
        ring.seal(
            &token_place(column, UserId(user), ProviderId::Microsoft),
            value.as_bytes(),
        )
        .unwrap()
    };
    app.store()
        .upsert_connection(&NewConnection {
            user_id: UserId(user),
            provider: ProviderId::Microsoft,
            access_token: seal("access_token", "at-hardening"),
            refresh_token: Some(seal("refresh_token", "rt-hardening")),
            key_id: ring.active_key_id().to_owned(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            provider_user_id: format!("ms-{user}"),
            provider_email: Some("proxy@contoso.example".into()),
            display_name: None,
            scopes: vec!["offline_access".into()],
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_proxy_drops_headers_the_upstream_names_hop_by_hop_and_site_state_headers() {
    let upstream = raw_upstream(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: application/json\r\n\
         Connection: close, X-Hop-Secret\r\n\
         Connection: x-other-hop\r\n\
         X-Hop-Secret: hop-value\r\n\
         X-Other-Hop: other-value\r\n\
         Clear-Site-Data: \"*\"\r\n\
         Set-Cookie2: a=b\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Kept: kept-value\r\n\
         Content-Length: 2\r\n\
         \r\n\
         {}",
    )
    .await;
    let (app, user) = app_proxying_to(&upstream).await;

    let response = app
        .get_service(&format!(
            "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
        ))
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-kept"], "kept-value", "ordinary headers pass");
    for dropped in [
        "x-hop-secret",
        "x-other-hop",
        "clear-site-data",
        "set-cookie2",
        "proxy-connection",
    ] {
        assert!(headers.get(dropped).is_none(), "{dropped} must not pass");
    }
    assert_eq!(response.text().await.unwrap(), "{}");
}

/// An upstream that answers `{}` to one request and hands back what it received (head and
/// body, as bytes).
async fn recording_upstream() -> (Url, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then as many body bytes as its Content-Length says.
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before the request ended");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let _ = tx.send(seen);
    });
    (base, rx)
}

#[tokio::test]
async fn the_proxy_sends_the_users_token_the_listed_headers_and_the_body_and_nothing_else() {
    let (upstream, received) = recording_upstream().await;
    let (app, user) = app_proxying_to(&upstream).await;

    let response = app
        .http
        .post(app.url(&format!(
            "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me/sendMail?x=1"
        )))
        .bearer_auth(&app.service_key)
        .header("content-type", "application/json")
        .header("if-none-match", "\"etag-1\"")
        .header("accept", "application/json")
        .header("cookie", "session=browser-secret")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "custom-value")
        .body(r#"{"message":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The answer's length passes through: sent with a Content-Length, not chunked.
    assert_eq!(response.headers()["content-length"], "2");
    assert!(response.headers().get("transfer-encoding").is_none());
    assert_eq!(response.text().await.unwrap(), "{}");

    let received = String::from_utf8(received.await.unwrap()).unwrap();
    let (head, body) = received.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST /v1.0/me/sendMail?x=1 HTTP/1.1"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("authorization"), Some("Bearer at-hardening"));
    assert_eq!(get("content-type"), Some("application/json"));
    assert_eq!(get("if-none-match"), Some("\"etag-1\""));
    assert_eq!(get("accept"), Some("application/json"));
    assert_eq!(get("content-length"), Some("19"));
    assert_eq!(get("host"), Some(upstream.authority()));
    assert!(get("user-agent").unwrap().starts_with("celeste-connect/"));
    for kept_here in ["cookie", "x-forwarded-for", "x-custom"] {
        assert_eq!(
            get(kept_here),
            None,
            "{kept_here} must not reach the provider"
        );
    }
    assert!(
        !received.contains(&app.service_key),
        "the service key stays here"
    );
    assert_eq!(body, r#"{"message":"hello"}"#);
}

#[tokio::test]
async fn an_unreachable_provider_api_is_a_503_with_retry_after() {
    // A port nothing listens on: bound, then let go.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap()
    };
    let (app, user) = app_proxying_to(&closed).await;

    let response = app
        .get_service(&format!(
            "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
        ))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(error_code(response).await, "provider_unavailable");
}

#[tokio::test]
async fn an_absurd_retry_after_from_the_provider_cools_down_for_at_most_an_hour() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    c.emulator.set_faults(Faults {
        token: Some(HttpFault {
            status: 429,
            retry_after_secs: Some(10_000_000_000_000.0),
            count: None,
        }),
        ..Faults::default()
    });
    c.set_expiry(user, -60).await;
    let token_calls_before = c.token_calls();

    for attempt in 0..2 {
        let response = c.token(user, "").await;
        assert_eq!(response.status(), 503, "attempt {attempt}");
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1..=3600).contains(&retry),
            "attempt {attempt}: Retry-After {retry}"
        );
        assert_eq!(error_code(response).await, "provider_unavailable");
    }
    assert_eq!(
        c.token_calls() - token_calls_before,
        1,
        "the cooldown holds the second call back"
    );

    // The lease was released: once the provider recovers and the cooldown is over, a refresh
    // goes through.
    c.emulator.set_faults(Faults::default());
    c.app
        .exec(
            "update connect.integration_tokens set refresh_cooldown_until = null where user_id = $1::uuid",
            "update integration_tokens set refresh_cooldown_until = null where user_id = $1",
            user,
            0,
        )
        .await;
    let response = c.token(user, "").await;
    assert_eq!(response.status(), 200);
}

/// The status, the `Retry-After` (if any) and the error code (if any) of an answer.
async fn outcome(response: reqwest::Response) -> (u16, Option<u64>, Option<String>) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let code = if status >= 400 && status != 404 {
        Some(error_code(response).await)
    } else {
        None
    };
    (status, retry_after, code)
}

fn assert_rate_limited(outcome: &(u16, Option<u64>, Option<String>), what: &str) {
    assert_eq!(outcome.0, 429, "{what}");
    assert_eq!(outcome.2.as_deref(), Some("rate_limited"), "{what}");
    assert!(
        outcome.1.is_some_and(|secs| secs >= 1),
        "{what}: Retry-After {:?}",
        outcome.1
    );
}

fn per_minute(n: u32) -> Rate {
    Rate::new(n, std::time::Duration::from_secs(60))
}

#[tokio::test]
async fn two_hundred_auth_url_calls_leave_ten_pending_flows_and_the_newest_still_completes() {
    let c = with_emulator_adjusted(Backend::Postgres, demo_accounts(), |s| {
        s.rate_limits.pending_flows_per_user = 10;
    })
    .await;
    let user = Uuid::new_v4();
    let mut flows = Vec::new();
    for _ in 0..200 {
        flows.push(c.start_flow(user, "popup").await);
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&c.app.db.url)
        .await
        .unwrap();
    let pending: i64 =
        sqlx::query_scalar("select count(*) from connect.oauth_flows where user_id = $1")
            .bind(user)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(pending, 10);

    // The oldest can no longer complete; the newest (this browser's cookie) can.
    let oldest = &flows[0];
    let redirect = c.consent(oldest, Some(ADELE), "accept").await;
    let response = c.callback(&redirect, Some(&oldest.cookie)).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("invalid_state"));
    let newest = flows.last().unwrap();
    let redirect = c.consent(newest, Some(ADELE), "accept").await;
    assert_eq!(
        c.callback(&redirect, Some(&newest.cookie)).await.status(),
        200
    );
}

#[tokio::test]
async fn auth_url_is_rate_limited_per_user_and_counted() {
    let c = with_emulator_adjusted(Backend::Sqlite, demo_accounts(), |s| {
        s.rate_limits.auth_url_per_user = per_minute(3);
    })
    .await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let auth_url = |user: Uuid| {
        c.app
            .http
            .get(c.app.url("/v1/integrations/outlook/auth-url"))
            .bearer_auth(user_token(user))
            .header("origin", APP_ORIGIN)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(auth_url(alice).await.unwrap().status(), 200);
    }
    let refused = auth_url(alice).await.unwrap();
    assert!(
        refused.headers().get("set-cookie").is_none(),
        "a refused call starts nothing"
    );
    assert_rate_limited(&outcome(refused).await, "alice's fourth auth-url");
    assert_eq!(
        auth_url(bob).await.unwrap().status(),
        200,
        "bob has his own count"
    );
    // The app's page reads the answer cross-origin: Retry-After must be readable there too.
    let refused = auth_url(alice).await.unwrap();
    let exposed = refused.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    let metrics = admin_metrics(&c.app).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rate_limited_total{")
                && l.contains(r#"limit="auth_url_per_user""#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn token_requests_are_limited_per_user_within_a_key_and_per_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_with(db, |s| {
        s.rate_limits.token_per_user = per_minute(2);
        s.rate_limits.token_per_key = per_minute(3);
    })
    .await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for user in &users {
        seed_sealed_connection(&app, *user).await;
    }
    let app = &app;
    let token = |user: Uuid| async move {
        outcome(
            app.get_service(&format!(
                "/v1/service/users/{user}/integrations/outlook/token"
            ))
            .await,
        )
        .await
    };
    assert_eq!(token(users[0]).await.0, 200);
    assert_eq!(token(users[0]).await.0, 200);
    assert_rate_limited(&token(users[0]).await, "a third token for one user");
    assert_eq!(
        token(users[1]).await.0,
        200,
        "another user of the key still gets one"
    );
    assert_rate_limited(&token(users[2]).await, "a fourth token for the key");
}

#[tokio::test]
async fn proxy_requests_are_limited_per_user_within_a_key() {
    let upstream = raw_upstream(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_with(db, |s| {
        s.providers[0].api_bases = vec![upstream.clone()];
        s.rate_limits.proxy_per_user = per_minute(1);
    })
    .await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    seed_sealed_connection(&app, alice).await;
    seed_sealed_connection(&app, bob).await;
    let app = &app;
    let proxy = |user: Uuid| async move {
        outcome(
            app.get_service(&format!(
                "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
            ))
            .await,
        )
        .await
    };
    assert_eq!(proxy(alice).await.0, 200);
    assert_rate_limited(&proxy(alice).await, "alice's second proxied call");
    assert_eq!(proxy(bob).await.0, 200);
}

/// A 401 a refresh does not cure (Dropbox's `missing_scope`, Graph's claims challenge) costs one
/// refresh, not one per call; the caller still gets the provider's 401 every time.
#[tokio::test]
async fn a_401_a_refresh_does_not_cure_costs_one_refresh_not_one_per_call() {
    let upstream = raw_upstream(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"error\": {\".tag\": \"missing_scope\"}}",
    )
    .await;
    let c = with_emulator_adjusted(Backend::Sqlite, demo_accounts(), |s| {
        s.providers[0].api_bases = vec![upstream.clone()];
    })
    .await;
    let user = Uuid::new_v4();
    assert_eq!(c.connect(user, ADELE).await.status(), 200);
    for call in 0..5 {
        let answer = c
            .app
            .get_service(&format!(
                "/v1/service/users/{user}/integrations/outlook/proxy/v1.0/me"
            ))
            .await;
        assert_eq!(answer.status(), 401, "call {call}");
        assert_eq!(c.refreshes(), 1, "after call {call}");
    }
}

/// DESIGN §10: bad input changes nothing, and that includes the callers' rate-limit budget. With
/// one call a minute allowed, three refused calls of each kind leave the one valid call free.
#[tokio::test]
async fn refused_requests_spend_no_rate_limit_budget() {
    let upstream = raw_upstream(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_with(db, |s| {
        s.providers[0].api_bases = vec![upstream.clone()];
        s.rate_limits.auth_url_per_user = per_minute(1);
        s.rate_limits.token_per_user = per_minute(1);
        s.rate_limits.token_per_key = per_minute(1);
        s.rate_limits.proxy_per_user = per_minute(1);
    })
    .await;
    let alice = Uuid::new_v4();
    seed_sealed_connection(&app, alice).await;
    let auth_url = |mode: &'static str| {
        app.http
            .get(app.url(&format!("/v1/integrations/outlook/auth-url?mode={mode}")))
            .bearer_auth(user_token(alice))
            .header("origin", APP_ORIGIN)
            .send()
    };
    let service = |path: String| {
        let app = &app;
        async move {
            outcome(
                app.get_service(&format!(
                    "/v1/service/users/{alice}/integrations/outlook/{path}"
                ))
                .await,
            )
            .await
        }
    };
    for _ in 0..3 {
        let refused = outcome(auth_url("sideways").await.unwrap()).await;
        assert_eq!(refused.0, 400, "an unknown mode");
        assert_eq!(service("token?min_ttl=999999".into()).await.0, 400);
        assert_eq!(service("proxy/v1.0%2f..%2fx".into()).await.0, 400);
    }
    assert_eq!(auth_url("popup").await.unwrap().status(), 200);
    assert_eq!(service("token".into()).await.0, 200);
    assert_eq!(service("proxy/v1.0/me".into()).await.0, 200);
    // And the budget is there: the next valid call of each kind is refused.
    assert_rate_limited(&outcome(auth_url("popup").await.unwrap()).await, "auth-url");
    assert_rate_limited(&service("token".into()).await, "token");
    assert_rate_limited(&service("proxy/v1.0/me".into()).await, "proxy");
}

#[tokio::test]
async fn callbacks_are_limited_per_client_address() {
    let c = with_emulator_adjusted(Backend::Sqlite, demo_accounts(), |s| {
        s.rate_limits.callback_per_ip = per_minute(2);
        s.rate_limits.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let callback = c.app.state.broker.redirect_uri(ProviderId::Microsoft);
    let url = Url::parse_with_params(&callback, &[("code", "x"), ("state", "nothing")]).unwrap();
    let from = |address: &'static str| {
        c.app
            .http
            .get(url.clone())
            // The proxy in front appends the address it saw; earlier entries are the client's
            // say and are not trusted.
            .header("x-forwarded-for", format!("198.51.100.7, {address}"))
            .send()
    };
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 400);
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 400);
    assert_rate_limited(
        &outcome(from("203.0.113.1").await.unwrap()).await,
        "a third callback from one address",
    );
    assert_eq!(
        from("203.0.113.2").await.unwrap().status(),
        400,
        "another address has its own count"
    );
}

#[tokio::test]
async fn oversized_headers_and_targets_get_the_json_envelope() {
    let app = TestApp::start(Backend::Sqlite).await;

    // One 256 KiB header, and many headers that add up: the service's own header limit.
    let big = "a".repeat(256 * 1024);
    let response = app
        .http
        .get(app.url("/v1/health"))
        .header("x-big", big.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(error_code(response).await, "headers_too_large");
    let mut request = app.http.get(app.url("/v1/health"));
    let kib = "b".repeat(1024);
    for n in 0..40 {
        request = request.header(format!("x-part-{n}"), kib.as_str());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(error_code(response).await, "headers_too_large");

    // A 30 KiB query (the HTTP server itself takes up to 64 KiB).
    let response = app
        .http
        .get(app.url(&format!("/v1/health?q={}", "q".repeat(30 * 1024))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 414);
    assert_eq!(error_code(response).await, "uri_too_long");

    // Invalid UTF-8, percent-encoded in the path: refused in JSON by the router.
    let response = app
        .http
        .get(app.url("/v1/integrations/%FF%FE/status"))
        .bearer_auth(user_token(Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_request");

    // Ordinary requests still pass.
    let response = app
        .http
        .get(app.url(&format!("/v1/health?q={}", "q".repeat(1024))))
        .header("x-medium", "c".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
