'use client';

// The seed's /settings page on the Celeste Connect SDK: useOutlookIntegration became the
// generic useIntegration('outlook', …). The page only ever sees connection status; tokens stay
// in the service.

import { describeReason, type IntegrationStatus } from '@celeste-connect/sdk';
import { useIntegration } from '@celeste-connect/sdk/react';
import type { CSSProperties } from 'react';

import { useAuth } from '../../hooks/useAuth';
import { getAccessToken } from '../../lib/supabase';

const CONNECT_URL = process.env.NEXT_PUBLIC_CONNECT_URL ?? 'http://127.0.0.1:8080';

const STATUS_TEXT: Record<IntegrationStatus['status'], string> = {
  connected: 'Connected ✓',
  not_connected: 'Not connected',
  needs_reauth: 'Needs reconnect',
};

export default function SettingsPage() {
  const { user, loading } = useAuth();

  return (
    <main style={styles.page}>
      <h1 style={styles.h1}>Settings</h1>
      {loading ? (
        <p>Loading…</p>
      ) : user ? (
        <OutlookCard />
      ) : (
        <p>Sign in to manage your connected accounts.</p>
      )}
    </main>
  );
}

function OutlookCard() {
  const { status, loading, pending, error, connect, disconnect } = useIntegration('outlook', {
    baseUrl: CONNECT_URL,
    getAccessToken,
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
};
