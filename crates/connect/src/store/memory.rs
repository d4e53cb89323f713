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

use super::outbox::{
    AttemptOutcome, Backlog, ClaimedDelivery, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    DisabledEndpoint, Outbox, OutboxBackend, Retried,
};
use super::{
    Backend, Flow, ListFilter, NewConnection, Refreshed, SealedConnection, StoreResult, TokenRow,
};
use crate::model::{ConnectionListing, ConnectionState, ConnectionSummary, UserId};
use crate::provider::ProviderId;
use crate::webhooks::event::{self, DisconnectedBy, OutboxEvent, Subject};

/// Flows this long past their expiry are forgotten when a new one starts (as in the databases).
const FORGET_FLOWS_AFTER: time::Duration = time::Duration::hours(1);

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Tables>>,
    outbox: Arc<Outbox>,
    /// The activity log's rows (`super::activity`).
    pub(super) activity: Arc<Mutex<Vec<crate::activity::ActivityEntry>>>,
}

#[derive(Debug, Default)]
struct Tables {
    connections: HashMap<(UserId, ProviderId), Row>,
    flows: HashMap<[u8; 32], Flow>,
    events: HashMap<String, OutboxEvent>,
    deliveries: Vec<Delivery>,
    disabled: Vec<DisabledEndpoint>,
}

/// One `webhook_deliveries` row.
#[derive(Clone, Debug)]
struct Delivery {
    id: Uuid,
    event_id: String,
    endpoint: String,
    status: DeliveryStatus,
    attempts: u32,
    next_attempt_at: OffsetDateTime,
    lease_owner: Option<Uuid>,
    lease_until: Option<OffsetDateTime>,
    last_attempt_at: Option<OffsetDateTime>,
    last_status: Option<u16>,
    last_error: Option<String>,
    last_response: Option<String>,
    created_at: OffsetDateTime,
    delivered_at: Option<OffsetDateTime>,
}

impl Tables {
    /// The event and one pending delivery per endpoint, as the databases write them.
    fn write_event(&mut self, endpoints: &[String], event: OutboxEvent) {
        let now = OffsetDateTime::now_utc();
        for endpoint in endpoints {
            self.deliveries.push(Delivery {
                id: Uuid::now_v7(),
                event_id: event.id.clone(),
                endpoint: endpoint.clone(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_attempt_at: now,
                lease_owner: None,
                lease_until: None,
                last_attempt_at: None,
                last_status: None,
                last_error: None,
                last_response: None,
                created_at: now,
                delivered_at: None,
            });
        }
        self.events.insert(event.id.clone(), event);
    }

    fn record(&self, d: &Delivery) -> DeliveryRecord {
        let event = self.events.get(&d.event_id);
        DeliveryRecord {
            id: d.id,
            event_id: d.event_id.clone(),
            event_type: event
                .map(|e| e.event_type.as_str().to_owned())
                .unwrap_or_default(),
            endpoint: d.endpoint.clone(),
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            last_response: d.last_response.clone(),
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            body: event.map(|e| e.body.clone()).unwrap_or_default(),
        }
    }
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
    /// When the current spell of failing refreshes began, and whether it was reported.
    failing_since: Option<OffsetDateTime>,
    failing_notified: bool,
}

impl Row {
    fn subject(&self) -> Subject {
        Subject {
            connection_id: self.id,
            user: self.user_id,
            provider: self.provider,
            status: self.state,
        }
    }

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
            id: self.id,
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
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = outbox;
        self
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Runs `f` on the row with `id` and the tables, writing the event it returns (if webhooks
    /// are configured) under the same lock, as a transaction would.
    fn change_row<T>(
        &self,
        id: Uuid,
        f: impl FnOnce(&mut Row) -> (T, Option<OutboxEvent>),
    ) -> Option<T> {
        let mut tables = self.tables();
        let (value, event) = f(tables.connections.values_mut().find(|row| row.id == id)?);
        if let (Some(event), true) = (event, self.outbox.is_active()) {
            tables.write_event(&self.outbox.endpoints, event);
            drop(tables);
            self.outbox.announce(true);
        }
        Some(value)
    }

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

    async fn delete_connection(
        &self,
        user: UserId,
        provider: ProviderId,
        by: DisconnectedBy,
    ) -> StoreResult<bool> {
        let mut tables = self.tables();
        let Some(row) = tables.connections.remove(&(user, provider)) else {
            return Ok(false);
        };
        if self.outbox.is_active() {
            let event = event::disconnected(row.id, user, provider, by);
            tables.write_event(&self.outbox.endpoints, event);
            drop(tables);
            self.outbox.announce(true);
        }
        Ok(true)
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
            failing_since: None,
            failing_notified: false,
        };
        let event = event::connected(
            row.id,
            c,
            previous.map(|p| (p.state.as_db(), p.provider_user_id.as_str())),
        );
        tables.connections.insert((c.user_id, c.provider), row);
        if self.outbox.is_active() {
            tables.write_event(&self.outbox.endpoints, event);
            drop(tables);
            self.outbox.announce(true);
        }
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

    async fn account_shared(
        &self,
        provider: ProviderId,
        provider_user_id: &str,
        except: UserId,
    ) -> StoreResult<bool> {
        Ok(self.tables().connections.values().any(|row| {
            row.provider == provider
                && row.provider_user_id == provider_user_id
                && row.user_id != except
        }))
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
            .change_row(id, |row| {
                if row.version != version || row.lease_owner != Some(owner) {
                    return (false, None);
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
                let recovered = match (row.failing_since.take(), row.failing_notified) {
                    (Some(since), true) => Some(event::recovered(row.subject(), since)),
                    _ => None,
                };
                row.failing_notified = false;
                (true, recovered)
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
            .change_row(id, |row| {
                if row.version != version || row.lease_owner != Some(owner) {
                    return (false, None);
                }
                row.state = ConnectionState::NeedsReauth;
                row.last_error = Some(reason.to_owned());
                row.release();
                row.version += 1;
                row.updated_at = OffsetDateTime::now_utc();
                row.failing_since = None;
                row.failing_notified = false;
                let event = event::needs_reauth(row.id, row.user_id, row.provider, reason);
                (true, Some(event))
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
        let now = OffsetDateTime::now_utc();
        let failing_after =
            time::Duration::try_from(self.outbox.failing_after).unwrap_or(time::Duration::MAX);
        self.change_row(id, |row| {
            if row.lease_owner != Some(owner) {
                return ((), None);
            }
            row.release();
            row.cooldown_until = cooldown_until.or(row.cooldown_until);
            if let Some(reason) = reason {
                row.last_error = Some(reason.to_owned());
            }
            if cooldown_until.is_none() {
                return ((), None);
            }
            // A cooldown means the refresh failed: a failing spell starts (or goes on).
            let since = *row.failing_since.get_or_insert(now);
            if row.failing_notified || now - since < failing_after {
                return ((), None);
            }
            row.failing_notified = true;
            let event = event::refresh_failing(row.subject(), row.last_error.as_deref(), since);
            ((), Some(event))
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

impl OutboxBackend for MemoryStore {
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        limit: u32,
        owner: Uuid,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let now = OffsetDateTime::now_utc();
        let until = time::Duration::try_from(lease)
            .ok()
            .and_then(|d| now.checked_add(d))
            .unwrap_or(now + time::Duration::days(1));
        let mut tables = self.tables();
        let mut due: Vec<usize> = (0..tables.deliveries.len())
            .filter(|&i| {
                let d = &tables.deliveries[i];
                d.status == DeliveryStatus::Pending
                    && d.next_attempt_at <= now
                    && endpoints.contains(&d.endpoint)
                    && d.lease_until.is_none_or(|until| until < now)
            })
            .collect();
        due.sort_by_key(|&i| tables.deliveries[i].next_attempt_at);
        due.truncate(limit as usize);
        let mut claimed = Vec::with_capacity(due.len());
        for i in due {
            let d = &mut tables.deliveries[i];
            d.lease_owner = Some(owner);
            d.lease_until = Some(until);
            let (id, event_id, endpoint, attempts) =
                (d.id, d.event_id.clone(), d.endpoint.clone(), d.attempts);
            let body = tables
                .events
                .get(&event_id)
                .map(|e| e.body.clone())
                .unwrap_or_default();
            claimed.push(ClaimedDelivery {
                id,
                event_id,
                endpoint,
                attempts,
                body,
            });
        }
        Ok(claimed)
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        endpoint: &str,
        owner: Uuid,
        o: &AttemptOutcome,
    ) -> StoreResult<bool> {
        let now = OffsetDateTime::now_utc();
        let mut tables = self.tables();
        let Some(d) = tables
            .deliveries
            .iter_mut()
            .find(|d| d.id == id && d.lease_owner == Some(owner))
        else {
            return Ok(false);
        };
        d.status = o.status;
        d.attempts += 1;
        if let Some(next) = o.next_attempt_at {
            d.next_attempt_at = next;
        }
        d.last_attempt_at = Some(now);
        d.last_status = o.http_status;
        d.last_error = o.error.clone();
        d.last_response = o.response.clone();
        if o.status == DeliveryStatus::Delivered {
            d.delivered_at = Some(now);
        }
        d.lease_owner = None;
        d.lease_until = None;
        if let Some(url_sha256) = &o.disable_endpoint {
            tables.disabled.retain(|e| e.name != endpoint);
            tables.disabled.push(DisabledEndpoint {
                name: endpoint.to_owned(),
                url_sha256: Some(url_sha256.clone()),
                disabled_at: now,
                reason: Some("410 Gone".to_owned()),
            });
        }
        Ok(true)
    }

    async fn disabled_endpoints(&self) -> StoreResult<Vec<DisabledEndpoint>> {
        let mut disabled = self.tables().disabled.clone();
        disabled.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(disabled)
    }

    async fn enable_endpoint(&self, name: &str) -> StoreResult<bool> {
        let mut tables = self.tables();
        let before = tables.disabled.len();
        tables.disabled.retain(|e| e.name != name);
        Ok(tables.disabled.len() < before)
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> StoreResult<Vec<DeliveryRecord>> {
        let tables = self.tables();
        let mut rows: Vec<&Delivery> = tables
            .deliveries
            .iter()
            .filter(|d| f.endpoint.as_ref().is_none_or(|e| &d.endpoint == e))
            .filter(|d| f.status.is_none_or(|s| d.status == s))
            .filter(|d| f.since.is_none_or(|t| d.created_at >= t))
            .filter(|d| f.until.is_none_or(|t| d.created_at < t))
            .filter(|d| f.before.is_none_or(|b| d.id < b))
            .collect();
        rows.sort_by_key(|d| std::cmp::Reverse(d.id));
        Ok(rows
            .into_iter()
            .take(f.limit as usize)
            .map(|d| tables.record(d))
            .collect())
    }

    async fn delivery(&self, id: Uuid) -> StoreResult<Option<DeliveryRecord>> {
        let tables = self.tables();
        Ok(tables
            .deliveries
            .iter()
            .find(|d| d.id == id)
            .map(|d| tables.record(d)))
    }

    async fn retry_delivery(&self, id: Uuid) -> StoreResult<Option<Retried>> {
        let now = OffsetDateTime::now_utc();
        let queued = {
            let mut tables = self.tables();
            let found = tables
                .deliveries
                .iter_mut()
                .find(|d| d.id == id && d.lease_until.is_none_or(|until| until < now));
            match found {
                Some(d) => {
                    d.status = DeliveryStatus::Pending;
                    d.attempts = 0;
                    d.next_attempt_at = now;
                    d.delivered_at = None;
                    true
                }
                None => false,
            }
        };
        let record = self.delivery(id).await?;
        self.outbox.written.notify_one();
        Ok(record.map(|record| Retried { record, queued }))
    }

    async fn delivery_backlog(&self) -> StoreResult<Backlog> {
        let tables = self.tables();
        let pending = tables
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::Pending);
        Ok(Backlog {
            pending: pending.clone().count() as u64,
            oldest_created_at: pending.map(|d| d.created_at).min(),
        })
    }

    async fn release_deliveries_of(&self, owner: Uuid) -> StoreResult<u64> {
        let mut released = 0;
        for d in &mut self.tables().deliveries {
            if d.lease_owner == Some(owner) {
                d.lease_owner = None;
                d.lease_until = None;
                released += 1;
            }
        }
        Ok(released)
    }
}
