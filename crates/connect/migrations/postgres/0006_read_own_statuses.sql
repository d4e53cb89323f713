-- The signed-in user's read also returns each row's id, so a replica can keep a user's
-- statuses in memory and drop them as soon as a change notification names one of those rows
-- (`broker/status_cache.rs`). A new function rather than a new shape of
-- `connect.read_own_connections`, so replicas still running the previous release keep calling
-- that one unchanged during a rolling upgrade. Same rules: it takes a user id, so only
-- connect_service may call it; it switches to connect_user_reader with that user's claims for
-- the statement's transaction and reads under row-level security (`id` is among the columns
-- granted to that role). Re-runnable.
create or replace function connect.read_own_statuses(p_user uuid, p_provider text)
returns table (id uuid, user_id uuid, provider text, status text, provider_email text,
               display_name text, scopes text[], created_at timestamptz, updated_at timestamptz,
               last_refreshed_at timestamptz)
language plpgsql volatile security invoker set search_path = '' as $$
begin
  if current_user <> 'connect_service' then
    raise exception 'connect.read_own_statuses is for the service only'
      using errcode = 'insufficient_privilege';
  end if;
  perform set_config('role', 'connect_user_reader', true);
  perform set_config('request.jwt.claims',
                     json_build_object('sub', p_user, 'role', 'authenticated')::text, true);
  return query
    select t.id, t.user_id, t.provider, t.status, t.provider_email, t.display_name, t.scopes,
           t.created_at, t.updated_at, t.last_refreshed_at
    from connect.integration_tokens t
    where t.user_id = p_user and (p_provider is null or t.provider = p_provider)
    order by t.provider;
end $$;
revoke all on function connect.read_own_statuses(uuid, text) from public, anon, authenticated;
grant execute on function connect.read_own_statuses(uuid, text) to connect_service;
