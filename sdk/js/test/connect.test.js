// Unit tests of the browser SDK against a fake window, popup, storage and API, run with
// `node --test sdk/js/test/`. The real browser behaviour is covered by e2e/ in Chromium.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import {
  ConnectError,
  canonicalProvider,
  createConnectClient,
  describeReason,
  handleRedirectResult,
} from '../connect.js';

const SERVICE = 'https://connect.example.com';
const APP = 'https://app.example.com';
const AUTH_URL = 'https://login.example.com/common/oauth2/v2.0/authorize?state=s';

const FAST = { pollIntervalMs: 60_000, closedCheckMs: 10, closedGraceMs: 60, flowTimeoutMs: 60_000, confirmDelayMs: 5 };

function status(state, extra = {}) {
  const connected = state !== 'not_connected';
  return {
    provider: 'microsoft',
    connected: state === 'connected',
    status: state,
    provider_email: connected ? 'adele@contoso.example' : null,
    display_name: connected ? 'Adele Vance' : null,
    scopes: connected ? ['Mail.Read'] : [],
    connected_at: connected ? '2025-01-01T00:00:00Z' : null,
    updated_at: connected ? '2025-01-01T00:00:00Z' : null,
    last_refreshed_at: null,
    ...extra,
  };
}

class FakePopup {
  constructor() {
    this.closed = false;
    this.navigations = [];
    this.location = { replace: (url) => this.navigations.push(url) };
  }
  close() {
    this.closed = true;
  }
  focus() {}
}

class FakeWindow extends EventTarget {
  constructor(log) {
    super();
    this.log = log;
    this.popup = new FakePopup();
    this.blockPopups = false;
    this.openCalls = [];
    this.screenX = 0;
    this.screenY = 0;
    this.outerWidth = 1280;
    this.outerHeight = 800;
  }
  open(url, name, features) {
    this.log.push('open');
    this.openCalls.push({ url, name, features });
    return this.blockPopups ? null : this.popup;
  }
}

class FakeStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}

/** A fake service: answers the user API from `server.status`, records every call. */
function fakeService(log) {
  const server = {
    status: status('not_connected'),
    calls: [],
    authUrlAnswer: () => json(200, { auth_url: AUTH_URL, expires_at: '2030-01-01T00:00:00Z' }),
  };
  server.fetch = async (url, init) => {
    log.push('fetch');
    server.calls.push({ url, init });
    const path = new URL(url).pathname;
    if (path.endsWith('/auth-url')) return server.authUrlAnswer();
    if (path.endsWith('/status')) return json(200, server.status);
    if (path === '/v1/integrations') return json(200, { integrations: [server.status] });
    if (path.endsWith('/disconnect')) return new Response(null, { status: 204 });
    return json(404, { error: 'not_found', message: 'No such route.', request_id: 'req-404' });
  };
  return server;
}

function json(code, body) {
  return new Response(JSON.stringify(body), { status: code, headers: { 'content-type': 'application/json' } });
}

function postMessage(win, { origin, source, data }) {
  const event = new Event('message');
  Object.defineProperties(event, { origin: { value: origin }, source: { value: source }, data: { value: data } });
  win.dispatchEvent(event);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves to 'pending' when `promise` has not settled within `ms`. */
async function settledWithin(promise, ms) {
  return Promise.race([promise, sleep(ms).then(() => 'pending')]);
}

let log;
let win;
let server;
let saved;

function install({ pageOrigin = APP } = {}) {
  saved = {
    window: globalThis.window,
    location: globalThis.location,
    sessionStorage: globalThis.sessionStorage,
    history: globalThis.history,
  };
  log = [];
  win = new FakeWindow(log);
  server = fakeService(log);
  const history = {
    state: null,
    replaced: [],
    replaceState(state, _title, url) {
      this.replaced.push(url);
    },
  };
  globalThis.window = win;
  globalThis.location = {
    origin: pageOrigin,
    href: `${pageOrigin}/settings`,
    assigned: [],
    assign(url) {
      this.assigned.push(url);
    },
  };
  globalThis.sessionStorage = new FakeStorage();
  globalThis.history = history;
}

function client(extra = {}) {
  return createConnectClient({
    baseUrl: SERVICE,
    getAccessToken: () => 'user.jwt',
    fetch: server.fetch,
    timing: FAST,
    ...extra,
  });
}

beforeEach(() => install());
afterEach(() => {
  for (const [key, value] of Object.entries(saved)) {
    if (value === undefined) delete globalThis[key];
    else globalThis[key] = value;
  }
});

describe('connect', () => {
  test('opens the popup synchronously, before any request or await', () => {
    const promise = client().connect('outlook');
    assert.equal(log[0], 'open', 'window.open must be the first thing connect does');
    assert.equal(win.openCalls.length, 1);
    assert.equal(win.openCalls[0].url, 'about:blank');
    assert.match(win.openCalls[0].features, /width=520,height=680/);
    win.popup.close();
    return promise;
  });

  test('fetches the auth URL with credentials and the bearer, then navigates the popup', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    const authCall = server.calls.find((c) => c.url.endsWith('/v1/integrations/outlook/auth-url'));
    assert.ok(authCall, 'auth-url was requested');
    assert.equal(authCall.init.credentials, 'include');
    assert.equal(authCall.init.headers.Authorization, 'Bearer user.jwt');
    assert.equal(new URL(authCall.url).search, '', 'popup mode is the default');
    assert.deepEqual(win.popup.navigations, [AUTH_URL]);
    win.popup.close();
    assert.deepEqual(await promise, { result: 'cancelled' });
  });

  test('ignores completion messages from another origin or another window', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    for (const type of ['MICROSOFT_AUTH_SUCCESS', 'MICROSOFT_AUTH_ERROR']) {
      const data = { type, provider: 'microsoft', reason: 'access_denied' };
      postMessage(win, { origin: 'https://evil.example', source: win.popup, data });
      postMessage(win, { origin: SERVICE, source: {}, data });
      postMessage(win, { origin: SERVICE, source: null, data });
    }
    assert.equal(await settledWithin(promise, 80), 'pending');

    server.status = status('connected');
    postMessage(win, { origin: SERVICE, source: win.popup, data: { type: 'MICROSOFT_AUTH_SUCCESS', provider: 'microsoft' } });
    const outcome = await promise;
    assert.equal(outcome.result, 'connected');
    assert.equal(outcome.status.provider_email, 'adele@contoso.example');
  });

  test('a success message is only a hint: the server must confirm it', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    postMessage(win, { origin: SERVICE, source: win.popup, data: { type: 'MICROSOFT_AUTH_SUCCESS', provider: 'microsoft' } });
    assert.deepEqual(await promise, { result: 'error', reason: 'not_confirmed' });
  });

  test('an error message from the popup ends the flow with its reason and closes the popup', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    postMessage(win, {
      origin: SERVICE,
      source: win.popup,
      data: { type: 'MICROSOFT_AUTH_ERROR', provider: 'microsoft', reason: 'access_denied' },
    });
    assert.deepEqual(await promise, { result: 'error', reason: 'access_denied' });
    assert.equal(win.popup.closed, true);
  });

  test('an unexpected reason is reduced to a safe code', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    postMessage(win, {
      origin: SERVICE,
      source: win.popup,
      data: { type: 'MICROSOFT_AUTH_ERROR', reason: '<img src=x onerror=alert(1)>' },
    });
    assert.deepEqual(await promise, { result: 'error', reason: 'unknown' });
  });

  test('closing the popup resolves cancelled after the grace period', async () => {
    const promise = client().connect('outlook');
    await sleep(20);
    win.popup.close();
    assert.deepEqual(await settledWithin(promise, 1000), { result: 'cancelled' });
  });

  test('a popup closed by hand (this window gets the focus back) resolves cancelled at once', async () => {
    const promise = client({ timing: { ...FAST, closedGraceMs: 10_000 } }).connect('outlook');
    await sleep(20);
    win.dispatchEvent(new Event('blur')); // the popup took the focus
    win.popup.close();
    win.dispatchEvent(new Event('focus')); // the browser hands it back on close
    assert.deepEqual(await settledWithin(promise, 300), { result: 'cancelled' });
  });

  test('focus coming back before the closed check is noticed too', async () => {
    const promise = client({ timing: { ...FAST, closedCheckMs: 50, closedGraceMs: 10_000 } }).connect('outlook');
    await sleep(20);
    win.dispatchEvent(new Event('blur'));
    win.popup.close();
    win.dispatchEvent(new Event('focus'));
    assert.deepEqual(await settledWithin(promise, 400), { result: 'cancelled' });
  });

  test('COOP: closed reads true while the popup keeps the focus, so the grace period applies', async () => {
    const promise = client({ timing: { ...FAST, closedGraceMs: 10_000 } }).connect('outlook');
    await sleep(20);
    win.dispatchEvent(new Event('blur'));
    win.popup.closed = true; // severed, not closed: no focus comes back
    assert.equal(await settledWithin(promise, 300), 'pending');
    win.dispatchEvent(new Event('focus')); // the user comes back to this window
    assert.deepEqual(await settledWithin(promise, 300), { result: 'cancelled' });
  });

  test('a focus event that was not preceded by losing the focus does not end the wait', async () => {
    const controller = new AbortController();
    const promise = client({ timing: { ...FAST, closedGraceMs: 10_000 } }).connect('outlook', { signal: controller.signal });
    await sleep(20);
    win.dispatchEvent(new Event('focus'));
    win.popup.closed = true;
    assert.equal(await settledWithin(promise, 300), 'pending');
    controller.abort();
    assert.deepEqual(await promise, { result: 'cancelled' });
  });

  test('closing the popup before it navigated resolves cancelled at once', async () => {
    const promise = client().connect('outlook');
    win.popup.close();
    assert.deepEqual(await settledWithin(promise, 40), { result: 'cancelled' });
    assert.deepEqual(win.popup.navigations, []);
  });

  test('a popup that reads closed (COOP) still completes when the server says connected', async () => {
    const promise = client({ timing: { ...FAST, pollIntervalMs: 20, closedGraceMs: 500 } }).connect('outlook');
    await sleep(30);
    win.popup.closed = true; // COOP severed the opener: closed reads true, the flow goes on
    await sleep(60);
    server.status = status('connected');
    const outcome = await promise;
    assert.equal(outcome.result, 'connected');
  });

  test('polling resolves a reconnect only when the connection actually changed', async () => {
    server.status = status('connected');
    const promise = client({ timing: { ...FAST, pollIntervalMs: 15 } }).connect('outlook');
    assert.equal(await settledWithin(promise, 120), 'pending', 'the old connection is not a new one');
    server.status = status('connected', { connected_at: '2025-06-01T00:00:00Z', updated_at: '2025-06-01T00:00:00Z' });
    const outcome = await promise;
    assert.equal(outcome.result, 'connected');
    assert.equal(outcome.status.connected_at, '2025-06-01T00:00:00Z');
  });

  test('needs_reauth → connected is picked up by polling', async () => {
    server.status = status('needs_reauth');
    const promise = client({ timing: { ...FAST, pollIntervalMs: 15 } }).connect('outlook');
    await sleep(50);
    server.status = status('connected');
    assert.equal((await promise).result, 'connected');
  });

  test('the flow times out instead of hanging', async () => {
    const promise = client({ timing: { ...FAST, flowTimeoutMs: 80 } }).connect('outlook');
    assert.deepEqual(await settledWithin(promise, 1000), { result: 'error', reason: 'timeout' });
    assert.equal(win.popup.closed, true);
  });

  test('an abort signal cancels the flow and closes the popup', async () => {
    const controller = new AbortController();
    const promise = client().connect('outlook', { signal: controller.signal });
    await sleep(20);
    controller.abort();
    assert.deepEqual(await promise, { result: 'cancelled' });
    assert.equal(win.popup.closed, true);
  });

  test('an API error while starting closes the popup and resolves an error with the code', async () => {
    server.authUrlAnswer = () =>
      json(403, { error: 'forbidden', message: 'This origin may not use the API.', request_id: 'req-1' });
    const outcome = await client().connect('outlook');
    assert.equal(outcome.result, 'error');
    assert.equal(outcome.reason, 'forbidden');
    assert.ok(outcome.error instanceof ConnectError);
    assert.equal(outcome.error.requestId, 'req-1');
    assert.equal(win.popup.closed, true);
  });

  test('a non-http auth URL is refused', async () => {
    server.authUrlAnswer = () => json(200, { auth_url: 'javascript:alert(1)', expires_at: 'x' });
    const outcome = await client().connect('outlook');
    assert.equal(outcome.reason, 'invalid_response');
    assert.deepEqual(win.popup.navigations, []);
  });

  test('a second connect while pending returns the same promise; another provider is refused', async () => {
    const c = client();
    const first = c.connect('outlook');
    const second = c.connect('microsoft');
    assert.equal(first, second);
    assert.equal(win.openCalls.length, 1);
    await assert.rejects(c.connect('google'), (err) => err instanceof ConnectError && err.code === 'flow_in_progress');
    assert.equal(c.pending, 'microsoft');
    win.popup.close();
    await first;
    assert.equal(c.pending, null);
  });

  test('not signed in: the popup is closed and the flow ends', async () => {
    const outcome = await client({ getAccessToken: async () => null }).connect('outlook');
    assert.equal(outcome.result, 'error');
    assert.equal(outcome.reason, 'not_signed_in');
    assert.equal(win.popup.closed, true);
  });

  test('an invalid provider name rejects without opening anything', async () => {
    await assert.rejects(client().connect('../admin'), TypeError);
    assert.equal(win.openCalls.length, 0);
  });
});

describe('same-origin BroadcastChannel', () => {
  test('a completion on the channel is accepted when the page shares the service origin', async () => {
    install({ pageOrigin: SERVICE });
    const promise = client().connect('outlook');
    await sleep(20);
    server.status = status('connected');
    const channel = new BroadcastChannel('celeste-connect');
    channel.postMessage({ type: 'MICROSOFT_AUTH_SUCCESS', provider: 'microsoft' });
    const outcome = await promise;
    channel.close();
    assert.equal(outcome.result, 'connected');
  });

  test('watch() reports channel hints and stops when asked', async () => {
    install({ pageOrigin: SERVICE });
    const hints = [];
    const stop = client().watch((hint) => hints.push(hint));
    const channel = new BroadcastChannel('celeste-connect');
    channel.postMessage({ type: 'MICROSOFT_AUTH_SUCCESS', provider: 'microsoft' });
    channel.postMessage({ type: 'SOMETHING_ELSE' });
    // Delivery is asynchronous and a loaded machine can take longer than any fixed pause: wait
    // for the hint (the other message, posted after it, has been delivered by then too).
    for (let waited = 0; hints.length === 0 && waited < 5000; waited += 10) await sleep(10);
    await sleep(30);
    stop();
    channel.postMessage({ type: 'GOOGLE_AUTH_ERROR', reason: 'access_denied' });
    await sleep(30);
    channel.close();
    assert.deepEqual(hints, [{ source: 'broadcast', provider: 'microsoft', result: 'success' }]);
  });
});

describe('popup blocked: same-window flow', () => {
  test('navigates this window to the auth URL and leaves a marker', async () => {
    win.blockPopups = true;
    const outcome = await client().connect('outlook');
    assert.deepEqual(outcome, { result: 'redirect' });
    assert.equal(new URL(server.calls[0].url).search, '?mode=redirect', 'the callback must redirect back, not message');
    assert.deepEqual(globalThis.location.assigned, [AUTH_URL]);
    const marker = JSON.parse(globalThis.sessionStorage.getItem('celeste-connect.redirect'));
    assert.equal(marker.provider, 'microsoft');
  });

  test('redirectFallback: false reports popup_blocked instead', async () => {
    win.blockPopups = true;
    const outcome = await client({ redirectFallback: false }).connect('outlook');
    assert.deepEqual(outcome, { result: 'error', reason: 'popup_blocked' });
    assert.deepEqual(globalThis.location.assigned, []);
  });

  test('handleRedirectResult reads the result, cleans the URL and consumes the marker', () => {
    globalThis.sessionStorage.setItem(
      'celeste-connect.redirect',
      JSON.stringify({ provider: 'microsoft', startedAt: Date.now() }),
    );
    globalThis.location.href = `${APP}/settings?tab=mail&integration=outlook&result=connected#top`;
    const outcome = handleRedirectResult();
    assert.deepEqual(outcome, { provider: 'microsoft', result: 'connected', startedHere: true });
    assert.deepEqual(globalThis.history.replaced, ['/settings?tab=mail#top']);
    assert.equal(globalThis.sessionStorage.getItem('celeste-connect.redirect'), null);
  });

  test('handleRedirectResult sanitises the reason and ignores other providers', () => {
    globalThis.location.href = `${APP}/settings?integration=outlook&result=error&reason=%3Cscript%3E`;
    assert.equal(handleRedirectResult({ provider: 'google' }), null);
    assert.deepEqual(globalThis.history.replaced, []);
    assert.deepEqual(handleRedirectResult(), {
      provider: 'microsoft',
      result: 'error',
      reason: 'unknown',
      startedHere: false,
    });
  });

  test('client.handleRedirectResult confirms a connected result with the server', async () => {
    globalThis.location.href = `${APP}/settings?integration=outlook&result=connected`;
    const outcome = await client().handleRedirectResult();
    assert.equal(outcome.result, 'error');
    assert.equal(outcome.reason, 'not_confirmed');
  });

  test('no result in the URL: null, URL untouched', () => {
    assert.equal(handleRedirectResult(), null);
    assert.deepEqual(globalThis.history.replaced, []);
  });
});

describe('API calls', () => {
  test('status, list and disconnect send the bearer and return the body', async () => {
    const c = client();
    assert.equal((await c.status('outlook')).status, 'not_connected');
    assert.equal((await c.list()).length, 1);
    assert.equal(await c.disconnect('outlook'), undefined);
    assert.deepEqual(
      server.calls.map((call) => [call.init.method, new URL(call.url).pathname, call.init.credentials]),
      [
        ['GET', '/v1/integrations/outlook/status', 'omit'],
        ['GET', '/v1/integrations', 'omit'],
        ['DELETE', '/v1/integrations/outlook/disconnect', 'omit'],
      ],
    );
  });

  test('activity reads the user\'s history with the bearer, and refuses an answer without entries', async () => {
    const history = {
      provider: 'microsoft',
      last_used: { key_name: 'n8n', kind: 'token', at: '2030-01-01T00:00:00Z' },
      entries: [{ kind: 'token', key_name: 'n8n', count: 3 }],
    };
    server.fetch = async (url, init) => {
      server.calls.push({ url, init });
      return json(200, history);
    };
    const c = client();
    assert.deepEqual(await c.activity('outlook'), history);
    assert.deepEqual(
      server.calls.map((call) => [call.init.method, new URL(call.url).pathname, call.init.headers.Authorization]),
      [['GET', '/v1/integrations/outlook/activity', 'Bearer user.jwt']],
    );
    server.fetch = async () => json(200, { provider: 'microsoft' });
    const err = await client().activity('outlook').catch((e) => e);
    assert.equal(err.code, 'invalid_response');
  });

  test('an API error becomes a ConnectError with code, message, requestId and status', async () => {
    server.fetch = async () =>
      json(401, { error: 'unauthorized', message: 'The user token is missing or invalid.', request_id: 'req-9' });
    const err = await client().status('outlook').catch((e) => e);
    assert.ok(err instanceof ConnectError);
    assert.deepEqual([err.code, err.message, err.requestId, err.status], [
      'unauthorized',
      'The user token is missing or invalid.',
      'req-9',
      401,
    ]);
  });

  test('a network failure becomes network_error', async () => {
    server.fetch = async () => {
      throw new TypeError('Failed to fetch');
    };
    const err = await client().list().catch((e) => e);
    assert.equal(err.code, 'network_error');
    assert.equal(err.status, 0);
  });

  test('a response blocked by CORS (the service answers no-cors requests) names the origin to add', async () => {
    const probes = [];
    server.fetch = async (url, init) => {
      if (init.mode === 'no-cors') {
        probes.push({ url, credentials: init.credentials });
        return new Response(null, { status: 200 });
      }
      throw new TypeError('Failed to fetch');
    };
    const err = await client().list().catch((e) => e);
    assert.equal(err.code, 'origin_not_allowed');
    assert.match(err.message, /Add https:\/\/app\.example\.com to CONNECT_APP_ORIGINS/);
    assert.deepEqual(probes, [{ url: `${SERVICE}/v1/health`, credentials: 'omit' }]);
    assert.match(describeReason('origin_not_allowed'), /CONNECT_APP_ORIGINS/);
  });

  test('a connect refused by CORS ends with origin_not_allowed and closes the popup', async () => {
    server.fetch = async (_url, init) => {
      if (init.mode === 'no-cors') return new Response(null, { status: 200 });
      throw new TypeError('Failed to fetch');
    };
    const outcome = await client().connect('outlook');
    assert.equal(outcome.result, 'error');
    assert.equal(outcome.reason, 'origin_not_allowed');
    assert.equal(win.popup.closed, true);
  });

  test('a base URL with a path prefix is kept', async () => {
    await client({ baseUrl: `${SERVICE}/connect/` }).status('outlook');
    assert.equal(server.calls[0].url, `${SERVICE}/connect/v1/integrations/outlook/status`);
  });
});

describe('helpers', () => {
  test('canonicalProvider maps the outlook alias', () => {
    assert.equal(canonicalProvider('outlook'), 'microsoft');
    assert.equal(canonicalProvider('Google'), 'google');
    assert.throws(() => canonicalProvider('a/b'), TypeError);
  });

  test('describeReason has a sentence for every reason and a safe fallback', () => {
    assert.match(describeReason('access_denied'), /nothing was connected/);
    assert.equal(describeReason('<b>'), 'Something went wrong (unknown). Please try again.');
  });
});
