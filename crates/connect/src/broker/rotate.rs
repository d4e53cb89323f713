//! Re-encryption of stored tokens under the active key (`celeste-connect rotate-key`). Works in
//! batches of rows not yet on the active key, writes each row only if no refresh changed it in
//! between, and can be stopped and rerun at any point: a finished run is a no-op.

use crate::error::{Error, Result};
use crate::store::Store;
use crate::vault::Keyring;

use super::sealed::token_place;

/// What a rotation run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    pub resealed: u64,
    /// Rows a concurrent writer changed first; a rerun picks them up if still on an old key.
    pub skipped: u64,
}

pub async fn rotate_keys(store: &Store, keyring: &Keyring, batch: u32) -> Result<Rotation> {
    let active = keyring.active_key_id().to_owned();
    let mut done = Rotation::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        let rows = store.connections_not_on_key(&active, batch).await?;
        let fresh: Vec<_> = rows
            .into_iter()
            .filter(|r| seen.insert((r.id, r.version)))
            .collect();
        if fresh.is_empty() {
            return Ok(done);
        }
        for row in fresh {
            let open = |column, sealed: &[u8]| {
                keyring
                    .open(&token_place(column, row.user_id, row.provider), sealed)
                    .map_err(|e| Error::Internal(format!("connection {}: {e}", row.id)))
            };
            let access = open("access_token", &row.access_token)?;
            let refresh = row
                .refresh_token
                .as_deref()
                .map(|rt| open("refresh_token", rt))
                .transpose()?;
            let seal = |column, plain: &[u8]| {
                keyring
                    .seal(&token_place(column, row.user_id, row.provider), plain)
                    .map_err(|e| Error::Internal(e.to_string()))
            };
            let new_access = seal("access_token", &access)?;
            let new_refresh = refresh
                .as_deref()
                .map(|rt| seal("refresh_token", rt))
                .transpose()?;
            if store
                .reseal_connection(&row, &new_access, new_refresh.as_deref(), &active)
                .await?
            {
                done.resealed += 1;
            } else {
                done.skipped += 1;
            }
        }
    }
}
