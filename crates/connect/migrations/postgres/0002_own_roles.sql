-- Celeste Connect, PostgreSQL: the service's own roles, nothing borrowed from the host app.
--
-- On Supabase, `authenticated` holds ALL on the app's own tables in `public`, guarded only by
-- policies that trust `request.jwt.claims`. A role of this service that could become
-- `authenticated` could therefore read any user's rows in any app table. So the service uses
-- roles of its own, members of nothing that carries privileges outside schema `connect`:
--
--   connect_service      (0001) every pooled connection of the service; reads and writes the
--                        tables of `connect`, owns nothing. Member of connect_user_reader only.
--   connect_user_reader  NOLOGIN, NOINHERIT: reads the non-secret columns of the rows whose
--                        `user_id` is the `sub` of the transaction's claims, and nothing else.
--                        The service switches to it for a signed-in user's reads, so row-level
--                        security decides what they see. Owns connect.user_has_integration.
--
-- `authenticated` keeps nothing in `connect` but the right to ask
-- `public.user_has_integration(provider)` about itself. No function trusts a user id from its
-- caller unless that caller is connect_service.
--
-- Every grant below is made by the role that created the granted role, so it also holds on
-- PostgreSQL 16+, where granting a role needs ADMIN OPTION on it. Re-runnable.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'connect_user_reader') then
    begin
      create role connect_user_reader nologin noinherit;
    exception when duplicate_object or unique_violation then
      null; -- created concurrently by another migration run on the same cluster
    end;
  end if;
end $$;

-- Memberships the first release granted (connect_service in authenticated) or anyone added
-- since: the service's roles are members of nothing but each other.
do $$
declare
  m record;
begin
  for m in
    select g.rolname as granted, u.rolname as member, pg_get_userbyid(a.grantor) as grantor
    from pg_auth_members a
    join pg_roles g on g.oid = a.roleid
    join pg_roles u on u.oid = a.member
    where u.rolname in ('connect_service', 'connect_user_reader')
      and not (u.rolname = 'connect_service' and g.rolname = 'connect_user_reader')
  loop
    if current_setting('server_version_num')::int >= 160000 then
      -- Since 16 a membership is revoked per grantor.
      execute format('revoke %I from %I granted by %I', m.granted, m.member, m.grantor);
    else
      execute format('revoke %I from %I', m.granted, m.member);
    end if;
  end loop;
  for m in
    select g.rolname as granted, u.rolname as member
    from pg_auth_members a
    join pg_roles g on g.oid = a.roleid
    join pg_roles u on u.oid = a.member
    where u.rolname in ('connect_service', 'connect_user_reader')
      and not (u.rolname = 'connect_service' and g.rolname = 'connect_user_reader')
  loop
    raise exception 'role % is still a member of role %', m.member, m.granted
      using errcode = 'insufficient_privilege',
            hint = format('run the migration as a role with ADMIN OPTION on %s', m.granted);
  end loop;
end $$;

grant connect_user_reader to connect_service;
-- The migrating role becomes the owner's member so it can hand connect.user_has_integration to
-- connect_user_reader below (and replace it on a later run).
grant connect_user_reader to current_user;

grant usage on schema connect to connect_user_reader;

-- The user-scoped read: non-secret columns, own rows (by the claims' `sub`) only.
revoke all on all tables in schema connect from public, anon, authenticated;
grant select (id, user_id, provider, provider_email, display_name, scopes, status,
              last_refreshed_at, created_at, updated_at)
  on connect.integration_tokens to connect_user_reader;
drop policy if exists own_rows_read on connect.integration_tokens;
create policy own_rows_read on connect.integration_tokens
  for select to connect_user_reader
  using (user_id = (select connect.current_user_id()));

revoke all on function connect.current_user_id() from public, anon, authenticated;
grant execute on function connect.current_user_id() to connect_service, connect_user_reader;

-- TRUNCATE is not governed by row-level security, and Supabase's custom-schema guide grants it
-- (with ALL) to anon and authenticated: only the tables' owner (and superusers) may empty them.
create or replace function connect.refuse_truncate() returns trigger
language plpgsql set search_path = '' as $$
begin
  if not pg_catalog.pg_has_role(current_user,
                                (select c.relowner from pg_catalog.pg_class c where c.oid = tg_relid),
                                'member') then
    raise exception 'only the owner of %.% may truncate it', tg_table_schema, tg_table_name
      using errcode = 'insufficient_privilege';
  end if;
  return null;
end $$;
revoke all on function connect.refuse_truncate() from public;
create or replace trigger integration_tokens_refuse_truncate
  before truncate on connect.integration_tokens
  for each statement execute function connect.refuse_truncate();
create or replace trigger oauth_flows_refuse_truncate
  before truncate on connect.oauth_flows
  for each statement execute function connect.refuse_truncate();

-- The service's user-scoped read, in one prepared round trip. It takes the user id as an
-- argument, so only connect_service (which verified that id) may call it, whoever else was
-- granted EXECUTE (Supabase's custom-schema guide grants ALL ROUTINES to anon and
-- authenticated). It then switches to connect_user_reader with that user's claims for the rest
-- of the statement's transaction (a statement on its own is its own transaction, so nothing
-- survives it) and reads under row-level security; a second call in the same transaction is
-- refused, since by then it runs as connect_user_reader. `p_provider` null reads every provider.
create or replace function connect.read_own_connections(p_user uuid, p_provider text)
returns table (user_id uuid, provider text, status text, provider_email text, display_name text,
               scopes text[], created_at timestamptz, updated_at timestamptz,
               last_refreshed_at timestamptz)
language plpgsql volatile security invoker set search_path = '' as $$
begin
  if current_user <> 'connect_service' then
    raise exception 'connect.read_own_connections is for the service only'
      using errcode = 'insufficient_privilege';
  end if;
  perform set_config('role', 'connect_user_reader', true);
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

-- Whether the caller (the `sub` of its claims) has a connected provider. SECURITY DEFINER owned
-- by connect_user_reader, so it sees exactly what that role's policy lets the caller's claims
-- see, whatever role calls it: the caller's own rows, and only three non-secret columns of them.
create or replace function connect.user_has_integration(provider text) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (
    select 1 from connect.integration_tokens t
    where t.user_id = connect.current_user_id()
      and t.provider = case lower($1) when 'outlook' then 'microsoft' else lower($1) end
      and t.status = 'connected'
  )
$$;
-- A role may own a function only in a schema it may create in: for this one statement.
grant create on schema connect to connect_user_reader;
alter function connect.user_has_integration(text) owner to connect_user_reader;
revoke create on schema connect from connect_user_reader;
revoke all on function connect.user_has_integration(text) from public, anon;
grant execute on function connect.user_has_integration(text) to authenticated;

-- The seed's helper, where Supabase apps look for it: a SECURITY INVOKER wrapper with no rights
-- of its own, owned by the migrating role (the first release gave it to connect_service).
do $$
begin
  if exists (select 1 from pg_proc
             where oid = 'public.user_has_integration(text)'::regprocedure
               and proowner = 'connect_service'::regrole) then
    alter function public.user_has_integration(text) owner to current_user;
  end if;
end $$;
create or replace function public.user_has_integration(provider text) returns boolean
language sql stable security invoker set search_path = '' as $$
  select connect.user_has_integration(provider)
$$;
revoke all on function public.user_has_integration(text) from public, anon;
grant execute on function public.user_has_integration(text) to authenticated;
