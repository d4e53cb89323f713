//! The storage contract kept in this process's memory, for tests of the use cases: the same
//! rules as the databases (versions and compare-and-swap, leases with an owner and an expiry, a
//! cooldown checked at claim, single-use flows, idle claims that never overlap, key ids,
//! re-sealing that loses to any write in between). The contract tests run it beside PostgreSQL
//! and SQLite, so it cannot drift. It is never offered as a database to users: nothing here
//! survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Backend, Flow, ListFilter, NewConnection, Refreshed, SealedConnection, StoreResult, TokenRow,
};
use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;

/// Flows this long past their expiry are forgotten when a new one starts (as in the databases).
const FORGET_FLOWS_AFTER: time::Duration = time::Duration::hours(1);

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Tables>>,
    /// The activity log's rows (`super::activity`).
    pub(super) activity: Arc<Mutex<Vec<crate::activity::ActivityEntry>>>,
}

#[derive(Debug, Default)]
struct Tables {
    connections: HashMap<(UserId, ProviderId), Row>,
    flows: HashMap<[u8; 32], Flow>,
}

/// One `integration_tokens` row.
#[derive(Clone, Debug)]
struct Row {
    id: Uuid,
    user_id: UserId,
    provider: ProviderId,
    state: ConnectionState,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    key_id: String,
    expires_at: OffsetDateTime,
    version: i64,
    provider_user_id: String,
    provider_email: Option<String>,
    display_name: Option<String>,
    scopes: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    last_refreshed_at: Option<OffsetDateTime>,
    last_error: Option<String>,
    lease_owner: Option<Uuid>,
    lease_until: Option<OffsetDateTime>,
    cooldown_until: Option<OffsetDateTime>,
}

impl Row {
    fn token_row(&self) -> TokenRow {
        TokenRow {
            id: self.id,
            user_id: self.user_id,
            provider: self.provider,
            state: self.state,
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            key_id: self.key_id.clone(),
            expires_at: self.expires_at,
            version: self.version,
            provider_user_id: self.provider_user_id.clone(),
            provider_email: self.provider_email.clone(),
            scopes: self.scopes.clone(),
            cooldown_until: self.cooldown_until,
        }
    }

    fn summary(&self) -> ConnectionSummary {
        ConnectionSummary {
            user_id: self.user_id,
            provider: self.provider,
            state: self.state,
            provider_email: self.provider_email.clone(),
            display_name: self.display_name.clone(),
            scopes: self.scopes.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_refreshed_at: self.last_refreshed_at,
        }
    }

    fn sealed(&self) -> SealedConnection {
        SealedConnection {
            id: self.id,
            user_id: self.user_id,
            provider: self.provider,
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            key_id: self.key_id.clone(),
            version: self.version,
        }
    }

    /// Free to claim: connected, no live lease, no cooldown running.
    fn claimable(&self, now: OffsetDateTime) -> bool {
        self.state == ConnectionState::Connected
            && self.lease_until.is_none_or(|until| until <= now)
            && self.cooldown_until.is_none_or(|until| until <= now)
    }

    fn lease_to(&mut self, owner: Uuid, lease: Duration, now: OffsetDateTime) {
        self.lease_owner = Some(owner);
        self.lease_until = Some(
            time::Duration::try_from(lease)
                .ok()
                .and_then(|d| now.checked_add(d))
                .unwrap_or(now + time::Duration::days(1)),
        );
    }

    fn release(&mut self) {
        self.lease_owner = None;
        self.lease_until = None;
    }
}

impl MemoryStore {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        // No operation leaves the tables half-written, so a panicked holder leaves them usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_row<T>(&self, id: Uuid, f: impl FnOnce(&mut Row) -> T) -> Option<T> {
        self.tables()
            .connections
            .values_mut()
            .find(|row| row.id == id)
            .map(f)
    }
}

impl Backend for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn user_connections(&self, user: UserId) -> StoreResult<Vec<ConnectionSummary>> {
        let tables = self.tables();
        let mut mine: Vec<_> = tables
            .connections
            .values()
            .filter(|row| row.user_id == user)
            .map(Row::summary)
            .collect();
        mine.sort_by_key(|c| c.provider.as_str());
        Ok(mine)
    }

    async fn user_connection(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> StoreResult<Option<ConnectionSummary>> {
        Ok(self
            .tables()
            .connections
            .get(&(user, provider))
            .map(Row::summary))
    }

    async fn delete_connection(&self, user: UserId, provider: ProviderId) -> StoreResult<bool> {
        Ok(self
            .tables()
            .connections
            .remove(&(user, provider))
            .is_some())
    }

    async fn upsert_connection(&self, c: &NewConnection) -> StoreResult<()> {
        let now = OffsetDateTime::now_utc();
        let mut tables = self.tables();
        let previous = tables.connections.get(&(c.user_id, c.provider));
        let row = Row {
            id: previous.map_or_else(Uuid::new_v4, |p| p.id),
            user_id: c.user_id,
            provider: c.provider,
            state: ConnectionState::Connected,
            access_token: c.access_token.clone(),
            refresh_token: c.refresh_token.clone(),
            key_id: c.key_id.clone(),
            expires_at: c.expires_at,
            version: previous.map_or(1, |p| p.version + 1),
            provider_user_id: c.provider_user_id.clone(),
            provider_email: c.provider_email.clone(),
            display_name: c.display_name.clone(),
            scopes: c.scopes.clone(),
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
            last_refreshed_at: Some(now),
            last_error: None,
            lease_owner: None,
            lease_until: None,
            cooldown_until: None,
        };
        tables.connections.insert((c.user_id, c.provider), row);
        Ok(())
    }

    async fn list_connections(&self, f: &ListFilter) -> StoreResult<Vec<ConnectionListing>> {
        let tables = self.tables();
        let mut rows: Vec<&Row> = tables
            .connections
            .values()
            .filter(|r| f.provider.is_none_or(|p| r.provider == p))
            .filter(|r| f.state.is_none_or(|s| r.state == s))
            .filter(|r| f.after.is_none_or(|after| r.id > after))
            .collect();
        rows.sort_by_key(|r| r.id);
        Ok(rows
            .into_iter()
            .take(f.limit as usize)
            .map(|r| ConnectionListing {
                id: r.id,
                user_id: r.user_id.0,
                provider: r.provider.as_str(),
                status: r.state,
                provider_email: r.provider_email.clone(),
                display_name: r.display_name.clone(),
                scopes: r.scopes.clone(),
                expires_at: r.expires_at,
                connected_at: r.created_at,
                updated_at: r.updated_at,
                last_refreshed_at: r.last_refreshed_at,
            })
            .collect())
    }

    async fn insert_flow(&self, flow: &Flow) -> StoreResult<()> {
        let forget_before = OffsetDateTime::now_utc() - FORGET_FLOWS_AFTER;
        let mut tables = self.tables();
        tables.flows.retain(|_, f| f.expires_at >= forget_before);
        tables.flows.insert(flow.state_hash, flow.clone());
        Ok(())
    }

    async fn take_flow(&self, state_hash: &[u8; 32]) -> StoreResult<Option<Flow>> {
        Ok(self.tables().flows.remove(state_hash))
    }

    async fn connections_not_on_key(
        &self,
        active_key: &str,
        limit: u32,
    ) -> StoreResult<Vec<SealedConnection>> {
        let tables = self.tables();
        let mut rows: Vec<_> = tables
            .connections
            .values()
            .filter(|r| r.key_id != active_key)
            .map(Row::sealed)
            .collect();
        rows.sort_by_key(|r| r.id);
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn token_row(&self, user: UserId, provider: ProviderId) -> StoreResult<Option<TokenRow>> {
        Ok(self
            .tables()
            .connections
            .get(&(user, provider))
            .map(Row::token_row))
    }

    async fn claim_refresh_lease(
        &self,
        id: Uuid,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Option<TokenRow>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .with_row(id, |row| {
                row.claimable(now).then(|| {
                    row.lease_to(owner, lease, now);
                    row.token_row()
                })
            })
            .flatten())
    }

    async fn store_refreshed(
        &self,
        id: Uuid,
        version: i64,
        owner: Uuid,
        r: &Refreshed,
    ) -> StoreResult<bool> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .with_row(id, |row| {
                if row.version != version || row.lease_owner != Some(owner) {
                    return false;
                }
                row.access_token = r.access_token.clone();
                row.refresh_token = Some(r.refresh_token.clone());
                row.key_id = r.key_id.clone();
                row.expires_at = r.expires_at;
                if let Some(scopes) = &r.scopes {
                    row.scopes = scopes.clone();
                }
                row.last_refreshed_at = Some(now);
                row.last_error = None;
                row.cooldown_until = None;
                row.release();
                row.version += 1;
                row.updated_at = now;
                true
            })
            .unwrap_or(false))
    }

    async fn mark_needs_reauth(
        &self,
        id: Uuid,
        version: i64,
        owner: Uuid,
        reason: &str,
    ) -> StoreResult<bool> {
        Ok(self
            .with_row(id, |row| {
                if row.version != version || row.lease_owner != Some(owner) {
                    return false;
                }
                row.state = ConnectionState::NeedsReauth;
                row.last_error = Some(reason.to_owned());
                row.release();
                row.version += 1;
                row.updated_at = OffsetDateTime::now_utc();
                true
            })
            .unwrap_or(false))
    }

    async fn release_refresh_lease(
        &self,
        id: Uuid,
        owner: Uuid,
        cooldown_until: Option<OffsetDateTime>,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        self.with_row(id, |row| {
            if row.lease_owner != Some(owner) {
                return;
            }
            row.release();
            row.cooldown_until = cooldown_until.or(row.cooldown_until);
            if let Some(reason) = reason {
                row.last_error = Some(reason.to_owned());
            }
        });
        Ok(())
    }

    async fn claim_idle_connections(
        &self,
        idle_since: OffsetDateTime,
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<TokenRow>> {
        let now = OffsetDateTime::now_utc();
        let mut tables = self.tables();
        let idle = |row: &Row| row.last_refreshed_at.unwrap_or(row.created_at);
        let mut rows: Vec<&mut Row> = tables
            .connections
            .values_mut()
            .filter(|row| idle(row) < idle_since && row.claimable(now))
            .collect();
        rows.sort_by_key(|row| idle(row));
        Ok(rows
            .into_iter()
            .take(limit as usize)
            .map(|row| {
                row.lease_to(owner, lease, now);
                row.token_row()
            })
            .collect())
    }

    async fn key_ids_in_use(&self) -> StoreResult<Vec<String>> {
        let mut ids: Vec<String> = self
            .tables()
            .connections
            .values()
            .map(|r| r.key_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn one_sealed_with(&self, key_id: &str) -> StoreResult<Option<SealedConnection>> {
        Ok(self
            .tables()
            .connections
            .values()
            .find(|r| r.key_id == key_id)
            .map(Row::sealed))
    }

    async fn reseal_connection(
        &self,
        old: &SealedConnection,
        access_token: &[u8],
        refresh_token: Option<&[u8]>,
        key_id: &str,
    ) -> StoreResult<bool> {
        Ok(self
            .with_row(old.id, |row| {
                if row.version != old.version || row.key_id != old.key_id {
                    return false;
                }
                row.access_token = access_token.to_vec();
                row.refresh_token = refresh_token.map(<[u8]>::to_vec);
                row.key_id = key_id.to_owned();
                true
            })
            .unwrap_or(false))
    }

    async fn release_leases_of(&self, owner: Uuid) -> StoreResult<u64> {
        let mut released = 0;
        for row in self.tables().connections.values_mut() {
            if row.lease_owner == Some(owner) {
                row.release();
                released += 1;
            }
        }
        Ok(released)
    }

    async fn close(&self) {}
}
