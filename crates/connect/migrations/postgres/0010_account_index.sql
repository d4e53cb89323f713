-- Who else is connected to the same provider account: asked when a Google connection is
-- disconnected (Google keeps one grant per account and app, so the grant is revoked only when
-- no other user of the app still uses it). Without this index that question reads the whole
-- table. Only the provider's account id is indexed; token refreshes never change it, so they
-- stay heap-only updates. Re-runnable.
create index if not exists integration_tokens_account
    on connect.integration_tokens (provider, provider_user_id);
