-- Who else is connected to the same provider account (asked when a Google connection is
-- disconnected): answered from this index instead of reading the whole table.
create index if not exists integration_tokens_account on integration_tokens (provider, provider_user_id);
