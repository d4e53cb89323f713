//! Behaviour of `/authorize`: what is an error page, what is redirected, the consent page, and
//! what accepting or cancelling sends back.

use axum::http::StatusCode;
use url::Url;

use super::*;
use crate::{AccountKind, ConsentFault, Faults, TestAccount};

fn assert_error_page(reply: &Reply, code: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(reply.header("location").is_none(), "must not redirect");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.text().contains(code), "{}", reply.text());
}

/// The hidden inputs of a page's form, unescaped, as a browser would post them.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| {
            let name = rest
                .split("name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap();
            let value = rest
                .split("value=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap();
            (unescape(name), unescape(value))
        })
        .collect()
}

#[tokio::test]
async fn consent_page_lists_app_scopes_accounts_and_both_buttons() {
    let h = Harness::new();
    let reply = h.authorize(&authorize_params()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    assert!(page.contains(CLIENT_ID));
    for words in [
        "Read your mail",
        "Sign you in and read your profile",
        "Read your mailbox settings",
        "Maintain access to data you have given it access to",
    ] {
        assert!(page.contains(words), "missing {words}");
    }
    assert!(page.contains(&format!("name=\"account\" value=\"{ADELE}\" checked")));
    assert!(page.contains(&format!("name=\"account\" value=\"{LEE}\">")));
    assert!(page.contains(&format!("name=\"account\" value=\"{SAM}\">")));
    assert!(page.contains(
        "<button type=\"submit\" name=\"decision\" value=\"accept\" id=\"accept\">Accept</button>"
    ));
    assert!(page.contains(
        "<button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>"
    ));
    assert!(
        page.contains("<form method=\"post\" action=\"authorize\""),
        "relative action"
    );
    let csp = reply.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"));
    assert!(reply.header("cache-control").unwrap().contains("no-store"));
}

#[tokio::test]
async fn consent_page_carries_every_authorize_parameter_back() {
    let h = Harness::new();
    let params = with(
        authorize_params(),
        "login_hint",
        Some("lee.gu@contoso.example"),
    );
    let page = h.authorize(&params).await.text();
    let hidden = hidden_inputs(&page);
    for (name, value) in &params {
        assert!(
            hidden.iter().any(|(n, v)| n == name && v == value),
            "{name} not carried"
        );
    }
}

#[tokio::test]
async fn posting_the_rendered_form_like_a_browser_yields_a_code() {
    let h = Harness::new();
    let page_url = Url::parse(&format!(
        "http://{HOST}{AUTHORIZE}?{}",
        encode(&authorize_params())
    ))
    .unwrap();
    let page = h.authorize(&authorize_params()).await.text();
    let action = page
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let target = page_url.join(action).unwrap();
    assert_eq!(target.path(), AUTHORIZE);
    let mut form = hidden_inputs(&page);
    form.push(("account".into(), LEE.into()));
    form.push(("decision".into(), "accept".into()));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let reply = h.post_form(target.path(), body, &[]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(reply.param("code").unwrap().contains("TOKMARK-code-"));
}

#[tokio::test]
async fn unknown_client_shows_error_page_700016_without_redirect() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(
            authorize_params(),
            "client_id",
            Some("00000000-0000-0000-0000-00000000dead"),
        ))
        .await;
    assert_error_page(&reply, "AADSTS700016");
}

#[tokio::test]
async fn unknown_client_is_reported_before_a_bad_redirect_uri() {
    let h = Harness::new();
    let params = with(authorize_params(), "client_id", Some("nope"));
    let reply = h
        .authorize(&with(
            params,
            "redirect_uri",
            Some("https://evil.example/cb"),
        ))
        .await;
    assert_error_page(&reply, "AADSTS700016");
}

#[tokio::test]
async fn wrong_redirect_uri_shows_error_page_without_redirect() {
    let h = Harness::new();
    for uri in [
        "https://evil.example/v1/integrations/outlook/callback",
        "https://connect.example/v1/integrations/outlook/callback/",
        "https://connect.example/V1/integrations/outlook/callback",
        "https://connect.example:444/v1/integrations/outlook/callback",
    ] {
        let reply = h
            .authorize(&with(authorize_params(), "redirect_uri", Some(uri)))
            .await;
        assert_error_page(&reply, "AADSTS50011");
    }
}

#[tokio::test]
async fn missing_redirect_uri_shows_error_page_900971() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(authorize_params(), "redirect_uri", None))
        .await;
    assert_error_page(&reply, "AADSTS900971");
}

#[tokio::test]
async fn missing_client_id_shows_error_page_900144() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(authorize_params(), "client_id", None))
        .await;
    assert_error_page(&reply, "AADSTS900144");
}

#[tokio::test]
async fn unknown_tenant_shows_error_page_90002() {
    let h = Harness::new();
    let reply = h
        .get(
            &format!(
                "/not_a_tenant/oauth2/v2.0/authorize?{}",
                encode(&authorize_params())
            ),
            &[],
        )
        .await;
    assert_error_page(&reply, "AADSTS90002");
}

#[tokio::test]
async fn loopback_redirect_uri_port_is_ignored_but_nothing_else_is() {
    let h = Harness::new();
    h.emulator.add_client(loopback_client());
    let params = with(authorize_params(), "client_id", Some("loopback-client"));
    let other_port = h
        .authorize(&with(
            params.clone(),
            "redirect_uri",
            Some("http://127.0.0.1:9999/cb"),
        ))
        .await;
    assert_eq!(other_port.status, StatusCode::OK, "{}", other_port.text());
    let other_path = h
        .authorize(&with(
            params.clone(),
            "redirect_uri",
            Some("http://127.0.0.1:9999/cb2"),
        ))
        .await;
    assert_error_page(&other_path, "AADSTS50011");
    let other_host = h
        .authorize(&with(
            params,
            "redirect_uri",
            Some("http://localhost:8080/cb"),
        ))
        .await;
    assert_error_page(&other_host, "AADSTS50011");
}

#[tokio::test]
async fn unsupported_response_type_is_redirected_with_state() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(authorize_params(), "response_type", Some("token")))
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(reply.location().as_str().starts_with(REDIRECT_URI));
    assert_eq!(
        reply.param("error").as_deref(),
        Some("unsupported_response_type")
    );
    assert_eq!(reply.param("state").as_deref(), Some("st4te-123"));
    assert!(reply.param("code").is_none());
}

#[tokio::test]
async fn resource_prefixed_offline_access_is_invalid_scope_70011_by_redirect() {
    let h = Harness::new();
    let scope = "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/offline_access";
    let reply = h
        .authorize(&with(authorize_params(), "scope", Some(scope)))
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.param("error").as_deref(), Some("invalid_scope"));
    let description = reply.param("error_description").unwrap();
    assert!(description.starts_with("AADSTS70011: "), "{description}");
    assert!(description.contains("\r\nTrace ID: "), "{description}");
}

#[tokio::test]
async fn bare_and_case_insensitive_graph_scopes_are_accepted() {
    let h = Harness::new();
    let params = with(
        authorize_params(),
        "scope",
        Some("mail.read User.Read openid profile email offline_access"),
    );
    let code = h.code_with(&params, ADELE).await;
    let body = h.redeem(&code).await.json();
    assert_eq!(
        body["scope"],
        "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read"
    );
}

#[tokio::test]
async fn default_scope_mixed_with_named_scopes_is_invalid_scope() {
    let h = Harness::new();
    let scope = "https://graph.microsoft.com/.default https://graph.microsoft.com/Mail.Read";
    let reply = h
        .authorize(&with(authorize_params(), "scope", Some(scope)))
        .await;
    assert_eq!(reply.param("error").as_deref(), Some("invalid_scope"));
}

#[tokio::test]
async fn missing_scope_is_invalid_request_by_redirect() {
    let h = Harness::new();
    let reply = h.authorize(&with(authorize_params(), "scope", None)).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.param("error").as_deref(), Some("invalid_request"));
    assert!(
        reply
            .param("error_description")
            .unwrap()
            .starts_with("AADSTS900144: ")
    );
}

#[tokio::test]
async fn wrong_challenge_length_is_invalid_request_501491() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(
            authorize_params(),
            "code_challenge",
            Some("too-short"),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.param("error").as_deref(), Some("invalid_request"));
    assert!(
        reply
            .param("error_description")
            .unwrap()
            .starts_with("AADSTS501491: ")
    );
}

#[tokio::test]
async fn unknown_challenge_method_is_invalid_request_50149() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(
            authorize_params(),
            "code_challenge_method",
            Some("S512"),
        ))
        .await;
    assert_eq!(reply.param("error").as_deref(), Some("invalid_request"));
    assert!(
        reply
            .param("error_description")
            .unwrap()
            .starts_with("AADSTS50149: ")
    );
}

#[tokio::test]
async fn prompt_none_redirects_login_required() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(authorize_params(), "prompt", Some("none")))
        .await;
    assert_eq!(reply.param("error").as_deref(), Some("login_required"));
}

#[tokio::test]
async fn login_hint_preselects_the_account() {
    let h = Harness::new();
    let reply = h
        .authorize(&with(
            authorize_params(),
            "login_hint",
            Some("Lee.Gu@contoso.example"),
        ))
        .await;
    let page = reply.text();
    assert!(page.contains(&format!("value=\"{LEE}\" checked")));
    assert_eq!(page.matches(" checked").count(), 1);
}

#[tokio::test]
async fn consent_page_escapes_everything_it_renders() {
    let mut config = EmulatorConfig::demo(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    config.accounts.push(TestAccount {
        id: "x\"><script>alert(1)</script>".to_owned(),
        user_principal_name: "test&<b>@example.test".to_owned(),
        display_name: "Test <img src=x onerror=alert(2)> O'Brien & Co".to_owned(),
        ..TestAccount::default()
    });
    let h = Harness::with_config(config);
    let params = with(
        authorize_params(),
        "state",
        Some("\"><script>alert(3)</script>"),
    );
    let params = with(params, "login_hint", Some("<i>hint</i>"));
    let page = h.authorize(&params).await.text();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<b>@"), "{page}");
    assert!(page.contains("Test &lt;img src=x onerror=alert(2)&gt; O&#x27;Brien &amp; Co"));
    assert!(page.contains("value=\"x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert!(page.contains("value=\"&lt;i&gt;hint&lt;/i&gt;\""));
}

#[tokio::test]
async fn accepting_redirects_with_code_state_and_session_state() {
    let h = Harness::new();
    let reply = h.decide(&authorize_params(), "accept", ADELE).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let location = reply.location();
    assert!(location.as_str().starts_with(&format!("{REDIRECT_URI}?")));
    assert!(reply.param("code").unwrap().starts_with("TOKMARK-code-"));
    assert_eq!(reply.param("state").as_deref(), Some("st4te-123"));
    assert!(uuid::Uuid::parse_str(&reply.param("session_state").unwrap()).is_ok());
    assert_eq!(h.emulator.stats().consents_accepted, 1);
}

#[tokio::test]
async fn cancelling_redirects_access_denied_65004() {
    let h = Harness::new();
    let reply = h.decide(&authorize_params(), "cancel", ADELE).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.param("error").as_deref(), Some("access_denied"));
    let description = reply.param("error_description").unwrap();
    assert!(
        description.starts_with("AADSTS65004: The user has declined to consent to access the app."),
        "{description}"
    );
    assert_eq!(reply.param("state").as_deref(), Some("st4te-123"));
    assert!(reply.param("code").is_none());
    assert_eq!(h.emulator.stats().consents_declined, 1);
}

#[tokio::test]
async fn consent_post_revalidates_client_and_redirect_uri() {
    let h = Harness::new();
    let reply = h
        .decide(
            &with(
                authorize_params(),
                "redirect_uri",
                Some("https://evil.example/cb"),
            ),
            "accept",
            ADELE,
        )
        .await;
    assert_error_page(&reply, "AADSTS50011");
    let reply = h
        .decide(
            &with(authorize_params(), "client_id", Some("someone-else")),
            "cancel",
            ADELE,
        )
        .await;
    assert_error_page(&reply, "AADSTS700016");
}

#[tokio::test]
async fn consent_post_without_a_known_account_is_an_error_page() {
    let h = Harness::new();
    let reply = h
        .decide(&authorize_params(), "accept", "no-such-account")
        .await;
    assert_error_page(&reply, "AADSTS50034");
}

#[tokio::test]
async fn form_post_mode_renders_an_auto_submitting_form_to_the_redirect_uri() {
    let h = Harness::new();
    let reply = h
        .decide(
            &with(authorize_params(), "response_mode", Some("form_post")),
            "accept",
            ADELE,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("location").is_none());
    let page = reply.text();
    assert!(page.contains(&format!("<form method=\"post\" action=\"{REDIRECT_URI}\"")));
    let fields = hidden_inputs(&page);
    assert!(
        fields
            .iter()
            .any(|(n, v)| n == "code" && v.starts_with("TOKMARK-code-"))
    );
    assert!(fields.iter().any(|(n, v)| n == "state" && v == "st4te-123"));
    // The auto-submit script runs under the page's CSP nonce.
    let csp = reply.header("content-security-policy").unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap();
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(page.contains("id=\"continue\""), "works without script too");
}

#[tokio::test]
async fn fragment_mode_puts_the_code_in_the_fragment() {
    let h = Harness::new();
    let reply = h
        .decide(
            &with(authorize_params(), "response_mode", Some("fragment")),
            "accept",
            ADELE,
        )
        .await;
    let location = reply.location();
    assert!(location.query().is_none());
    assert!(location.fragment().unwrap().contains("code=TOKMARK-code-"));
}

#[tokio::test]
async fn registered_uri_without_path_comes_back_with_trailing_slash() {
    let h = Harness::new();
    h.emulator.add_client(RegisteredClient {
        client_id: "bare".into(),
        client_secret: "x".into(),
        redirect_uris: vec!["https://app.example".into()],
    });
    let params = with(authorize_params(), "client_id", Some("bare"));
    let params = with(params, "redirect_uri", Some("https://app.example"));
    let reply = h.decide(&params, "accept", ADELE).await;
    assert!(
        reply
            .header("location")
            .unwrap()
            .starts_with("https://app.example/?code=")
    );
}

#[tokio::test]
async fn tenant_decides_which_accounts_can_sign_in() {
    let h = Harness::new();
    let consumers = h
        .get(
            &format!(
                "/consumers/oauth2/v2.0/authorize?{}",
                encode(&authorize_params())
            ),
            &[],
        )
        .await
        .text();
    assert!(consumers.contains(SAM) && !consumers.contains(ADELE));
    let organizations = h
        .get(
            &format!(
                "/organizations/oauth2/v2.0/authorize?{}",
                encode(&authorize_params())
            ),
            &[],
        )
        .await
        .text();
    assert!(organizations.contains(ADELE) && !organizations.contains(SAM));
    let reply = h
        .decide_at(
            "/organizations/oauth2/v2.0/authorize",
            &authorize_params(),
            "accept",
            SAM,
        )
        .await;
    assert_error_page(&reply, "AADSTS50020");
    assert!(
        h.emulator
            .accounts()
            .iter()
            .any(|a| a.id == SAM && a.kind == AccountKind::Personal)
    );
}

#[tokio::test]
async fn next_consent_fault_answers_consent_required_once() {
    let h = Harness::new();
    h.emulator.set_faults(Faults {
        next_consent: Some(ConsentFault::ConsentRequired),
        ..Faults::default()
    });
    let reply = h.decide(&authorize_params(), "accept", ADELE).await;
    assert_eq!(reply.param("error").as_deref(), Some("consent_required"));
    assert!(
        reply
            .param("error_description")
            .unwrap()
            .starts_with("AADSTS65001: ")
    );
    assert_eq!(reply.param("state").as_deref(), Some("st4te-123"));
    let again = h.decide(&authorize_params(), "accept", ADELE).await;
    assert!(again.param("code").is_some(), "one-shot");
}

#[tokio::test]
async fn html_is_stripped_from_state() {
    let h = Harness::new();
    let reply = h
        .decide(
            &with(authorize_params(), "state", Some("abc<b>def</b>")),
            "accept",
            ADELE,
        )
        .await;
    assert_eq!(reply.param("state").as_deref(), Some("abcdef"));
}

#[tokio::test]
async fn repeated_parameter_is_refused_on_an_error_page() {
    let h = Harness::new();
    let query = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        encode(&authorize_params())
    );
    let reply = h.get(&format!("{AUTHORIZE}?{query}"), &[]).await;
    assert_error_page(&reply, "AADSTS9002313");
}
