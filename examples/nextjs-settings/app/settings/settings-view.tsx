'use client';

// The seed's /settings page on the Celeste Connect SDK: useOutlookIntegration became the
// generic useIntegration('outlook', …). The page only ever sees connection status; tokens stay
// in the service. Signed in through Supabase, or, in local mode, through the demo.

import { describeReason, type IntegrationStatus } from '@celeste-connect/sdk';
import { useIntegration } from '@celeste-connect/sdk/react';
import { useMemo, useState, type CSSProperties, type FormEvent } from 'react';

import { useAuth } from '../../hooks/useAuth';
import type { AppAuth } from '../../lib/auth';
import type { AppConfig } from '../../lib/config';
import { demoAuth, type DemoAuth } from '../../lib/demo-auth';
import { supabaseAuth } from '../../lib/supabase';

const STATUS_TEXT: Record<IntegrationStatus['status'], string> = {
  connected: 'Connected ✓',
  not_connected: 'Not connected',
  needs_reauth: 'Needs reconnect',
};

export function SettingsView({ config }: { config: AppConfig }) {
  const auth = useMemo<AppAuth>(
    () =>
      config.auth.mode === 'supabase'
        ? supabaseAuth(config.auth.url, config.auth.anonKey)
        : demoAuth(config.connectUrl),
    [config],
  );
  const { user, loading } = useAuth(auth);

  return (
    <main style={styles.page}>
      <h1 style={styles.h1}>Settings</h1>
      {auth.mode === 'demo' && (
        <p style={styles.note}>
          Local mode: no Supabase project is configured, so you sign in through the Celeste Connect demo at{' '}
          <code>{config.connectUrl}</code>.
        </p>
      )}
      {loading ? (
        <p>Loading…</p>
      ) : user ? (
        <>
          <p>
            Signed in as <strong data-role="user">{user.name}</strong>{' '}
            <button type="button" onClick={() => void auth.signOut()}>
              Sign out
            </button>
          </p>
          <OutlookCard connectUrl={config.connectUrl} auth={auth} />
        </>
      ) : auth.mode === 'demo' ? (
        <DemoSignIn auth={auth as DemoAuth} />
      ) : (
        <p>Sign in to manage your connected accounts.</p>
      )}
    </main>
  );
}

function DemoSignIn({ auth }: { auth: DemoAuth }) {
  const [name, setName] = useState('');
  const [failure, setFailure] = useState<string | null>(null);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setFailure(null);
    try {
      await auth.signIn(name.trim());
    } catch (error) {
      setFailure(error instanceof Error ? error.message : String(error));
    }
  };
  return (
    <form onSubmit={(event) => void submit(event)} style={styles.actions} id="demo-signin">
      <label>
        Your name{' '}
        <input name="user" value={name} onChange={(event) => setName(event.target.value)} required maxLength={64} />
      </label>
      <button type="submit">Sign in</button>
      {failure && (
        <p role="alert" style={styles.error}>
          {failure}
        </p>
      )}
    </form>
  );
}

function OutlookCard({ connectUrl, auth }: { connectUrl: string; auth: AppAuth }) {
  const { status, loading, pending, error, connect, disconnect } = useIntegration('outlook', {
    baseUrl: connectUrl,
    getAccessToken: () => auth.getAccessToken(),
  });

  const state = status?.status ?? null;
  const linked = state === 'connected' || state === 'needs_reauth';
  const errorText = error ? ('code' in error ? error.message || describeReason(error.code) : error.message) : null;

  return (
    <section style={styles.card} aria-busy={loading} aria-labelledby="outlook-title">
      <h2 id="outlook-title" style={styles.h2}>
        Microsoft Outlook
      </h2>
      <p role="status">{state ? STATUS_TEXT[state] : 'Checking…'}</p>

      {linked && status && (
        <dl style={styles.details}>
          <dt>Email</dt>
          <dd>{status.provider_email ?? '—'}</dd>
          <dt>Name</dt>
          <dd>{status.display_name ?? '—'}</dd>
          <dt>Connected since</dt>
          <dd>{status.connected_at ? new Date(status.connected_at).toLocaleString() : '—'}</dd>
        </dl>
      )}

      {state === 'needs_reauth' && <p>Outlook no longer accepts the saved sign-in. Reconnect to resume.</p>}
      {errorText && (
        <p role="alert" style={styles.error}>
          {errorText}
        </p>
      )}

      <div style={styles.actions}>
        {/* connect() opens the popup synchronously inside this click, as Safari requires. */}
        <button type="button" onClick={() => void connect()} disabled={pending !== null}>
          {pending === 'connect' ? 'Connecting…' : linked ? 'Reconnect' : 'Connect Outlook'}
        </button>
        {linked && (
          <button type="button" onClick={() => void disconnect()} disabled={pending !== null}>
            {pending === 'disconnect' ? 'Disconnecting…' : 'Disconnect'}
          </button>
        )}
      </div>
    </section>
  );
}

const styles: Record<string, CSSProperties> = {
  page: { maxWidth: 640, margin: '0 auto', padding: '2rem 1rem', fontFamily: 'system-ui, sans-serif' },
  h1: { fontSize: '1.5rem', marginBottom: '1rem' },
  h2: { fontSize: '1.1rem', margin: 0 },
  card: { border: '1px solid #e2e8f0', borderRadius: 12, padding: '1.25rem', display: 'grid', gap: '0.75rem' },
  details: { display: 'grid', gridTemplateColumns: 'max-content 1fr', gap: '0.25rem 1rem', margin: 0 },
  error: { color: '#b91c1c' },
  actions: { display: 'flex', gap: '0.5rem', flexWrap: 'wrap' },
  note: { background: '#f1f5f9', padding: '0.75rem', borderRadius: 8 },
};
