// The service's own settings page (/settings): one card per provider, built on the browser SDK.
// No inline script or style exists on the page (CSP `default-src 'self'`); the template passes
// data through `data-*` attributes. Everything shown comes from the server's status answers and
// is written with textContent, never as HTML.
//
// The user's token: in demo mode the page signs in through POST /demo/session and keeps that
// JWT (the app's own session token, not a provider token) in sessionStorage. Otherwise a host
// app served from this same origin puts its user's JWT in `sessionStorage['celeste-connect.jwt']`
// before opening the page. Nothing else can name the user: in particular not the URL, which any
// page of any origin can set (`/settings#token=<someone else's JWT>` would swap the user under a
// victim's eyes), so a `token=` fragment is removed unread.

import { createConnectClient, describeReason, handleRedirectResult } from '/sdk/connect.js';

const TOKEN_KEY = 'celeste-connect.jwt';
const DEMO_USER_KEY = 'celeste-connect.demo-user';

const STATUS_TEXT = {
  connected: 'Connected ✓',
  not_connected: 'Not connected',
  needs_reauth: 'Needs reconnect',
};

const body = document.body;
const demo = body.dataset.demo === 'true';
const baseUrl = serviceBaseUrl(body.dataset.baseUrl);
const cards = [...document.querySelectorAll('.card[data-provider]')];
const announcer = document.getElementById('announcer');
const pageError = document.getElementById('page-error');
const sessionBox = document.getElementById('session');
const demoPanel = document.getElementById('demo-panel');
const tokenHelp = document.getElementById('token-help');

const client = createConnectClient({ baseUrl, getAccessToken: storedToken });

/** Cards with an action in flight, by provider id; a refresh leaves their buttons alone. */
const busy = new Map();
let refreshSeq = 0;

// --- session --------------------------------------------------------------------------------

function serviceBaseUrl(configured) {
  // The page is served by the service, so its own origin reaches the API even when the
  // configured public URL names another host for the same server.
  try {
    const url = new URL(configured || location.origin);
    return url.origin === location.origin ? url.href : location.origin + url.pathname;
  } catch {
    return location.origin;
  }
}

function readStorage(key) {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeStorage(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch {
    // Storage disabled: the session lasts for this page only.
  }
}

function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}

function storedToken() {
  const token = readStorage(TOKEN_KEY);
  if (!token) return null;
  const claims = jwtClaims(token);
  if (claims && typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) {
    forgetSession();
    return null;
  }
  return token;
}

function forgetSession() {
  writeStorage(TOKEN_KEY, null);
  writeStorage(DEMO_USER_KEY, null);
}

/**
 * Removes a `#token=…` fragment from the address bar without reading it: whoever put it there
 * (a link or a page of another origin navigating this window) must not choose the user, and a
 * token should not linger in the URL or the history.
 */
function discardFragmentToken() {
  if (!/(?:^#|&)token=/.test(location.hash)) return;
  history.replaceState(history.state, '', location.pathname + location.search);
}

function signedInName() {
  try {
    const user = JSON.parse(readStorage(DEMO_USER_KEY) ?? 'null');
    if (user && typeof user.name === 'string') return user.name;
  } catch {
    // Fall back to the token's claims.
  }
  const claims = jwtClaims(readStorage(TOKEN_KEY) ?? '');
  return (claims && (claims.email || claims.name || claims.sub)) || 'your account';
}

function showSession() {
  const signedIn = storedToken() !== null;
  body.dataset.signedIn = String(signedIn);
  sessionBox.hidden = !signedIn;
  sessionBox.querySelector('[data-role=user-name]').textContent = signedIn ? signedInName() : '';
  if (demoPanel) demoPanel.hidden = signedIn;
  if (tokenHelp) tokenHelp.hidden = signedIn;
  if (!signedIn) for (const card of cards) renderSignedOut(card);
  return signedIn;
}

async function demoSignIn(name) {
  const response = await fetch(new URL('demo/session', withSlash(baseUrl)), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ user: name }),
    cache: 'no-store',
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok || !answer || typeof answer.access_token !== 'string') {
    throw new Error((answer && answer.message) || 'Could not sign in to the demo. Is the service running in demo mode?');
  }
  writeStorage(TOKEN_KEY, answer.access_token);
  writeStorage(
    DEMO_USER_KEY,
    JSON.stringify({ name: answer.name ?? name, user_id: answer.user_id, expires_at: answer.expires_at }),
  );
}

function withSlash(url) {
  return url.endsWith('/') ? url : `${url}/`;
}

// --- rendering ------------------------------------------------------------------------------

function part(card, role) {
  return card.querySelector(`[data-role="${role}"]`);
}

function button(card, action) {
  return card.querySelector(`[data-action="${action}"]`);
}

function label(card) {
  return card.dataset.label || card.dataset.provider;
}

function cardFor(provider) {
  return cards.find((card) => card.dataset.provider === provider || card.dataset.path === provider) ?? null;
}

function formatDate(value) {
  const date = value ? new Date(value) : null;
  if (!date || Number.isNaN(date.getTime())) return '';
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

function renderSignedOut(card) {
  card.dataset.state = 'signed-out';
  part(card, 'status').textContent = demo ? 'Sign in to see your status' : 'Waiting for your app’s sign-in';
  part(card, 'details').hidden = true;
  part(card, 'activity').hidden = true;
  part(card, 'hint').hidden = true;
  const connect = button(card, 'connect');
  connect.textContent = 'Connect';
  connect.className = 'btn btn-primary';
  connect.disabled = true;
  button(card, 'disconnect').hidden = true;
}

function render(card, status) {
  const state = STATUS_TEXT[status.status] ? status.status : 'not_connected';
  card.dataset.state = state;
  part(card, 'status').textContent = STATUS_TEXT[state];

  const linked = state !== 'not_connected';
  part(card, 'details').hidden = !linked;
  part(card, 'email').textContent = linked ? (status.provider_email ?? '—') : '';
  part(card, 'display-name').textContent = linked ? (status.display_name ?? '—') : '';
  const since = part(card, 'connected-at');
  since.textContent = linked ? formatDate(status.connected_at) || '—' : '';
  if (linked && status.connected_at) since.setAttribute('datetime', status.connected_at);
  else since.removeAttribute('datetime');

  const hint = part(card, 'hint');
  hint.hidden = state !== 'needs_reauth';
  hint.textContent =
    state === 'needs_reauth'
      ? `${label(card)} no longer accepts the saved sign-in (consent removed, password changed or long unused). Reconnect to resume.`
      : '';

  const connect = button(card, 'connect');
  const disconnect = button(card, 'disconnect');
  connect.textContent = state === 'not_connected' ? 'Connect' : 'Reconnect';
  connect.className = state === 'connected' ? 'btn btn-secondary' : 'btn btn-primary';
  disconnect.hidden = !linked;
  renderBusy(card);
}

// --- activity -------------------------------------------------------------------------------

const relativeTime = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** "3 minutes ago", "yesterday". */
function ago(value) {
  const date = value ? new Date(value) : null;
  if (!date || Number.isNaN(date.getTime())) return '';
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const steps = [
    ['second', 60],
    ['minute', 60],
    ['hour', 24],
    ['day', 7],
    ['week', 5],
    ['month', 12],
    ['year', Infinity],
  ];
  let amount = seconds;
  for (const [unit, size] of steps) {
    if (Math.abs(amount) < size) {
      return unit === 'second' && Math.abs(amount) < 45 ? 'just now' : relativeTime.format(Math.trunc(amount), unit);
    }
    amount /= size;
  }
  return '';
}

/** What one activity row says, in the user's words. Key names are the operator's: text only. */
function describeActivity(card, entry) {
  const backend = entry.key_name ?? 'A backend';
  const times = entry.count > 1 ? ` (${entry.count}×)` : '';
  const failed = entry.outcome !== 'ok' && !/^[23]xx$/.test(entry.outcome) ? `, refused: ${entry.outcome}` : '';
  switch (entry.kind) {
    case 'token':
      return `${backend} fetched an access token${times}${failed}`;
    case 'proxy':
      return `${backend} called ${entry.method ?? ''} ${entry.path ?? ''}${times} → ${entry.outcome}`;
    case 'connected':
      return 'You connected this account';
    case 'reconnected':
      return 'You connected again';
    case 'disconnected':
      return entry.actor === 'key' ? `Disconnected by ${backend}` : 'You disconnected';
    case 'needs_reauth':
      return `${label(card)} stopped accepting the saved sign-in`;
    default:
      return entry.kind;
  }
}

function renderActivity(card, activity) {
  const box = part(card, 'activity');
  const entries = Array.isArray(activity?.entries) ? activity.entries : [];
  box.hidden = entries.length === 0 && !activity?.last_used;
  const lastUsed = part(card, 'last-used');
  const last = activity?.last_used;
  lastUsed.textContent = last
    ? `Last used by ${last.key_name ?? 'a backend'}, ${ago(last.at)}`
    : 'Not used by any backend yet';
  if (last) lastUsed.title = formatDate(last.at);
  const list = part(card, 'history');
  list.replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement('li');
      const when = document.createElement('time');
      when.dateTime = entry.last_seen;
      when.textContent = ago(entry.last_seen);
      when.title = formatDate(entry.last_seen);
      const what = document.createElement('span');
      what.textContent = describeActivity(card, entry);
      item.dataset.kind = entry.kind;
      item.append(what, ' · ', when);
      return item;
    }),
  );
}

async function loadActivity(card) {
  try {
    renderActivity(card, await client.activity(card.dataset.path));
  } catch {
    // The history is a courtesy: without it the card still works.
    part(card, 'activity').hidden = true;
  }
}

function renderBusy(card) {
  const action = busy.get(card.dataset.provider) ?? null;
  const connect = button(card, 'connect');
  const disconnect = button(card, 'disconnect');
  const signedOut = card.dataset.state === 'signed-out';
  card.setAttribute('aria-busy', String(action !== null));
  connect.disabled = action !== null || signedOut;
  disconnect.disabled = action !== null;
  connect.setAttribute('aria-busy', String(action === 'connect'));
  disconnect.setAttribute('aria-busy', String(action === 'disconnect'));
  if (action === 'connect') connect.textContent = 'Connecting…';
  if (action === 'disconnect') disconnect.textContent = 'Disconnecting…';
  else disconnect.textContent = 'Disconnect';
}

function setBusy(card, action) {
  if (action) busy.set(card.dataset.provider, action);
  else busy.delete(card.dataset.provider);
  renderBusy(card);
}

function showCardError(card, text) {
  const error = part(card, 'error');
  error.textContent = text;
  error.hidden = !text;
}

function showNotice(card, text) {
  const notice = part(card, 'notice');
  notice.textContent = text;
  notice.hidden = !text;
}

function clearMessages(card) {
  showCardError(card, '');
  showNotice(card, '');
}

function announce(text) {
  // Clearing first makes screen readers repeat an identical message.
  announcer.textContent = '';
  window.setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

function showPageError(text) {
  pageError.textContent = text;
  pageError.hidden = !text;
}

function errorText(error) {
  if (!error) return describeReason('unknown');
  const message = typeof error.message === 'string' && error.message ? error.message : describeReason(error.code);
  return error.requestId ? `${message} (reference ${error.requestId})` : message;
}

// --- actions --------------------------------------------------------------------------------

/** Re-reads every card's status; returns the statuses, or null when it could not. */
async function refresh() {
  if (storedToken() === null) return null;
  const seq = ++refreshSeq;
  try {
    const statuses = await client.list();
    if (seq !== refreshSeq) return statuses;
    showPageError('');
    for (const card of cards) {
      const status = statuses.find((s) => s.provider === card.dataset.provider);
      if (status) {
        render(card, status);
        loadActivity(card);
      }
      else {
        card.dataset.state = 'not_connected';
        part(card, 'status').textContent = 'Unavailable';
        button(card, 'connect').disabled = true;
      }
    }
    return statuses;
  } catch (error) {
    if (seq === refreshSeq) handleApiError(error);
    return null;
  }
}

function handleApiError(error, card = null) {
  if (error && (error.code === 'unauthorized' || error.code === 'not_signed_in')) {
    forgetSession();
    showSession();
    showPageError(demo ? 'Your demo session has ended. Sign in again.' : 'Your session has expired. Open this page from your app again.');
    return;
  }
  if (card) showCardError(card, errorText(error));
  else showPageError(errorText(error));
}

function onConnect(card) {
  if (busy.has(card.dataset.provider)) return;
  // Synchronously inside the click: the SDK opens the popup before any await.
  const outcome = client.connect(card.dataset.path);
  clearMessages(card);
  setBusy(card, 'connect');
  announce(`Opening ${label(card)} sign-in…`);
  outcome
    .then((result) => {
      if (result.result === 'redirect') {
        announce(`Continuing to ${label(card)} in this window…`);
        return; // This page is being replaced; stay busy.
      }
      setBusy(card, null);
      if (result.result === 'connected') {
        render(card, result.status);
        loadActivity(card);
        announce(`${label(card)} connected${result.status.provider_email ? ` as ${result.status.provider_email}` : ''}.`);
      } else if (result.result === 'cancelled') {
        showNotice(card, 'The sign-in window was closed before finishing. Nothing changed.');
        announce('Connection cancelled.');
        refresh();
      } else if (result.error) {
        handleApiError(result.error, card);
        refresh();
      } else {
        showCardError(card, describeReason(result.reason));
        announce(`${label(card)} was not connected.`);
        refresh();
      }
    })
    .catch((error) => {
      setBusy(card, null);
      handleApiError(error, card);
    });
}

async function onDisconnect(card) {
  if (busy.has(card.dataset.provider)) return;
  clearMessages(card);
  setBusy(card, 'disconnect');
  try {
    await client.disconnect(card.dataset.path);
    setBusy(card, null);
    await refresh();
    announce(`${label(card)} disconnected.`);
    button(card, 'connect').focus();
  } catch (error) {
    setBusy(card, null);
    handleApiError(error, card);
  }
}

function showRedirectOutcome(outcome) {
  const card = cardFor(outcome.provider);
  if (!card) return;
  if (outcome.result === 'connected') {
    announce(`${label(card)} connected.`);
  } else {
    showCardError(card, outcome.error ? errorText(outcome.error) : describeReason(outcome.reason));
    announce(`${label(card)} was not connected.`);
  }
}

// --- wiring ---------------------------------------------------------------------------------

function wire() {
  for (const card of cards) {
    button(card, 'connect').addEventListener('click', () => onConnect(card));
    button(card, 'disconnect').addEventListener('click', () => onDisconnect(card));
  }

  sessionBox.querySelector('[data-action=signout]').addEventListener('click', () => {
    forgetSession();
    for (const card of cards) clearMessages(card);
    showPageError('');
    showSession();
    announce('Signed out.');
    document.getElementById('demo-user')?.focus();
  });

  const form = document.getElementById('demo-signin');
  if (form) {
    const input = form.elements.namedItem('user');
    const submit = form.querySelector('button[type=submit]');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) {
        input.focus();
        return;
      }
      submit.disabled = true;
      submit.setAttribute('aria-busy', 'true');
      showPageError('');
      try {
        await demoSignIn(name);
        input.value = '';
        showSession();
        announce(`Signed in as ${signedInName()}.`);
        await refresh();
      } catch (error) {
        showPageError(error.message);
      } finally {
        submit.disabled = false;
        submit.setAttribute('aria-busy', 'false');
      }
    });
    for (const pick of form.querySelectorAll('[data-demo-user]')) {
      pick.addEventListener('click', () => {
        input.value = pick.dataset.demoUser;
        form.requestSubmit();
      });
    }
  }

  // Another tab finished a flow, or a popup just closed: re-read status (the server is the truth).
  client.watch(() => refresh());

  window.addEventListener('hashchange', discardFragmentToken);
}

async function start() {
  discardFragmentToken();
  // A same-window flow (popup blocked) comes back with its result in the URL: a hint, checked
  // against the server below.
  const redirected = handleRedirectResult();
  wire();
  if (!showSession()) {
    if (redirected) showRedirectOutcome(redirected);
    return;
  }
  const statuses = await refresh();
  if (!redirected) return;
  const confirmed = statuses?.find((status) => status.provider === redirected.provider);
  if (redirected.result === 'connected' && confirmed && confirmed.status !== 'connected') {
    showRedirectOutcome({ ...redirected, result: 'error', reason: 'not_confirmed' });
  } else {
    showRedirectOutcome(redirected);
  }
}

start();
