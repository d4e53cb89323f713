//! In-process behaviour tests: each drives the router with `oneshot` as the service (or a
//! browser) would and asserts what a caller would notice. This file holds the shared harness
//! only; it must not hold assertions about behaviour.

mod authorize;
mod controls;
mod graph;
mod refresh;
mod standard;
mod token;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use url::Url;

use crate::{Emulator, EmulatorConfig, RegisteredClient, s256_challenge};

pub(crate) const CLIENT_ID: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";
/// Reserved characters on purpose: they must survive body and Basic encoding.
pub(crate) const CLIENT_SECRET: &str = "s3cr~et+with&special=chars%";
pub(crate) const REDIRECT_URI: &str = "https://connect.example/v1/integrations/outlook/callback";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(crate) const SCOPE: &str = "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read https://graph.microsoft.com/MailboxSettings.Read offline_access";
pub(crate) const GRANTED: &str = "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read https://graph.microsoft.com/MailboxSettings.Read";
pub(crate) const ADELE: &str = "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d";
pub(crate) const LEE: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
pub(crate) const SAM: &str = "0b1c2d3e4f5a6b7c";
pub(crate) const HOST: &str = "emulator.test";
pub(crate) const AUTHORIZE: &str = "/common/oauth2/v2.0/authorize";
pub(crate) const TOKEN: &str = "/common/oauth2/v2.0/token";

pub(crate) struct Harness {
    pub emulator: Emulator,
    pub router: Router,
    /// Where the emulator is mounted ("" or "/emulator").
    pub prefix: &'static str,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Url {
        let location = self
            .header("location")
            .unwrap_or_else(|| panic!("no Location; status {} body {}", self.status, self.text()));
        Url::parse(location).expect("absolute Location")
    }

    /// A parameter of the redirect's query.
    pub fn param(&self, name: &str) -> Option<String> {
        self.location()
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The AADSTS number of a token-endpoint error.
    pub fn aadsts(&self) -> u64 {
        self.json()["error_codes"][0]
            .as_u64()
            .unwrap_or_else(|| panic!("no error_codes: {}", self.text()))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Authorize parameters as the service sends them.
pub(crate) fn authorize_params() -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT_ID.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("response_mode", "query".to_owned()),
        ("scope", SCOPE.to_owned()),
        ("state", "st4te-123".to_owned()),
        ("code_challenge", s256_challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
        ("prompt", "select_account".to_owned()),
    ]
}

/// `params` with `name` replaced (`Some`) or removed (`None`).
pub(crate) fn with(
    mut params: Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    params.retain(|(n, _)| *n != name);
    if let Some(value) = value {
        params.push((name, value.to_owned()));
    }
    params
}

pub(crate) fn encode(params: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(n, v)| (*n, v.as_str())))
        .finish()
}

pub(crate) fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(EmulatorConfig::demo(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI))
    }

    pub fn with_config(config: EmulatorConfig) -> Self {
        let emulator = Emulator::new(config);
        let router = emulator.router();
        Self {
            emulator,
            router,
            prefix: "",
        }
    }

    /// The emulator nested under `/emulator` inside a bigger app, as the service mounts it.
    pub fn nested() -> Self {
        let emulator = Emulator::new(EmulatorConfig::demo(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI));
        let router = Router::new()
            .route("/v1/health", axum::routing::get(|| async { "ok" }))
            .nest("/emulator", emulator.router());
        Self {
            emulator,
            router,
            prefix: "/emulator",
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(format!("{}{path}", self.prefix)).header(header::HOST, HOST);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    pub async fn post_form(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::post(format!("{}{path}", self.prefix))
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        let request = Request::post(format!("{}{path}", self.prefix))
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(request).await
    }

    /// GET /authorize with these parameters.
    pub async fn authorize(&self, params: &[(&str, String)]) -> Reply {
        self.get(&format!("{AUTHORIZE}?{}", encode(params)), &[])
            .await
    }

    /// The consent form's POST: the authorize parameters plus decision and account.
    pub async fn decide(&self, params: &[(&str, String)], decision: &str, account: &str) -> Reply {
        self.decide_at(AUTHORIZE, params, decision, account).await
    }

    pub async fn decide_at(
        &self,
        path: &str,
        params: &[(&str, String)],
        decision: &str,
        account: &str,
    ) -> Reply {
        let mut all = params.to_vec();
        all.push(("decision", decision.to_owned()));
        all.push(("account", account.to_owned()));
        self.post_form(path, encode(&all), &[]).await
    }

    /// A fresh code for `account` from the default request.
    pub async fn code_for(&self, account: &str) -> String {
        self.code_with(&authorize_params(), account).await
    }

    pub async fn code_with(&self, params: &[(&str, String)], account: &str) -> String {
        let reply = self.decide(params, "accept", account).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
        reply.param("code").expect("code in redirect")
    }

    /// The token request the service sends for a code (secret in the body).
    pub fn redeem_body(code: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", CLIENT_ID.to_owned()),
            ("client_secret", CLIENT_SECRET.to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    }

    pub async fn token(&self, body: &[(&str, String)]) -> Reply {
        self.post_form(TOKEN, encode(body), &[]).await
    }

    pub async fn redeem(&self, code: &str) -> Reply {
        self.token(&Self::redeem_body(code)).await
    }

    /// Consent + redemption: the token response for `account`.
    pub async fn tokens_for(&self, account: &str) -> Value {
        let code = self.code_for(account).await;
        let reply = self.redeem(&code).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    pub fn refresh_body(refresh_token: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", CLIENT_ID.to_owned()),
            ("client_secret", CLIENT_SECRET.to_owned()),
            ("refresh_token", refresh_token.to_owned()),
            ("scope", SCOPE.to_owned()),
        ]
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.token(&Self::refresh_body(refresh_token)).await
    }

    pub async fn graph(&self, path: &str, access_token: &str) -> Reply {
        let bearer = format!("Bearer {access_token}");
        self.get(path, &[("authorization", bearer.as_str())]).await
    }
}

/// Asserts Microsoft's JSON error envelope (providers.md §1.6) and returns the AADSTS number.
pub(crate) fn assert_aad_error(reply: &Reply, status: StatusCode, error: &str, code: u64) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace_id = body["trace_id"].as_str().expect("trace_id");
    let correlation_id = body["correlation_id"].as_str().expect("correlation_id");
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    assert!(
        description.ends_with(&format!(
            "\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )),
        "{description}"
    );
    assert_eq!(timestamp.len(), "2024-01-01 00:00:00Z".len());
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store, no-cache"));
}

/// A client registered with a loopback redirect URI and a plain secret.
pub(crate) fn loopback_client() -> RegisteredClient {
    RegisteredClient {
        client_id: "loopback-client".to_owned(),
        client_secret: "loopback-secret".to_owned(),
        redirect_uris: vec!["http://127.0.0.1:8080/cb".to_owned()],
    }
}
