// D3: with `Cross-Origin-Opener-Policy: same-origin` on the settings page the popup loses its
// opener (and `popup.closed` reads true at once), yet the connect still completes through the
// BroadcastChannel and status polling. The demo adds the header when CONNECT_DEMO_COOP is set.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  DESKTOP,
  STATUS,
  answerConsent,
  apiStatus,
  closesWithin,
  instrument,
  launchBrowser,
  openConsentPopup,
  sel,
  signIn,
  uniqueName,
  userToken,
  waitForStatus,
} from './lib/browser.js';
import { startService } from './lib/service.js';

describe('settings page served with COOP same-origin (D3)', () => {
  let service;
  let browser;

  before(async () => {
    service = await startService({ name: 'coop', env: { CONNECT_DEMO_COOP: 'same-origin' } });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await service?.stop();
  });

  test('the service sends the COOP header on /settings', async () => {
    const response = await fetch(`${service.base}/settings`);
    assert.equal(response.headers.get('cross-origin-opener-policy'), 'same-origin');
  });

  test('connect completes although COOP cut the opener', { timeout: 90_000 }, async () => {
    const context = await browser.newContext({ viewport: DESKTOP });
    await instrument(context);
    const page = await context.newPage();
    try {
      await signIn(page, service.base, uniqueName('coop'));
      const popup = await openConsentPopup(page);
      const openerSevered = await popup.evaluate(() => window.opener === null);
      await answerConsent(popup, 'accept');

      await waitForStatus(page, STATUS.connected, 20_000);
      assert.match((await page.textContent(sel.email)).trim(), /\S/);
      assert.equal((await apiStatus(service.base, await userToken(page))).connected, true);
      const popupClosed = await closesWithin(popup, 5_000);
      const popupUrl = popupClosed ? '(closed)' : popup.url().replace(/\?.*$/, '?…');
      console.log(`# COOP: opener severed in popup=${openerSevered}; popup afterwards: ${popupUrl}`);
      assert.equal(await page.isHidden(sel.error), true, 'no error shown');
    } finally {
      await context.close();
    }
  });
});
