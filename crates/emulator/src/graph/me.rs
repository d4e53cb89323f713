//! `GET /v1.0/me` (default property set, `$select`, nullable `mail`; needs User.Read) and
//! `GET /v1.0/me/mailboxSettings` (needs MailboxSettings.Read). It must not check tokens itself
//! (`graph::begin` does).

use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::Emulator;
use crate::config::TestAccount;
use crate::graph::{begin, parse_select};
use crate::request_url::base_url;
use crate::stats::endpoint;

/// The properties `/me` returns without `$select`, in Graph's order.
const DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

const USER_READ: &[&str] = &["User.Read", "User.ReadBasic.All"];
const MAILBOX_SETTINGS_READ: &[&str] = &["MailboxSettings.Read", "MailboxSettings.ReadWrite"];

pub(crate) async fn me(
    State(emulator): State<Emulator>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (call, account) = match begin(
        &emulator,
        &headers,
        endpoint::ME,
        USER_READ,
        (
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ),
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let select = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "$select")
        .map(|(_, value)| value.into_owned());
    let properties = match select
        .as_deref()
        .map(|raw| parse_select(raw, DEFAULT_PROPERTIES))
    {
        None => None,
        Some(Ok(selected)) if !selected.is_empty() => Some(selected),
        Some(Ok(_)) => None,
        Some(Err(unknown)) => {
            emulator.with(|memory| memory.stats.graph_error("Request_BadRequest"));
            return call.error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!(
                    "Could not find a property named '{unknown}' on type 'microsoft.graph.user'."
                ),
            );
        }
    };
    let base = base_url(&headers, &original, &uri);
    let context = match &properties {
        None => format!("{base}/v1.0/$metadata#users/$entity"),
        Some(selected) => format!(
            "{base}/v1.0/$metadata#users({})/$entity",
            selected.join(",")
        ),
    };
    let full = user_properties(&account);
    let mut body = Map::new();
    body.insert("@odata.context".to_owned(), Value::String(context));
    for name in properties.as_deref().unwrap_or(DEFAULT_PROPERTIES) {
        body.insert(
            (*name).to_owned(),
            full.get(*name).cloned().unwrap_or(Value::Null),
        );
    }
    call.ok(Value::Object(body))
}

fn user_properties(account: &TestAccount) -> Map<String, Value> {
    let value = json!({
        "businessPhones": account.business_phones,
        "displayName": account.display_name,
        "givenName": account.given_name,
        "jobTitle": account.job_title,
        "mail": account.mail,
        "mobilePhone": account.mobile_phone,
        "officeLocation": account.office_location,
        "preferredLanguage": account.preferred_language,
        "surname": account.surname,
        "userPrincipalName": account.user_principal_name,
        "id": account.id,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(crate) async fn mailbox_settings(
    State(emulator): State<Emulator>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (call, account) = match begin(
        &emulator,
        &headers,
        endpoint::MAILBOX_SETTINGS,
        MAILBOX_SETTINGS_READ,
        (
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ),
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let base = base_url(&headers, &original, &uri);
    let locale = account
        .preferred_language
        .clone()
        .unwrap_or_else(|| "en-US".to_owned());
    call.ok(json!({
        "@odata.context": format!("{base}/v1.0/$metadata#users('{}')/mailboxSettings", account.id),
        "archiveFolder": format!("AQMkAD{}AAAA", account.id.replace('-', "")),
        "timeZone": "UTC",
        "dateFormat": "M/d/yyyy",
        "timeFormat": "h:mm tt",
        "userPurpose": "user",
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        "automaticRepliesSetting": {
            "status": "disabled",
            "externalAudience": "all",
            "internalReplyMessage": "",
            "externalReplyMessage": "",
        },
        "language": {"locale": locale, "displayName": "English (United States)"},
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": "UTC"},
        },
    }))
}
