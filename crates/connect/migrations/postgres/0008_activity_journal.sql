-- Celeste Connect, PostgreSQL: the activity log's journal (docs/activity.md, "The hot path and
-- the loss window"). Every second each replica appends what it counted as ONE row here: the
-- counts as parallel arrays, the same columns as connect.activity. Every few seconds it deletes
-- its own rows and upserts their sums (kept in its memory) into connect.activity, in one
-- transaction. Rows a dead process left are folded from here by any replica (delete ...
-- returning, summed, upserted: one statement). Either way a row's counts are added exactly
-- once. A crash still loses at most the last second.
--
-- Only connect_service reads or writes it; nobody else has any privilege. Re-runnable.

create table if not exists connect.activity_journal (
  id          bigint generated always as identity primary key,
  written_at  timestamptz not null default now(),
  minute      timestamptz[] not null,
  user_id     uuid[] not null,
  provider    text[] not null,
  kind        text[] not null,
  actor       text[] not null,
  method      text[] not null,
  path        text[] not null,
  outcome     text[] not null,
  events      bigint[] not null,
  first_seen  timestamptz[] not null,
  last_seen   timestamptz[] not null
);
-- A journal row lives a few seconds: compressing it would cost more than storing it.
alter table connect.activity_journal
  alter column minute set storage external, alter column user_id set storage external,
  alter column provider set storage external, alter column kind set storage external,
  alter column actor set storage external, alter column method set storage external,
  alter column path set storage external, alter column outcome set storage external,
  alter column events set storage external, alter column first_seen set storage external,
  alter column last_seen set storage external;

alter table connect.activity_journal enable row level security;
alter table connect.activity_journal force row level security;

revoke all on connect.activity_journal from public, anon, authenticated;
revoke all on sequence connect.activity_journal_id_seq from public, anon, authenticated;

-- update: for the fold's FOR UPDATE SKIP LOCKED (rows are never updated).
grant select, insert, update, delete on connect.activity_journal to connect_service;
grant usage on sequence connect.activity_journal_id_seq to connect_service;
drop policy if exists service_all on connect.activity_journal;
create policy service_all on connect.activity_journal
  for all to connect_service using (true) with check (true);

create or replace trigger activity_journal_refuse_truncate
  before truncate on connect.activity_journal
  for each statement execute function connect.refuse_truncate();
