-- Celeste Connect, PostgreSQL: the activity log (docs/activity.md). Who used a user's
-- connection and when: tokens handed out and proxied calls, counted per minute, beside the
-- connection's lifecycle. No token, no query string, no request or response body is ever stored.
--
-- The service (connect_service) adds counts and prunes old rows; a signed-in user reads their
-- own rows through connect.read_own_activity, which drops to connect_user_reader with that
-- user's claims, so row-level security decides what they see (as for the status read).
-- `anon` and `authenticated` get nothing here. Re-runnable.

create table if not exists connect.activity (
  id          bigint generated always as identity primary key,
  minute      timestamptz not null,            -- start of the minute the row counts
  user_id     uuid not null,
  provider    text not null check (provider in ('microsoft', 'google', 'dropbox')),
  kind        text not null check (kind in ('token', 'proxy', 'connected', 'reconnected',
                                            'disconnected', 'needs_reauth')),
  actor       text not null,                   -- a service key's name, or 'user:' / 'service:'
  method      text not null default '',        -- proxied calls only
  path        text not null default '',        -- proxied calls only: the path template
  outcome     text not null,                   -- ok, an error code, or 2xx..5xx
  events      bigint not null check (events > 0),
  first_seen  timestamptz not null,
  last_seen   timestamptz not null,
  -- Leads with the minute, so it also serves time ranges and the retention prune.
  constraint activity_one_row_per_minute
    unique (minute, user_id, provider, kind, actor, method, path, outcome)
);
-- A user's rows per provider, newest first (the user read and the operator's user filter).
create index if not exists activity_user_provider_minute
  on connect.activity (user_id, provider, minute desc);

alter table connect.activity enable row level security;
alter table connect.activity force row level security;

revoke all on connect.activity from public, anon, authenticated;
revoke all on sequence connect.activity_id_seq from public, anon, authenticated;

grant select, insert, update, delete on connect.activity to connect_service;
grant usage on sequence connect.activity_id_seq to connect_service;
drop policy if exists service_all on connect.activity;
create policy service_all on connect.activity
  for all to connect_service using (true) with check (true);

-- A signed-in user reads their own rows (every column: nothing here is secret), nothing else.
grant select on connect.activity to connect_user_reader;
drop policy if exists own_rows_read on connect.activity;
create policy own_rows_read on connect.activity
  for select to connect_user_reader
  using (user_id = (select connect.current_user_id()));

-- TRUNCATE is not governed by row-level security: only the owner may empty the log.
create or replace trigger activity_refuse_truncate
  before truncate on connect.activity
  for each statement execute function connect.refuse_truncate();

-- The service's read of a user's activity for one provider, in one prepared round trip, as
-- connect.read_own_connections does it: only connect_service may call it; it switches to
-- connect_user_reader with that user's claims for the rest of the statement's transaction and
-- reads under row-level security. Returns the newest `p_limit` rows, plus the newest use by a
-- backend (token or proxy) if it is older than those.
create or replace function connect.read_own_activity(p_user uuid, p_provider text, p_limit integer)
returns table (id bigint, minute timestamptz, user_id uuid, provider text, kind text, actor text,
               method text, path text, outcome text, events bigint, first_seen timestamptz,
               last_seen timestamptz)
language plpgsql volatile security invoker set search_path = '' as $$
begin
  if current_user <> 'connect_service' then
    raise exception 'connect.read_own_activity is for the service only'
      using errcode = 'insufficient_privilege';
  end if;
  perform set_config('role', 'connect_user_reader', true);
  perform set_config('request.jwt.claims',
                     json_build_object('sub', p_user, 'role', 'authenticated')::text, true);
  return query
    (select a.id, a.minute, a.user_id, a.provider, a.kind, a.actor, a.method, a.path, a.outcome,
            a.events, a.first_seen, a.last_seen
     from connect.activity a
     where a.user_id = p_user and a.provider = p_provider
     order by a.minute desc, a.last_seen desc
     limit p_limit)
    union
    (select a.id, a.minute, a.user_id, a.provider, a.kind, a.actor, a.method, a.path, a.outcome,
            a.events, a.first_seen, a.last_seen
     from connect.activity a
     where a.user_id = p_user and a.provider = p_provider and a.kind in ('token', 'proxy')
     order by a.minute desc, a.last_seen desc
     limit 1);
end $$;
revoke all on function connect.read_own_activity(uuid, text, integer) from public, anon, authenticated;
grant execute on function connect.read_own_activity(uuid, text, integer) to connect_service;
