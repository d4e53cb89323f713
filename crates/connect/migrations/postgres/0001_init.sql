-- Celeste Connect, PostgreSQL schema `connect`.
--
-- Applies unchanged to a Supabase database and to plain PostgreSQL >= 14, and can be re-run:
-- every object is created only when missing, every grant and policy is (re)stated.
--
-- Roles:
--   anon, authenticated  Supabase's client roles (created here only on plain PostgreSQL).
--   connect_service      NOLOGIN role every pooled connection of the service switches to. Not
--                        superuser, not owner, not BYPASSRLS; NOINHERIT, so it holds exactly the
--                        privileges granted below.
-- The role that runs this file (the one DATABASE_URL names) owns the objects.
--
-- 0002_own_roles.sql replaces what this file grants to `authenticated` and the functions that
-- relied on it. Two statements of the first release are gone from this file because Supabase's
-- `postgres` (not a superuser) cannot run them: `grant authenticated to connect_service` and
-- `alter function public.user_has_integration(text) owner to connect_service`; the migrator
-- accepts the first release's checksum of this file (docs/decisions.md, "Migrations").

do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'connect_service'] loop
    if not exists (select 1 from pg_roles where rolname = r) then
      begin
        execute format('create role %I nologin noinherit', r);
      exception when duplicate_object or unique_violation then
        null; -- created concurrently by another migration run on the same cluster
      end;
    end if;
  end loop;
end $$;

grant connect_service to current_user;

create schema if not exists connect;
revoke all on schema connect from public;
grant usage on schema connect to connect_service, authenticated;

-- The caller's user id, from the claims the service sets per transaction (PostgREST's setting,
-- so it answers like Supabase's auth.uid() without depending on the auth schema). Row-level
-- security evaluates it on every read, so it must stay inlinable: no SET clause (that would make
-- PostgreSQL re-plan its body per statement); instead every function, operator and type in it
-- is schema-qualified, so no search_path can redirect it.
create or replace function connect.current_user_id() returns uuid
language sql stable as $$
  select nullif(coalesce(
    nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
    nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb
      operator(pg_catalog.->>) 'sub'
  ), '')::pg_catalog.uuid
$$;
revoke all on function connect.current_user_id() from public;
grant execute on function connect.current_user_id() to connect_service, authenticated;

create table if not exists connect.integration_tokens (
  id                  uuid primary key default gen_random_uuid(),
  user_id             uuid not null,
  provider            text not null check (provider in ('microsoft', 'google', 'dropbox')),
  access_token        bytea not null,          -- sealed (AES-256-GCM), never plaintext
  refresh_token       bytea,                   -- sealed
  key_id              text not null,           -- encryption key that sealed both columns
  expires_at          timestamptz not null,    -- access token expiry
  provider_user_id    text not null,
  provider_email      text,
  display_name        text,
  scopes              text[] not null default '{}',  -- granted by the provider, not requested
  status              text not null default 'connected' check (status in ('connected', 'needs_reauth')),
  last_refreshed_at   timestamptz,
  last_error          text,                    -- a stable reason code, never a provider body
  refresh_lease_owner uuid,
  refresh_lease_until timestamptz,
  refresh_cooldown_until timestamptz,      -- no provider call before this (after a provider failure)
  version             bigint not null default 1,
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now(),
  unique (user_id, provider)
);

create or replace function connect.touch_updated_at() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end $$;
revoke all on function connect.touch_updated_at() from public;

create or replace trigger integration_tokens_touch_updated_at
  before update on connect.integration_tokens
  for each row execute function connect.touch_updated_at();

-- Which keys are in use (checked at start) and what is left to re-encrypt.
create index if not exists integration_tokens_key_id on connect.integration_tokens (key_id);

-- Every replica caches fresh access tokens; it is told at once when a connection's tokens or
-- status change (reconnect, refresh, needs_reauth, disconnect). The payload is the row's
-- random id, which names no user.
create or replace function connect.notify_token_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  perform pg_notify('connect_token_changes', coalesce(new.id, old.id)::text);
  return null;
end $$;
revoke all on function connect.notify_token_change() from public;

create or replace trigger integration_tokens_notify_insert_delete
  after insert or delete on connect.integration_tokens
  for each row execute function connect.notify_token_change();
create or replace trigger integration_tokens_notify_update
  after update on connect.integration_tokens
  for each row
  when (old.version is distinct from new.version or old.status is distinct from new.status
        or old.key_id is distinct from new.key_id)
  execute function connect.notify_token_change();

create table if not exists connect.oauth_flows (
  state_hash    bytea primary key,             -- sha-256 of the 256-bit state; the state itself is never stored
  user_id       uuid not null,
  provider      text not null check (provider in ('microsoft', 'google', 'dropbox')),
  pkce_verifier bytea not null,                -- sealed
  key_id        text not null,
  binding_hash  bytea not null,                -- sha-256 of the browser-binding cookie's secret
  app_origin    text not null,
  return_mode   text not null default 'popup' check (return_mode in ('popup', 'redirect')),
  created_at    timestamptz not null default now(),
  expires_at    timestamptz not null
);
create index if not exists oauth_flows_expires_at on connect.oauth_flows (expires_at);

alter table connect.integration_tokens enable row level security;
alter table connect.integration_tokens force row level security;
alter table connect.oauth_flows enable row level security;
alter table connect.oauth_flows force row level security;

revoke all on all tables in schema connect from public, anon, authenticated;
alter default privileges in schema connect revoke all on tables from public, anon, authenticated;
alter default privileges in schema connect revoke all on functions from public, anon, authenticated;

-- A signed-in user may read the non-secret columns of their own rows, nothing else.
grant select (id, user_id, provider, provider_email, display_name, scopes, status,
              last_refreshed_at, created_at, updated_at)
  on connect.integration_tokens to authenticated;
drop policy if exists own_rows_read on connect.integration_tokens;
create policy own_rows_read on connect.integration_tokens
  for select to authenticated
  using (user_id = (select connect.current_user_id()));

-- The service reads and writes every row; it is the only role that can read a token column.
grant select, insert, update, delete on connect.integration_tokens, connect.oauth_flows to connect_service;
drop policy if exists service_all on connect.integration_tokens;
create policy service_all on connect.integration_tokens
  for all to connect_service using (true) with check (true);
drop policy if exists service_all on connect.oauth_flows;
create policy service_all on connect.oauth_flows
  for all to connect_service using (true) with check (true);

-- The service's user-scoped read, in one prepared round trip: it switches to `authenticated` with
-- the caller's claims for the rest of the statement's transaction (a statement on its own is its
-- own transaction, so nothing survives it), then reads under row-level security. SECURITY
-- INVOKER: it runs with the caller's (connect_service's) rights until it drops to
-- `authenticated`. `p_provider` null reads every provider.
create or replace function connect.read_own_connections(p_user uuid, p_provider text)
returns table (user_id uuid, provider text, status text, provider_email text, display_name text,
               scopes text[], created_at timestamptz, updated_at timestamptz,
               last_refreshed_at timestamptz)
language plpgsql volatile security invoker set search_path = '' as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
                     json_build_object('sub', p_user, 'role', 'authenticated')::text, true);
  return query
    select t.user_id, t.provider, t.status, t.provider_email, t.display_name, t.scopes,
           t.created_at, t.updated_at, t.last_refreshed_at
    from connect.integration_tokens t
    where t.user_id = p_user and (p_provider is null or t.provider = p_provider)
    order by t.provider;
end $$;
revoke all on function connect.read_own_connections(uuid, text) from public, anon, authenticated;
grant execute on function connect.read_own_connections(uuid, text) to connect_service;

-- The seed's helper, made safe: it answers for the caller only (no user id argument) and returns
-- a boolean. (0002 makes it a SECURITY INVOKER wrapper.)
create or replace function public.user_has_integration(provider text) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (
    select 1 from connect.integration_tokens t
    where t.user_id = connect.current_user_id()
      and t.provider = case lower($1) when 'outlook' then 'microsoft' else lower($1) end
      and t.status = 'connected'
  )
$$;
revoke all on function public.user_has_integration(text) from public, anon;
grant execute on function public.user_has_integration(text) to authenticated;
