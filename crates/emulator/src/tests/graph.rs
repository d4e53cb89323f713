//! Behaviour of the Graph stand-in: `/me`, `/me/messages` paging and projection, permissions,
//! token errors with `WWW-Authenticate`, and the OData error shape.

use std::time::Duration;

use axum::http::StatusCode;

use super::*;

async fn access_token(h: &Harness, account: &str) -> String {
    h.tokens_for(account).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn access_token_with_scope(h: &Harness, scope: &str, account: &str) -> String {
    let code = h
        .code_with(&with(authorize_params(), "scope", Some(scope)), account)
        .await;
    h.redeem(&code).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assert_odata_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    let inner = &body["error"]["innerError"];
    assert!(
        inner["date"].is_string() && inner["request-id"].is_string(),
        "{body}"
    );
    assert_eq!(reply.header("request-id"), inner["request-id"].as_str());
}

#[tokio::test]
async fn me_returns_the_default_property_set() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h.graph("/v1.0/me", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json;odata.metadata=minimal")
    );
    assert!(reply.header("request-id").is_some());
    let body = reply.json();
    assert_eq!(
        body["@odata.context"],
        format!("http://{HOST}/v1.0/$metadata#users/$entity")
    );
    assert_eq!(body["id"], ADELE);
    assert_eq!(body["displayName"], "Adele Vance");
    assert_eq!(body["mail"], "adele.vance@contoso.example");
    assert_eq!(body["userPrincipalName"], "adele.vance@contoso.example");
    assert_eq!(
        body["businessPhones"],
        serde_json::json!(["+1 425 555 0109"])
    );
    assert!(body["mobilePhone"].is_null());
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "@odata.context",
            "businessPhones",
            "displayName",
            "givenName",
            "id",
            "jobTitle",
            "mail",
            "mobilePhone",
            "officeLocation",
            "preferredLanguage",
            "surname",
            "userPrincipalName"
        ]
    );
}

#[tokio::test]
async fn personal_account_has_null_mail() {
    let h = Harness::new();
    let token = access_token(&h, SAM).await;
    let body = h.graph("/v1.0/me", &token).await.json();
    assert!(body["mail"].is_null());
    assert_eq!(body["userPrincipalName"], "sam.taylor@outlook.example");
    assert_eq!(body["id"], SAM);
}

#[tokio::test]
async fn me_select_projects_and_adjusts_the_context() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let body = h
        .graph("/v1.0/me?$select=id,mail,DISPLAYNAME", &token)
        .await
        .json();
    assert_eq!(
        body["@odata.context"],
        format!("http://{HOST}/v1.0/$metadata#users(id,mail,displayName)/$entity")
    );
    assert_eq!(body.as_object().unwrap().len(), 4);
    assert_eq!(body["displayName"], "Adele Vance");
}

#[tokio::test]
async fn me_select_of_an_unknown_property_is_400() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h.graph("/v1.0/me?$select=shoeSize", &token).await;
    assert_odata_error(&reply, StatusCode::BAD_REQUEST, "Request_BadRequest");
}

#[tokio::test]
async fn missing_token_is_401_invalid_authentication_token_with_www_authenticate() {
    let h = Harness::new();
    let reply = h.get("/v1.0/me", &[]).await;
    assert_odata_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer realm=\"\""), "{challenge}");
    assert!(challenge.contains("client_id=\"00000003-0000-0000-c000-000000000000\""));
}

#[tokio::test]
async fn unknown_token_is_401() {
    let h = Harness::new();
    let reply = h.graph("/v1.0/me", "TOKMARK-at-made-up").await;
    assert_odata_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
    assert!(reply.header("www-authenticate").is_some());
}

#[tokio::test(start_paused = true)]
async fn access_token_expires_after_its_lifetime() {
    let h = Harness::new();
    h.emulator
        .set_access_token_lifetime(Some(Duration::from_secs(60)));
    let token = access_token(&h, ADELE).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(h.graph("/v1.0/me", &token).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(2)).await;
    let reply = h.graph("/v1.0/me", &token).await;
    assert_odata_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
    assert_eq!(
        reply.json()["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );
}

#[tokio::test]
async fn expire_access_tokens_switch_gives_401_until_refreshed() {
    let h = Harness::new();
    let body = h.tokens_for(ADELE).await;
    let token = body["access_token"].as_str().unwrap();
    let lee = access_token(&h, LEE).await;
    h.emulator.expire_access_tokens(ADELE);
    let reply = h.graph("/v1.0/me", token).await;
    assert_odata_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
    assert_eq!(
        h.graph("/v1.0/me", &lee).await.status,
        StatusCode::OK,
        "other accounts unaffected"
    );
    let refreshed = h
        .refresh(body["refresh_token"].as_str().unwrap())
        .await
        .json();
    let fresh = refreshed["access_token"].as_str().unwrap();
    assert_eq!(h.graph("/v1.0/me", fresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_grant_does_not_kill_live_access_tokens() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    h.emulator.revoke_grant(ADELE);
    assert_eq!(h.graph("/v1.0/me", &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn me_without_user_read_is_403() {
    let h = Harness::new();
    let token = access_token_with_scope(&h, "Mail.Read", ADELE).await;
    let reply = h.graph("/v1.0/me", &token).await;
    assert_odata_error(&reply, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
}

#[tokio::test]
async fn messages_without_mail_read_is_403() {
    let h = Harness::new();
    let token = access_token_with_scope(&h, "User.Read", ADELE).await;
    let reply = h.graph("/v1.0/me/messages", &token).await;
    assert_odata_error(&reply, StatusCode::FORBIDDEN, "ErrorAccessDenied");
}

#[tokio::test]
async fn messages_default_page_is_ten_newest_first() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h.graph("/v1.0/me/messages", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(
        body["@odata.context"],
        format!("http://{HOST}/v1.0/$metadata#users('{ADELE}')/messages")
    );
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 10);
    let received: Vec<&str> = value
        .iter()
        .map(|m| m["receivedDateTime"].as_str().unwrap())
        .collect();
    let mut sorted = received.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(received, sorted, "newest first");
    let first = &value[0];
    for field in [
        "@odata.etag",
        "id",
        "subject",
        "bodyPreview",
        "sender",
        "from",
        "toRecipients",
        "body",
        "isRead",
    ] {
        assert!(first.get(field).is_some(), "missing {field}");
    }
    assert_eq!(first["body"]["contentType"], "html");
    assert_eq!(
        body["@odata.nextLink"],
        format!("http://{HOST}/v1.0/me/messages?$skip=10")
    );
}

#[tokio::test]
async fn messages_page_with_next_link() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let mut path = "/v1.0/me/messages?$select=sender,subject&$top=10".to_owned();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let body = h.graph(&path, &token).await.json();
        pages += 1;
        for message in body["value"].as_array().unwrap() {
            assert_eq!(
                message.as_object().unwrap().len(),
                4,
                "etag, id, sender, subject"
            );
            ids.push(message["id"].as_str().unwrap().to_owned());
        }
        let Some(next) = body["@odata.nextLink"].as_str() else {
            break;
        };
        let next = Url::parse(next).unwrap();
        assert_eq!(next.host_str(), Some(HOST));
        assert!(
            next.query().unwrap().contains("$select=sender%2Csubject"),
            "{next}"
        );
        assert!(next.query().unwrap().contains("$top=10"), "{next}");
        path = format!("{}?{}", next.path(), next.query().unwrap());
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 25);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "no message twice");
}

#[tokio::test]
async fn messages_top_is_clamped_and_skip_honoured() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let all = h.graph("/v1.0/me/messages?$top=5000", &token).await.json();
    assert_eq!(all["value"].as_array().unwrap().len(), 25);
    assert!(all.get("@odata.nextLink").is_none());
    let one = h.graph("/v1.0/me/messages?$top=0", &token).await.json();
    assert_eq!(one["value"].as_array().unwrap().len(), 1);
    let tail = h.graph("/v1.0/me/messages?$skip=20", &token).await.json();
    assert_eq!(tail["value"].as_array().unwrap().len(), 5);
    assert_eq!(tail["value"][0]["id"], all["value"][20]["id"]);
    assert!(tail.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn mailbox_is_deterministic_and_per_account() {
    let h = Harness::new();
    let adele = access_token(&h, ADELE).await;
    let lee = access_token(&h, LEE).await;
    let a1 = h
        .graph("/v1.0/me/messages?$select=subject", &adele)
        .await
        .json();
    let a2 = h
        .graph("/v1.0/me/messages?$select=subject", &adele)
        .await
        .json();
    let l1 = h
        .graph("/v1.0/me/messages?$select=subject", &lee)
        .await
        .json();
    assert_eq!(a1["value"], a2["value"]);
    assert_ne!(a1["value"], l1["value"]);
}

#[tokio::test]
async fn messages_select_projects_and_names_the_shape_in_the_context() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let body = h
        .graph(
            "/v1.0/me/messages?$select=subject,receivedDateTime&$top=2",
            &token,
        )
        .await
        .json();
    assert_eq!(
        body["@odata.context"],
        format!("http://{HOST}/v1.0/$metadata#users('{ADELE}')/messages(subject,receivedDateTime)")
    );
    let keys: Vec<&String> = body["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let bad = h.graph("/v1.0/me/messages?$select=nope", &token).await;
    assert_odata_error(&bad, StatusCode::BAD_REQUEST, "RequestBroker--ParseUri");
}

#[tokio::test]
async fn messages_select_may_name_the_id_as_graph_allows() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h
        .graph(
            "/v1.0/me/messages?$select=id,subject,from,receivedDateTime&$top=2",
            &token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let keys: Vec<&String> = body["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        5,
        "@odata.etag, id and the three others: {keys:?}"
    );
    assert!(body["value"][0]["id"].is_string());
}

#[tokio::test]
async fn unsupported_query_options_are_refused_not_ignored() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h
        .graph("/v1.0/me/messages?$filter=isRead%20eq%20false", &token)
        .await;
    assert_odata_error(&reply, StatusCode::BAD_REQUEST, "BadRequest");
    let ordered = h
        .graph("/v1.0/me/messages?$orderby=receivedDateTime%20desc", &token)
        .await;
    assert_eq!(ordered.status, StatusCode::OK);
    let twice = h.graph("/v1.0/me/messages?$top=1&$top=2", &token).await;
    assert_odata_error(&twice, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn prefer_text_body_is_applied() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let bearer = format!("Bearer {token}");
    let reply = h
        .get(
            "/v1.0/me/messages?$top=1",
            &[
                ("authorization", bearer.as_str()),
                ("prefer", "outlook.body-content-type=\"text\""),
            ],
        )
        .await;
    assert_eq!(reply.json()["value"][0]["body"]["contentType"], "text");
    assert_eq!(
        reply.header("preference-applied"),
        Some("outlook.body-content-type=\"text\"")
    );
}

#[tokio::test]
async fn single_message_by_id() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let list = h.graph("/v1.0/me/messages?$top=1", &token).await.json();
    let id = list["value"][0]["id"].as_str().unwrap();
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let one = h
        .graph(&format!("/v1.0/me/messages/{encoded}"), &token)
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(one.json()["subject"], list["value"][0]["subject"]);
    let missing = h.graph("/v1.0/me/messages/AAMkAGnope", &token).await;
    assert_odata_error(&missing, StatusCode::NOT_FOUND, "ErrorItemNotFound");
}

#[tokio::test]
async fn mailbox_settings_need_mailbox_settings_read() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let reply = h.graph("/v1.0/me/mailboxSettings", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["timeZone"], "UTC");
    // Consent is cumulative, so the narrow grant needs a user who never consented more.
    let narrow = access_token_with_scope(&h, "Mail.Read", LEE).await;
    let denied = h.graph("/v1.0/me/mailboxSettings", &narrow).await;
    assert_odata_error(&denied, StatusCode::FORBIDDEN, "ErrorAccessDenied");
}

#[tokio::test]
async fn unknown_graph_segment_is_400_bad_request() {
    let h = Harness::new();
    let reply = h.get("/v1.0/planets/mars", &[]).await;
    assert_odata_error(&reply, StatusCode::BAD_REQUEST, "BadRequest");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'planets'")
    );
}

#[tokio::test]
async fn client_request_id_is_echoed_by_graph() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let bearer = format!("Bearer {token}");
    let reply = h
        .get(
            "/v1.0/me",
            &[
                ("authorization", bearer.as_str()),
                ("client-request-id", "abc-123"),
            ],
        )
        .await;
    assert_eq!(reply.header("client-request-id"), Some("abc-123"));
}

#[tokio::test]
async fn messages_select_accepts_id_as_graph_does() {
    let h = Harness::new();
    let token = access_token(&h, ADELE).await;
    let list = h
        .graph("/v1.0/me/messages?$select=id,subject,from&$top=2", &token)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let first = &list.json()["value"][0];
    assert!(first["id"].is_string());
    assert!(first["subject"].is_string());
    let id = first["id"].as_str().unwrap().to_owned();
    let single = h
        .graph(
            &format!("/v1.0/me/messages/{id}?$select=id,subject"),
            &token,
        )
        .await;
    assert_eq!(single.status, StatusCode::OK, "{}", single.text());
    let both = h
        .graph("/v1.0/me/messages?$select=ID,subject,id&$top=1", &token)
        .await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.text());
}
