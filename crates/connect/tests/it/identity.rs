//! User tokens as Supabase issues them (HS256 secret, ES256/RS256 from a JWKS) and every way a
//! forged or misused token is refused (security.md §8 B1, B3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::support::{Backend, JWT_SECRET, TestApp, TestDb, exp_in, sign_hs256};

/// An ES256 signing key and its public JWK.
struct EcKey {
    kid: String,
    encoding: EncodingKey,
    public_raw: Vec<u8>,
}

impl EcKey {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        EcKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_raw: pair.public_key().as_ref().to_vec(),
        }
    }
    fn jwk(&self) -> Value {
        // Uncompressed point: 0x04 || x || y.
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
               "x": B64.encode(&self.public_raw[1..33]), "y": B64.encode(&self.public_raw[33..65])})
    }
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).unwrap()
    }
}

/// An RS256 signing key and its public JWK.
struct RsaKey {
    kid: String,
    encoding: EncodingKey,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Reads one DER INTEGER (tag 0x02) from `der`, returning its bytes and the rest.
fn der_integer(der: &[u8]) -> (&[u8], &[u8]) {
    assert_eq!(der[0], 0x02);
    let (len, start) = match der[1] {
        l if l < 0x80 => (l as usize, 2),
        0x81 => (der[2] as usize, 3),
        0x82 => (((der[2] as usize) << 8) | der[3] as usize, 4),
        other => panic!("length form {other:#x}"),
    };
    let value = &der[start..start + len];
    let value = if value[0] == 0 { &value[1..] } else { value };
    (value, &der[start + len..])
}

impl RsaKey {
    fn new(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        // The public key is PKCS#1 RSAPublicKey: SEQUENCE { n INTEGER, e INTEGER }.
        let der = pair.public_key().as_ref();
        let body = if der[1] == 0x82 { &der[4..] } else { &der[3..] };
        let (n, rest) = der_integer(body);
        let (e, _) = der_integer(rest);
        // jsonwebtoken's DER constructor wants PKCS#1; its PEM one reads PKCS#8.
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        RsaKey {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            n: n.to_vec(),
            e: e.to_vec(),
        }
    }
    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": B64.encode(&self.n), "e": B64.encode(&self.e)})
    }
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS endpoint whose key set can change and which can be taken down (503), counting
/// fetches (answered or not).
struct Jwks {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks_server(keys: Value) -> Jwks {
    use axum::response::IntoResponse;
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (k, f, d) = (keys.clone(), fetches.clone(), down.clone());
    let router = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        axum::routing::get(move || {
            let (k, f, d) = (k.clone(), f.clone(), d.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                axum::Json(json!({ "keys": *k.lock().await })).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/auth/v1/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Jwks {
        url,
        keys,
        fetches,
        down,
    }
}

async fn app_with_jwks(jwks: &Jwks, min_refetch: Duration, max_age: Duration) -> TestApp {
    let url = url::Url::parse(&jwks.url).unwrap();
    TestApp::start_with(TestDb::new(Backend::Sqlite).await, move |s| {
        s.jwt.jwks_url = Some(url);
        s.jwt.jwks_min_refetch = min_refetch;
        s.jwt.jwks_max_age = max_age;
    })
    .await
}

fn claims(sub: Uuid) -> Value {
    json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": exp_in(3600)})
}

async fn status_code(app: &TestApp, token: &str) -> u16 {
    app.http
        .get(app.url("/v1/integrations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn es256_and_rs256_tokens_from_the_jwks_and_hs256_tokens_are_accepted() {
    let (ec, rsa) = (EcKey::new("ec-1"), RsaKey::new("rsa-1"));
    let jwks = jwks_server(json!([ec.jwk(), rsa.jwk()])).await;
    let app = app_with_jwks(&jwks, Duration::from_secs(5), Duration::from_secs(600)).await;
    let user = Uuid::new_v4();
    for token in [
        ec.sign(&claims(user)),
        rsa.sign(&claims(user)),
        sign_hs256(JWT_SECRET, &claims(user)),
    ] {
        assert_eq!(status_code(&app, &token).await, 200);
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "keys are cached");
}

#[tokio::test]
async fn forged_expired_and_misused_tokens_are_all_401() {
    let (ec, rsa) = (EcKey::new("ec-1"), RsaKey::new("rsa-1"));
    let jwks = jwks_server(json!([ec.jwk(), rsa.jwk()])).await;
    let app = app_with_jwks(&jwks, Duration::from_secs(5), Duration::from_secs(600)).await;
    let user = Uuid::new_v4();
    let with = |patch: Value| {
        let mut c = claims(user);
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let unsigned = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(user).to_string())
    );
    let stranger = EcKey::new("ec-1"); // same kid, other key
    let unknown_kid = EcKey::new("ec-404");
    let mut rs_header_on_ec_kid = Header::new(Algorithm::RS256);
    rs_header_on_ec_kid.kid = Some("ec-1".into());

    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned),
        ("garbage", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
        (
            "HS256 with another secret",
            sign_hs256("another-secret-another-secret-0000", &claims(user)),
        ),
        (
            "HS256 signed with the JWKS public key bytes",
            sign_hs256_bytes(&ec.public_raw, &claims(user)),
        ),
        (
            "HS256 signed with the JWK JSON",
            sign_hs256(&ec.jwk().to_string(), &claims(user)),
        ),
        (
            "ES256 by a key not in the JWKS, known kid",
            stranger.sign(&claims(user)),
        ),
        ("ES256 with an unknown kid", unknown_kid.sign(&claims(user))),
        (
            "RS256 header naming an EC key",
            encode(&rs_header_on_ec_kid, &claims(user), &rsa.encoding).unwrap(),
        ),
        (
            "expired",
            sign_hs256(JWT_SECRET, &with(json!({"exp": exp_in(-120)}))),
        ),
        (
            "no exp",
            sign_hs256(JWT_SECRET, &with(json!({"exp": null}))),
        ),
        (
            "wrong audience",
            sign_hs256(JWT_SECRET, &with(json!({"aud": "other-app"}))),
        ),
        (
            "no audience",
            sign_hs256(JWT_SECRET, &with(json!({"aud": null}))),
        ),
        (
            "role anon",
            sign_hs256(JWT_SECRET, &with(json!({"role": "anon"}))),
        ),
        (
            "role service_role",
            sign_hs256(JWT_SECRET, &with(json!({"role": "service_role"}))),
        ),
        (
            "no role",
            sign_hs256(JWT_SECRET, &with(json!({"role": null}))),
        ),
        (
            "sub not a user id",
            sign_hs256(JWT_SECRET, &with(json!({"sub": "admin"}))),
        ),
        (
            "no sub",
            sign_hs256(JWT_SECRET, &with(json!({"sub": null}))),
        ),
        ("tampered payload", {
            let t = sign_hs256(JWT_SECRET, &claims(user));
            let parts: Vec<&str> = t.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                B64.encode(claims(Uuid::new_v4()).to_string()),
                parts[2]
            )
        }),
    ];
    for (name, token) in cases {
        let response = app
            .http
            .get(app.url("/v1/integrations"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], "unauthorized", "{name}");
        assert!(!text.contains(&token), "{name}: the token is not echoed");
    }
}

fn sign_hs256_bytes(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn unknown_key_ids_cannot_make_the_service_hammer_the_jwks() {
    let ec = EcKey::new("ec-1");
    let jwks = jwks_server(json!([ec.jwk()])).await;
    let app = app_with_jwks(&jwks, Duration::from_secs(3600), Duration::from_secs(3600)).await;
    let user = Uuid::new_v4();
    assert_eq!(status_code(&app, &ec.sign(&claims(user))).await, 200);
    for i in 0..20 {
        let token = EcKey::new(&format!("flood-{i}")).sign(&claims(user));
        assert_eq!(status_code(&app, &token).await, 401);
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_jwks_outage_costs_one_fetch_per_interval_and_the_keys_held_keep_working() {
    let ec = EcKey::new("ec-1");
    let jwks = jwks_server(json!([ec.jwk()])).await;
    // Keys go stale after 200 ms; a refetch is tried at most once an hour.
    let app = app_with_jwks(&jwks, Duration::from_secs(3600), Duration::from_millis(200)).await;
    let token = ec.sign(&claims(Uuid::new_v4()));
    assert_eq!(status_code(&app, &token).await, 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let codes = futures::future::join_all((0..20).map(|_| status_code(&app, &token))).await;
    assert_eq!(
        codes,
        vec![200; 20],
        "the keys held keep working during the outage"
    );
    for _ in 0..5 {
        assert_eq!(status_code(&app, &token).await, 200);
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        2,
        "one failed refetch for 25 requests, not one per request"
    );
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_removed_keys_stop_working_after_max_age() {
    let (k1, k2) = (EcKey::new("k1"), EcKey::new("k2"));
    let jwks = jwks_server(json!([k1.jwk()])).await;
    let app = app_with_jwks(&jwks, Duration::ZERO, Duration::from_millis(300)).await;
    let user = Uuid::new_v4();
    let k1_token = k1.sign(&claims(user));
    assert_eq!(status_code(&app, &k1_token).await, 200);
    assert_eq!(status_code(&app, &k1_token).await, 200, "presented again");

    // Rotation: k2 is published; its first token triggers one refetch and is accepted.
    *jwks.keys.lock().await = json!([k1.jwk(), k2.jwk()]);
    assert_eq!(status_code(&app, &k2.sign(&claims(user))).await, 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);

    // Revocation: k1 is withdrawn; once the cache is older than its max age, k1 tokens fail.
    *jwks.keys.lock().await = json!([k2.jwk()]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status_code(&app, &k1.sign(&claims(user))).await, 401);
    // The very token accepted before too: a JWKS token's verdict is never remembered (HS256
    // ones are, and this app has an HS256 secret as well).
    assert_eq!(status_code(&app, &k1_token).await, 401);
    assert_eq!(status_code(&app, &k2.sign(&claims(user))).await, 200);
}
