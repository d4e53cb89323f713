//! `GET /v1.0/me/messages` and `/v1.0/me/messages/{id}` (providers.md §5): needs Mail.Read,
//! honours `$top` (default 10, clamped to 1..=1000), `$skip`, `$select`, and pages with an
//! absolute `@odata.nextLink` that keeps every original option. Unsupported OData options are
//! refused, never silently ignored. It must not check tokens itself.

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::Emulator;
use crate::graph::mailbox::{MESSAGE_PROPERTIES, messages};
use crate::graph::{begin, parse_select};
use crate::request_url::base_url;
use crate::stats::endpoint;

const MAIL_READ: &[&str] = &["Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic"];
const ACCESS_DENIED: (&str, &str) = (
    "ErrorAccessDenied",
    "Access is denied. Check credentials and try again.",
);
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1000;

struct ListOptions {
    top: Option<usize>,
    skip: usize,
    select: Option<Vec<&'static str>>,
    /// Every original option but `$skip`, in order, for the next link.
    carried: Vec<(String, String)>,
}

pub(crate) async fn list(
    State(emulator): State<Emulator>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (call, account) = match begin(
        &emulator,
        &headers,
        endpoint::MESSAGES,
        MAIL_READ,
        ACCESS_DENIED,
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let options = match parse_options(query.as_deref().unwrap_or_default()) {
        Ok(options) => options,
        Err((code, message)) => {
            emulator.with(|memory| memory.stats.graph_error(code));
            return call.error(StatusCode::BAD_REQUEST, code, &message);
        }
    };
    let text_body = prefers_text(&headers);
    let all = messages(&account, text_body);
    let page_size = options.top.unwrap_or(DEFAULT_TOP);
    let page: Vec<Value> = all
        .iter()
        .skip(options.skip)
        .take(page_size)
        .map(|m| project(m, options.select.as_deref()))
        .collect();

    let base = base_url(&headers, &original, &uri);
    let shape = options
        .select
        .as_ref()
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{base}/v1.0/$metadata#users('{}')/messages{shape}",
            account.id
        )),
    );
    body.insert("value".to_owned(), Value::Array(page));
    let next_skip = options.skip.saturating_add(page_size);
    if next_skip < all.len() {
        body.insert(
            "@odata.nextLink".to_owned(),
            json!(next_link(&base, &options.carried, next_skip)),
        );
    }
    let mut response = call.ok(Value::Object(body));
    if text_body {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("outlook.body-content-type=\"text\""),
        );
    }
    response
}

pub(crate) async fn single(
    State(emulator): State<Emulator>,
    Path(id): Path<String>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (call, account) = match begin(
        &emulator,
        &headers,
        endpoint::MESSAGES,
        MAIL_READ,
        ACCESS_DENIED,
    )
    .await
    {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let options = match parse_options(query.as_deref().unwrap_or_default()) {
        Ok(options) => options,
        Err((code, message)) => return call.error(StatusCode::BAD_REQUEST, code, &message),
    };
    let Some(message) = messages(&account, prefers_text(&headers))
        .into_iter()
        .find(|m| m["id"] == json!(id))
    else {
        emulator.with(|memory| memory.stats.graph_error("ErrorItemNotFound"));
        return call.error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let base = base_url(&headers, &original, &uri);
    let mut body = match project(&message, options.select.as_deref()) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{base}/v1.0/$metadata#users('{}')/messages/$entity",
            account.id
        )),
    );
    call.ok(Value::Object(body))
}

fn prefers_text(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.replace(' ', "")
                .contains("outlook.body-content-type=\"text\"")
        })
}

/// `@odata.etag` and `id` always; the rest as selected.
fn project(message: &Value, select: Option<&[&'static str]>) -> Value {
    let Some(select) = select else {
        return message.clone();
    };
    let mut out = Map::new();
    for name in ["@odata.etag", "id"]
        .into_iter()
        .chain(select.iter().copied())
    {
        if let Some(value) = message.get(name) {
            out.insert(name.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

fn parse_options(query: &str) -> Result<ListOptions, (&'static str, String)> {
    let mut options = ListOptions {
        top: None,
        skip: 0,
        select: None,
        carried: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let name = name.into_owned();
        let value = value.into_owned();
        if name.starts_with('$') {
            if seen.contains(&name) {
                return Err((
                    "BadRequest",
                    format!(
                        "Query option '{}' was specified more than once, but it must be specified at most once.",
                        name.trim_start_matches('$')
                    ),
                ));
            }
            seen.push(name.clone());
        }
        match name.as_str() {
            "$top" => {
                let top: usize = value.trim().parse().map_err(|_| {
                    (
                        "BadRequest",
                        format!("Invalid value '{value}' for query option '$top'."),
                    )
                })?;
                options.top = Some(top.clamp(1, MAX_TOP));
            }
            "$skip" => {
                options.skip = value.trim().parse().map_err(|_| {
                    (
                        "BadRequest",
                        format!("Invalid value '{value}' for query option '$skip'."),
                    )
                })?;
                continue;
            }
            "$select" => {
                // `id` is always returned, and Graph accepts it in `$select` all the same.
                let mut wants_id = false;
                let others: Vec<&str> = value
                    .split(',')
                    .filter(|item| {
                        let is_id = item.trim().eq_ignore_ascii_case("id");
                        wants_id |= is_id;
                        !is_id
                    })
                    .collect();
                let mut selected =
                    parse_select(&others.join(","), MESSAGE_PROPERTIES).map_err(|unknown| {
                    (
                        "RequestBroker--ParseUri",
                        format!(
                            "Could not find a property named '{unknown}' on type 'Microsoft.OutlookServices.Message'."
                        ),
                    )
                })?;
                if wants_id {
                    selected.insert(0, "id");
                }
                options.select = (!selected.is_empty()).then_some(selected);
            }
            "$orderby" if is_default_order(&value) => {}
            _ if name.starts_with('$') => {
                return Err((
                    "BadRequest",
                    format!("The emulator does not support the query option '{name}'."),
                ));
            }
            // Graph ignores parameters that are not OData options; keep them in the link.
            _ => {}
        }
        options.carried.push((name, value));
    }
    Ok(options)
}

/// The mailbox is already newest first, which is what this asks for.
fn is_default_order(value: &str) -> bool {
    let words: Vec<&str> = value.split_whitespace().collect();
    matches!(words.as_slice(), [field, dir] if field.eq_ignore_ascii_case("receivedDateTime") && dir.eq_ignore_ascii_case("desc"))
}

fn next_link(base: &str, carried: &[(String, String)], skip: usize) -> String {
    let mut query: Vec<String> = carried
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    query.push(format!("$skip={skip}"));
    format!("{base}/v1.0/me/messages?{}", query.join("&"))
}

/// Form-encodes a value but keeps `$` readable, as Graph's own links do.
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace("%24", "$")
}
