-- Celeste Connect, PostgreSQL: signed connection webhooks (docs/webhooks.md).
--
-- An outbox: every state change of a connection (connect, reconnect, disconnect, needs_reauth,
-- a refresh failing for long, its recovery) writes its event and one delivery per configured
-- endpoint in the same transaction as the change, so no event is lost to a crash; a worker in
-- each replica claims due deliveries with FOR UPDATE SKIP LOCKED and a lease. Payloads carry
-- no token and no provider account email. Endpoint URLs and signing secrets live in the
-- configuration only; `webhook_endpoints` keeps just whether an endpoint was disabled (by a
-- 410) and for which URL (a SHA-256 of it). The tables belong to connect_service alone.
-- Re-runnable.

-- A failing spell of refreshes: when it started, and whether refresh_failing was sent for it.
alter table connect.integration_tokens add column if not exists refresh_failing_since timestamptz;
alter table connect.integration_tokens
  add column if not exists refresh_failing_notified boolean not null default false;

create table if not exists connect.webhook_events (
  id         text primary key,               -- `msg_…`, the webhook-id receivers dedupe on
  type       text not null,                  -- connection.created, …
  body       text not null,                  -- the exact JSON that is signed and sent
  created_at timestamptz not null default now()
);

create table if not exists connect.webhook_deliveries (
  id              uuid primary key,          -- UUIDv7: time-ordered, the listing's cursor
  event_id        text not null references connect.webhook_events (id) on delete cascade,
  endpoint        text not null,             -- the configured endpoint's name
  status          text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts        integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_owner     uuid,                      -- the replica sending it now
  lease_until     timestamptz,
  last_attempt_at timestamptz,
  last_status     integer,                   -- the receiver's HTTP status, if it answered
  last_error      text,                      -- a short reason, never a secret
  last_response   text,                      -- the first bytes of the receiver's answer
  created_at      timestamptz not null default now(),
  delivered_at    timestamptz,
  unique (event_id, endpoint)
);
create index if not exists webhook_deliveries_due
  on connect.webhook_deliveries (next_attempt_at) where status = 'pending';
create index if not exists webhook_deliveries_endpoint on connect.webhook_deliveries (endpoint, id);
create index if not exists webhook_deliveries_created_at on connect.webhook_deliveries (created_at);

create table if not exists connect.webhook_endpoints (
  name            text primary key,
  disabled_at     timestamptz,               -- set by a 410 Gone; null: enabled
  disabled_reason text,
  url_sha256      text                       -- the URL it was disabled for: a new URL re-enables
);

alter table connect.webhook_events enable row level security;
alter table connect.webhook_events force row level security;
alter table connect.webhook_deliveries enable row level security;
alter table connect.webhook_deliveries force row level security;
alter table connect.webhook_endpoints enable row level security;
alter table connect.webhook_endpoints force row level security;

revoke all on connect.webhook_events, connect.webhook_deliveries, connect.webhook_endpoints
  from public, anon, authenticated, connect_user_reader;
grant select, insert, update, delete
  on connect.webhook_events, connect.webhook_deliveries, connect.webhook_endpoints to connect_service;
drop policy if exists service_all on connect.webhook_events;
create policy service_all on connect.webhook_events
  for all to connect_service using (true) with check (true);
drop policy if exists service_all on connect.webhook_deliveries;
create policy service_all on connect.webhook_deliveries
  for all to connect_service using (true) with check (true);
drop policy if exists service_all on connect.webhook_endpoints;
create policy service_all on connect.webhook_endpoints
  for all to connect_service using (true) with check (true);

create or replace trigger webhook_events_refuse_truncate
  before truncate on connect.webhook_events
  for each statement execute function connect.refuse_truncate();
create or replace trigger webhook_deliveries_refuse_truncate
  before truncate on connect.webhook_deliveries
  for each statement execute function connect.refuse_truncate();
create or replace trigger webhook_endpoints_refuse_truncate
  before truncate on connect.webhook_endpoints
  for each statement execute function connect.refuse_truncate();
