//! Behaviour of the test controls: faults (latency, token and Graph failures), counters, reset,
//! the `/_emulator/` HTTP API, and mounting under a prefix.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::*;
use crate::{Faults, HttpFault, LatencyTarget, endpoint};

#[tokio::test]
async fn faults_429_with_retry_after() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    h.emulator.set_faults(Faults {
        token: Some(HttpFault::throttled(7).times(2)),
        ..Faults::default()
    });
    for _ in 0..2 {
        let reply = h.redeem(&code).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.header("retry-after"), Some("7"));
        let body = reply.json();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS")
        );
    }
    assert_eq!(
        h.redeem(&code).await.status,
        StatusCode::OK,
        "fault cleared; code was not consumed"
    );
    assert_eq!(h.emulator.stats().faults_injected, 2);
    assert!(h.emulator.faults().token.is_none());
}

#[tokio::test]
async fn token_5xx_until_cleared() {
    let h = Harness::new();
    let code = h.code_for(ADELE).await;
    h.emulator.set_faults(Faults {
        token: Some(HttpFault::server_error(503)),
        ..Faults::default()
    });
    for _ in 0..3 {
        let reply = h.redeem(&code).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.header("retry-after").is_none());
    }
    h.emulator.set_faults(Faults::default());
    assert_eq!(h.redeem(&code).await.status, StatusCode::OK);
}

#[tokio::test]
async fn token_500_is_server_error() {
    let h = Harness::new();
    h.emulator.set_faults(Faults {
        token: Some(HttpFault::server_error(500).times(1)),
        ..Faults::default()
    });
    let reply = h.redeem("whatever").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error(), "server_error");
}

#[tokio::test]
async fn graph_429_has_too_many_requests_body_and_fractional_retry_after() {
    let h = Harness::new();
    let token = h.tokens_for(ADELE).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault {
            status: 429,
            retry_after_secs: Some(2.128),
            count: Some(1),
        }),
        ..Faults::default()
    });
    let reply = h.graph("/v1.0/me/messages", &token).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("2.128"));
    let body = reply.json();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["message"], "Please retry again later.");
    assert_eq!(body["error"]["innerError"]["status"], "429");
    assert_eq!(
        h.graph("/v1.0/me/messages", &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn graph_503_with_retry_after() {
    let h = Harness::new();
    let token = h.tokens_for(ADELE).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault {
            status: 503,
            retry_after_secs: Some(3.0),
            count: None,
        }),
        ..Faults::default()
    });
    let reply = h.graph("/v1.0/me", &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(reply.json()["error"]["code"], "serviceNotAvailable");
}

#[tokio::test]
async fn graph_faults_do_not_touch_the_token_endpoint() {
    let h = Harness::new();
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault::throttled(1)),
        ..Faults::default()
    });
    let body = h.tokens_for(ADELE).await;
    assert!(body["access_token"].is_string());
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_where_targeted() {
    let h = Harness::new();
    let token = h.tokens_for(ADELE).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.set_faults(Faults {
        latency_ms: 1500,
        latency_target: LatencyTarget::Token,
        ..Faults::default()
    });
    let started = tokio::time::Instant::now();
    h.redeem("garbage").await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "token delayed"
    );
    let started = tokio::time::Instant::now();
    h.graph("/v1.0/me", &token).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "graph not delayed"
    );

    h.emulator.set_faults(Faults {
        latency_ms: 800,
        ..Faults::default()
    });
    let started = tokio::time::Instant::now();
    h.graph("/v1.0/me", &token).await;
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "all: graph delayed"
    );
    let started = tokio::time::Instant::now();
    h.get("/_emulator/stats", &[]).await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "controls never delayed"
    );
}

#[tokio::test]
async fn stats_count_calls_per_grant() {
    let h = Harness::new();
    let body = h.tokens_for(ADELE).await;
    let refresh_token = body["refresh_token"].as_str().unwrap();
    h.refresh(refresh_token).await;
    h.refresh(refresh_token).await;
    h.refresh("garbage").await;
    h.graph("/v1.0/me", body["access_token"].as_str().unwrap())
        .await;
    h.graph("/v1.0/me/messages", body["access_token"].as_str().unwrap())
        .await;
    h.authorize(&authorize_params()).await;
    let stats = h.emulator.stats();
    assert_eq!(stats.grant("authorization_code"), 1);
    assert_eq!(stats.grant("refresh_token"), 3);
    assert_eq!(stats.issued("refresh_token"), 2);
    assert_eq!(stats.endpoint(endpoint::TOKEN), 4);
    assert_eq!(stats.endpoint(endpoint::CONSENT), 1);
    assert_eq!(stats.endpoint(endpoint::AUTHORIZE), 1);
    assert_eq!(stats.endpoint(endpoint::ME), 1);
    assert_eq!(stats.endpoint(endpoint::MESSAGES), 1);
    assert_eq!(stats.token_errors.get("invalid_grant"), Some(&1));
    assert_eq!(stats.aadsts_count(9002313), 1);
}

#[tokio::test]
async fn reset_clears_faults_counters_and_issued_tokens() {
    let h = Harness::new();
    let body = h.tokens_for(ADELE).await;
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault::throttled(1)),
        ..Faults::default()
    });
    h.emulator.revoke_grant(ADELE);
    h.emulator.reset();
    assert_eq!(h.emulator.stats(), crate::Stats::default());
    assert_eq!(h.emulator.faults(), Faults::default());
    let stale = h.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(stale.aadsts(), 70000, "issued tokens are forgotten");
    let fresh = h.tokens_for(ADELE).await;
    assert_eq!(
        h.refresh(fresh["refresh_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn control_api_sets_faults_and_reports_stats() {
    let h = Harness::new();
    let reply = h
        .post_json(
            "/_emulator/faults",
            json!({"token": {"status": 429, "retry_after_secs": 5, "count": 1}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.emulator.faults().token,
        Some(HttpFault::throttled(5).times(1))
    );
    let throttled = h.redeem("x").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let stats = h.get("/_emulator/stats", &[]).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.json()["faults_injected"], 1);
    assert_eq!(stats.json()["endpoints"]["token"], 1);
    let bad = h
        .post_json("/_emulator/faults", json!({"graph": {"status": 200}}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = h.post_json("/_emulator/faults", json!({"lag": 5})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let reset = h.post_json("/_emulator/reset", json!({})).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(h.emulator.stats().faults_injected, 0);
}

#[tokio::test]
async fn control_api_account_switches() {
    let h = Harness::new();
    let accounts = h.get("/_emulator/accounts", &[]).await.json();
    assert_eq!(accounts.as_array().unwrap().len(), 3);
    assert!(
        accounts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == SAM && a["mail"].is_null())
    );
    let body = h.tokens_for(ADELE).await;
    let reply = h
        .post_json(
            &format!("/_emulator/accounts/{ADELE}/revoke-grant"),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.refresh(body["refresh_token"].as_str().unwrap())
            .await
            .aadsts(),
        50173
    );
    for (switch, code) in [
        ("withdraw-consent", 65001),
        ("expire-refresh-tokens", 700082),
    ] {
        let body = h.tokens_for(LEE).await;
        h.post_json(&format!("/_emulator/accounts/{LEE}/{switch}"), json!({}))
            .await;
        assert_eq!(
            h.refresh(body["refresh_token"].as_str().unwrap())
                .await
                .aadsts(),
            code,
            "{switch}"
        );
    }
    let body = h.tokens_for(SAM).await;
    h.post_json(
        &format!("/_emulator/accounts/{SAM}/expire-access-tokens"),
        json!({}),
    )
    .await;
    assert_eq!(
        h.graph("/v1.0/me", body["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let missing = h
        .post_json("/_emulator/accounts/nobody/revoke-grant", json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad_switch = h
        .post_json(&format!("/_emulator/accounts/{ADELE}/explode"), json!({}))
        .await;
    assert_eq!(bad_switch.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn control_api_adds_clients_and_sets_token_lifetime() {
    let h = Harness::new();
    let reply = h
        .post_json(
            "/_emulator/clients",
            serde_json::to_value(loopback_client()).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let params = with(authorize_params(), "client_id", Some("loopback-client"));
    let params = with(params, "redirect_uri", Some("http://127.0.0.1:8080/cb"));
    assert_eq!(h.authorize(&params).await.status, StatusCode::OK);
    h.post_json("/_emulator/access-token-lifetime", json!({"secs": 42}))
        .await;
    assert_eq!(h.tokens_for(ADELE).await["expires_in"], 42);
    h.post_json("/_emulator/access-token-lifetime", json!({"secs": null}))
        .await;
    let expires_in = h.tokens_for(ADELE).await["expires_in"].as_u64().unwrap();
    assert!((3600..=5400).contains(&expires_in));
}

#[tokio::test]
async fn nested_under_a_prefix_everything_still_works() {
    let h = Harness::nested();
    assert_eq!(h.get("/_emulator/stats", &[]).await.status, StatusCode::OK);
    // The consent page's relative action resolves under the prefix.
    let query = encode(&authorize_params());
    let page_url = Url::parse(&format!("http://{HOST}/emulator{AUTHORIZE}?{query}")).unwrap();
    let page = h.authorize(&authorize_params()).await;
    assert_eq!(page.status, StatusCode::OK);
    let action = page
        .text()
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        page_url.join(&action).unwrap().path(),
        format!("/emulator{AUTHORIZE}")
    );
    let body = h.tokens_for(ADELE).await;
    let token = body["access_token"].as_str().unwrap();
    let me = h.graph("/v1.0/me", token).await.json();
    assert_eq!(
        me["@odata.context"],
        format!("http://{HOST}/emulator/v1.0/$metadata#users/$entity")
    );
    let page = h.graph("/v1.0/me/messages?$top=10", token).await.json();
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert_eq!(
        next,
        format!("http://{HOST}/emulator/v1.0/me/messages?$top=10&$skip=10")
    );
    // Following the link verbatim (the request path includes the prefix) works.
    let path = next.trim_start_matches(&format!("http://{HOST}"));
    let bearer = format!("Bearer {token}");
    let request = axum::http::Request::get(path)
        .header("host", HOST)
        .header("authorization", bearer)
        .body(axum::body::Body::empty())
        .unwrap();
    let second = h.send(request).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json()["value"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn https_scheme_is_kept_behind_a_proxy() {
    let h = Harness::new();
    let token = h.tokens_for(ADELE).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let body = h
        .get(
            "/v1.0/me/messages",
            &[
                ("authorization", bearer.as_str()),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await
        .json();
    assert!(
        body["@odata.nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://{HOST}/"))
    );
}
