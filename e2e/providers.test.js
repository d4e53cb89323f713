// One card per provider (Outlook, Gmail, Dropbox) on the demo's /settings page in a real
// headless Chromium: each connects through its own consent page in the popup, shows the
// account, turns into "Needs reconnect" when the stored grant is refused, reconnects, and
// disconnects — revoking at the provider where it can (counted by the emulator).
//
// Run: node --test e2e/   (see e2e/README.md)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  DESKTOP,
  STATUS,
  answerConsent,
  closesWithin,
  emulatorStats,
  instrument,
  launchBrowser,
  screenshot,
  seen,
  selFor,
  uniqueName,
  waitForText,
} from './lib/browser.js';
import { startService } from './lib/service.js';

const TEST_TIMEOUT = 90_000;

const PROVIDERS = [
  { id: 'microsoft', title: 'Microsoft Outlook', words: /Outlook mail/, revokes: false },
  { id: 'google', title: 'Gmail', words: /Gmail messages/, revokes: true },
  { id: 'dropbox', title: 'Dropbox', words: /Dropbox files/, revokes: true },
];

describe('three provider cards in Chromium', () => {
  let service;
  let browser;

  before(async () => {
    service = await startService({ name: 'providers' });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await service?.stop();
  });

  /** Marks the user's stored connection as refused by the provider, as a failed refresh would. */
  function markNeedsReauth(provider) {
    execFileSync('sqlite3', [
      join(service.dataDir, 'connect.db'),
      `update integration_tokens set status = 'needs_reauth', version = version + 1 where provider = '${provider}'`,
    ]);
  }

  for (const provider of PROVIDERS) {
    test(`${provider.title}: connect, needs reconnect, reconnect, disconnect`, { timeout: TEST_TIMEOUT }, async () => {
      const sel = selFor(provider.id);
      const context = await browser.newContext({ viewport: DESKTOP });
      await instrument(context);
      const page = await context.newPage();
      try {
        await page.goto(`${service.base}/settings`);
        await page.waitForSelector(sel.signinInput, { state: 'visible' });
        await page.fill(sel.signinInput, uniqueName(provider.id));
        await page.click(sel.signinSubmit);
        await waitForText(page, sel.status, STATUS.notConnected);
        assert.equal((await page.textContent(sel.title)).trim(), provider.title);
        assert.match(await page.textContent(sel.summary), provider.words);
        const revocation = await page.textContent(sel.revocation);
        if (provider.revokes) assert.match(revocation, /also withdraws/);
        else assert.match(revocation, /myapps\.microsoft\.com/);

        const connect = async () => {
          const popupEvent = page.waitForEvent('popup', { timeout: 10_000 });
          await page.click(sel.connect);
          const popup = await popupEvent;
          await popup.waitForSelector('input[name=account]', { timeout: 15_000 });
          const email = await answerConsent(popup, 'accept');
          assert.ok(await closesWithin(popup, 15_000), 'the popup closes itself');
          await waitForText(page, sel.status, STATUS.connected);
          return email;
        };
        const email = await connect();
        assert.equal((await page.textContent(sel.email)).trim(), email);
        assert.equal((await page.textContent(sel.connect)).trim(), 'Reconnect');
        await screenshot(page, `settings-${provider.id}-connected-1280x800`, DESKTOP);

        markNeedsReauth(provider.id);
        await page.reload();
        await waitForText(page, sel.status, STATUS.needsReauth);
        assert.match(await page.textContent(sel.hint), new RegExp(provider.title));
        assert.equal((await page.textContent(sel.connect)).trim(), 'Reconnect');
        await connect();

        const before = await emulatorStats(service.base);
        await page.click(sel.disconnect);
        await waitForText(page, sel.status, STATUS.notConnected);
        const afterStats = await emulatorStats(service.base);
        const revoked = (afterStats.revocations?.[provider.id] ?? 0) - (before.revocations?.[provider.id] ?? 0);
        assert.equal(revoked, provider.revokes ? 1 : 0, 'revoked at the provider where it can');
        assert.deepEqual((await seen(page)).csp, [], 'no CSP violations');
      } finally {
        await context.close();
      }
    });
  }
});
