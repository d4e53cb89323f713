-- Celeste Connect, embedded SQLite: the activity log (docs/activity.md), as on PostgreSQL minus
-- roles and RLS. Times are unix seconds.

create table if not exists activity (
  id          integer primary key autoincrement,
  minute      integer not null,
  user_id     text not null,
  provider    text not null check (provider in ('microsoft', 'google', 'dropbox')),
  kind        text not null check (kind in ('token', 'proxy', 'connected', 'reconnected',
                                            'disconnected', 'needs_reauth')),
  actor       text not null,
  method      text not null default '',
  path        text not null default '',
  outcome     text not null,
  events      integer not null check (events > 0),
  first_seen  integer not null,
  last_seen   integer not null,
  unique (minute, user_id, provider, kind, actor, method, path, outcome)
);
create index if not exists activity_user_provider_minute on activity (user_id, provider, minute desc);
