/**
 * React binding for the Celeste Connect SDK: `useIntegration(provider, options)`, the seed's
 * `useOutlookIntegration` made generic. `react` is a peer dependency; nothing else is imported.
 * Like the SDK it never sees a provider token: state holds status only.
 */

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ConnectError, canonicalProvider, createConnectClient, describeReason } from './connect.js';

/**
 * @param {string} provider  `outlook` (alias `microsoft`), `google` or `dropbox`
 * @param {{baseUrl?: string, getAccessToken: () => any, client?: any, enabled?: boolean,
 *   popup?: {width?: number, height?: number}, redirectFallback?: boolean}} options
 */
export function useIntegration(provider, options) {
  const { baseUrl, getAccessToken, client: givenClient, enabled = true, popup, redirectFallback } = options;

  // The latest getAccessToken without recreating the client on every render.
  const tokenSource = useRef(getAccessToken);
  tokenSource.current = getAccessToken;

  const client = useMemo(
    () =>
      givenClient ??
      createConnectClient({ baseUrl, getAccessToken: () => tokenSource.current(), popup, redirectFallback }),
    // popup and redirectFallback are read once, like baseUrl changes they need a new client.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [givenClient, baseUrl],
  );

  const [status, setStatus] = useState(null);
  const [reading, setReading] = useState(false);
  const [pending, setPending] = useState(null);
  const [error, setError] = useState(null);
  const [lastResult, setLastResult] = useState(null);
  const mounted = useRef(false);
  const readSeq = useRef(0);

  const refresh = useCallback(async () => {
    const seq = ++readSeq.current;
    setReading(true);
    try {
      const value = await client.status(provider);
      if (mounted.current && seq === readSeq.current) setStatus(value);
      return value;
    } catch (err) {
      if (mounted.current && seq === readSeq.current) setError(err);
      return null;
    } finally {
      if (mounted.current && seq === readSeq.current) setReading(false);
    }
  }, [client, provider]);

  // Call from a click handler: client.connect opens the popup synchronously.
  const connect = useCallback(() => {
    const promise = client.connect(provider);
    setError(null);
    setPending('connect');
    return promise.then(
      (outcome) => {
        if (!mounted.current) return outcome;
        setLastResult(outcome);
        if (outcome.result === 'connected') setStatus(outcome.status);
        if (outcome.result === 'error') {
          setError(outcome.error ?? new ConnectError(outcome.reason, describeReason(outcome.reason)));
        }
        // 'redirect': this window is leaving for the provider; stay pending.
        if (outcome.result !== 'redirect') {
          setPending(null);
          if (outcome.result !== 'connected') refresh();
        }
        return outcome;
      },
      (err) => {
        if (mounted.current) {
          setPending(null);
          setError(err);
        }
        return { result: 'error', reason: err?.code ?? 'unknown', error: err };
      },
    );
  }, [client, provider, refresh]);

  const disconnect = useCallback(async () => {
    setError(null);
    setPending('disconnect');
    try {
      await client.disconnect(provider);
      await refresh();
    } catch (err) {
      if (mounted.current) setError(err);
    } finally {
      if (mounted.current) setPending(null);
    }
  }, [client, provider, refresh]);

  useEffect(() => {
    mounted.current = true;
    if (!enabled) return () => {
      mounted.current = false;
    };
    // A same-window flow (popup blocked) comes back with its result in the URL.
    client
      .handleRedirectResult({ provider })
      .then((outcome) => {
        if (!outcome || !mounted.current) return;
        setLastResult(outcome);
        if (outcome.status) setStatus(outcome.status);
        if (outcome.result === 'error') {
          setError(outcome.error ?? new ConnectError(outcome.reason, describeReason(outcome.reason)));
        }
      })
      .catch(() => {});
    refresh();
    const id = canonicalProvider(provider);
    const stop = client.watch((hint) => {
      if (!hint.provider || hint.provider === id) refresh();
    });
    return () => {
      mounted.current = false;
      stop();
    };
  }, [client, provider, enabled, refresh]);

  return {
    status,
    loading: reading || pending !== null,
    pending,
    error,
    lastResult,
    connect,
    disconnect,
    refresh,
    client,
  };
}
