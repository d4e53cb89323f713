//! How one flush's counted rows are stored in the PostgreSQL journal (`connect.activity_batches
//! .counts`): one opaque value a second, so the database stores it without parsing it. A
//! version byte, then postcard (varints) of the distinct strings and the rows, each row naming
//! its strings by index: about 35 bytes a counted row, against about 60 as arrays. Only a dead
//! process's rows are ever read back; the writer folds its own from memory.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::activity::{ActivityKey, Tally};

/// The form written now; a value of any other version is left for a replica that reads it.
pub const VERSION: u8 = 1;

/// Most events one row may count (PostgreSQL's `bigint`).
const MAX_EVENTS: u64 = i64::MAX as u64;

/// The last minute a row may fall in: 9999-12-31 23:59 UTC.
const MAX_MINUTE: i64 = 253_402_300_740;

#[derive(Serialize, Deserialize)]
struct Encoded<'a> {
    #[serde(borrow)]
    strings: Vec<&'a str>,
    rows: Vec<Row>,
}

#[derive(Serialize, Deserialize)]
struct Row {
    /// Unix seconds of the minute's start.
    minute: i64,
    user: [u8; 16],
    /// Indexes into `strings`: provider, kind, actor, method, path, outcome.
    strings: [u32; 6],
    events: u64,
    /// Milliseconds after the minute's start (small varints).
    first: i64,
    last: i64,
}

/// One counted row as the log stores it; borrowed from an [`ActivityKey`] or a decoded batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub user: Uuid,
    pub provider: &'a str,
    pub kind: &'a str,
    pub actor: &'a str,
    /// Empty for tokens.
    pub method: &'a str,
    pub path: &'a str,
    pub outcome: &'a str,
    pub events: i64,
    /// Unix milliseconds.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// What identifies a row of the log, in the order folds upsert rows (so two folds lock log rows
/// in the same order).
pub type RowKey<'a> = (
    i64,
    Uuid,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

impl<'a> RowRef<'a> {
    pub fn key(&self) -> RowKey<'a> {
        (
            self.minute,
            self.user,
            self.provider,
            self.kind,
            self.actor,
            self.method,
            self.path,
            self.outcome,
        )
    }

    pub fn new(k: &'a ActivityKey, t: &Tally) -> Self {
        RowRef {
            minute: k.minute,
            user: k.user.0,
            provider: k.provider.as_str(),
            kind: k.kind.as_db(),
            actor: k.actor.as_db(),
            method: k.method.unwrap_or(""),
            path: k.path.as_deref().unwrap_or(""),
            outcome: k.outcome,
            events: i64::try_from(t.count).unwrap_or(i64::MAX),
            first_ms: t.first_ms,
            last_ms: t.last_ms,
        }
    }
}

/// Encodes counted rows for the journal.
pub fn encode(rows: &[(ActivityKey, Tally)]) -> StoreResult<Vec<u8>> {
    let mut index: std::collections::HashMap<&str, u32, foldhash::fast::RandomState> =
        Default::default();
    let mut strings = Vec::new();
    let mut intern = |s| {
        *index.entry(s).or_insert_with(|| {
            strings.push(s);
            u32::try_from(strings.len() - 1).unwrap_or(u32::MAX)
        })
    };
    let encoded_rows = rows
        .iter()
        .map(|(k, t)| {
            let r = RowRef::new(k, t);
            let start_ms = r.minute.saturating_mul(1000);
            Row {
                minute: r.minute,
                user: *r.user.as_bytes(),
                strings: [r.provider, r.kind, r.actor, r.method, r.path, r.outcome]
                    .map(&mut intern),
                events: t.count,
                first: r.first_ms.saturating_sub(start_ms),
                last: r.last_ms.saturating_sub(start_ms),
            }
        })
        .collect();
    let encoded = Encoded {
        strings,
        rows: encoded_rows,
    };
    let mut out = vec![VERSION];
    postcard::to_io(&encoded, &mut out)
        .map_err(|e| StoreError::Corrupt(format!("activity batch does not encode: {e}")))?;
    Ok(out)
}

/// A journal value decoded: its rows borrow their strings from the value.
pub struct Batch<'a>(Encoded<'a>);

impl<'a> Batch<'a> {
    /// Decodes a journal value; fails on a version this build does not know or on damage.
    pub fn decode(value: &'a [u8]) -> StoreResult<Self> {
        let corrupt = |why: String| StoreError::Corrupt(format!("activity batch: {why}"));
        let Some((&version, body)) = value.split_first() else {
            return Err(corrupt("empty".into()));
        };
        if version != VERSION {
            return Err(corrupt(format!(
                "version {version}, this build reads {VERSION}"
            )));
        }
        let encoded: Encoded<'a> =
            postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
        // Everything the log's constraints and the upsert need, so that a value that decodes
        // always folds: a row the log refuses would fail its whole fold, every time.
        let known = encoded.strings.len();
        for row in &encoded.rows {
            if row.strings.iter().any(|&i| i as usize >= known) {
                return Err(corrupt(format!(
                    "string index out of range in {:?}",
                    row.strings
                )));
            }
            let provider = encoded.strings[row.strings[0] as usize];
            let kind = encoded.strings[row.strings[1] as usize];
            if crate::provider::ProviderId::from_db(provider).is_none()
                || crate::activity::Kind::from_db(kind).is_none()
            {
                return Err(corrupt(format!(
                    "unknown provider {provider:?} or kind {kind:?}"
                )));
            }
            if !(1..=MAX_EVENTS).contains(&row.events)
                || !(0..=MAX_MINUTE).contains(&row.minute)
                || row.minute % 60 != 0
                || !(0..60_000).contains(&row.first)
                || !(row.first..60_000).contains(&row.last)
            {
                return Err(corrupt("a row's count or times are out of range".into()));
            }
        }
        Ok(Batch(encoded))
    }

    pub fn len(&self) -> usize {
        self.0.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.rows.is_empty()
    }

    /// The rows, as written.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = RowRef<'a>> + '_ {
        let s = &self.0.strings;
        self.0.rows.iter().map(move |r| {
            let start_ms = r.minute.saturating_mul(1000);
            // In range: checked by `decode`.
            let [provider, kind, actor, method, path, outcome] = r.strings.map(|i| s[i as usize]);
            RowRef {
                minute: r.minute,
                user: Uuid::from_bytes(r.user),
                provider,
                kind,
                actor,
                method,
                path,
                outcome,
                events: i64::try_from(r.events).unwrap_or(i64::MAX),
                first_ms: start_ms.saturating_add(r.first),
                last_ms: start_ms.saturating_add(r.last),
            }
        })
    }

    /// The events its rows count.
    pub fn events(&self) -> i64 {
        self.rows().fold(0, |sum, r| sum.saturating_add(r.events))
    }
}

/// The rows of `batches`, those of one key summed, in key order.
pub fn summed<'a>(batches: &[Batch<'a>]) -> Vec<RowRef<'a>> {
    let mut sums: std::collections::HashMap<RowKey<'a>, RowRef<'a>, foldhash::fast::RandomState> =
        Default::default();
    for row in batches.iter().flat_map(Batch::rows) {
        sums.entry(row.key())
            .and_modify(|sum| {
                sum.events = sum.events.saturating_add(row.events);
                sum.first_ms = sum.first_ms.min(row.first_ms);
                sum.last_ms = sum.last_ms.max(row.last_ms);
            })
            .or_insert(row);
    }
    let mut rows: Vec<RowRef<'a>> = sums.into_values().collect();
    rows.sort_unstable_by_key(RowRef::key);
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::activity::{Actor, Kind};
    use crate::model::UserId;
    use crate::provider::ProviderId;

    fn rows() -> Vec<(ActivityKey, Tally)> {
        let minute = 1_790_000_040;
        let user = Uuid::new_v4();
        let key = |kind, actor, method, path: Option<&str>, outcome| ActivityKey {
            minute,
            user: UserId(user),
            provider: ProviderId::Microsoft,
            kind,
            actor,
            method,
            path: path.map(Into::into),
            outcome,
        };
        vec![
            (
                key(Kind::Token, Actor::Key(Arc::from("n8n")), None, None, "ok"),
                Tally {
                    count: 3,
                    first_ms: minute * 1000 + 5,
                    last_ms: minute * 1000 + 59_999,
                },
            ),
            (
                key(
                    Kind::Proxy,
                    Actor::Key(Arc::from("n8n")),
                    Some("GET"),
                    Some("/me/messages/{id}"),
                    "2xx",
                ),
                Tally {
                    count: u64::from(u32::MAX) + 7,
                    first_ms: minute * 1000,
                    last_ms: minute * 1000 + 1,
                },
            ),
            (
                key(Kind::Token, Actor::Service, None, None, "reauth_required"),
                Tally {
                    count: 1,
                    first_ms: minute * 1000 + 7,
                    last_ms: minute * 1000 + 7,
                },
            ),
        ]
    }

    #[test]
    fn rows_decode_as_they_were_encoded() {
        let rows = rows();
        let value = encode(&rows).unwrap();
        let batch = Batch::decode(&value).unwrap();
        let expected: Vec<RowRef<'_>> = rows.iter().map(|(k, t)| RowRef::new(k, t)).collect();
        assert_eq!(batch.rows().collect::<Vec<_>>(), expected);
        assert_eq!(batch.events(), 3 + i64::from(u32::MAX) + 7 + 1);
        // The strings are stored once: "n8n" and "microsoft" once each.
        assert_eq!(value.windows(9).filter(|w| w == b"microsoft").count(), 1);
        assert_eq!(value.windows(3).filter(|w| w == b"n8n").count(), 1);
    }

    #[test]
    fn batches_sum_by_key_in_key_order() {
        let rows = rows();
        let (a, b) = (encode(&rows).unwrap(), encode(&rows[..1]).unwrap());
        let batches = [Batch::decode(&a).unwrap(), Batch::decode(&b).unwrap()];
        let sums = summed(&batches);
        assert_eq!(sums.len(), 3);
        assert!(sums.windows(2).all(|w| w[0].key() < w[1].key()));
        let token = sums
            .iter()
            .find(|r| r.actor == "n8n" && r.kind == "token")
            .unwrap();
        assert_eq!(token.events, 6);
        assert_eq!(token.first_ms, RowRef::new(&rows[0].0, &rows[0].1).first_ms);
        assert_eq!(
            sums.iter().map(|r| r.events).sum::<i64>(),
            batches.iter().map(Batch::events).sum::<i64>()
        );
    }

    #[test]
    fn a_foreign_version_or_damage_is_refused_not_misread() {
        let value = encode(&rows()).unwrap();
        let mut newer = value.clone();
        newer[0] = 2;
        assert!(Batch::decode(&newer).is_err());
        assert!(Batch::decode(&[]).is_err());
        assert!(Batch::decode(&value[..value.len() - 3]).is_err());
        // A row naming a string that is not there.
        let bad = Encoded {
            strings: vec!["microsoft"],
            rows: vec![Row {
                minute: 0,
                user: [0; 16],
                strings: [0, 0, 0, 0, 0, 1],
                events: 1,
                first: 0,
                last: 0,
            }],
        };
        let mut value = vec![VERSION];
        postcard::to_io(&bad, &mut value).unwrap();
        assert!(Batch::decode(&value).is_err());
        // Rows the log would refuse: no events, an unknown provider or kind, times outside the
        // minute, a minute that is not one.
        let row = |strings, events, minute, first, last| Row {
            minute,
            user: [1; 16],
            strings,
            events,
            first,
            last,
        };
        let strings = vec!["microsoft", "token", "n8n", "", "ok", "nowhere"];
        let ok = [0, 1, 2, 3, 3, 4];
        for (rows, refused) in [
            (vec![row(ok, 1, 60, 0, 59_999)], false),
            (vec![row(ok, 0, 60, 0, 0)], true),
            (vec![row(ok, u64::MAX, 60, 0, 0)], true),
            (vec![row([5, 1, 2, 3, 3, 4], 1, 60, 0, 0)], true),
            (vec![row([0, 5, 2, 3, 3, 4], 1, 60, 0, 0)], true),
            (vec![row(ok, 1, 61, 0, 0)], true),
            (vec![row(ok, 1, -60, 0, 0)], true),
            (vec![row(ok, 1, 60, 0, 60_000)], true),
            (vec![row(ok, 1, 60, 5, 4)], true),
            (vec![row(ok, 1, 60, -1, 0)], true),
        ] {
            let mut value = vec![VERSION];
            postcard::to_io(
                &Encoded {
                    strings: strings.clone(),
                    rows,
                },
                &mut value,
            )
            .unwrap();
            assert_eq!(Batch::decode(&value).is_err(), refused, "{value:?}");
        }
    }

    #[test]
    fn a_batch_of_twenty_thousand_rows_is_under_forty_bytes_a_row() {
        let minute = 1_790_000_040;
        let rows: Vec<(ActivityKey, Tally)> = (0..20_000)
            .map(|i| {
                (
                    ActivityKey {
                        minute,
                        user: UserId(Uuid::new_v4()),
                        provider: ProviderId::Microsoft,
                        kind: Kind::Token,
                        actor: Actor::Key(Arc::from("bench")),
                        method: None,
                        path: None,
                        outcome: "ok",
                    },
                    Tally {
                        count: 1 + i % 5,
                        first_ms: minute * 1000 + 1234,
                        last_ms: minute * 1000 + 59_000,
                    },
                )
            })
            .collect();
        let value = encode(&rows).unwrap();
        assert!(value.len() < 40 * rows.len(), "{} bytes", value.len());
        assert_eq!(Batch::decode(&value).unwrap().len(), 20_000);
    }
}
