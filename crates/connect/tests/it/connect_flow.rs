//! Connecting Outlook end to end over real HTTP against the provider emulator: the flow, every
//! way a callback is refused (nothing stored, no token request), encryption at rest, and what
//! pages and logs reveal (security.md §8 C1–C13, E1–E3, F1).

use celeste_connect::broker::connect::token_place;
use celeste_connect::model::UserId;
use celeste_connect::oauth::state::sha256;
use celeste_connect::provider::ProviderId;
use provider_emulator::{Faults, HttpFault, TestAccount, demo_accounts};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    APP_ORIGIN, BACKENDS, Backend, CLIENT_SECRET, Connected, TestApp, TestDb, captured_logs,
    test_keyring, user_token, with_emulator,
};

const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
const LEE: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

async fn status(c: &Connected, user: Uuid) -> Value {
    c.app
        .get_as(user, "/v1/integrations/outlook/status")
        .await
        .json()
        .await
        .unwrap()
}

/// The data attributes the callback page hands its script.
fn page_attr(html: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let start = html.find(&key).unwrap_or_else(|| panic!("{name} in page")) + key.len();
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn connecting_stores_the_account_and_the_page_tells_the_app() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        let response = c.connect(user, ADELE).await;
        assert_eq!(response.status(), 200, "{backend:?}");
        let h = response.headers().clone();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'; script-src 'self'")
        );
        assert!(
            h["set-cookie"].to_str().unwrap().contains("Max-Age=0"),
            "the binding cookie is spent"
        );
        let html = response.text().await.unwrap();
        assert_eq!(
            page_attr(&html, "data-message-type"),
            "MICROSOFT_AUTH_SUCCESS"
        );
        assert_eq!(page_attr(&html, "data-app-origin"), APP_ORIGIN);
        assert!(!html.contains("adele"), "the page carries no account data");

        let s = status(&c, user).await;
        assert_eq!(s["status"], "connected", "{backend:?}");
        assert_eq!(s["provider_email"], "adele.vance@contoso.example");
        assert_eq!(s["display_name"], "Adele Vance");
        let scopes: Vec<&str> = s["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            scopes.contains(&"https://graph.microsoft.com/Mail.Read"),
            "granted scopes stored: {scopes:?}"
        );
        assert_eq!(c.code_exchanges(), 1);
    }
}

#[tokio::test]
async fn a_personal_account_without_mail_is_named_by_its_user_principal_name() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let personal = demo_accounts()
        .into_iter()
        .find(|a| a.mail.is_none())
        .unwrap();
    assert_eq!(c.connect(user, &personal.id).await.status(), 200);
    assert_eq!(
        status(&c, user).await["provider_email"],
        personal.user_principal_name
    );
}

#[tokio::test]
async fn auth_url_carries_pkce_s256_and_the_seeds_parameters_and_binds_the_browser() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let flow = c.start_flow(Uuid::new_v4(), "popup").await;
    let q: std::collections::HashMap<String, String> =
        flow.auth_url.query_pairs().into_owned().collect();
    assert!(
        flow.auth_url
            .path()
            .ends_with("/common/oauth2/v2.0/authorize")
    );
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["response_mode"], "query");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["state"].len(), 43);
    assert_eq!(q["prompt"], "select_account");
    assert_eq!(
        q["redirect_uri"],
        c.app.state.broker.redirect_uri(ProviderId::Microsoft)
    );
    assert_eq!(
        q["scope"],
        "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read https://graph.microsoft.com/MailboxSettings.Read offline_access"
    );

    let response = c
        .app
        .http
        .get(c.app.url("/v1/integrations/outlook/auth-url"))
        .bearer_auth(user_token(Uuid::new_v4()))
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("__Host-cc_flow_binding="),
        "a __Host- cookie no sibling subdomain can plant: {cookie}"
    );
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(attributes.contains(&attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.to_ascii_lowercase().contains("domain="),
        "__Host- cookies carry no Domain: {cookie}"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn auth_url_refuses_foreign_origins_missing_origins_and_anonymous_users() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let get = |origin: Option<&'static str>, token: String| {
        let mut r = c
            .app
            .http
            .get(c.app.url("/v1/integrations/outlook/auth-url"))
            .bearer_auth(token);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    for origin in [
        Some("https://evil.example"),
        Some("http://app.localhost:3001"),
        Some("null"),
        None,
    ] {
        let response = get(origin, user_token(user)).await.unwrap();
        assert_eq!(response.status(), 403, "{origin:?}");
        assert_eq!(crate::support::error_code(response).await, "forbidden");
    }
    let anonymous = crate::support::sign_hs256(
        crate::support::JWT_SECRET,
        &serde_json::json!({"sub": user, "role": "authenticated", "aud": "authenticated",
                            "exp": crate::support::exp_in(600), "is_anonymous": true}),
    );
    assert_eq!(
        get(Some(APP_ORIGIN), anonymous).await.unwrap().status(),
        403
    );
    let bad_mode = c
        .app
        .http
        .get(c.app.url("/v1/integrations/outlook/auth-url?mode=iframe"))
        .bearer_auth(user_token(user))
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_mode.status(), 400);
}

/// Asserts a refused callback for a flow that was found: the page reports the error to the
/// app and spends the cookie; the reason; no token request; nothing stored.
async fn assert_refused(c: &Connected, response: reqwest::Response, reason: &str, user: Uuid) {
    assert_refused_as(c, response, reason, user, true).await;
}

/// Asserts a refused callback whose state matched no flow: an error page that tells the app's
/// pages nothing and leaves the binding cookie alone (anyone can send such a request).
async fn assert_refused_without_flow(c: &Connected, response: reqwest::Response, user: Uuid) {
    assert_refused_as(c, response, "invalid_state", user, false).await;
}

async fn assert_refused_as(
    c: &Connected,
    response: reqwest::Response,
    reason: &str,
    user: Uuid,
    flow_found: bool,
) {
    assert_eq!(response.status(), 400, "{reason}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        response.headers().contains_key("set-cookie"),
        flow_found,
        "{reason}: the cookie is cleared only when a flow was found"
    );
    let html = response.text().await.unwrap();
    assert_eq!(
        page_attr(&html, "data-message-type"),
        if flow_found {
            "MICROSOFT_AUTH_ERROR"
        } else {
            ""
        },
        "{reason}"
    );
    assert_eq!(page_attr(&html, "data-reason"), reason);
    assert_eq!(c.code_exchanges(), 0, "{reason}: no token request");
    assert_eq!(
        status(c, user).await["status"],
        "not_connected",
        "{reason}: nothing stored"
    );
}

#[tokio::test]
async fn callbacks_that_are_not_the_flows_own_are_refused_before_any_token_request() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());

        // Unknown, forged (the seed's "<user id>:x") and missing state.
        let flow = c.start_flow(alice, "popup").await;
        let redirect = c.consent(&flow, Some(ADELE), "accept").await;
        let code = redirect
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let callback = c.app.state.broker.redirect_uri(ProviderId::Microsoft);
        for state in [
            "A".repeat(43),
            format!("{alice}:abc"),
            String::new(),
            "<script>".to_owned(),
        ] {
            let url = url::Url::parse_with_params(
                &callback,
                &[("code", code.as_str()), ("state", state.as_str())],
            )
            .unwrap();
            let response = c.callback(&url, Some(&flow.cookie)).await;
            assert_refused_without_flow(&c, response, alice).await;
        }

        // The flow's own redirect, but without the binding cookie, or with another flow's cookie
        // (a victim completing an attacker's flow in their own browser).
        let bobs_flow = c.start_flow(bob, "popup").await;
        assert_refused(
            &c,
            c.callback(&redirect, None).await,
            "browser_mismatch",
            alice,
        )
        .await;
        // The first attempt consumed the flow: the right cookie is now too late.
        assert_refused_without_flow(&c, c.callback(&redirect, Some(&flow.cookie)).await, alice)
            .await;

        let flow = c.start_flow(alice, "popup").await;
        let redirect = c.consent(&flow, Some(ADELE), "accept").await;
        assert_refused(
            &c,
            c.callback(&redirect, Some(&bobs_flow.cookie)).await,
            "browser_mismatch",
            alice,
        )
        .await;
        assert_eq!(status(&c, bob).await["status"], "not_connected");
    }
}

#[tokio::test]
async fn a_state_is_used_once_and_expires_after_ten_minutes() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;
    assert_eq!(
        c.callback(&redirect, Some(&flow.cookie)).await.status(),
        200
    );
    // Replay of the successful callback.
    let replay = c.callback(&redirect, Some(&flow.cookie)).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        page_attr(&replay.text().await.unwrap(), "data-reason"),
        "invalid_state"
    );
    assert_eq!(c.code_exchanges(), 1, "exactly one token request");

    // A flow whose ten minutes are over (moved back in time in the database).
    let other = Uuid::new_v4();
    let flow = c.start_flow(other, "popup").await;
    let redirect = c.consent(&flow, Some(LEE), "accept").await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&c.app.db.url)
        .await
        .unwrap();
    sqlx::query("update connect.oauth_flows set expires_at = now() - interval '1 minute' where state_hash = $1")
        .bind(&sha256(&flow.state)[..])
        .execute(&mut db)
        .await
        .unwrap();
    let expired = c.callback(&redirect, Some(&flow.cookie)).await;
    assert_eq!(
        page_attr(&expired.text().await.unwrap(), "data-reason"),
        "expired"
    );
    assert_eq!(c.code_exchanges(), 1);
    assert_eq!(status(&c, other).await["status"], "not_connected");
}

#[tokio::test]
async fn another_providers_flow_delivered_to_the_outlook_callback_is_refused() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&c.app.db.url)
        .await
        .unwrap();
    sqlx::query("update connect.oauth_flows set provider = 'google' where state_hash = $1")
        .bind(&sha256(&flow.state)[..])
        .execute(&mut db)
        .await
        .unwrap();
    assert_refused(
        &c,
        c.callback(&redirect, Some(&flow.cookie)).await,
        "invalid_state",
        user,
    )
    .await;
}

#[tokio::test]
async fn declined_consent_and_provider_errors_store_nothing() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "cancel").await;
    assert!(
        redirect
            .query_pairs()
            .any(|(k, v)| k == "error" && v == "access_denied")
    );
    assert_refused(
        &c,
        c.callback(&redirect, Some(&flow.cookie)).await,
        "access_denied",
        user,
    )
    .await;

    c.emulator.set_faults(Faults {
        next_consent: Some(provider_emulator::ConsentFault::ConsentRequired),
        ..Faults::default()
    });
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;
    assert_refused(
        &c,
        c.callback(&redirect, Some(&flow.cookie)).await,
        "consent_required",
        user,
    )
    .await;
}

#[tokio::test]
async fn a_failed_reconnect_leaves_the_old_connection_intact() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let user = Uuid::new_v4();
        assert_eq!(c.connect(user, ADELE).await.status(), 200);
        let before = status(&c, user).await;

        // Reconnect with another account while the token endpoint is down.
        c.emulator.set_faults(Faults {
            token: Some(HttpFault::server_error(503)),
            ..Faults::default()
        });
        let flow = c.start_flow(user, "popup").await;
        let redirect = c.consent(&flow, Some(LEE), "accept").await;
        let response = c.callback(&redirect, Some(&flow.cookie)).await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            page_attr(&response.text().await.unwrap(), "data-reason"),
            "provider_unavailable"
        );
        assert_eq!(
            status(&c, user).await,
            before,
            "{backend:?}: the old connection is untouched"
        );

        // Once the provider answers, a reconnect replaces the account in place.
        c.emulator.set_faults(Faults::default());
        assert_eq!(c.connect(user, LEE).await.status(), 200);
        let after = status(&c, user).await;
        assert_eq!(after["provider_email"], "lee.gu@contoso.example");
        assert_eq!(after["connected_at"], before["connected_at"]);
    }
}

#[tokio::test]
async fn same_window_flow_returns_to_the_apps_settings_page() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "redirect").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;
    let response = c.callback(&redirect, Some(&flow.cookie)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "http://app.localhost:3000/settings?integration=outlook&result=connected"
    );
    let flow = c.start_flow(user, "redirect").await;
    let redirect = c.consent(&flow, Some(ADELE), "cancel").await;
    let response = c.callback(&redirect, Some(&flow.cookie)).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        "http://app.localhost:3000/settings?integration=outlook&result=error&reason=access_denied"
    );
    assert!(!location.contains("code=") && !location.contains("state="));
}

#[tokio::test]
async fn tokens_are_sealed_at_rest_and_open_only_in_their_own_place() {
    for backend in BACKENDS {
        let c = with_emulator(backend, demo_accounts()).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(c.connect(alice, ADELE).await.status(), 200);
        assert_eq!(c.connect(bob, LEE).await.status(), 200);

        // A dump of the whole database holds no token (every emulator token contains TOKMARK).
        let dump = match backend {
            Backend::Postgres | Backend::Supabase => {
                let out = std::process::Command::new("pg_dump")
                    .arg("--data-only")
                    .arg(&c.app.db.url)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
            Backend::Sqlite => {
                let path = c.app.db.url.trim_start_matches("sqlite://").to_owned();
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
                bytes
            }
        };
        assert!(
            !dump.windows(7).any(|w| w == b"TOKMARK"),
            "{backend:?}: plaintext token in the database"
        );
        assert!(
            dump.windows(5).any(|w| w == b"Adele"),
            "{backend:?}: the dump did read the rows"
        );

        // A ciphertext opens in its own row and column only.
        let rows = c
            .app
            .store()
            .connections_not_on_key("no-such-key", 10)
            .await
            .unwrap();
        let ring = test_keyring();
        let a = rows.iter().find(|r| r.user_id == UserId(alice)).unwrap();
        let access = ring
            .open(
                &token_place("access_token", UserId(alice), ProviderId::Microsoft),
                &a.access_token,
            )
            .unwrap();
        assert!(access.starts_with(b"TOKMARK"));
        assert!(
            ring.open(
                &token_place("access_token", UserId(bob), ProviderId::Microsoft),
                &a.access_token
            )
            .is_err()
        );
        assert!(
            ring.open(
                &token_place("refresh_token", UserId(alice), ProviderId::Microsoft),
                &a.access_token
            )
            .is_err()
        );
        let mut flipped = a.access_token.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            ring.open(
                &token_place("access_token", UserId(alice), ProviderId::Microsoft),
                &flipped
            )
            .is_err()
        );
    }
}

#[tokio::test]
async fn hostile_provider_text_is_rendered_inert() {
    let evil = TestAccount {
        id: "e0e0e0e0-0000-4000-8000-000000000bad".into(),
        display_name: "'</script><script>alert(1)</script>".into(),
        mail: Some("\"><img src=x onerror=alert(1)>@contoso.example".into()),
        user_principal_name: "evil@contoso.example".into(),
        ..TestAccount::default()
    };
    let mut accounts = demo_accounts();
    accounts.push(evil.clone());
    let c = with_emulator(Backend::Sqlite, accounts).await;
    let user = Uuid::new_v4();
    let html = c.connect(user, &evil.id).await.text().await.unwrap();
    assert!(
        !html.contains("<script>alert") && !html.contains("onerror"),
        "{html}"
    );

    let flow = c.start_flow(user, "popup").await;
    let mut url = url::Url::parse(&c.app.state.broker.redirect_uri(ProviderId::Microsoft)).unwrap();
    url.query_pairs_mut()
        .append_pair("error", "<script>alert(1)</script>")
        .append_pair("error_description", "\"><img src=x onerror=alert(1)>")
        .append_pair("state", &flow.state);
    let response = c.callback(&url, Some(&flow.cookie)).await;
    let html = response.text().await.unwrap();
    assert!(
        !html.contains("<script>alert") && !html.contains("onerror") && !html.contains("<img"),
        "{html}"
    );
    assert_eq!(page_attr(&html, "data-reason"), "provider_error");
}

#[tokio::test]
async fn logs_never_hold_a_token_code_state_binding_or_client_secret() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let flow = c.start_flow(user, "popup").await;
    let redirect = c.consent(&flow, Some(ADELE), "accept").await;
    let code = redirect
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        c.callback(&redirect, Some(&flow.cookie)).await.status(),
        200
    );
    // And some failures: a replay, a refused exchange, an unknown state.
    c.callback(&redirect, Some(&flow.cookie)).await;
    c.emulator.set_faults(Faults {
        token: Some(HttpFault::server_error(500)),
        ..Faults::default()
    });
    c.connect(user, LEE).await;

    let logs = captured_logs();
    assert!(logs.contains("connected"), "the capture works");
    let binding = flow.cookie.split_once('=').unwrap().1;
    for secret in ["TOKMARK", CLIENT_SECRET, &code, &flow.state, binding] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert!(!logs.contains("adele.vance@"), "no email at info or debug");
}

#[tokio::test]
async fn behind_a_path_of_the_apps_domain_the_pages_link_their_files_under_that_path() {
    for (public_url, prefix) in [
        ("https://app.example.com/connect", "/connect/"),
        ("https://app.example.com/connect/", "/connect/"),
        ("https://connect.example.com", "/"),
    ] {
        let app = TestApp::start_with(TestDb::new(Backend::Sqlite).await, |s| {
            s.public_url = url::Url::parse(public_url).unwrap();
        })
        .await;
        let settings = app.http.get(app.url("/settings")).send().await.unwrap();
        assert_eq!(settings.status(), 200);
        let settings = settings.text().await.unwrap();
        let callback = app
            .http
            .get(app.url("/v1/integrations/outlook/callback?state=unknown&code=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(callback.status(), 400);
        let callback = callback.text().await.unwrap();
        for (html, page) in [(&settings, "settings"), (&callback, "callback")] {
            for link in [
                format!("href=\"{prefix}static/{page}.css\""),
                format!("src=\"{prefix}static/{page}.js\""),
            ] {
                assert!(
                    html.contains(&link),
                    "{public_url}: {page} page links {link}"
                );
            }
            // What the proxy in front forwards once it has taken the path off.
            for file in [format!("/static/{page}.css"), format!("/static/{page}.js")] {
                let status = app.http.get(app.url(&file)).send().await.unwrap().status();
                assert_eq!(status, 200, "{file}");
            }
        }
    }
}
