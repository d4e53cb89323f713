-- Change notifications carry the row's new version (`<id>:<version>`; a delete sends `<id>`),
-- so a replica drops only cache entries older than the write, and keeps the token its own
-- refresh just stored.
create or replace function connect.notify_token_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('connect_token_changes', old.id::text);
  else
    perform pg_notify('connect_token_changes', new.id::text || ':' || new.version::text);
  end if;
  return null;
end $$;
revoke all on function connect.notify_token_change() from public;
