-- Celeste Connect, PostgreSQL: the activity log's journal, second version (docs/activity.md,
-- "The hot path and the loss window"). Every second each replica appends what it counted as ONE
-- row here: the counted rows encoded by the service as one opaque value (`counts`, a versioned
-- compact binary form, about 35 bytes a counted row), which PostgreSQL stores without parsing.
-- Every few seconds the replica deletes its own rows and upserts their sums, kept in its memory,
-- into connect.activity in one transaction. Rows a dead process left are taken by any replica
-- (select ... FOR UPDATE SKIP LOCKED), decoded by it, deleted and upserted in one transaction.
-- Either way a row's counts are added exactly once.
--
-- connect.activity_journal (0008, the counts as eleven parallel arrays that PostgreSQL had to
-- parse on every insert) is no longer written; rows an older replica left there are still
-- folded from it, so a rolling upgrade loses nothing. Older replicas never read this table.
--
-- Only connect_service reads or writes it; nobody else has any privilege. Re-runnable.

create table if not exists connect.activity_batches (
  id          bigint generated always as identity primary key,
  written_at  timestamptz not null default now(),
  counts      bytea not null
);
-- A row lives a few seconds and its value is already compact: compressing it would cost more
-- than storing it.
alter table connect.activity_batches alter column counts set storage external;

alter table connect.activity_batches enable row level security;
alter table connect.activity_batches force row level security;

revoke all on connect.activity_batches from public, anon, authenticated;
revoke all on sequence connect.activity_batches_id_seq from public, anon, authenticated;

-- update: for the fold's FOR UPDATE SKIP LOCKED (rows are never updated).
grant select, insert, update, delete on connect.activity_batches to connect_service;
grant usage on sequence connect.activity_batches_id_seq to connect_service;
drop policy if exists service_all on connect.activity_batches;
create policy service_all on connect.activity_batches
  for all to connect_service using (true) with check (true);

create or replace trigger activity_batches_refuse_truncate
  before truncate on connect.activity_batches
  for each statement execute function connect.refuse_truncate();
