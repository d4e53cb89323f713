//! Reading the activity log: the operator's filtered, paged query and a signed-in user's short
//! history of one connection with its "last used by" summary.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ActivityEntry, ActivityFilter};
use crate::error::{Error, Result};
use crate::model::UserId;
use crate::provider::ProviderId;
use crate::store::Store;

/// Rows a user's history shows.
pub const USER_ENTRIES: u32 = 20;

/// Who last used a connection, and when.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct LastUsed {
    /// The service key's name (the backend, e.g. `n8n`).
    pub key_name: Option<String>,
    /// `token` or `proxy`.
    pub kind: super::Kind,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// A user's view of one connection's activity.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UserActivity {
    #[schema(example = "microsoft")]
    pub provider: &'static str,
    /// The newest use by a backend (a token handed out or a proxied call), if any is kept.
    pub last_used: Option<LastUsed>,
    /// The newest rows (at most 20), newest first: uses by backends and the connection's own
    /// changes (connected, reconnected, disconnected, needs_reauth).
    pub entries: Vec<ActivityEntry>,
}

/// The signed-in user's recent activity on `provider`.
pub async fn for_user(store: &Store, user: UserId, provider: ProviderId) -> Result<UserActivity> {
    let mut entries = store.user_activity(user, provider, USER_ENTRIES).await?;
    let last_used = entries.iter().find(|e| e.kind.is_use()).map(|e| LastUsed {
        key_name: e.key_name.clone(),
        kind: e.kind,
        at: e.last_seen,
    });
    entries.truncate(USER_ENTRIES as usize);
    Ok(UserActivity {
        provider: provider.as_str(),
        last_used,
        entries,
    })
}

/// A page of the operator's query, and the cursor of the next page.
pub async fn query(
    store: &Store,
    filter: &ActivityFilter,
) -> Result<(Vec<ActivityEntry>, Option<String>)> {
    let page = store.query_activity(filter).await?;
    let next = (page.len() == filter.limit as usize)
        .then(|| page.last().map(|e| cursor(e.minute.unix_timestamp(), e.id)))
        .flatten();
    Ok((page, next))
}

/// The opaque cursor after a row: its minute and id.
pub fn cursor(minute: i64, id: i64) -> String {
    format!("{minute}_{id}")
}

/// Reads a cursor this service issued.
pub fn parse_cursor(text: &str) -> Result<(i64, i64)> {
    let bad = || Error::InvalidRequest("cursor is not one this service issued".into());
    let (minute, id) = text.split_once('_').ok_or_else(bad)?;
    Ok((
        minute.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_others_are_refused() {
        assert_eq!(
            super::parse_cursor(&super::cursor(1_700_000_040, 42)).unwrap(),
            (1_700_000_040, 42)
        );
        for bad in ["", "42", "a_b", "1_", "_1", "1_2_3"] {
            assert!(super::parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
