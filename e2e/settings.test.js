// The service's /settings page and the browser SDK in a real headless Chromium, against
// `celeste-connect demo` (provider emulator in-process). Threat-model rows D1–D4 of
// shared/reference/security.md §8 and the connect flows users go through.
//
// Run: node --test e2e/   (needs CELESTE_CONNECT_BIN or target/debug/celeste-connect, and
// Debian's chromium at /usr/bin/chromium or $CHROMIUM)

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  DESKTOP,
  PHONE,
  STATUS,
  answerConsent,
  apiStatus,
  closesWithin,
  emulatorStats,
  instrument,
  launchBrowser,
  openConsentPopup,
  screenshot,
  seen,
  sel,
  signIn,
  statusText,
  uniqueName,
  userToken,
  waitForStatus,
  waitForText,
} from './lib/browser.js';
import { startOtherOrigin } from './lib/other-origin.js';
import { startService } from './lib/service.js';

const TEST_TIMEOUT = 90_000;

describe('settings page and SDK in Chromium', () => {
  let service;
  let browser;
  let other;

  before(async () => {
    service = await startService({ name: 'settings' });
    browser = await launchBrowser();
    other = await startOtherOrigin();
  });

  after(async () => {
    await browser?.close();
    await other?.close();
    await service?.stop();
  });

  async function newPage(options = {}) {
    const context = await browser.newContext({ viewport: DESKTOP, ...options });
    await instrument(context);
    return { context, page: await context.newPage() };
  }

  test('connect in the popup shows Connected ✓ with the email, survives a reload, then disconnects', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await page.goto(`${service.base}/settings`);
      await page.waitForSelector(sel.signinForm, { state: 'visible' });
      await screenshot(page, 'settings-signed-out-1280x800', DESKTOP);
      await screenshot(page, 'settings-signed-out-390x844', PHONE);
      await page.setViewportSize(DESKTOP);

      await signIn(page, service.base, uniqueName('happy'), { open: false });
      assert.equal(await statusText(page), STATUS.notConnected);
      await screenshot(page, 'settings-not-connected-1280x800', DESKTOP);
      await screenshot(page, 'settings-not-connected-390x844', PHONE);
      await page.setViewportSize(DESKTOP);

      const popup = await openConsentPopup(page);
      const email = await answerConsent(popup, 'accept');
      assert.ok(await closesWithin(popup, 15_000), 'the popup closes itself after the callback');
      await waitForStatus(page, STATUS.connected);
      const shownEmail = (await page.textContent(sel.email)).trim();
      if (email) assert.equal(shownEmail, email);
      else assert.match(shownEmail, /\S/);
      assert.match((await page.textContent(sel.displayName)).trim(), /\S/);
      assert.equal(await page.isHidden(sel.error), true, 'no error after a successful connect');

      await screenshot(page, 'settings-connected-1280x800', DESKTOP);
      await screenshot(page, 'settings-connected-390x844', PHONE);
      await page.setViewportSize(DESKTOP);

      await page.reload();
      await waitForStatus(page, STATUS.connected);
      assert.equal((await page.textContent(sel.email)).trim(), shownEmail);

      await page.click(sel.disconnect);
      await waitForStatus(page, STATUS.notConnected);
      const status = await apiStatus(service.base, await userToken(page));
      assert.equal(status.connected, false);
      assert.equal(status.status, 'not_connected');

      assert.deepEqual((await seen(page)).csp, [], 'the page runs under its CSP without violations');
    } finally {
      await context.close();
    }
  });

  test('denying consent shows a readable error and stores nothing', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await signIn(page, service.base, uniqueName('deny'));
      const before = await emulatorStats(service.base);

      const popup = await openConsentPopup(page);
      await answerConsent(popup, 'cancel');
      await closesWithin(popup, 15_000);

      await page.waitForSelector(sel.error, { state: 'visible', timeout: 15_000 });
      const message = (await page.textContent(sel.error)).trim();
      assert.ok(message.length > 20 && /\s/.test(message), `a sentence, not a code: ${JSON.stringify(message)}`);
      assert.equal(await statusText(page), STATUS.notConnected);
      assert.equal(await page.isEnabled(sel.connect), true, 'the user can try again');

      const status = await apiStatus(service.base, await userToken(page));
      assert.equal(status.connected, false, 'nothing stored');
      const afterStats = await emulatorStats(service.base);
      assert.equal(
        afterStats.grants?.authorization_code ?? 0,
        before.grants?.authorization_code ?? 0,
        'no code was redeemed',
      );
    } finally {
      await context.close();
    }
  });

  test('a blocked popup falls back to a same-window flow that returns to /settings connected', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await context.addInitScript(() => {
        window.open = () => null;
      });
      await signIn(page, service.base, uniqueName('blocked'));
      await page.click(sel.connect);
      await page.waitForSelector('input[name=account]', { timeout: 15_000 });
      assert.match(page.url(), /\/emulator\//, 'this window went to the provider');
      const email = await answerConsent(page, 'accept');

      await page.waitForURL((url) => url.pathname.endsWith('/settings'), { timeout: 15_000 });
      await waitForStatus(page, STATUS.connected);
      if (email) assert.equal((await page.textContent(sel.email)).trim(), email);
      await page.waitForFunction(() => !/[?&](integration|result|reason)=/.test(location.search), null, {
        timeout: 5_000,
      });
      assert.doesNotMatch(page.url(), /code=|state=|TOKMARK/);
    } finally {
      await context.close();
    }
  });

  test('closing the popup frees the button again: no hanging spinner', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await signIn(page, service.base, uniqueName('close'));

      // Keyboard activation: focus the real button and press Enter.
      const popupEvent = page.waitForEvent('popup');
      await page.focus(sel.connect);
      await page.keyboard.press('Enter');
      const popup = await popupEvent;
      await popup.waitForSelector('input[name=account]', { timeout: 15_000 });
      assert.equal(await page.getAttribute(sel.connect, 'aria-busy'), 'true');

      const closedAt = Date.now();
      await popup.close();
      await page.waitForFunction(
        (selector) => {
          const button = document.querySelector(selector);
          return button && !button.disabled && button.getAttribute('aria-busy') !== 'true';
        },
        sel.connect,
        { timeout: 15_000 },
      );
      const freedAfter = Date.now() - closedAt;
      assert.equal(await statusText(page), STATUS.notConnected);
      assert.equal(await page.isHidden(sel.error), true, 'closing the window is not an error');
      assert.equal((await page.textContent(sel.connect)).trim(), 'Connect');

      const again = await openConsentPopup(page);
      await again.close();
      console.log(`# popup closed → button usable again after ${freedAfter} ms`);
    } finally {
      await context.close();
    }
  });

  test('a forged completion message from another origin changes nothing', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page: attacker } = await newPage();
    try {
      await attacker.goto(`${other.origin}/`);
      const victimEvent = context.waitForEvent('page');
      await attacker.evaluate((url) => {
        window.victim = window.open(url, 'victim');
      }, `${service.base}/settings`);
      const victim = await victimEvent;
      await victim.waitForLoadState();
      await signIn(victim, service.base, uniqueName('forged'), { open: false });

      const popup = await openConsentPopup(victim);
      await attacker.evaluate(() => {
        for (const type of ['MICROSOFT_AUTH_SUCCESS', 'MICROSOFT_AUTH_ERROR']) {
          window.victim.postMessage({ type, provider: 'microsoft', reason: 'access_denied' }, '*');
        }
      });
      // Longer than a status poll and the SDK's message handling.
      await victim.waitForTimeout(2500);

      const delivered = (await seen(victim)).messages.filter((m) => m.via === 'postMessage');
      assert.ok(
        delivered.some((m) => m.origin === other.origin),
        'the forged messages did reach the window (so ignoring them is what is tested)',
      );
      assert.equal(await statusText(victim), STATUS.notConnected);
      assert.equal(await victim.isHidden(sel.error), true, 'a forged error is not shown');
      assert.equal(await victim.getAttribute(sel.connect, 'aria-busy'), 'true', 'the real flow is still pending');
      assert.equal(popup.isClosed(), false, 'the real popup was not closed by a forged message');
      assert.equal((await apiStatus(service.base, await userToken(victim))).connected, false);

      // The real popup still completes the flow.
      await answerConsent(popup, 'accept');
      await waitForStatus(victim, STATUS.connected);
    } finally {
      await context.close();
    }
  });

  /** A demo user's token, as another origin's page could get one for itself. */
  async function demoToken(name) {
    const response = await fetch(`${service.base}/demo/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: name }),
    });
    assert.equal(response.status, 200);
    return (await response.json()).access_token;
  }

  /** Waits until the settings page's script has removed any `#token=` from its address. */
  async function fragmentDiscarded(page) {
    await page.waitForFunction(() => !location.hash.includes('token='), null, { timeout: 10_000 });
  }

  test('another origin cannot swap the signed-in user through a #token= fragment', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page: attacker } = await newPage();
    try {
      const malloryToken = await demoToken(uniqueName('mallory'));
      await attacker.goto(`${other.origin}/`);
      const victimEvent = context.waitForEvent('page');
      await attacker.evaluate((url) => {
        window.victim = window.open(url, 'victim');
      }, `${service.base}/settings`);
      const victim = await victimEvent;
      await victim.waitForLoadState();
      const alice = uniqueName('alice');
      await signIn(victim, service.base, alice, { open: false });
      const aliceToken = await userToken(victim);
      assert.ok(aliceToken);

      // On an open page (hashchange), then on a fresh load of the page.
      for (const url of [
        `${service.base}/settings#token=${encodeURIComponent(malloryToken)}`,
        `${service.base}/settings?again=1#token=${encodeURIComponent(malloryToken)}`,
      ]) {
        await attacker.evaluate((target) => {
          window.victim.location = target;
        }, url);
        await victim.waitForURL((u) => u.search === new URL(url).search, { timeout: 10_000 });
        await fragmentDiscarded(victim);
        await waitForStatus(victim, STATUS.notConnected);
        // Compared, not printed: a failure message should not carry a token.
        assert.ok((await userToken(victim)) === aliceToken, `the user is still alice after ${url.replace(/#.*/, '#token=…')}`);
        assert.equal((await victim.textContent('[data-role=user-name]')).trim(), alice);
      }

      // A link from another origin into a fresh tab signs nobody in.
      const tabEvent = context.waitForEvent('page');
      await attacker.evaluate((url) => {
        window.open(url, 'fresh');
      }, `${service.base}/settings#token=${encodeURIComponent(malloryToken)}`);
      const tab = await tabEvent;
      await tab.waitForLoadState();
      await fragmentDiscarded(tab);
      await tab.waitForSelector(sel.signinForm, { state: 'visible' });
      assert.ok((await userToken(tab)) === null, 'no session from a URL');
      assert.equal(await tab.isHidden(sel.signout), true);
    } finally {
      await context.close();
    }
  });

  test('a callback with a state of no flow, opened by another origin, does not end the pending connect', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await signIn(page, service.base, uniqueName('pending'));
      const popup = await openConsentPopup(page);

      const attacker = await context.newPage();
      await attacker.goto(`${other.origin}/`);
      const forgedEvent = context.waitForEvent('page');
      await attacker.evaluate((url) => {
        window.open(url, 'forged');
      }, `${service.base}/v1/integrations/outlook/callback?code=x&state=${'A'.repeat(43)}`);
      const forged = await forgedEvent;
      await forged.waitForLoadState();
      // The page's script has run once it offers its way back; it did not close itself.
      await forged.waitForSelector('#close-hint', { state: 'visible', timeout: 10_000 });
      assert.match(await forged.textContent('body'), /invalid_state/);

      assert.deepEqual(
        (await seen(page)).messages.filter((m) => /_AUTH_/.test(m.data)),
        [],
        'no AUTH message reached the settings page',
      );
      assert.equal(await page.getAttribute(sel.connect, 'aria-busy'), 'true', 'the connect is still pending');
      assert.equal(await page.isHidden(sel.error), true);
      assert.equal(popup.isClosed(), false);

      // The binding cookie survived: the real flow completes.
      await answerConsent(popup, 'accept');
      await waitForStatus(page, STATUS.connected);
      assert.equal(await page.isHidden(sel.error), true);
    } finally {
      await context.close();
    }
  });

  test('a foreign-origin opener of the callback receives no message', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await signIn(page, service.base, uniqueName('opener'));
      // A flow started in this browser (binding cookie set), its authorize URL then opened by a
      // page of another origin: the callback must post only to the app's exact origin.
      const authUrl = await page.evaluate(async () => {
        const response = await fetch('/v1/integrations/outlook/auth-url', {
          headers: { Authorization: `Bearer ${sessionStorage.getItem('celeste-connect.jwt')}` },
          credentials: 'include',
        });
        return (await response.json()).auth_url;
      });
      assert.match(authUrl, /^https?:\/\//);

      const attacker = await context.newPage();
      await attacker.goto(`${other.origin}/`);
      const popupEvent = attacker.waitForEvent('popup');
      await attacker.evaluate((url) => {
        window.open(url, 'attack', 'popup,width=500,height=600');
      }, authUrl);
      const popup = await popupEvent;
      await popup.waitForSelector('input[name=account]', { timeout: 15_000 });
      await answerConsent(popup, 'accept');
      await closesWithin(popup, 10_000);
      await attacker.waitForTimeout(1000);

      const received = (await seen(attacker)).messages;
      assert.deepEqual(received, [], 'nothing reached the foreign opener');
    } finally {
      await context.close();
    }
  });
  test('each card shows which backend last used the account, and when, never the token', { timeout: TEST_TIMEOUT }, async () => {
    const { context, page } = await newPage();
    try {
      await signIn(page, service.base, uniqueName('activity'));
      const popup = await openConsentPopup(page);
      await answerConsent(popup, 'accept');
      await closesWithin(popup, 15_000);
      await waitForStatus(page, STATUS.connected);

      // A backend holding the demo's service key (named `demo`) fetches the user's token.
      const userId = await page.evaluate(() => JSON.parse(sessionStorage.getItem('celeste-connect.demo-user')).user_id);
      const key = (await readFile(join(service.dataDir, 'service.key'), 'utf8')).trim();
      const answer = await fetch(`${service.base}/v1/service/users/${userId}/integrations/outlook/token`, {
        headers: { Authorization: `Bearer ${key}` },
      });
      assert.equal(answer.status, 200);
      const { access_token: accessToken } = await answer.json();

      // Counts reach the database within about a second; the page reads them when it loads.
      const lastUsed = `${sel.card} [data-role=last-used]`;
      const deadline = Date.now() + 20_000;
      for (;;) {
        await page.reload();
        await waitForStatus(page, STATUS.connected);
        await page.waitForFunction((s) => document.querySelector(s)?.textContent.trim() !== '', lastUsed, { timeout: 10_000 });
        const text = (await page.textContent(lastUsed)).trim();
        if (/^Last used by demo, /.test(text)) break;
        assert.ok(Date.now() < deadline, `still ${JSON.stringify(text)}`);
        await page.waitForTimeout(300);
      }
      assert.match((await page.textContent(lastUsed)).trim(), /^Last used by demo, (just now|\d+ seconds? ago)$/);
      await page.click(`${sel.card} .history-box summary`);
      const history = (await page.textContent(`${sel.card} [data-role=history]`)).trim();
      assert.match(history, /demo fetched an access token/);
      assert.match(history, /You connected this account/);
      await screenshot(page, 'settings-activity-1280x800', DESKTOP);

      const html = await page.content();
      assert.ok(!html.includes(accessToken), 'the token never reaches the page');
      assert.deepEqual((await seen(page)).csp, [], 'no CSP violation');
    } finally {
      await context.close();
    }
  });
});
