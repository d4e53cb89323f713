// The SDK on an app's own origin, loaded from the service's /sdk/connect.js: when the demo does
// not list that origin, the SDK says so (origin_not_allowed, naming the origin to add) instead
// of a bare network_error; with the origin added through CONNECT_APP_ORIGINS the same calls
// work; with the service down it is a network_error.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launchBrowser } from './lib/browser.js';
import { startOtherOrigin } from './lib/other-origin.js';
import { startService } from './lib/service.js';

/** A demo user's JWT, from outside the browser. */
async function demoToken(base, name) {
  const response = await fetch(`${base}/demo/session`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: name }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

/** On the app's page: import the SDK from `base` and list the user's integrations. */
function listFromApp(page, base, token) {
  return page.evaluate(
    async ({ base, token }) => {
      const { createConnectClient } = await import(`${base}/sdk/connect.js`);
      const client = createConnectClient({ baseUrl: base, getAccessToken: () => token });
      try {
        const answer = await client.list();
        return { ok: true, providers: answer.map((i) => i.provider) };
      } catch (error) {
        return { ok: false, code: error.code, message: error.message };
      }
    },
    { base, token },
  );
}

describe('the SDK on an app origin', () => {
  let app;
  let refusing;
  let allowing;
  let browser;

  before(async () => {
    app = await startOtherOrigin();
    refusing = await startService({ name: 'sdk-origin-refused', env: { CONNECT_APP_ORIGINS: '' } });
    allowing = await startService({ name: 'sdk-origin-allowed', env: { CONNECT_APP_ORIGINS: app.origin } });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await refusing?.stop();
    await allowing?.stop();
    await app?.close();
  });

  test('an origin the service does not list gets origin_not_allowed naming the origin', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(app.origin);
      const answer = await listFromApp(page, refusing.base, await demoToken(refusing.base, 'sdk-origin'));
      assert.equal(answer.ok, false);
      assert.equal(answer.code, 'origin_not_allowed', answer.message);
      assert.ok(answer.message.includes(`Add ${app.origin} to CONNECT_APP_ORIGINS`), answer.message);
    } finally {
      await page.close();
    }
  });

  test('the same page works once the origin is in CONNECT_APP_ORIGINS', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(app.origin);
      const token = await demoToken(allowing.base, 'sdk-origin');
      const answer = await listFromApp(page, allowing.base, token);
      assert.deepEqual(answer, { ok: true, providers: ['microsoft', 'google', 'dropbox'] });
      // The headers the service exposes to an admitted origin are readable from its page.
      const exposed = await page.evaluate(
        async ({ base, token }) => {
          const response = await fetch(`${base}/v1/integrations`, { headers: { Authorization: `Bearer ${token}` } });
          return { status: response.status, requestId: response.headers.get('x-request-id') };
        },
        { base: allowing.base, token },
      );
      assert.equal(exposed.status, 200);
      assert.match(exposed.requestId ?? '', /\S/, 'x-request-id readable cross-origin');
    } finally {
      await page.close();
    }
  });

  test('a service that is down is a network_error', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(app.origin);
      const sdk = await page.evaluate(async (base) => (await fetch(`${base}/sdk/connect.js`)).text(), allowing.base);
      // Serve the module from the page itself, then point it at a port nothing listens on.
      const answer = await page.evaluate(async (source) => {
        const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
        const { createConnectClient } = await import(url);
        const client = createConnectClient({ baseUrl: 'http://127.0.0.1:9', getAccessToken: () => 'x' });
        try {
          await client.list();
          return { ok: true };
        } catch (error) {
          return { ok: false, code: error.code };
        }
      }, sdk);
      assert.deepEqual(answer, { ok: false, code: 'network_error' });
    } finally {
      await page.close();
    }
  });
});
