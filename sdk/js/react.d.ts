// Types for @celeste-connect/sdk/react. Declared without importing React's types so that the
// package type-checks wherever it is linked from.

import type {
  ConfirmedRedirectResult,
  ConnectClient,
  ConnectError,
  ConnectResult,
  IntegrationStatus,
  ProviderName,
} from './connect.js';

export interface UseIntegrationOptions {
  /** The service's public URL. Changing it creates a new client. */
  baseUrl?: string;
  /** Returns the signed-in user's JWT (a Supabase session's `access_token`), or null. The latest
   * function is always used; it need not be memoised. */
  getAccessToken: () => string | null | undefined | Promise<string | null | undefined>;
  /** Use an existing client instead of creating one. */
  client?: ConnectClient;
  /** False: do nothing until the user is signed in (default true). */
  enabled?: boolean;
  popup?: { width?: number; height?: number };
  redirectFallback?: boolean;
}

export interface UseIntegrationResult {
  /** Null until the first read. */
  status: IntegrationStatus | null;
  /** A status read, a connect or a disconnect is in flight. */
  loading: boolean;
  pending: 'connect' | 'disconnect' | null;
  /** The last failure (API error or an unsuccessful connect); cleared when an action starts. */
  error: ConnectError | Error | null;
  /** The last connect outcome, or the result of a same-window flow found in the URL. */
  lastResult: ConnectResult | ConfirmedRedirectResult | null;
  /** Call directly from a click handler (the popup must open before any await). */
  connect: () => Promise<ConnectResult>;
  disconnect: () => Promise<void>;
  refresh: () => Promise<IntegrationStatus | null>;
  client: ConnectClient;
}

export declare function useIntegration(provider: ProviderName, options: UseIntegrationOptions): UseIntegrationResult;
