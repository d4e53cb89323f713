-- Celeste Connect, embedded SQLite: signed connection webhooks (the PostgreSQL tables of
-- 0004_webhooks.sql; see there and docs/webhooks.md).

alter table integration_tokens add column refresh_failing_since integer;
alter table integration_tokens add column refresh_failing_notified integer not null default 0;

create table if not exists webhook_events (
  id         text primary key,
  type       text not null,
  body       text not null,
  created_at integer not null default (unixepoch())
);

create table if not exists webhook_deliveries (
  id              text primary key,
  event_id        text not null references webhook_events (id) on delete cascade,
  endpoint        text not null,
  status          text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts        integer not null default 0,
  next_attempt_at integer not null default (unixepoch()),
  lease_owner     text,
  lease_until     integer,
  last_attempt_at integer,
  last_status     integer,
  last_error      text,
  last_response   text,
  created_at      integer not null default (unixepoch()),
  delivered_at    integer,
  unique (event_id, endpoint)
);
create index if not exists webhook_deliveries_due
  on webhook_deliveries (next_attempt_at) where status = 'pending';
create index if not exists webhook_deliveries_endpoint on webhook_deliveries (endpoint, id);
create index if not exists webhook_deliveries_created_at on webhook_deliveries (created_at);

create table if not exists webhook_endpoints (
  name            text primary key,
  disabled_at     integer,
  disabled_reason text,
  url_sha256      text
);
