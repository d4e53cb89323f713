//! Behaviour of the token endpoint for codes: success shape, client authentication, and every
//! binding of a code (single use, lifetime, client, redirect URI, PKCE, tenant, scopes).

use std::time::Duration;

use axum::http::StatusCode;

use super::*;

#[tokio::test]
async fn code_exchange_returns_bearer_tokens_with_no_store_headers() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let reply = h.redeem(&code).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store, no-cache"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], GRANTED, "fully qualified, no offline_access");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3600..=5400).contains(&expires_in), "{expires_in}");
    assert_eq!(body["ext_expires_in"], body["expires_in"]);
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("TOKMARK-at-")
    );
    assert!(
        body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("TOKMARK-rt-")
    );
    assert!(body.get("id_token").is_none());
}

#[tokio::test]
async fn access_token_lifetimes_vary_like_microsofts() {
    let h = Harness::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        seen.insert(h.tokens_for(ADELE).await["expires_in"].as_u64().unwrap());
    }
    assert!(seen.len() > 1, "never a fixed 3600: {seen:?}");
}

#[tokio::test]
async fn configured_access_token_lifetime_is_used() {
    let h = Harness::new();
    h.emulator
        .set_access_token_lifetime(Some(Duration::from_secs(120)));
    assert_eq!(h.tokens_for(ADELE).await["expires_in"], 120);
}

#[tokio::test]
async fn code_is_single_use() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    assert_eq!(h.redeem(&code).await.status, StatusCode::OK);
    let second = h.redeem(&code).await;
    assert_aad_error(&second, StatusCode::BAD_REQUEST, "invalid_grant", 54005);
}

#[tokio::test(start_paused = true)]
async fn code_expires_after_lifetime() {
    let mut config = EmulatorConfig::demo(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    config.code_lifetime = Duration::from_secs(5);
    let h = Harness::with_config(config);
    let early = h.code_for(ADELE).await;
    let late = h.code_for(ADELE).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(h.redeem(&early).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_aad_error(
        &h.redeem(&late).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70008,
    );
}

#[tokio::test(start_paused = true)]
async fn default_code_lifetime_is_ten_minutes() {
    let h = Harness::new();
    let early = h.code_for(ADELE).await;
    let late = h.code_for(ADELE).await;
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(h.redeem(&early).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(h.redeem(&late).await.aadsts(), 70008);
}

#[tokio::test]
async fn code_redeemed_at_another_tenant_path_is_700005() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let reply = h
        .post_form(
            "/organizations/oauth2/v2.0/token",
            encode(&Harness::redeem_body(&code)),
            &[],
        )
        .await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 700005);
    assert_eq!(
        h.redeem(&code).await.status,
        StatusCode::OK,
        "a failed attempt does not burn the code"
    );
}

#[tokio::test]
async fn code_is_bound_to_the_redirect_uri() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let other = with(
        Harness::redeem_body(&code),
        "redirect_uri",
        Some("https://connect.example/other"),
    );
    assert_aad_error(
        &h.token(&other).await,
        StatusCode::BAD_REQUEST,
        "invalid_client",
        50011,
    );
    let missing = with(Harness::redeem_body(&code), "redirect_uri", None);
    assert_aad_error(
        &h.token(&missing).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
    );
}

#[tokio::test]
async fn code_is_bound_to_the_client() {
    let h = Harness::new();
    h.emulator.add_client(RegisteredClient {
        client_id: "other-app".into(),
        client_secret: "other-secret".into(),
        redirect_uris: vec![REDIRECT_URI.into()],
    });
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_id", Some("other-app"));
    let body = with(body, "client_secret", Some("other-secret"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        70000,
    );
}

#[tokio::test]
async fn pkce_s256_mismatch_is_invalid_grant_501481() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(
        Harness::redeem_body(&code),
        "code_verifier",
        Some("x".repeat(43).as_str()),
    );
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        501481,
    );
}

#[tokio::test]
async fn missing_verifier_for_a_pkce_code_is_invalid_grant_50148() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "code_verifier", None);
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        50148,
    );
}

#[tokio::test]
async fn plain_pkce_assumed_when_method_omitted() {
    let h = Harness::new();
    let params = with(authorize_params(), "code_challenge_method", None);
    let params = with(params, "code_challenge", Some(VERIFIER));
    let code = h.code_with(&params, ADELE).await;
    // The S256 transform of the verifier is not the plain challenge...
    let s256_style = with(
        Harness::redeem_body(&code),
        "code_verifier",
        Some(&s256_challenge(VERIFIER)),
    );
    assert_eq!(h.token(&s256_style).await.aadsts(), 501481);
    // ...the verifier itself is.
    assert_eq!(h.redeem(&code).await.status, StatusCode::OK);
}

#[tokio::test]
async fn code_without_pkce_needs_no_verifier() {
    let h = Harness::new();
    let params = with(authorize_params(), "code_challenge", None);
    let params = with(params, "code_challenge_method", None);
    let code = h.code_with(&params, ADELE).await;
    let body = with(Harness::redeem_body(&code), "code_verifier", None);
    assert_eq!(h.token(&body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn basic_client_auth_accepted() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_secret", None);
    let body = with(body, "client_id", None);
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let reply = h
        .post_form(TOKEN, encode(&body), &[("authorization", auth.as_str())])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn basic_credentials_are_form_decoded_after_base64() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_secret", None);
    // Secret sent without form-encoding: its `+` reads as a space and `%` is garbage.
    let raw =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let auth = format!("Basic {raw}");
    let reply = h
        .post_form(TOKEN, encode(&body), &[("authorization", auth.as_str())])
        .await;
    assert_aad_error(&reply, StatusCode::UNAUTHORIZED, "invalid_client", 7000215);
}

#[tokio::test]
async fn wrong_secret_is_401_invalid_client_7000215() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_secret", Some("wrong"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
    );
    assert_eq!(
        h.redeem(&code).await.status,
        StatusCode::OK,
        "code still usable"
    );
}

#[tokio::test]
async fn missing_secret_is_401_invalid_client_7000218() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_secret", None);
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
    );
}

#[tokio::test]
async fn secret_in_both_body_and_basic_is_refused() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let reply = h
        .post_form(
            TOKEN,
            encode(&Harness::redeem_body(&code)),
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", 9002313);
}

#[tokio::test]
async fn unknown_client_at_token_endpoint_is_700016() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(Harness::redeem_body(&code), "client_id", Some("ghost"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
    );
}

#[tokio::test]
async fn unsupported_or_missing_grant_type_is_refused() {
    let h = Harness::new();
    let body = with(Harness::redeem_body("x"), "grant_type", Some("password"));
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
    );
    let body = with(Harness::redeem_body("x"), "grant_type", None);
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
    );
}

#[tokio::test]
async fn json_body_is_not_read_as_a_form() {
    let h = Harness::new();
    let reply = h
        .post_json(
            TOKEN,
            serde_json::json!({"grant_type": "authorization_code"}),
        )
        .await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", 900144);
}

#[tokio::test]
async fn garbled_code_is_9002313_and_unknown_code_is_70000() {
    let h = Harness::new();
    assert_aad_error(
        &h.redeem("garbage").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        9002313,
    );
    let unknown = h
        .redeem("TOKMARK-code-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_aad_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant", 70000);
}

#[tokio::test]
async fn missing_code_is_900144() {
    let h = Harness::new();
    let body = with(Harness::redeem_body("x"), "code", None);
    assert_aad_error(
        &h.token(&body).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
    );
}

#[tokio::test]
async fn no_refresh_token_without_offline_access() {
    let h = Harness::new();
    let params = with(
        authorize_params(),
        "scope",
        Some("https://graph.microsoft.com/User.Read"),
    );
    let code = h.code_with(&params, ADELE).await;
    let body = h.redeem(&code).await.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "https://graph.microsoft.com/User.Read");
}

#[tokio::test]
async fn consent_is_cumulative_across_authorizations() {
    let h = Harness::new();
    let first = with(
        authorize_params(),
        "scope",
        Some("User.Read offline_access"),
    );
    h.code_with(&first, ADELE).await;
    let second = with(
        authorize_params(),
        "scope",
        Some("Mail.Read offline_access"),
    );
    let code = h.code_with(&second, ADELE).await;
    let body = h.redeem(&code).await.json();
    assert_eq!(
        body["scope"],
        "https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read"
    );
}

#[tokio::test]
async fn token_request_scope_is_checked_against_consent() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let empty = with(Harness::redeem_body(&code), "scope", Some(""));
    assert_aad_error(
        &h.token(&empty).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        28003,
    );
    let more = with(
        Harness::redeem_body(&code),
        "scope",
        Some("Mail.Send offline_access"),
    );
    let reply = h.token(&more).await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_grant", 65001);
    assert_eq!(reply.json()["suberror"], "consent_required");
    let subset = with(Harness::redeem_body(&code), "scope", Some(SCOPE));
    assert_eq!(h.token(&subset).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_tenant_at_token_endpoint_is_90002() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let reply = h
        .post_form(
            "/no_such_tenant!/oauth2/v2.0/token",
            encode(&Harness::redeem_body(&code)),
            &[],
        )
        .await;
    assert_aad_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", 90002);
}

#[tokio::test]
async fn client_request_id_is_echoed_as_correlation_id() {
    let h = Harness::new();
    let id = "3a1f2b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
    let reply = h
        .post_form(
            TOKEN,
            encode(&Harness::redeem_body("garbage")),
            &[("client-request-id", id)],
        )
        .await;
    assert_eq!(reply.json()["correlation_id"], id);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("Correlation ID: {id}"))
    );
}

#[tokio::test]
async fn every_code_and_token_carries_the_configured_marker() {
    let mut config = EmulatorConfig::demo(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    config.marker = "LEAKCANARY".to_owned();
    let h = Harness::with_config(config);
    let code = h.code_for(ADELE).await;
    assert!(code.starts_with("LEAKCANARY-code-"));
    let body = h.redeem(&code).await.json();
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("LEAKCANARY-at-")
    );
    let refreshed = h
        .refresh(body["refresh_token"].as_str().unwrap())
        .await
        .json();
    assert!(
        refreshed["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("LEAKCANARY-rt-")
    );
}

#[tokio::test]
async fn errors_never_echo_secrets_or_tokens() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    let body = with(
        Harness::redeem_body(&code),
        "client_secret",
        Some("wrong-secret-value"),
    );
    let text = h.token(&body).await.text();
    assert!(!text.contains("wrong-secret-value") && !text.contains(CLIENT_SECRET));
    assert!(!text.contains("TOKMARK"));
}

#[test]
fn registered_client_debug_hides_the_secret() {
    let client = RegisteredClient {
        client_id: "id".into(),
        client_secret: "hunter2".into(),
        redirect_uris: vec![],
    };
    assert!(!format!("{client:?}").contains("hunter2"));
}
