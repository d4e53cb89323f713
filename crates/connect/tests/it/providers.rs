//! Google and Dropbox end to end against the provider emulator: what each authorize request
//! asks for, the profile each stores, refresh without rotation, a reconnect that gets no
//! refresh token, the proxy's API hosts, and disconnect revoking at the provider — also when
//! the revocation fails. Providers.md §2 and §3 are the facts.

use std::collections::HashMap;

use provider_emulator::{Faults, Flavor, HttpFault, demo_accounts};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{Backend, Connected, with_emulator, with_emulator_adjusted};

const ADA: &str = "108234567890123456789";
const GRACE: &str = "117654321098765432101";
const ALAN: &str = "dbid:AADx7bYc2qLcQ1m3vT9kP0sWnE4rUfHgJ";

async fn status(c: &Connected, provider: &str, user: Uuid) -> Value {
    c.app
        .get_as(user, &format!("/v1/integrations/{provider}/status"))
        .await
        .json()
        .await
        .unwrap()
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

async fn connected(c: &Connected, provider: &str, user: Uuid, account: &str) {
    let page = c.connect_to(provider, user, account).await;
    assert_eq!(page.status(), 200);
    assert_eq!(status(c, provider, user).await["status"], "connected");
}

#[tokio::test]
async fn google_asks_for_offline_access_and_consent_on_every_connect() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let first = query(&c.start_flow_for("google", user, "popup").await.auth_url);
    assert_eq!(first["access_type"], "offline");
    assert_eq!(first["include_granted_scopes"], "true");
    assert_eq!(first["prompt"], "consent");
    assert_eq!(first["code_challenge_method"], "S256");
    assert_eq!(
        first["scope"],
        "openid email profile https://www.googleapis.com/auth/gmail.readonly"
    );
    assert!(!first.contains_key("response_mode"), "Microsoft's only");

    connected(&c, "google", user, ADA).await;
    let view = status(&c, "google", user).await;
    assert_eq!(view["provider"], "google");
    assert_eq!(view["provider_email"], "ada.lovelace@gmail.example");
    assert_eq!(view["display_name"], "Ada Lovelace");

    // A reconnect too: the user may pick another account, which Google would otherwise send
    // back without a refresh token if it consented before.
    let again = query(&c.start_flow_for("google", user, "popup").await.auth_url);
    assert_eq!(again["prompt"], "consent");
    assert_eq!(again["access_type"], "offline");
}

#[tokio::test]
async fn a_reconnect_to_an_account_that_consented_before_gets_a_refresh_token_of_its_own() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let (someone, user) = (Uuid::new_v4(), Uuid::new_v4());
    // Grace consents once, for another user of the app.
    connected(&c, "google", someone, GRACE).await;
    connected(&c, "google", user, ADA).await;
    // The user reconnects with Grace's account: Google has her consent already.
    connected(&c, "google", user, GRACE).await;
    c.set_expiry(user, -10).await;
    let token = c.token_for("google", user, "").await;
    assert_eq!(token.status(), 200, "Grace's own refresh token works");
    let token: Value = token.json().await.unwrap();
    assert_eq!(token["provider_user_id"], GRACE);
    assert_eq!(status(&c, "google", user).await["status"], "connected");
}

/// Google's consent screen lets the user untick Gmail. Such a grant would read as connected
/// while every Gmail call answered 403: it is refused, and the page says why.
#[tokio::test]
async fn a_google_grant_without_gmail_stores_nothing_and_the_page_says_why() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let mut flow = c.start_flow_for("google", user, "popup").await;
    // What the consent screen sends when Gmail is unticked: the sign-in scopes only.
    let narrowed: Vec<(String, String)> = flow
        .auth_url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| match k.as_str() {
            "scope" => (k, "openid email profile".to_owned()),
            _ => (k, v),
        })
        .collect();
    flow.auth_url
        .query_pairs_mut()
        .clear()
        .extend_pairs(narrowed);
    let redirect = c.consent(&flow, Some(ADA), "accept").await;
    let page = c.callback(&redirect, Some(&flow.cookie)).await;
    assert_eq!(page.status(), 400);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-reason="scope_denied""#), "{html}");
    assert!(html.contains("GOOGLE_AUTH_ERROR"), "the app is told");
    assert_eq!(status(&c, "google", user).await["status"], "not_connected");

    // Granting everything connects.
    connected(&c, "google", user, ADA).await;
}

#[tokio::test]
async fn a_google_reconnect_that_gets_no_refresh_token_keeps_the_stored_one() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    // Google skips the consent screen (here: the URL loses its `prompt`), so it sends no
    // refresh token.
    let mut flow = c.start_flow_for("google", user, "popup").await;
    let kept: Vec<(String, String)> = flow
        .auth_url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "prompt")
        .collect();
    flow.auth_url.query_pairs_mut().clear().extend_pairs(kept);
    let redirect = c.consent(&flow, Some(ADA), "accept").await;
    assert_eq!(
        c.callback(&redirect, Some(&flow.cookie)).await.status(),
        200
    );
    let stats = c.emulator.stats();
    assert_eq!(stats.issued("google.authorization_code"), 2);

    c.set_expiry(user, -10).await;
    let token = c.token_for("google", user, "").await;
    assert_eq!(token.status(), 200, "the kept refresh token still works");
    assert_eq!(c.emulator.stats().issued("google.refresh_token"), 1);
    assert_eq!(status(&c, "google", user).await["status"], "connected");
}

#[tokio::test]
async fn a_reconnect_to_another_account_never_keeps_the_first_accounts_refresh_token() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    // Grace consents for the first time: Google sends her a refresh token of her own.
    connected(&c, "google", user, GRACE).await;
    assert_eq!(
        status(&c, "google", user).await["provider_email"],
        "grace.hopper@gmail.example"
    );
    c.set_expiry(user, -10).await;
    let token: Value = c.token_for("google", user, "").await.json().await.unwrap();
    assert_eq!(token["provider_user_id"], GRACE);
}

#[tokio::test]
async fn google_refreshes_without_scope_and_keeps_its_refresh_token() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    for round in 1..=2 {
        c.set_expiry(user, -10).await;
        let token = c.token_for("google", user, "").await;
        assert_eq!(token.status(), 200, "refresh {round}");
        let body: Value = token.json().await.unwrap();
        assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
        assert_eq!(body["provider_email"], "ada.lovelace@gmail.example");
    }
    assert_eq!(c.emulator.stats().issued("google.refresh_token"), 2);
}

/// Google's tokens live 3599 s: `min_ttl=3600` cannot be met by any refresh, and used to cost
/// one on every call. It is capped at what Google gives less a minute; a `min_ttl` a refresh
/// can meet still gets one.
#[tokio::test]
async fn a_min_ttl_no_google_token_can_meet_costs_no_refresh_per_call() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    for call in 0..5 {
        let token = c.token_for("google", user, "?min_ttl=3600").await;
        assert_eq!(token.status(), 200, "call {call}");
    }
    assert_eq!(c.emulator.stats().issued("google.refresh_token"), 0);

    c.set_expiry(user, 1000).await;
    let token: Value = c
        .token_for("google", user, "?min_ttl=3000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c.emulator.stats().issued("google.refresh_token"), 1);
    let expires_at = time::OffsetDateTime::parse(
        token["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires_at - time::OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 3000,
        "a refreshed token meets it: {token}"
    );
}

#[tokio::test]
async fn a_refused_google_grant_needs_reauth() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    c.emulator.revoke_grant(ADA);
    c.set_expiry(user, -10).await;
    let token = c.token_for("google", user, "").await;
    assert_eq!(token.status(), 409);
    assert_eq!(status(&c, "google", user).await["status"], "needs_reauth");
    // Reconnecting after that forces consent again, to get a working refresh token.
    let again = query(&c.start_flow_for("google", user, "popup").await.auth_url);
    assert_eq!(again["prompt"], "consent");
}

#[tokio::test]
async fn dropbox_connects_with_offline_access_and_its_profile() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    let asked = query(&c.start_flow_for("dropbox", user, "popup").await.auth_url);
    assert_eq!(asked["token_access_type"], "offline");
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(!asked.contains_key("prompt"));
    connected(&c, "dropbox", user, ALAN).await;
    let view = status(&c, "dropbox", user).await;
    assert_eq!(view["provider_email"], "alan.turing@dropbox.example");
    assert_eq!(view["display_name"], "Alan Turing");
    assert_eq!(
        view["scopes"],
        serde_json::json!([
            "account_info.read",
            "files.metadata.read",
            "files.content.read"
        ])
    );
    // Refresh keeps the stored refresh token (Dropbox sends none): twice works.
    for _ in 0..2 {
        c.set_expiry(user, -10).await;
        let body: Value = c.token_for("dropbox", user, "").await.json().await.unwrap();
        assert!(body["access_token"].as_str().unwrap().starts_with("sl."));
    }
    assert_eq!(c.emulator.stats().issued("dropbox.refresh_token"), 2);
}

#[tokio::test]
async fn the_proxy_reaches_each_providers_api_hosts_and_no_other() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    let proxy = |provider: &str, rest: &str| {
        c.app.url(&format!(
            "/v1/service/users/{user}/integrations/{provider}/proxy/{rest}"
        ))
    };
    let list: Value = c
        .app
        .http
        .get(proxy("google", "gmail/v1/users/me/messages?maxResults=2"))
        .bearer_auth(&c.app.service_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["messages"].as_array().unwrap().len(), 2);
    assert_eq!(list["nextPageToken"], "2");

    let dropbox_user = Uuid::new_v4();
    connected(&c, "dropbox", dropbox_user, ALAN).await;
    let dropbox = |rest: &str, api: Option<&str>| {
        let mut request = c
            .app
            .http
            .post(c.app.url(&format!(
                "/v1/service/users/{dropbox_user}/integrations/dropbox/proxy/{rest}"
            )))
            .bearer_auth(&c.app.service_key)
            .header("content-type", "application/json")
            .body(r#"{"path": "/Documents", "limit": 10}"#);
        if let Some(api) = api {
            request = request.header("x-connect-api", api);
        }
        request.send()
    };
    for api in [None, Some("api"), Some("content")] {
        let answer = dropbox("2/files/list_folder", api).await.unwrap();
        assert_eq!(answer.status(), 200, "{api:?}");
        let page: Value = answer.json().await.unwrap();
        assert_eq!(page["entries"].as_array().unwrap().len(), 10);
        assert_eq!(page["has_more"], true);
    }
    let unknown = dropbox("2/files/list_folder", Some("graph")).await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(c.emulator.stats().endpoint("dropbox.list_folder"), 3);
}

#[tokio::test]
async fn disconnecting_google_and_dropbox_revokes_their_grants_at_the_provider() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    connected(&c, "dropbox", user, ALAN).await;
    connected(&c, "outlook", user, "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d").await;
    for provider in ["google", "dropbox", "outlook"] {
        let answer = c
            .app
            .delete_as(user, &format!("/v1/integrations/{provider}/disconnect"))
            .await;
        assert_eq!(answer.status(), 204);
        assert_eq!(status(&c, provider, user).await["status"], "not_connected");
    }
    let stats = c.emulator.stats();
    assert_eq!(stats.revocations("google"), 1);
    assert_eq!(stats.revocations("dropbox"), 1);
    assert_eq!(stats.endpoint("google.revoke"), 1);
    assert_eq!(stats.endpoint("dropbox.revoke"), 1);
    // A second disconnect has nothing left to revoke.
    let again = c
        .app
        .delete_as(user, "/v1/integrations/google/disconnect")
        .await;
    assert_eq!(again.status(), 204);
    assert_eq!(c.emulator.stats().endpoint("google.revoke"), 1);
}

/// Google's grant is one per account and app: a disconnect must not revoke it while another
/// user of the app is connected to the same account (a shared mailbox). The last one does.
#[tokio::test]
async fn a_google_disconnect_keeps_the_grant_another_user_of_the_same_account_still_uses() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let c = with_emulator(backend, demo_accounts()).await;
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        connected(&c, "google", alice, ADA).await;
        connected(&c, "google", bob, ADA).await;
        let answer = c
            .app
            .delete_as(alice, "/v1/integrations/google/disconnect")
            .await;
        assert_eq!(answer.status(), 204, "{backend:?}");
        assert_eq!(status(&c, "google", alice).await["status"], "not_connected");
        assert_eq!(
            c.emulator.stats().endpoint("google.revoke"),
            0,
            "{backend:?}"
        );
        // Bob's connection still refreshes.
        c.set_expiry(bob, -10).await;
        assert_eq!(
            c.token_for("google", bob, "").await.status(),
            200,
            "{backend:?}"
        );
        // The last user of the account to disconnect gives the grant back.
        let answer = c
            .app
            .delete_as(bob, "/v1/integrations/google/disconnect")
            .await;
        assert_eq!(answer.status(), 204);
        assert_eq!(
            c.emulator.stats().endpoint("google.revoke"),
            1,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn dropbox_revocation_refreshes_an_expired_access_token_first() {
    let c = with_emulator(Backend::Sqlite, demo_accounts()).await;
    let user = Uuid::new_v4();
    connected(&c, "dropbox", user, ALAN).await;
    c.set_expiry(user, -10).await;
    let answer = c
        .app
        .delete_as(user, "/v1/integrations/dropbox/disconnect")
        .await;
    assert_eq!(answer.status(), 204);
    let stats = c.emulator.stats();
    assert_eq!(stats.issued("dropbox.refresh_token"), 1);
    assert_eq!(stats.revocations("dropbox"), 1);
}

#[tokio::test]
async fn a_failing_revocation_still_disconnects_and_is_counted_once() {
    let c = with_emulator(Backend::Postgres, demo_accounts()).await;
    for (provider, account, flavor) in [
        ("google", ADA, Flavor::Google),
        ("dropbox", ALAN, Flavor::Dropbox),
    ] {
        let user = Uuid::new_v4();
        connected(&c, provider, user, account).await;
        c.emulator.set_faults(Faults {
            revoke: Some(HttpFault::server_error(503)),
            ..Faults::default()
        });
        let answer = c
            .app
            .delete_as(user, &format!("/v1/integrations/{provider}/disconnect"))
            .await;
        assert_eq!(answer.status(), 204, "{flavor:?}");
        assert_eq!(status(&c, provider, user).await["status"], "not_connected");
        let stats = c.emulator.stats();
        assert_eq!(stats.endpoint(&format!("{provider}.revoke")), 1);
        assert_eq!(stats.revocations(provider), 0);
        c.emulator.set_faults(Faults::default());
        let token = c.token_for(provider, user, "").await;
        assert_eq!(token.status(), 404, "never left connected");
    }
}

#[tokio::test]
async fn a_revocation_that_times_out_still_disconnects_and_is_logged() {
    crate::support::capture_logs();
    let c = with_emulator_adjusted(Backend::Sqlite, demo_accounts(), |s| {
        s.refresh.provider_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let user = Uuid::new_v4();
    connected(&c, "google", user, ADA).await;
    c.emulator.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let answer = c
        .app
        .delete_as(user, "/v1/integrations/google/disconnect")
        .await;
    assert_eq!(answer.status(), 204);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_500),
        "did not wait for the provider"
    );
    assert_eq!(status(&c, "google", user).await["status"], "not_connected");
    assert_eq!(c.emulator.stats().revocations("google"), 0);
    let logs = crate::support::captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("revocation at the provider failed")
                && l.contains(&user.to_string())),
        "the failure is logged"
    );
    assert!(
        !logs.contains("TOKMARK"),
        "no token, code or refresh token of any provider in the logs"
    );
}

#[tokio::test]
async fn an_unconfigured_provider_is_a_json_404() {
    let app = crate::support::TestApp::start(Backend::Sqlite).await;
    let user = Uuid::new_v4();
    for path in [
        "/v1/integrations/google/status",
        "/v1/integrations/dropbox/auth-url",
        "/v1/integrations/box/status",
    ] {
        let answer = app.get_as(user, path).await;
        assert_eq!(answer.status(), 404, "{path}");
        assert_eq!(crate::support::error_code(answer).await, "not_found");
    }
    let list: Value = app
        .get_as(user, "/v1/integrations")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["integrations"].as_array().unwrap().len(), 1);
}
