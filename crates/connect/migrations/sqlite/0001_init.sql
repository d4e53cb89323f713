-- Celeste Connect, embedded SQLite schema: the PostgreSQL tables minus roles and RLS.
-- uuid -> TEXT, timestamptz -> INTEGER unix seconds, text[] -> JSON TEXT, bytea -> BLOB.

create table if not exists integration_tokens (
  id                  text primary key,
  user_id             text not null,
  provider            text not null check (provider in ('microsoft', 'google', 'dropbox')),
  access_token        blob not null,
  refresh_token       blob,
  key_id              text not null,
  expires_at          integer not null,
  provider_user_id    text not null,
  provider_email      text,
  display_name        text,
  scopes              text not null default '[]',
  status              text not null default 'connected' check (status in ('connected', 'needs_reauth')),
  last_refreshed_at   integer,
  last_error          text,
  refresh_lease_owner text,
  refresh_lease_until integer,
  refresh_cooldown_until integer,
  version             integer not null default 1,
  created_at          integer not null default (unixepoch()),
  updated_at          integer not null default (unixepoch()),
  unique (user_id, provider)
);

create trigger if not exists integration_tokens_touch_updated_at
  after update on integration_tokens
  for each row when new.updated_at = old.updated_at
  begin
    update integration_tokens set updated_at = unixepoch() where id = new.id;
  end;

-- Which keys are in use (checked at start) and what is left to re-encrypt.
create index if not exists integration_tokens_key_id on integration_tokens (key_id);

create table if not exists oauth_flows (
  state_hash    blob primary key,
  user_id       text not null,
  provider      text not null check (provider in ('microsoft', 'google', 'dropbox')),
  pkce_verifier blob not null,
  key_id        text not null,
  binding_hash  blob not null,
  app_origin    text not null,
  return_mode   text not null default 'popup' check (return_mode in ('popup', 'redirect')),
  created_at    integer not null default (unixepoch()),
  expires_at    integer not null
);
create index if not exists oauth_flows_expires_at on oauth_flows (expires_at);
