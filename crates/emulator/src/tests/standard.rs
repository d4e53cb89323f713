//! The Google and Dropbox stand-ins against their checklists (providers.md §2.8, §3.7): exact
//! redirect match with an error page, when a refresh token is issued, refresh without a new
//! one, their error strings and statuses, revocation of the whole grant, the profiles, Gmail
//! and Dropbox paging, expired tokens and injected throttling.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{CLIENT_ID, CLIENT_SECRET, Harness, REDIRECT_URI, Reply, VERIFIER, basic, encode};
use crate::{Faults, HttpFault, s256_challenge};

const ADA: &str = "108234567890123456789";
const GRACE: &str = "117654321098765432101";
const ALAN: &str = "dbid:AADx7bYc2qLcQ1m3vT9kP0sWnE4rUfHgJ";
const GOOGLE_SCOPE: &str = "openid email profile https://www.googleapis.com/auth/gmail.readonly";

fn google_params(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut params = vec![
        ("client_id", CLIENT_ID.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("scope", GOOGLE_SCOPE.to_owned()),
        ("state", "st4te".to_owned()),
        ("code_challenge", s256_challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
        ("access_type", "offline".to_owned()),
        ("include_granted_scopes", "true".to_owned()),
    ];
    params.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
    params
}

fn dropbox_params(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut params = vec![
        ("client_id", CLIENT_ID.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("state", "st4te".to_owned()),
        ("code_challenge", s256_challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    params.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
    params
}

const GOOGLE_AUTH: &str = "/google/o/oauth2/v2/auth";
const DROPBOX_AUTH: &str = "/dropbox/oauth2/authorize";

impl Harness {
    /// Shows the consent page, then accepts as `account`; returns the redirect.
    async fn consent_at(&self, path: &str, params: &[(&str, String)], account: &str) -> Reply {
        let page = self.get(&format!("{path}?{}", encode(params)), &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let mut form: Vec<(&str, String)> = params.to_vec();
        form.push(("account", account.to_owned()));
        form.push(("decision", "accept".to_owned()));
        self.post_form(path, encode(&form), &[]).await
    }

    async fn code_at(&self, path: &str, params: &[(&str, String)], account: &str) -> String {
        let reply = self.consent_at(path, params, account).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
        reply.param("code").expect("code")
    }

    async fn redeem_at(&self, path: &str, code: &str, headers: &[(&str, &str)]) -> Reply {
        let mut body = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ];
        if headers.is_empty() {
            body.push(("client_id", CLIENT_ID.to_owned()));
            body.push(("client_secret", CLIENT_SECRET.to_owned()));
        }
        self.post_form(path, encode(&body), headers).await
    }

    async fn refresh_at(
        &self,
        path: &str,
        refresh_token: &str,
        extra: &[(&'static str, &str)],
    ) -> Reply {
        let mut body = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.to_owned()),
            ("client_id", CLIENT_ID.to_owned()),
            ("client_secret", CLIENT_SECRET.to_owned()),
        ];
        body.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
        self.post_form(path, encode(&body), &[]).await
    }

    async fn google_tokens(&self, extra: &[(&'static str, &str)], account: &str) -> Value {
        self.google_tokens_with(&google_params(extra), account)
            .await
    }

    async fn google_tokens_with(&self, params: &[(&str, String)], account: &str) -> Value {
        let code = self.code_at(GOOGLE_AUTH, params, account).await;
        let reply = self.redeem_at("/google/token", &code, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    async fn dropbox_tokens(&self, extra: &[(&'static str, &str)]) -> Value {
        let code = self
            .code_at(DROPBOX_AUTH, &dropbox_params(extra), ALAN)
            .await;
        let auth = basic(CLIENT_ID, CLIENT_SECRET);
        let reply = self
            .redeem_at(
                "/dropbox/oauth2/token",
                &code,
                &[("authorization", auth.as_str())],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    async fn bearer_get(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }

    async fn dropbox_rpc(&self, path: &str, token: &str, body: Option<Value>) -> Reply {
        let request = axum::http::Request::post(path)
            .header(axum::http::header::HOST, super::HOST)
            .header("authorization", format!("Bearer {token}"));
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string())),
            None => request.body(axum::body::Body::empty()),
        };
        self.send(request.expect("request")).await
    }
}

#[tokio::test]
async fn google_redirect_uri_must_match_exactly_or_an_error_page_shows() {
    let h = Harness::new();
    let mut params = google_params(&[]);
    params.retain(|(n, _)| *n != "redirect_uri");
    params.push(("redirect_uri", format!("{REDIRECT_URI}/")));
    let page = h
        .get(&format!("{GOOGLE_AUTH}?{}", encode(&params)), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text().contains("redirect_uri_mismatch"));
    assert!(page.header("location").is_none());
}

#[tokio::test]
async fn google_redirect_carries_scope_authuser_and_prompt_and_denial_keeps_state() {
    let h = Harness::new();
    let reply = h.consent_at(GOOGLE_AUTH, &google_params(&[]), ADA).await;
    assert_eq!(reply.param("state").as_deref(), Some("st4te"));
    assert_eq!(reply.param("scope").as_deref(), Some(GOOGLE_SCOPE));
    assert_eq!(reply.param("authuser").as_deref(), Some("0"));
    assert!(reply.param("prompt").is_some());
    let mut form = google_params(&[]);
    form.push(("decision", "cancel".to_owned()));
    let denied = h.post_form(GOOGLE_AUTH, encode(&form), &[]).await;
    assert_eq!(denied.param("error").as_deref(), Some("access_denied"));
    assert_eq!(denied.param("state").as_deref(), Some("st4te"));
}

#[tokio::test]
async fn google_sends_a_refresh_token_on_first_consent_or_forced_consent_only() {
    let h = Harness::new();
    let first = h.google_tokens(&[], ADA).await;
    assert!(first["refresh_token"].as_str().unwrap().starts_with("1//"));
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 3599);
    assert_eq!(first["scope"], GOOGLE_SCOPE);
    let again = h.google_tokens(&[], ADA).await;
    assert!(again.get("refresh_token").is_none(), "{again}");
    let forced = h.google_tokens(&[("prompt", "consent")], ADA).await;
    assert!(forced["refresh_token"].is_string());
    let mut online = google_params(&[("prompt", "consent")]);
    online.retain(|(n, _)| *n != "access_type");
    let code = h.code_at(GOOGLE_AUTH, &online, GRACE).await;
    let reply = h.redeem_at("/google/token", &code, &[]).await;
    assert!(reply.json().get("refresh_token").is_none());
}

#[tokio::test]
async fn google_refresh_returns_no_refresh_token_and_a_used_code_is_refused() {
    let h = Harness::new();
    let code = h.code_at(GOOGLE_AUTH, &google_params(&[]), ADA).await;
    let tokens = h.redeem_at("/google/token", &code, &[]).await.json();
    let replay = h.redeem_at("/google/token", &code, &[]).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json()["error"], "invalid_grant");
    let rt = tokens["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let refreshed = h.refresh_at("/google/token", rt, &[]).await;
        assert_eq!(refreshed.status, StatusCode::OK);
        let body = refreshed.json();
        assert!(body.get("refresh_token").is_none());
        assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
    }
    let unknown = h.refresh_at("/google/token", "1//nope", &[]).await;
    assert_eq!(
        unknown.json()["error_description"],
        "Token has been expired or revoked."
    );
}

#[tokio::test]
async fn google_pkce_errors_use_googles_words() {
    let h = Harness::new();
    let code = h.code_at(GOOGLE_AUTH, &google_params(&[]), ADA).await;
    let body = encode(&[
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("client_id", CLIENT_ID.to_owned()),
        ("client_secret", CLIENT_SECRET.to_owned()),
    ]);
    let missing = h.post_form("/google/token", body, &[]).await;
    assert_eq!(
        missing.json()["error_description"],
        "Missing code verifier."
    );
    let code = h.code_at(GOOGLE_AUTH, &google_params(&[]), ADA).await;
    let body = encode(&[
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", REDIRECT_URI.to_owned()),
        ("code_verifier", "x".repeat(43)),
        ("client_id", CLIENT_ID.to_owned()),
        ("client_secret", CLIENT_SECRET.to_owned()),
    ]);
    let wrong = h.post_form("/google/token", body, &[]).await;
    assert_eq!(wrong.json()["error_description"], "Invalid code verifier.");
}

#[tokio::test]
async fn google_answers_a_wrong_secret_with_401_invalid_client() {
    let h = Harness::new();
    let body = encode(&[
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", "1//x".to_owned()),
        ("client_id", CLIENT_ID.to_owned()),
        ("client_secret", "wrong".to_owned()),
    ]);
    let reply = h.post_form("/google/token", body, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"], "invalid_client");
}

#[tokio::test]
async fn google_caps_refresh_tokens_per_account_and_client_dropping_the_oldest() {
    let h = Harness::new();
    let first = h.google_tokens(&[], ADA).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..crate::GOOGLE_REFRESH_TOKEN_CAP {
        h.google_tokens(&[("prompt", "consent")], ADA).await;
    }
    let refused = h.refresh_at("/google/token", &first, &[]).await;
    assert_eq!(refused.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn google_revoke_is_post_only_and_ends_the_whole_grant() {
    let h = Harness::new();
    let tokens = h.google_tokens(&[], ADA).await;
    let at = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let get = h.get(&format!("/google/revoke?token={rt}"), &[]).await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    let revoked = h
        .post_form("/google/revoke", encode(&[("token", rt.to_owned())]), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(h.emulator.stats().revocations("google"), 1);
    assert_eq!(
        h.refresh_at("/google/token", rt, &[]).await.json()["error"],
        "invalid_grant"
    );
    let userinfo = h.bearer_get("/google/v1/userinfo", at).await;
    assert_eq!(userinfo.status, StatusCode::UNAUTHORIZED);
    assert!(
        userinfo
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let again = h
        .post_form("/google/revoke", encode(&[("token", rt.to_owned())]), &[])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json()["error"], "invalid_token");
}

#[tokio::test]
async fn google_revoke_refuses_an_expired_access_token() {
    let h = Harness::new();
    let at = h.google_tokens(&[], ADA).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.expire_access_tokens(ADA);
    let refused = h
        .post_form("/google/revoke", encode(&[("token", at)]), &[])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error"], "invalid_token");
    assert_eq!(h.emulator.stats().revocations("google"), 0);
}

#[tokio::test]
async fn account_switches_reach_google_and_dropbox_accounts() {
    let h = Harness::new();
    // Refresh tokens expire: refreshing fails, the access token still works.
    let google = h.google_tokens(&[], ADA).await;
    let (at, rt) = (
        google["access_token"].as_str().unwrap(),
        google["refresh_token"].as_str().unwrap(),
    );
    h.emulator.expire_refresh_tokens(ADA);
    let refused = h.refresh_at("/google/token", rt, &[]).await;
    assert_eq!(refused.json()["error"], "invalid_grant");
    assert_eq!(
        h.bearer_get("/google/v1/userinfo", at).await.status,
        StatusCode::OK
    );
    // Consent withdrawn (the user removed the app): every token of the account ends.
    let dropbox = h.dropbox_tokens(&[("token_access_type", "offline")]).await;
    let rt = dropbox["refresh_token"].as_str().unwrap();
    h.emulator.withdraw_consent(ALAN);
    let refused = h.refresh_at("/dropbox/oauth2/token", rt, &[]).await;
    assert_eq!(refused.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn google_userinfo_needs_an_openid_scope() {
    let h = Harness::new();
    let params: Vec<(&str, String)> = google_params(&[])
        .into_iter()
        .map(|(k, v)| match k {
            "scope" => (
                k,
                "https://www.googleapis.com/auth/gmail.readonly".to_owned(),
            ),
            _ => (k, v),
        })
        .collect();
    let at = h.google_tokens_with(&params, ADA).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let userinfo = h.bearer_get("/google/v1/userinfo", &at).await;
    assert_eq!(userinfo.status, StatusCode::UNAUTHORIZED);
    assert!(
        userinfo
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
}

#[tokio::test]
async fn google_userinfo_and_gmail_pages_serve_the_account() {
    let h = Harness::new();
    let at = h.google_tokens(&[], ADA).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = h.bearer_get("/google/v1/userinfo", &at).await.json();
    assert_eq!(me["sub"], ADA);
    assert_eq!(me["email"], "ada.lovelace@gmail.example");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["name"], "Ada Lovelace");
    assert!(me["picture"].is_string());

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            None => "/google/gmail/v1/users/me/messages?maxResults=10".to_owned(),
            Some(t) => format!("/google/gmail/v1/users/me/messages?maxResults=10&pageToken={t}"),
        };
        let page = h.bearer_get(&path, &at).await.json();
        seen.extend(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let one = h
        .bearer_get(
            &format!(
                "/google/gmail/v1/users/me/messages/{}?format=metadata",
                seen[0]
            ),
            &at,
        )
        .await
        .json();
    assert_eq!(one["id"], seen[0].as_str());
    assert!(
        one["payload"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Subject")
    );
    let missing = h
        .bearer_get("/google/gmail/v1/users/me/messages/0000", &at)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn google_apis_take_the_same_fault_switches() {
    let h = Harness::new();
    let at = h.google_tokens(&[], ADA).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault::throttled(7).times(1)),
        ..Faults::default()
    });
    let throttled = h
        .bearer_get("/google/gmail/v1/users/me/messages", &at)
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert_eq!(
        h.bearer_get("/google/gmail/v1/users/me/messages", &at)
            .await
            .status,
        StatusCode::OK
    );
    h.emulator.expire_access_tokens(ADA);
    assert_eq!(
        h.bearer_get("/google/v1/userinfo", &at).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn dropbox_redirect_uri_mismatch_is_a_400_page() {
    let h = Harness::new();
    let mut params = dropbox_params(&[]);
    params.retain(|(n, _)| *n != "redirect_uri");
    params.push(("redirect_uri", "https://evil.example/cb".to_owned()));
    let page = h
        .get(&format!("{DROPBOX_AUTH}?{}", encode(&params)), &[])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text().contains("Invalid redirect_uri"));
}

#[tokio::test]
async fn dropbox_issues_a_refresh_token_only_for_offline_access_and_lowercase_bearer() {
    let h = Harness::new();
    let offline = h.dropbox_tokens(&[("token_access_type", "offline")]).await;
    assert!(offline["refresh_token"].is_string());
    assert_eq!(offline["token_type"], "bearer");
    assert_eq!(offline["expires_in"], 14400);
    assert_eq!(offline["account_id"], ALAN);
    assert!(offline["access_token"].as_str().unwrap().starts_with("sl."));
    let online = h.dropbox_tokens(&[("token_access_type", "online")]).await;
    assert!(online.get("refresh_token").is_none());
}

#[tokio::test]
async fn dropbox_codes_are_single_use_and_refresh_keeps_the_token_and_can_downscope() {
    let h = Harness::new();
    let code = h
        .code_at(
            DROPBOX_AUTH,
            &dropbox_params(&[("token_access_type", "offline")]),
            ALAN,
        )
        .await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let headers = [("authorization", auth.as_str())];
    let tokens = h
        .redeem_at("/dropbox/oauth2/token", &code, &headers)
        .await
        .json();
    let replay = h.redeem_at("/dropbox/oauth2/token", &code, &headers).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        replay.json()["error_description"],
        "code doesn't exist or has expired"
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refreshed = h.refresh_at("/dropbox/oauth2/token", rt, &[]).await.json();
    assert!(refreshed.get("refresh_token").is_none());
    let narrow = h
        .refresh_at(
            "/dropbox/oauth2/token",
            rt,
            &[("scope", "account_info.read")],
        )
        .await
        .json();
    assert_eq!(narrow["scope"], "account_info.read");
    let list = h
        .dropbox_rpc(
            "/dropbox/2/files/list_folder",
            narrow["access_token"].as_str().unwrap(),
            Some(json!({"path": ""})),
        )
        .await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
    assert_eq!(list.json()["error"][".tag"], "missing_scope");
    let wider = h
        .refresh_at(
            "/dropbox/oauth2/token",
            rt,
            &[("scope", "files.content.write")],
        )
        .await;
    assert_eq!(wider.json()["error"], "invalid_scope");
    let bad_secret = h
        .redeem_at(
            "/dropbox/oauth2/token",
            "nope",
            &[("authorization", &basic(CLIENT_ID, "wrong"))],
        )
        .await;
    assert_eq!(bad_secret.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_secret.json()["error"], "invalid_client");
}

#[tokio::test]
async fn dropbox_revoke_kills_the_access_token_its_refresh_token_and_their_family() {
    let h = Harness::new();
    let tokens = h.dropbox_tokens(&[("token_access_type", "offline")]).await;
    let at = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let sibling = h.refresh_at("/dropbox/oauth2/token", rt, &[]).await.json();
    let revoked = h
        .dropbox_rpc("/dropbox/2/auth/token/revoke", at, None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.text(), "null");
    assert_eq!(h.emulator.stats().revocations("dropbox"), 1);
    assert_eq!(
        h.refresh_at("/dropbox/oauth2/token", rt, &[]).await.json()["error"],
        "invalid_grant"
    );
    let account = h
        .dropbox_rpc(
            "/dropbox/2/users/get_current_account",
            sibling["access_token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(account.status, StatusCode::UNAUTHORIZED);
    assert_eq!(account.json()["error"][".tag"], "invalid_access_token");
}

#[tokio::test]
async fn dropbox_account_and_folder_listing_page_with_cursors() {
    let h = Harness::new();
    let at = h.dropbox_tokens(&[("token_access_type", "offline")]).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = h
        .dropbox_rpc("/dropbox/2/users/get_current_account", &at, None)
        .await
        .json();
    assert_eq!(me["account_id"], ALAN);
    assert_eq!(me["email"], "alan.turing@dropbox.example");
    assert_eq!(me["name"]["display_name"], "Alan Turing");
    let mut page = h
        .dropbox_rpc(
            "/dropbox/2/files/list_folder",
            &at,
            Some(json!({"path": "/Documents", "limit": 10})),
        )
        .await
        .json();
    let mut names = Vec::new();
    loop {
        names.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned()),
        );
        if page["has_more"] != true {
            break;
        }
        page = h
            .dropbox_rpc(
                "/dropbox/2/files/list_folder/continue",
                &at,
                Some(json!({"cursor": page["cursor"]})),
            )
            .await
            .json();
    }
    assert_eq!(names.len(), 25);
    let missing = h
        .dropbox_rpc(
            "/dropbox/2/files/list_folder",
            &at,
            Some(json!({"path": "/nope"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn dropbox_expired_tokens_and_throttling_answer_as_dropbox_does() {
    let h = Harness::new();
    let at = h.dropbox_tokens(&[("token_access_type", "offline")]).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    h.emulator.set_faults(Faults {
        graph: Some(HttpFault::throttled(3).times(1)),
        ..Faults::default()
    });
    let throttled = h
        .dropbox_rpc("/dropbox/2/users/get_current_account", &at, None)
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("3"));
    assert_eq!(throttled.json()["error"]["retry_after"], 3);
    h.emulator.expire_access_tokens(ALAN);
    let expired = h
        .dropbox_rpc("/dropbox/2/users/get_current_account", &at, None)
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json()["error"][".tag"], "expired_access_token");
}

#[tokio::test(start_paused = true)]
async fn dropbox_access_tokens_expire_after_four_hours_as_expired_access_token() {
    let h = Harness::new();
    let at = h.dropbox_tokens(&[("token_access_type", "offline")]).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::advance(std::time::Duration::from_secs(14_399)).await;
    let still = h
        .dropbox_rpc("/dropbox/2/users/get_current_account", &at, None)
        .await;
    assert_eq!(still.status, StatusCode::OK);
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    let expired = h
        .dropbox_rpc("/dropbox/2/users/get_current_account", &at, None)
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json()["error"][".tag"], "expired_access_token");
}

#[tokio::test(start_paused = true)]
async fn google_codes_expire_and_a_verifier_without_a_challenge_is_refused() {
    let h = Harness::new();
    let code = h.code_at(GOOGLE_AUTH, &google_params(&[]), ADA).await;
    tokio::time::advance(std::time::Duration::from_secs(601)).await;
    let late = h.redeem_at("/google/token", &code, &[]).await;
    assert_eq!(late.json()["error"], "invalid_grant");

    let mut plain = google_params(&[]);
    plain.retain(|(n, _)| *n != "code_challenge" && *n != "code_challenge_method");
    let code = h.code_at(GOOGLE_AUTH, &plain, ADA).await;
    let reply = h.redeem_at("/google/token", &code, &[]).await;
    assert_eq!(
        reply.json()["error_description"],
        "code_verifier or verifier is not needed."
    );
}

#[tokio::test]
async fn google_include_granted_scopes_combines_the_grant() {
    let h = Harness::new();
    let mut first = google_params(&[]);
    first.retain(|(n, _)| *n != "scope");
    first.push(("scope", "openid email".to_owned()));
    let tokens = h.google_tokens_with(&first, ADA).await;
    assert_eq!(tokens["scope"], "openid email");
    let mut more = google_params(&[]);
    more.retain(|(n, _)| *n != "scope");
    more.push((
        "scope",
        "https://www.googleapis.com/auth/gmail.readonly".to_owned(),
    ));
    let combined = h.google_tokens_with(&more, ADA).await;
    assert_eq!(
        combined["scope"],
        "openid email https://www.googleapis.com/auth/gmail.readonly"
    );
    let mut alone = more.clone();
    alone.retain(|(n, _)| *n != "include_granted_scopes");
    let separate = h.google_tokens_with(&alone, ADA).await;
    assert_eq!(
        separate["scope"],
        "https://www.googleapis.com/auth/gmail.readonly"
    );
}
