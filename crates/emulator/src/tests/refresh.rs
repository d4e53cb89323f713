//! Behaviour of the refresh-token grant: rotation, the old token staying valid, and the test
//! switches that make Microsoft refuse a refresh (50173, 65001, 700082).

use std::time::Duration;

use axum::http::StatusCode;

use super::*;

fn rt(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

#[tokio::test]
async fn refresh_rotates_and_old_token_stays_valid() {
    let h = Harness::new();
    let first = rt(&h.tokens_for(ADELE).await);
    let reply = h.refresh(&first).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store, no-cache"));
    let body = reply.json();
    let second = rt(&body);
    assert_ne!(first, second, "a new refresh token every time");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], GRANTED);
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("TOKMARK-at-")
    );
    // Microsoft does not revoke the old one.
    assert_eq!(h.refresh(&first).await.status, StatusCode::OK);
    assert_eq!(h.refresh(&second).await.status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_without_scope_uses_the_original_grant() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    let body = with(Harness::refresh_body(&token), "scope", None);
    let reply = h.token(&body).await;
    assert_eq!(reply.json()["scope"], GRANTED);
}

#[tokio::test]
async fn refresh_with_a_subset_scope_works_and_with_more_needs_consent() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    let subset = with(
        Harness::refresh_body(&token),
        "scope",
        Some("Mail.Read offline_access"),
    );
    assert_eq!(h.token(&subset).await.status, StatusCode::OK);
    let more = with(
        Harness::refresh_body(&token),
        "scope",
        Some("Calendars.Read offline_access"),
    );
    let reply = h.token(&more).await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 65001);
}

#[tokio::test]
async fn refreshed_access_token_works_on_graph() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    let body = h.refresh(&token).await.json();
    let me = h
        .graph("/v1.0/me", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["id"], ADELE);
}

#[tokio::test]
async fn revoked_grant_refresh_fails_with_50173() {
    let h = Harness::new();
    let old = rt(&h.tokens_for(ADELE).await);
    h.emulator.revoke_grant(ADELE);
    let reply = h.refresh(&old).await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 50173);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("TokensValidFrom")
    );
    // Reconnecting gives tokens that work; the old one stays dead.
    let fresh = rt(&h.tokens_for(ADELE).await);
    assert_eq!(h.refresh(&fresh).await.status, StatusCode::OK);
    assert_eq!(h.refresh(&old).await.aadsts(), 50173);
}

#[tokio::test]
async fn withdrawn_consent_refresh_fails_with_65001_consent_required() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    h.emulator.withdraw_consent(ADELE);
    let reply = h.refresh(&token).await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 65001);
    assert_eq!(reply.json()["suberror"], "consent_required");
}

#[tokio::test]
async fn expired_refresh_tokens_fail_with_700082() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    h.emulator.expire_refresh_tokens(ADELE);
    let reply = h.refresh(&token).await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 700082);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("90.00:00:00")
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_token_dies_after_90_idle_days_but_each_use_restarts_the_clock() {
    let h = Harness::new();
    let first = rt(&h.tokens_for(ADELE).await);
    tokio::time::advance(Duration::from_secs(89 * 24 * 3600)).await;
    let second = rt(&h.refresh(&first).await.json());
    tokio::time::advance(Duration::from_secs(2 * 24 * 3600)).await;
    assert_eq!(h.refresh(&first).await.aadsts(), 700082);
    assert_eq!(h.refresh(&second).await.status, StatusCode::OK);
}

#[tokio::test]
async fn switches_touch_only_their_account() {
    let h = Harness::new();
    let adele = rt(&h.tokens_for(ADELE).await);
    let lee = rt(&h.tokens_for(LEE).await);
    h.emulator.revoke_grant(LEE);
    assert_eq!(h.refresh(&adele).await.status, StatusCode::OK);
    assert_eq!(h.refresh(&lee).await.aadsts(), 50173);
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let h = Harness::new();
    h.emulator.add_client(RegisteredClient {
        client_id: "other-app".into(),
        client_secret: "other-secret".into(),
        redirect_uris: vec![REDIRECT_URI.into()],
    });
    let token = rt(&h.tokens_for(ADELE).await);
    let body = with(
        Harness::refresh_body(&token),
        "client_id",
        Some("other-app"),
    );
    let body = with(body, "client_secret", Some("other-secret"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70000,
    );
}

#[tokio::test]
async fn garbled_refresh_token_is_9002313() {
    let h = Harness::new();
    assert_aad_error(
        &h.refresh("0.AXYA-truncated").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        9002313,
    );
}

#[tokio::test]
async fn refresh_still_authenticates_the_client() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    let body = with(Harness::refresh_body(&token), "client_secret", Some("nope"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
    );
}

#[tokio::test]
async fn missing_refresh_token_is_900144() {
    let h = Harness::new();
    let body = with(Harness::refresh_body("x"), "refresh_token", None);
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
    );
}

#[tokio::test]
async fn refresh_works_at_any_tenant_path() {
    let h = Harness::new();
    let token = rt(&h.tokens_for(ADELE).await);
    let reply = h
        .post_form(
            "/organizations/oauth2/v2.0/token",
            encode(&Harness::refresh_body(&token)),
            &[],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "refresh tokens are not bound to a tenant path"
    );
}
