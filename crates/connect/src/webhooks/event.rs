//! The connection events and their payloads, in the Standard Webhooks shape
//! `{id, type, timestamp, data}`. A payload names the connection, the app's user, the provider,
//! the connection's status after the change and a reason code; never a token, and not the
//! provider account's email or name (docs/webhooks.md says why). The store writes these bodies
//! to the outbox in the transaction of the change they report; the bytes written are the bytes
//! signed and sent, on every attempt.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{ConnectionState, UserId};
use crate::provider::ProviderId;

/// What happened to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The user connected an account for the first time (no stored connection before).
    Created,
    /// The user connected again over a stored connection (the same account or another one).
    Reconnected,
    /// The connection was deleted, by the user or by the operator.
    Disconnected,
    /// The provider refused the grant; the user must connect again.
    NeedsReauth,
    /// Refreshes have failed for longer than the configured time (provider down, throttling).
    RefreshFailing,
    /// A refresh succeeded after `refresh_failing` was sent.
    Recovered,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Created,
        EventType::Reconnected,
        EventType::Disconnected,
        EventType::NeedsReauth,
        EventType::RefreshFailing,
        EventType::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "connection.created",
            EventType::Reconnected => "connection.reconnected",
            EventType::Disconnected => "connection.disconnected",
            EventType::NeedsReauth => "connection.needs_reauth",
            EventType::RefreshFailing => "connection.refresh_failing",
            EventType::Recovered => "connection.recovered",
        }
    }
}

/// Who disconnected: the signed-in user, or the operator through the service API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectedBy {
    User,
    Operator,
}

impl DisconnectedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectedBy::User => "user",
            DisconnectedBy::Operator => "operator",
        }
    }
}

/// One event as the outbox stores it: its id (the `webhook-id`), type and exact body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub event_type: EventType,
    pub body: String,
}

/// The connection an event is about, and its state after the change.
#[derive(Clone, Copy, Debug)]
pub struct Subject {
    pub connection_id: Uuid,
    pub user: UserId,
    pub provider: ProviderId,
    pub status: ConnectionState,
}

/// A new event id: `msg_` and a time-ordered UUID.
pub fn new_event_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

/// RFC 3339 in UTC with milliseconds, as payload timestamps are written.
pub fn rfc3339_millis(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Builds an event about `subject`, now. `reason` is a stable code (never a provider's body);
/// `extra` adds type-specific fields to `data`.
pub fn build(
    event_type: EventType,
    subject: Subject,
    reason: Option<&str>,
    extra: Map<String, Value>,
) -> OutboxEvent {
    build_at(
        new_event_id(),
        OffsetDateTime::now_utc(),
        event_type,
        subject,
        reason,
        extra,
    )
}

pub fn build_at(
    id: String,
    at: OffsetDateTime,
    event_type: EventType,
    subject: Subject,
    reason: Option<&str>,
    extra: Map<String, Value>,
) -> OutboxEvent {
    let mut data = Map::new();
    data.insert("connection_id".into(), json!(subject.connection_id));
    data.insert("user_id".into(), json!(subject.user.0));
    data.insert("provider".into(), json!(subject.provider.as_str()));
    data.insert("status".into(), json!(subject.status.as_db()));
    data.insert("reason".into(), json!(reason));
    data.extend(extra);
    let body = json!({
        "id": id,
        "type": event_type.as_str(),
        "timestamp": rfc3339_millis(at),
        "data": data,
    })
    .to_string();
    OutboxEvent {
        id,
        event_type,
        body,
    }
}

/// The event of a connect: `created` when nothing was stored before, else `reconnected`.
/// `before`: the stored connection's status and provider account id, if there was one.
pub fn connected(
    connection_id: Uuid,
    new: &crate::store::NewConnection,
    before: Option<(&str, &str)>,
) -> OutboxEvent {
    let subject = Subject {
        connection_id,
        user: new.user_id,
        provider: new.provider,
        status: ConnectionState::Connected,
    };
    match before {
        None => build(EventType::Created, subject, None, Map::new()),
        Some((status, provider_user_id)) => build(
            EventType::Reconnected,
            subject,
            None,
            reconnected_fields(
                ConnectionState::from_db(status),
                provider_user_id != new.provider_user_id,
            ),
        ),
    }
}

/// `connection.refresh_failing`: refreshes of `subject` have failed since `since`; `last_error`
/// as stored (`unavailable: HTTP 503`).
pub fn refresh_failing(
    subject: Subject,
    last_error: Option<&str>,
    since: OffsetDateTime,
) -> OutboxEvent {
    build(
        EventType::RefreshFailing,
        subject,
        Some(&failure_reason(last_error)),
        failing_since_fields(since),
    )
}

/// `connection.recovered`: a refresh of `subject` succeeded after `refresh_failing` was sent
/// for the spell that began `since`.
pub fn recovered(subject: Subject, since: OffsetDateTime) -> OutboxEvent {
    build(
        EventType::Recovered,
        subject,
        None,
        failing_since_fields(since),
    )
}

/// `connection.disconnected` of the deleted connection `connection_id`.
pub fn disconnected(
    connection_id: Uuid,
    user: UserId,
    provider: ProviderId,
    by: DisconnectedBy,
) -> OutboxEvent {
    let subject = Subject {
        connection_id,
        user,
        provider,
        status: ConnectionState::NotConnected,
    };
    build(
        EventType::Disconnected,
        subject,
        None,
        disconnected_fields(by),
    )
}

/// `connection.needs_reauth`: `reason` as stored (`invalid_grant`, or with the provider's own
/// code after a space: `invalid_grant AADSTS70008`) becomes `reason` and `provider_code`.
pub fn needs_reauth(
    connection_id: Uuid,
    user: UserId,
    provider: ProviderId,
    reason: &str,
) -> OutboxEvent {
    let (code, provider_code) = match reason.split_once(' ') {
        Some((code, rest)) => (code, Some(rest.trim())),
        None => (reason, None),
    };
    let mut extra = Map::new();
    extra.insert(
        "provider_code".into(),
        json!(provider_code.filter(|c| !c.is_empty())),
    );
    build(
        EventType::NeedsReauth,
        Subject {
            connection_id,
            user,
            provider,
            status: ConnectionState::NeedsReauth,
        },
        Some(code),
        extra,
    )
}

/// `connection.reconnected`'s own fields.
pub fn reconnected_fields(
    previous_status: ConnectionState,
    previous_account_changed: bool,
) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert(
        "previous_account_changed".into(),
        json!(previous_account_changed),
    );
    extra.insert("previous_status".into(), json!(previous_status.as_db()));
    extra
}

/// `connection.disconnected`'s own fields.
pub fn disconnected_fields(by: DisconnectedBy) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("by".into(), json!(by.as_str()));
    extra
}

/// The field `refresh_failing` and `recovered` carry: when the failing spell began.
pub fn failing_since_fields(since: OffsetDateTime) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("failing_since".into(), json!(rfc3339_millis(since)));
    extra
}

/// The short reason code of a refresh failure as stored in `last_error` (`unavailable:
/// timeout` → `timeout`), bounded so a long one cannot bloat a payload.
pub fn failure_reason(stored: Option<&str>) -> String {
    let reason = stored
        .map(|r| r.strip_prefix("unavailable: ").unwrap_or(r))
        .unwrap_or("unavailable");
    reason.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_has_the_standard_webhooks_shape_and_no_token_fields() {
        let subject = Subject {
            connection_id: Uuid::nil(),
            user: UserId(Uuid::nil()),
            provider: ProviderId::Microsoft,
            status: ConnectionState::NeedsReauth,
        };
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_614_265_330_123_456_789).unwrap();
        let event = build_at(
            "msg_1".into(),
            at,
            EventType::NeedsReauth,
            subject,
            Some("invalid_grant"),
            Map::new(),
        );
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "msg_1",
                "type": "connection.needs_reauth",
                "timestamp": "2021-02-25T15:02:10.123Z",
                "data": {
                    "connection_id": Uuid::nil(),
                    "user_id": Uuid::nil(),
                    "provider": "microsoft",
                    "status": "needs_reauth",
                    "reason": "invalid_grant",
                }
            })
        );
    }

    #[test]
    fn failure_reasons_are_short_codes() {
        assert_eq!(failure_reason(Some("unavailable: timeout")), "timeout");
        assert_eq!(failure_reason(None), "unavailable");
        assert_eq!(failure_reason(Some(&"x".repeat(500))).len(), 120);
    }
}
