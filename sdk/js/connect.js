/**
 * Celeste Connect browser SDK: connect a signed-in user's provider account (Microsoft Outlook,
 * Gmail or Dropbox) in a popup, read and clear the connection status. An ES module with
 * no dependencies and no build step; the service serves this file at `/sdk/connect.js`.
 *
 * What it must never do: read, store or log a provider token. There is none to read: the
 * service keeps tokens server-side and every response here carries status only. The one value
 * it handles is the app's own user JWT, which it gets from `getAccessToken()` per request and
 * never stores.
 *
 * Completion messages from the popup are hints, never the truth: they are accepted only from
 * the service's exact origin and from the popup this client opened (or on the same-origin
 * BroadcastChannel), and the result is always re-read from the server.
 */

const ALIASES = Object.freeze({ outlook: 'microsoft' });
const CHANNEL_NAME = 'celeste-connect';
const REDIRECT_MARKER_KEY = 'celeste-connect.redirect';
const REDIRECT_MARKER_TTL_MS = 15 * 60 * 1000;
const PROVIDER_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
const REASON_PATTERN = /^[a-z0-9_.-]{1,64}$/;
const COMPLETION_TYPE = /^([A-Z][A-Z0-9_-]{0,31})_AUTH_(SUCCESS|ERROR)$/;

/** Defaults for the flow's clocks; tests shorten them through `createConnectClient({ timing })`. */
const DEFAULT_TIMING = Object.freeze({
  /** How often the server status is polled while a popup flow is pending (COOP fallback). */
  pollIntervalMs: 1500,
  /** How often `popup.closed` is checked. */
  closedCheckMs: 400,
  /** After the popup reads as closed, how long the server is still polled before `cancelled`:
   *  under COOP `closed` reads true while the user is still signing in. */
  closedGraceMs: 5000,
  /** A popup flow never stays pending longer than this. */
  flowTimeoutMs: 5 * 60 * 1000,
  /** After a success message: how many status reads confirm it, and how far apart. */
  confirmAttempts: 4,
  confirmDelayMs: 750,
});

const REASON_TEXT = Object.freeze({
  access_denied: 'Access was not granted at the provider, so nothing was connected.',
  consent_required: 'The account needs consent the sign-in could not give (an administrator may have to approve the app).',
  invalid_state: 'This sign-in link is no longer valid (already used, or from another attempt). Start again from this page.',
  expired: 'The sign-in took too long and expired. Start again from this page.',
  browser_mismatch: 'This sign-in was started in another browser. Start again from this page in this browser.',
  provider_error: 'The provider reported a problem, so nothing was connected. Please try again in a moment.',
  exchange_failed: 'The provider did not accept the sign-in, so nothing was connected. Please try again.',
  profile_failed: 'The account’s profile could not be read, so nothing was connected. Please try again.',
  scope_denied: 'Not all the access asked for was granted, so nothing was connected. Please try again and leave every permission ticked.',
  internal: 'The service had a problem finishing the sign-in. Nothing was connected; please try again.',
  timeout: 'The sign-in window was open too long. Please try again.',
  popup_blocked: 'Your browser blocked the sign-in window. Allow pop-ups for this site and try again.',
  not_confirmed: 'The sign-in finished, but the connection could not be confirmed. Reload the page to check.',
  network_error: 'Could not reach the Celeste Connect service. Check your connection and try again.',
  origin_not_allowed: 'The Celeste Connect service does not accept requests from this page’s origin: add it to CONNECT_APP_ORIGINS.',
  not_signed_in: 'You are not signed in. Sign in and try again.',
  unauthorized: 'Your session has expired. Sign in again.',
  forbidden: 'This app is not allowed to connect accounts on this service.',
  not_found: 'This provider is not available on this service.',
  rate_limited: 'Too many attempts. Wait a moment and try again.',
  provider_unavailable: 'The provider is not responding. Try again in a minute.',
  invalid_response: 'The service sent an unexpected answer. Please try again.',
  flow_in_progress: 'Another connection is already in progress. Finish or close its window first.',
});

/** An error from the Celeste Connect API or from the SDK itself. */
export class ConnectError extends Error {
  /**
   * @param {string} code  stable snake_case code (`unauthorized`, `not_found`, `network_error`…)
   * @param {string} message  a sentence fit to show to the user
   * @param {{status?: number, requestId?: string|null, cause?: unknown}} [options]
   */
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ConnectError';
    this.code = code;
    this.status = options.status ?? 0;
    this.requestId = options.requestId ?? null;
  }
}

/**
 * The canonical provider id for a path name or id: `outlook` → `microsoft`.
 * @param {string} provider
 * @returns {string}
 */
export function canonicalProvider(provider) {
  return ALIASES[pathName(provider)] ?? pathName(provider);
}

/**
 * A sentence for a result reason or error code, fit to show to the user.
 * @param {string | undefined | null} reason
 * @returns {string}
 */
export function describeReason(reason) {
  const code = sanitizeReason(reason);
  return REASON_TEXT[code] ?? `Something went wrong (${code}). Please try again.`;
}

/**
 * Reads the result of a same-window connect from the current URL
 * (`?integration=outlook&result=connected` or `…&result=error&reason=<code>`), removes those
 * parameters with `history.replaceState`, and forgets the marker left by `connect()`.
 * Returns null when the URL carries no result (or one for another provider than `provider`).
 * The result is a hint; re-read status from the server before trusting it
 * (the client's `handleRedirectResult()` does).
 *
 * @param {{provider?: string, url?: string}} [options]
 * @returns {{provider: string, result: 'connected'|'error', reason?: string, startedHere: boolean} | null}
 */
export function handleRedirectResult(options = {}) {
  const g = globalThis;
  let url;
  try {
    url = new URL(options.url ?? g.location.href);
  } catch {
    return null;
  }
  const integration = url.searchParams.get('integration');
  const result = url.searchParams.get('result');
  if (!integration || !result) return null;
  let provider;
  try {
    provider = canonicalProvider(integration);
  } catch {
    return null;
  }
  if (options.provider !== undefined && canonicalProvider(options.provider) !== provider) return null;
  const reason = url.searchParams.get('reason');

  for (const name of ['integration', 'result', 'reason']) url.searchParams.delete(name);
  if (options.url === undefined) {
    try {
      g.history.replaceState(g.history.state, '', url.pathname + url.search + url.hash);
    } catch {
      // No history API (or a sandbox without it): leaving the query is harmless.
    }
  }

  const marker = takeRedirectMarker();
  const startedHere =
    marker !== null && marker.provider === provider && Date.now() - marker.startedAt < REDIRECT_MARKER_TTL_MS;
  if (result === 'connected') return { provider, result: 'connected', startedHere };
  return { provider, result: 'error', reason: sanitizeReason(result === 'error' ? reason : result), startedHere };
}

/**
 * Creates a client for one Celeste Connect service.
 *
 * @param {object} options
 * @param {string} [options.baseUrl]  the service's public URL (default: this page's origin)
 * @param {() => (string | null | undefined | Promise<string | null | undefined>)} options.getAccessToken
 *   returns the signed-in user's JWT (a Supabase session access token)
 * @param {{width?: number, height?: number}} [options.popup]
 * @param {boolean} [options.redirectFallback]  when the popup is blocked, run the flow in this
 *   window (default true); false resolves `{result: 'error', reason: 'popup_blocked'}` instead
 * @param {typeof fetch} [options.fetch]
 * @param {Partial<typeof DEFAULT_TIMING>} [options.timing]
 */
export function createConnectClient(options = {}) {
  const g = globalThis;
  const { getAccessToken } = options;
  if (typeof getAccessToken !== 'function') {
    throw new TypeError('createConnectClient: getAccessToken must be a function that returns the user JWT');
  }
  const base = parseBaseUrl(options.baseUrl ?? g.location?.origin);
  const popupSize = { width: 520, height: 680, ...(options.popup ?? {}) };
  const redirectFallback = options.redirectFallback ?? true;
  const timing = { ...DEFAULT_TIMING, ...(options.timing ?? {}) };
  const fetchImpl = options.fetch ?? ((...args) => g.fetch(...args));

  /** @type {{provider: string, popup: Window | null, promise: Promise<any>} | null} */
  let pending = null;

  async function request(method, path, { credentials = 'omit' } = {}) {
    let token;
    try {
      token = await getAccessToken();
    } catch (cause) {
      throw new ConnectError('not_signed_in', REASON_TEXT.not_signed_in, { cause });
    }
    if (typeof token !== 'string' || token === '') {
      throw new ConnectError('not_signed_in', REASON_TEXT.not_signed_in);
    }
    let response;
    try {
      response = await fetchImpl(base.prefix + path, {
        method,
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        credentials,
        cache: 'no-store',
      });
    } catch (cause) {
      throw await unreachableError(cause);
    }
    if (!response.ok) throw await errorFromResponse(response);
    if (response.status === 204) return null;
    try {
      return await response.json();
    } catch (cause) {
      throw new ConnectError('invalid_response', REASON_TEXT.invalid_response, {
        status: response.status,
        requestId: response.headers?.get?.('x-request-id') ?? null,
        cause,
      });
    }
  }

  /**
   * Browsers report a response blocked by CORS exactly like a network failure. A `no-cors`
   * request (its answer is opaque, but it resolves when the service answered at all) tells the
   * two apart: the service is up, so it refused this page's origin.
   */
  async function unreachableError(cause) {
    let reachable = false;
    try {
      await fetchImpl(`${base.prefix}/v1/health`, { method: 'GET', mode: 'no-cors', credentials: 'omit', cache: 'no-store' });
      reachable = true;
    } catch {
      // Down, offline, or blocked before any answer: a network error.
    }
    if (!reachable) return new ConnectError('network_error', REASON_TEXT.network_error, { cause });
    const origin = g.location?.origin ?? 'this page’s origin';
    return new ConnectError(
      'origin_not_allowed',
      `The Celeste Connect service at ${base.origin} answered, but the browser blocked its response: ${origin} is not one of its app origins. Add ${origin} to CONNECT_APP_ORIGINS (the demo: --app-origins ${origin}).`,
      { cause },
    );
  }

  const api = {
    status: (path) => request('GET', `/v1/integrations/${path}/status`),
    list: () => request('GET', '/v1/integrations'),
    // The binding cookie set by this call is what ties the flow to this browser. `redirect`:
    // the callback sends this window back to the app's settings URL instead of rendering the
    // page that messages the opener.
    authUrl: (path, mode = 'popup') =>
      request('GET', `/v1/integrations/${path}/auth-url${mode === 'redirect' ? '?mode=redirect' : ''}`, {
        credentials: 'include',
      }),
    disconnect: (path) => request('DELETE', `/v1/integrations/${path}/disconnect`),
    activity: (path) => request('GET', `/v1/integrations/${path}/activity`),
  };

  /** @param {string} provider */
  async function status(provider) {
    return api.status(pathName(provider));
  }

  async function list() {
    const body = await api.list();
    if (!body || !Array.isArray(body.integrations)) {
      throw new ConnectError('invalid_response', REASON_TEXT.invalid_response);
    }
    return body.integrations;
  }

  /**
   * Who used the user's connection and when: `{provider, last_used, entries}` (the newest 20
   * rows; never a token). Show key names as text, never as HTML.
   * @param {string} provider
   */
  async function activity(provider) {
    const body = await api.activity(pathName(provider));
    if (!body || !Array.isArray(body.entries)) {
      throw new ConnectError('invalid_response', REASON_TEXT.invalid_response);
    }
    return body;
  }

  /** @param {string} provider */
  async function disconnect(provider) {
    await api.disconnect(pathName(provider));
  }

  /**
   * Connects `provider`. Call it directly from a click handler: the popup is opened before this
   * function returns, as Safari requires.
   * @param {string} provider
   * @param {{signal?: AbortSignal}} [connectOptions]
   */
  function connect(provider, connectOptions = {}) {
    let path;
    let id;
    try {
      path = pathName(provider);
      id = canonicalProvider(path);
    } catch (error) {
      return Promise.reject(error);
    }
    if (pending) {
      if (pending.provider === id) {
        try {
          pending.popup?.focus();
        } catch {
          // A cross-origin or closed popup may refuse focus; the flow goes on.
        }
        return pending.promise;
      }
      return Promise.reject(new ConnectError('flow_in_progress', REASON_TEXT.flow_in_progress));
    }

    // Synchronously, before any await: a popup opened after an await is blocked by Safari.
    const popup = openPopup(id);
    const flow = { provider: id, popup, promise: /** @type {Promise<any>} */ (Promise.resolve()) };
    const run = popup
      ? runPopupFlow({ id, path, popup, signal: connectOptions.signal })
      : runRedirectFlow({ id, path });
    flow.promise = run
      .catch((error) => ({ result: 'error', reason: errorCode(error), error }))
      .finally(() => {
        if (pending === flow) pending = null;
      });
    pending = flow;
    return flow.promise;
  }

  function openPopup(id) {
    const w = g.window;
    const { width, height } = popupSize;
    const left = Math.max(0, Math.round((w.screenX ?? 0) + ((w.outerWidth ?? width) - width) / 2));
    const top = Math.max(0, Math.round((w.screenY ?? 0) + ((w.outerHeight ?? height) - height) / 2));
    let popup = null;
    try {
      popup = w.open('about:blank', `celeste-connect-${id}`, `popup=yes,width=${width},height=${height},left=${left},top=${top}`);
    } catch {
      popup = null;
    }
    if (!popup || popup.closed) return null;
    showWaiting(popup);
    return popup;
  }

  async function runPopupFlow({ id, path, popup, signal }) {
    const baseline = api.status(path).catch(() => undefined);
    // Listen before the popup can reach the callback.
    const completion = awaitCompletion({ id, path, popup, baseline, signal });
    try {
      const target = checkAuthUrl(await api.authUrl(path));
      // Closed before it could navigate: nothing can have happened.
      if (isClosed(popup)) completion.finish({ result: 'cancelled' });
      if (!completion.settled()) popup.location.replace(target);
    } catch (error) {
      completion.finish({ result: 'error', reason: errorCode(error), error });
    }
    return completion.promise;
  }

  async function runRedirectFlow({ id, path }) {
    if (!redirectFallback) return { result: 'error', reason: 'popup_blocked' };
    const target = checkAuthUrl(await api.authUrl(path, 'redirect'));
    try {
      g.sessionStorage.setItem(REDIRECT_MARKER_KEY, JSON.stringify({ provider: id, startedAt: Date.now() }));
    } catch {
      // Storage disabled: the result still arrives in the URL.
    }
    g.location.assign(target);
    return { result: 'redirect' };
  }

  /**
   * Resolves once the popup flow has an outcome. Every path ends: a validated message, the
   * BroadcastChannel, a status poll, the popup closing (after a grace period), an abort, or the
   * flow timeout.
   */
  function awaitCompletion({ id, path, popup, baseline, signal }) {
    const w = g.window;
    const timers = new Set();
    let settled = false;
    let channel = null;
    let confirming = false;
    let known = /** @type {any} */ (undefined);
    let resolvePromise;
    const promise = new Promise((resolve) => {
      resolvePromise = resolve;
    });

    const later = (fn, ms) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (!settled) fn();
      }, ms);
      timers.add(timer);
    };

    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      w.removeEventListener('message', onMessage);
      w.removeEventListener('blur', onBlur);
      w.removeEventListener('focus', onFocus);
      signal?.removeEventListener('abort', onAbort);
      if (channel) {
        channel.onmessage = null;
        channel.close();
      }
      safeClose(popup);
      resolvePromise(outcome);
    };

    baseline.then((value) => {
      if (known === undefined && value) known = value;
    });

    const isNewConnection = (value) => {
      if (!value || value.status !== 'connected') return false;
      if (known === undefined) {
        known = value; // The first sample is the baseline when the early read failed.
        return false;
      }
      return known.status !== 'connected' || fingerprint(known) !== fingerprint(value);
    };

    const confirm = async () => {
      if (confirming) return;
      confirming = true;
      for (let attempt = 0; attempt < timing.confirmAttempts && !settled; attempt += 1) {
        try {
          const value = await api.status(path);
          if (value && value.status === 'connected') return finish({ result: 'connected', status: value });
        } catch {
          // Transient; try again.
        }
        await new Promise((resolve) => setTimeout(resolve, timing.confirmDelayMs));
      }
      finish({ result: 'error', reason: 'not_confirmed' });
    };

    const onCompletion = (completion) => {
      if (completion.kind === 'success') confirm();
      else finish({ result: 'error', reason: completion.reason });
    };

    const onMessage = (event) => {
      if (event.origin !== base.origin) return;
      if (event.source !== popup) return;
      const completion = parseCompletion(event.data, id);
      if (completion) onCompletion(completion);
    };

    const onAbort = () => finish({ result: 'cancelled' });

    const poll = async () => {
      try {
        const value = await api.status(path);
        if (!settled && isNewConnection(value)) return finish({ result: 'connected', status: value });
      } catch {
        // A failed poll is not an outcome; the next one, a message or the timeout will be.
      }
      later(poll, timing.pollIntervalMs);
    };

    // A popup closed by hand gives the focus back to this window at once; one cut off by COOP
    // keeps it while the user signs in. So this window regaining focus after the popup took it
    // means the window is gone, and the grace period below is not needed.
    let blurred = false;
    let refocused = false;
    let onClosedAndRefocused = null;
    const onBlur = () => {
      blurred = true;
    };
    const onFocus = () => {
      if (!blurred) return;
      refocused = true;
      onClosedAndRefocused?.();
    };

    const watchClosed = () => {
      if (!isClosed(popup)) return later(watchClosed, timing.closedCheckMs);
      // Under COOP `closed` reads true while the user is still signing in: keep listening and
      // polling for a while, with one last read before calling it cancelled.
      let reading = false;
      const lastRead = async () => {
        if (reading) return;
        reading = true;
        try {
          const value = await api.status(path);
          if (isNewConnection(value)) return finish({ result: 'connected', status: value });
        } catch {
          // Fall through to cancelled.
        }
        finish({ result: 'cancelled' });
      };
      if (refocused) return lastRead();
      onClosedAndRefocused = lastRead;
      later(lastRead, timing.closedGraceMs);
    };

    w.addEventListener('message', onMessage);
    w.addEventListener('blur', onBlur);
    w.addEventListener('focus', onFocus);
    if (signal) {
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
    if (!settled && isSameOrigin(base.origin) && typeof g.BroadcastChannel === 'function') {
      channel = new g.BroadcastChannel(CHANNEL_NAME);
      channel.onmessage = (event) => {
        const completion = parseCompletion(event.data, id);
        if (completion) onCompletion(completion);
      };
    }
    if (!settled) {
      later(poll, timing.pollIntervalMs);
      later(watchClosed, timing.closedCheckMs);
      later(() => finish({ result: 'error', reason: 'timeout' }), timing.flowTimeoutMs);
    }

    return { promise, finish, settled: () => settled };
  }

  /**
   * Calls `callback` when a status may have changed: a completion message on the same-origin
   * BroadcastChannel (another window or tab finished a flow), or this window becoming visible or
   * focused again (a popup just closed). The callback should re-read status. Returns a function
   * that stops watching.
   * @param {(hint: {source: 'broadcast'|'focus', provider?: string, result?: 'success'|'error'}) => void} callback
   */
  function watch(callback) {
    const w = g.window;
    const doc = g.document;
    let channel = null;
    let lastFocus = 0;
    if (isSameOrigin(base.origin) && typeof g.BroadcastChannel === 'function') {
      channel = new g.BroadcastChannel(CHANNEL_NAME);
      channel.onmessage = (event) => {
        const hint = parseAnyCompletion(event.data);
        if (hint) callback({ source: 'broadcast', provider: hint.provider, result: hint.kind });
      };
    }
    const onFocus = () => {
      if (doc && doc.visibilityState === 'hidden') return;
      const now = Date.now();
      if (now - lastFocus < 1000) return;
      lastFocus = now;
      callback({ source: 'focus' });
    };
    w.addEventListener('focus', onFocus);
    doc?.addEventListener('visibilitychange', onFocus);
    return () => {
      w.removeEventListener('focus', onFocus);
      doc?.removeEventListener('visibilitychange', onFocus);
      if (channel) {
        channel.onmessage = null;
        channel.close();
      }
    };
  }

  /**
   * `handleRedirectResult()` plus the server's word: a `connected` result is confirmed by
   * re-reading status. Returns null when the URL carries no result.
   * @param {{provider?: string}} [redirectOptions]
   */
  async function confirmRedirectResult(redirectOptions = {}) {
    const outcome = handleRedirectResult({ provider: redirectOptions.provider });
    if (!outcome) return null;
    let value = null;
    try {
      value = await status(outcome.provider);
    } catch (error) {
      return { ...outcome, result: 'error', reason: errorCode(error), error };
    }
    if (outcome.result === 'connected' && value.status !== 'connected') {
      return { ...outcome, result: 'error', reason: 'not_confirmed', status: value };
    }
    return { ...outcome, status: value };
  }

  return Object.freeze({
    baseUrl: base.prefix,
    status,
    list,
    activity,
    connect,
    disconnect,
    watch,
    handleRedirectResult: confirmRedirectResult,
    /** The provider whose connect flow is pending, or null. */
    get pending() {
      return pending ? pending.provider : null;
    },
  });
}

// --- helpers --------------------------------------------------------------------------------

function pathName(provider) {
  const name = String(provider ?? '').trim().toLowerCase();
  if (!PROVIDER_PATTERN.test(name)) throw new TypeError(`Invalid provider name: ${JSON.stringify(String(provider))}`);
  return name;
}

function safeCanonical(provider) {
  try {
    return canonicalProvider(provider);
  } catch {
    return null;
  }
}

function sanitizeReason(reason) {
  if (typeof reason !== 'string') return 'unknown';
  const code = reason.trim().toLowerCase();
  return REASON_PATTERN.test(code) ? code : 'unknown';
}

function errorCode(error) {
  return error instanceof ConnectError ? error.code : 'unknown';
}

function parseBaseUrl(value) {
  let url;
  try {
    url = new URL(String(value), globalThis.location?.href);
  } catch {
    throw new TypeError(`createConnectClient: baseUrl is not a URL: ${JSON.stringify(String(value))}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TypeError('createConnectClient: baseUrl must be an http(s) URL');
  }
  return { origin: url.origin, prefix: url.origin + url.pathname.replace(/\/+$/, '') };
}

function isSameOrigin(origin) {
  return globalThis.location?.origin === origin;
}

function fingerprint(value) {
  return [value.status, value.connected_at, value.updated_at, value.provider_email].join('|');
}

/** The completion message for `provider`, or null for anything else. */
function parseCompletion(data, provider) {
  const hint = parseAnyCompletion(data);
  if (!hint || hint.provider !== provider) return null;
  return hint;
}

function parseAnyCompletion(data) {
  if (!data || typeof data !== 'object' || typeof data.type !== 'string') return null;
  const match = COMPLETION_TYPE.exec(data.type);
  if (!match) return null;
  const fromType = match[1].toLowerCase();
  if (data.provider !== undefined && safeCanonical(data.provider) !== fromType) return null;
  const kind = match[2] === 'SUCCESS' ? 'success' : 'error';
  return { provider: fromType, kind, reason: kind === 'error' ? sanitizeReason(data.reason) : undefined };
}

function checkAuthUrl(body) {
  const value = body && typeof body.auth_url === 'string' ? body.auth_url : null;
  let url = null;
  try {
    url = value === null ? null : new URL(value);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
    throw new ConnectError('invalid_response', REASON_TEXT.invalid_response);
  }
  return url.href;
}

async function errorFromResponse(response) {
  const headerId = response.headers?.get?.('x-request-id') ?? null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const code =
    body && typeof body.error === 'string' && REASON_PATTERN.test(body.error) ? body.error : fallbackCode(response.status);
  const message =
    body && typeof body.message === 'string' && body.message.trim() !== ''
      ? body.message
      : (REASON_TEXT[code] ?? `The service answered ${response.status}.`);
  const requestId = body && typeof body.request_id === 'string' ? body.request_id : headerId;
  return new ConnectError(code, message, { status: response.status, requestId });
}

function fallbackCode(status) {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 429) return 'rate_limited';
  if (status === 502 || status === 503) return 'provider_unavailable';
  return `http_${status}`;
}

function takeRedirectMarker() {
  try {
    const raw = globalThis.sessionStorage.getItem(REDIRECT_MARKER_KEY);
    globalThis.sessionStorage.removeItem(REDIRECT_MARKER_KEY);
    const marker = raw ? JSON.parse(raw) : null;
    if (marker && typeof marker.provider === 'string' && typeof marker.startedAt === 'number') return marker;
  } catch {
    // Missing storage or a damaged marker: treat as not started here.
  }
  return null;
}

function isClosed(popup) {
  try {
    return popup.closed;
  } catch {
    return true;
  }
}

function safeClose(popup) {
  try {
    if (popup && !popup.closed) popup.close();
  } catch {
    // Already gone or no longer ours to close.
  }
}

/** A calm placeholder in the blank popup while the authorize URL is fetched. */
function showWaiting(popup) {
  try {
    const doc = popup.document;
    doc.title = 'Connecting…';
    const text = doc.createElement('p');
    text.textContent = 'Opening the sign-in page…';
    // CSSOM, not a style attribute: allowed under a strict CSP.
    text.style.font = '16px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    text.style.color = '#475569';
    text.style.margin = '3rem auto';
    text.style.textAlign = 'center';
    doc.body.append(text);
  } catch {
    // Not ours to write to (already navigated); harmless.
  }
}
