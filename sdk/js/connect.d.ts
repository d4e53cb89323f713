// Types for @celeste-connect/sdk (connect.js). No provider token appears in any of them: the
// service keeps tokens server-side and answers with status only.

/** A provider path name or id: `outlook` (alias of `microsoft`), `google` or `dropbox`. */
export type ProviderName = 'microsoft' | 'outlook' | 'google' | 'dropbox' | (string & {});

export type ConnectionState = 'not_connected' | 'connected' | 'needs_reauth';

/** `GET /v1/integrations/{provider}/status`. */
export interface IntegrationStatus {
  provider: string;
  connected: boolean;
  status: ConnectionState;
  provider_email: string | null;
  display_name: string | null;
  scopes: string[];
  /** RFC 3339 */
  connected_at: string | null;
  updated_at: string | null;
  last_refreshed_at: string | null;
}

/** One row of `GET /v1/integrations/{provider}/activity`: events of one kind in one minute. */
export interface ActivityEntry {
  /** RFC 3339: the minute's start. */
  minute: string;
  user_id: string;
  provider: string;
  kind: 'token' | 'proxy' | 'connected' | 'reconnected' | 'disconnected' | 'needs_reauth';
  /** The service key's name (the backend) for `token` and `proxy`; null when the user or the
   * service acted. Operator-set: show it as text. */
  key_name: string | null;
  actor: 'key' | 'user' | 'service';
  /** Proxied calls: the method and the path template (ids replaced, no query). */
  method: string | null;
  path: string | null;
  /** `ok`, an error code, or the provider's status class (`2xx` … `5xx`). */
  outcome: string;
  count: number;
  first_seen: string;
  last_seen: string;
}

/** `GET /v1/integrations/{provider}/activity`. */
export interface IntegrationActivity {
  provider: string;
  /** The newest use by a backend, if any is kept. */
  last_used: { key_name: string | null; kind: 'token' | 'proxy'; at: string } | null;
  /** The newest 20 rows, newest first. */
  entries: ActivityEntry[];
}

/** Outcome of `connect()`. It resolves in every path; it rejects only on misuse (a bad provider
 * name, or a second connect for another provider while one is pending). */
export type ConnectResult =
  | { result: 'connected'; status: IntegrationStatus }
  /** The user closed the popup (or the flow was aborted). Nothing changed. */
  | { result: 'cancelled' }
  /** `reason`: a snake_case code (`access_denied`, `invalid_state`, `provider_error`,
   * `exchange_failed`, `timeout`, `popup_blocked`, `not_confirmed`, or an API error code such as
   * `unauthorized`); `error` is set when an API call failed. Show `describeReason(reason)`. */
  | { result: 'error'; reason: string; error?: ConnectError }
  /** The popup was blocked, so this window is navigating to the provider; the outcome comes
   * back in the URL (see `handleRedirectResult`). */
  | { result: 'redirect' };

export interface RedirectResult {
  /** Canonical provider id (`microsoft`). */
  provider: string;
  result: 'connected' | 'error';
  reason?: string;
  /** This tab started the flow (its marker was found in sessionStorage). */
  startedHere: boolean;
}

export interface ConfirmedRedirectResult extends RedirectResult {
  status?: IntegrationStatus;
  error?: ConnectError;
}

export interface StatusHint {
  source: 'broadcast' | 'focus';
  provider?: string;
  result?: 'success' | 'error';
}

export interface ConnectTiming {
  pollIntervalMs: number;
  closedCheckMs: number;
  closedGraceMs: number;
  flowTimeoutMs: number;
  confirmAttempts: number;
  confirmDelayMs: number;
}

export interface ConnectClientOptions {
  /** The service's public URL, e.g. `https://connect.example.com`. Default: this page's origin. */
  baseUrl?: string;
  /** Returns the signed-in user's JWT (e.g. a Supabase session's `access_token`), or null. */
  getAccessToken: () => string | null | undefined | Promise<string | null | undefined>;
  popup?: { width?: number; height?: number };
  /** When the popup is blocked, run the flow in this window (default true). */
  redirectFallback?: boolean;
  fetch?: typeof fetch;
  /** Advanced: the flow's clocks (tests shorten them). */
  timing?: Partial<ConnectTiming>;
}

export interface ConnectClient {
  readonly baseUrl: string;
  /** The provider whose connect flow is pending, or null. */
  readonly pending: string | null;
  status(provider: ProviderName): Promise<IntegrationStatus>;
  list(): Promise<IntegrationStatus[]>;
  /** Who used the connection, and when (never a token). */
  activity(provider: ProviderName): Promise<IntegrationActivity>;
  /** Call directly from a click handler: the popup opens before this returns. A second call for
   * the same provider while pending returns the same promise. */
  connect(provider: ProviderName, options?: { signal?: AbortSignal }): Promise<ConnectResult>;
  /** Idempotent. */
  disconnect(provider: ProviderName): Promise<void>;
  /** Calls back when a status may have changed (BroadcastChannel message, window focus).
   * Returns a function that stops watching. */
  watch(callback: (hint: StatusHint) => void): () => void;
  /** `handleRedirectResult()` confirmed against the server. */
  handleRedirectResult(options?: { provider?: ProviderName }): Promise<ConfirmedRedirectResult | null>;
}

export declare class ConnectError extends Error {
  constructor(code: string, message: string, options?: { status?: number; requestId?: string | null; cause?: unknown });
  readonly name: 'ConnectError';
  /** Stable snake_case code: the API's `error` (`unauthorized`, `not_found`, `forbidden`, …) or
   * the SDK's (`network_error`, `origin_not_allowed` — the service answered but the browser blocked
   * the response because this page's origin is not in CONNECT_APP_ORIGINS — `not_signed_in`,
   * `invalid_response`, `flow_in_progress`). */
  code: string;
  /** HTTP status, 0 when no response was received. */
  status: number;
  requestId: string | null;
}

export declare function createConnectClient(options: ConnectClientOptions): ConnectClient;

/** Reads and removes `?integration=&result=&reason=` from the URL after a same-window flow. */
export declare function handleRedirectResult(options?: { provider?: ProviderName; url?: string }): RedirectResult | null;

/** `outlook` → `microsoft`. Throws TypeError on an invalid name. */
export declare function canonicalProvider(provider: ProviderName): string;

/** A sentence for a reason or error code, fit to show to the user. */
export declare function describeReason(reason: string | null | undefined): string;
