//! The HTTP API as the app and operators meet it: endpoints, the error envelope, isolation
//! between users, bad input, CORS, OpenAPI and metrics.

use serde_json::Value;
use uuid::Uuid;

use crate::support::{ALL_BACKENDS, Backend, TestApp, error_code, user_token};

#[tokio::test]
async fn health_ready_and_openapi_answer() {
    for backend in ALL_BACKENDS {
        let app = TestApp::start(backend).await;
        let health: Value = app
            .http
            .get(app.url("/v1/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "healthy");
        let ready = app.http.get(app.url("/v1/ready")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(
            ready["database"],
            if backend.is_postgres() {
                "postgres"
            } else {
                "sqlite"
            }
        );

        let doc: Value = app
            .http
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for path in [
            "/v1/health",
            "/v1/ready",
            "/v1/integrations",
            "/v1/integrations/{provider}/status",
            "/v1/integrations/{provider}/disconnect",
            "/v1/service/integrations",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} documented");
        }
    }
}

/// What `openapi-spec-validator` (PyPI; installed by scripts/prepare) finds wrong with an
/// OpenAPI document, `None` when it is valid: the checker API tools use, rather than our own
/// idea of the spec.
fn openapi_errors(doc: &Value) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/prepare installs openapi-spec-validator)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "openapi-spec-validator is missing: run scripts/prepare"
    );
    (!output.status.success()).then(|| stderr.into_owned())
}

#[tokio::test]
async fn the_served_api_document_is_valid_openapi_3_1_and_says_what_is_accepted() {
    let app = TestApp::start(Backend::Sqlite).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    if let Some(errors) = openapi_errors(&doc) {
        panic!("the served document is not valid OpenAPI 3.1:\n{errors}");
    }

    // The checker refuses what the document used to be: a response without a description.
    let mut broken = doc.clone();
    broken["paths"]["/v1/health"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    let errors = openapi_errors(&broken).expect("a response without description is refused");
    assert!(errors.contains("description"), "{errors}");

    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} documents {name}"))["schema"]
            .clone()
    };
    let token = "/v1/service/users/{user_id}/integrations/{provider}/token";
    let proxy = "/v1/service/users/{user_id}/integrations/{provider}/proxy/{path}";
    let list = "/v1/service/integrations";
    let callback = "/v1/integrations/{provider}/callback";
    assert_eq!(param(token, "get", "user_id")["format"], "uuid");
    assert_eq!(param(proxy, "get", "user_id")["format"], "uuid");
    assert_eq!(param(list, "get", "cursor")["format"], "uuid");
    let min_ttl = param(token, "get", "min_ttl");
    assert_eq!(
        (min_ttl["minimum"].as_u64(), min_ttl["maximum"].as_u64()),
        (Some(0), Some(3600))
    );
    let limit = param(list, "get", "limit");
    assert_eq!(
        (limit["minimum"].as_u64(), limit["maximum"].as_u64()),
        (Some(1), Some(500))
    );
    for name in ["code", "state", "error"] {
        assert!(
            param(callback, "get", name).is_object(),
            "callback documents {name}"
        );
    }
    assert!(doc["paths"][callback]["get"]["responses"]["404"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["ProviderName"]["enum"],
        serde_json::json!(["outlook", "microsoft", "google", "dropbox"]),
        "every provider path name is documented"
    );
    for method in ["get", "post", "put", "patch", "delete"] {
        assert!(
            doc["paths"][proxy][method].is_object(),
            "proxy documents {method}"
        );
    }
    for path in [
        token,
        proxy,
        "/v1/integrations/{provider}/auth-url",
        callback,
    ] {
        let method = "get";
        assert!(
            doc["paths"][path][method]["responses"]["429"].is_object(),
            "{path} documents its rate limit"
        );
    }
}

#[tokio::test]
async fn status_list_and_disconnect_follow_the_connection() {
    for backend in ALL_BACKENDS {
        let app = TestApp::start(backend).await;
        let user = Uuid::new_v4();
        let status: Value = app
            .get_as(user, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["connected"], false);
        assert_eq!(status["status"], "not_connected");
        assert_eq!(status["provider"], "microsoft");

        app.seed_connection(user, "adele@contoso.example").await;
        for alias in ["outlook", "microsoft"] {
            let response = app
                .get_as(user, &format!("/v1/integrations/{alias}/status"))
                .await;
            assert_eq!(response.status(), 200);
            let text = response.text().await.unwrap();
            assert!(
                !text.contains("sealed-"),
                "{backend:?}: no token material in a status: {text}"
            );
            let status: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(status["connected"], true);
            assert_eq!(status["status"], "connected");
            assert_eq!(status["provider_email"], "adele@contoso.example");
            assert_eq!(status["display_name"], "Name of adele@contoso.example");
            assert!(status["connected_at"].as_str().is_some());
            for key in [
                "access_token",
                "refresh_token",
                "expires_at",
                "key_id",
                "user_id",
            ] {
                assert!(status.get(key).is_none(), "status must not carry {key}");
            }
        }
        let list: Value = app
            .get_as(user, "/v1/integrations")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["integrations"].as_array().unwrap().len(), 1);
        assert_eq!(list["integrations"][0]["connected"], true);

        for _ in 0..2 {
            let response = app
                .delete_as(user, "/v1/integrations/outlook/disconnect")
                .await;
            assert_eq!(
                response.status(),
                204,
                "{backend:?}: disconnect is idempotent"
            );
        }
        let status: Value = app
            .get_as(user, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status["connected"], false);
    }
}

#[tokio::test]
async fn a_user_never_sees_or_deletes_another_users_connection() {
    for backend in ALL_BACKENDS {
        let app = TestApp::start(backend).await;
        let (alice, mallory) = (Uuid::new_v4(), Uuid::new_v4());
        app.seed_connection(alice, "alice@contoso.example").await;

        for path in [
            format!("/v1/integrations/outlook/status?user_id={alice}"),
            format!("/v1/integrations/outlook/status?sub={alice}&user={alice}"),
            format!("/v1/integrations?user_id={alice}"),
        ] {
            let text = app.get_as(mallory, &path).await.text().await.unwrap();
            assert!(!text.contains("alice@"), "{backend:?} {path}: {text}");
        }
        for path in [
            format!("/v1/integrations/{alice}/status"),
            format!("/v1/users/{alice}/integrations/outlook/status"),
        ] {
            let response = app.get_as(mallory, &path).await;
            assert_eq!(response.status(), 404, "{path}");
        }
        let response = app
            .http
            .delete(app.url(&format!(
                "/v1/integrations/outlook/disconnect?user_id={alice}"
            )))
            .bearer_auth(user_token(mallory))
            .header("content-type", "application/json")
            .body(format!(r#"{{"user_id":"{alice}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let status: Value = app
            .get_as(alice, "/v1/integrations/outlook/status")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            status["connected"], true,
            "{backend:?}: alice's connection is untouched"
        );
    }
}

#[tokio::test]
async fn unknown_providers_routes_and_methods_get_json_errors() {
    let app = TestApp::start(Backend::Sqlite).await;
    let user = Uuid::new_v4();
    for (path, code) in [
        ("/v1/integrations/gmail/status", "not_found"),
        ("/v1/integrations/google/status", "not_found"),
        ("/v1/integrations/Outlook/status", "not_found"),
        ("/v1/nothing-here", "not_found"),
    ] {
        let response = app.get_as(user, path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(error_code(response).await, code, "{path}");
    }
    let response = app
        .http
        .post(app.url("/v1/integrations/outlook/status"))
        .bearer_auth(user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_code(response).await, "method_not_allowed");
    let response = app.http.put(app.url("/v1/health")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let app = TestApp::start(Backend::Sqlite).await;
    let user = Uuid::new_v4();
    app.seed_connection(user, "adele@contoso.example").await;

    // A body over the limit.
    let response = app
        .http
        .delete(app.url("/v1/integrations/outlook/disconnect"))
        .bearer_auth(user_token(user))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "payload_too_large");

    // Malformed credentials.
    for header in [
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Bearer",
        "Bearer ",
        "bearer-token",
        "Bearer a.b.c",
    ] {
        let response = app
            .http
            .get(app.url("/v1/integrations"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
        assert_eq!(error_code(response).await, "unauthorized");
    }
    let response = app
        .http
        .get(app.url("/v1/integrations"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(app.url("/v1/integrations"))
        .header("authorization", format!("Bearer {}", user_token(user)))
        .header(
            "authorization",
            format!("Bearer {}", user_token(Uuid::new_v4())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "two authorization headers are ambiguous"
    );

    // Bad query values on the service API.
    for query in [
        "cursor=not-a-uuid",
        "limit=0",
        "limit=100000",
        "limit=abc",
        "status=deleted",
        "provider=gmail",
    ] {
        let response = app
            .get_service(&format!("/v1/service/integrations?{query}"))
            .await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(error_code(response).await, "invalid_request", "{query}");
    }

    let status: Value = app
        .get_as(user, "/v1/integrations/outlook/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["connected"], true, "nothing changed");
}

#[tokio::test]
async fn service_keys_are_the_only_way_into_the_service_api() {
    let app = TestApp::start(Backend::Sqlite).await;
    let user = Uuid::new_v4();
    app.seed_connection(user, "adele@contoso.example").await;

    let response = app
        .get_service("/v1/service/integrations?provider=outlook")
        .await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["connections"][0]["user_id"], user.to_string());
    assert!(page["connections"][0].get("access_token").is_none());

    let service_role_jwt = crate::support::sign_hs256(
        crate::support::JWT_SECRET,
        &serde_json::json!({"role": "service_role", "iss": "supabase", "exp": crate::support::exp_in(3600)}),
    );
    let (other_key, _) = celeste_connect::identity::service_key::generate("revoked").unwrap();
    for credential in [
        user_token(user),
        service_role_jwt,
        other_key,
        format!("{}x", app.service_key),
        "sb_secret_abc".into(),
    ] {
        let response = app
            .http
            .get(app.url("/v1/service/integrations"))
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "unauthorized");
    }
    // And a service key is not a user token.
    let response = app
        .http
        .get(app.url("/v1/integrations"))
        .bearer_auth(&app.service_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn cors_admits_the_app_origins_only() {
    let app = TestApp::start(Backend::Sqlite).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                app.url("/v1/integrations/outlook/status"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("http://app.localhost:3000").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.localhost:3000"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert_eq!(ok.headers()["vary"], "origin");
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    assert!(
        evil.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert_eq!(evil.headers()["vary"], "origin");

    // An actual request: the allowed origin echoed, another one not, and either way an answer
    // that varies with the origin (a shared cache must not hand one origin's answer to another).
    for (origin, allowed) in [
        ("http://app.localhost:3000", true),
        ("https://evil.example", false),
    ] {
        let answer = app
            .http
            .get(app.url("/v1/health"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some(origin),
            "{origin}"
        );
        assert_eq!(
            answer
                .headers()
                .get("access-control-allow-credentials")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some("true"),
            "{origin}"
        );
        assert_eq!(
            answer
                .headers()
                .get("access-control-expose-headers")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some("x-request-id,retry-after"),
            "{origin}"
        );
        assert_eq!(answer.headers()["vary"], "origin", "{origin}");
        assert_eq!(
            answer.headers().get_all("vary").iter().count(),
            1,
            "{origin}"
        );
    }
    // Without an Origin (not a cross-origin request): no CORS headers but Vary.
    let plain = app.http.get(app.url("/v1/health")).send().await.unwrap();
    assert!(
        !plain
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-"))
    );
    assert_eq!(plain.headers()["vary"], "origin");
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let app = TestApp::start(Backend::Sqlite).await;
    app.http.get(app.url("/v1/health")).send().await.unwrap();
    let refused = app
        .http
        .get(app.url("/v1/integrations/outlook/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Labelled by the route's template, the method and the status code.
    for series in [
        r#"http_requests_total{route="/v1/health",method="GET",status="200"}"#,
        r#"http_requests_total{route="/v1/integrations/{provider}/status",method="GET",status="401"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
}

#[tokio::test]
async fn malformed_json_gets_a_json_error_and_changes_nothing() {
    let db = crate::support::TestDb::new(Backend::Sqlite).await;
    let app = TestApp::start_with(db, |s| s.demo = true).await;
    let session = app.url("/demo/session");
    for (content_type, body, status) in [
        ("application/json", "{\"user\": ", 400),
        ("application/json", "{\"user\": 42}", 422),
        (
            "application/json",
            "{\"user\": \"ok\", \"role\": \"admin\"}",
            422,
        ),
        ("application/json", "{\"user\": \"\"}", 400),
        ("text/plain", "{\"user\": \"alice\"}", 415),
    ] {
        let response = app
            .http
            .post(&session)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let code = error_code(response).await;
        assert!(
            ["invalid_request", "unsupported_media_type"].contains(&code.as_str()),
            "{code}"
        );
    }
    let ok = app
        .http
        .post(&session)
        .json(&serde_json::json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "a well-formed request still works");
}
