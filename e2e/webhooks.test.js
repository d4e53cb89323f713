// Connection webhooks verified by the Standard Webhooks reference library (npm
// `standardwebhooks`): `celeste-connect demo` sends every connection change to a receiver here,
// which verifies each request with `new Webhook(secret).verify(body, headers)` (signature and
// timestamp) before accepting it. The demo signs with two secrets (a rotation in progress); the
// receiver knows only the older one, as a receiver not yet switched over would.
//
// Run: node --test e2e/webhooks.test.js (needs CELESTE_CONNECT_BIN or target/debug/celeste-connect,
// and Debian's chromium at /usr/bin/chromium or $CHROMIUM)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Webhook } from 'standardwebhooks';

import {
  DESKTOP,
  STATUS,
  answerConsent,
  closesWithin,
  instrument,
  launchBrowser,
  openConsentPopup,
  signIn,
  uniqueName,
  userToken,
  waitForStatus,
} from './lib/browser.js';
import { startService } from './lib/service.js';

const TEST_TIMEOUT = 90_000;
const secret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** A receiver that verifies every request with the reference library. */
async function startReceiver(verifier) {
  const verified = [];
  const refused = [];
  const server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => { body += chunk; });
    request.on('end', () => {
      try {
        const event = verifier.verify(body, request.headers);
        verified.push({ id: request.headers['webhook-id'], event, body });
        response.writeHead(204).end();
      } catch (error) {
        refused.push(String(error));
        response.writeHead(401).end();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/celeste-connect-events`,
    verified,
    refused,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

async function waitForEvents(receiver, count, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  while (receiver.verified.length < count) {
    if (Date.now() > deadline) {
      throw new Error(`waited for ${count} events, got ${receiver.verified.length}; refused: ${receiver.refused}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return receiver.verified;
}

describe('connection webhooks verified by the standardwebhooks library', () => {
  const current = secret();
  const previous = secret();
  let receiver;
  let service;
  let browser;

  before(async () => {
    receiver = await startReceiver(new Webhook(previous));
    service = await startService({
      name: 'webhooks',
      env: {
        CONNECT_WEBHOOK_ENDPOINTS: `e2e:${receiver.url}`,
        CONNECT_WEBHOOK_SECRETS: `e2e:${current},e2e:${previous}`,
      },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await service?.stop();
    await receiver?.close();
  });

  test('connect, reconnect and both disconnects each arrive signed, verified and token-free', { timeout: TEST_TIMEOUT }, async () => {
    const context = await browser.newContext({ viewport: DESKTOP });
    await instrument(context);
    const page = await context.newPage();
    try {
      await signIn(page, service.base, uniqueName('hooks'));
      const connect = async () => {
        const popup = await openConsentPopup(page);
        await answerConsent(popup, 'accept');
        assert.ok(await closesWithin(popup, 15_000));
        await waitForStatus(page, STATUS.connected);
      };
      await connect();
      await connect();
      const token = await userToken(page);
      const user = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub;
      const disconnected = await fetch(`${service.base}/v1/integrations/outlook/disconnect`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}` },
      });
      assert.equal(disconnected.status, 204);
      await page.reload();
      await waitForStatus(page, STATUS.notConnected);
      await connect();
      const key = (await readFile(join(service.dataDir, 'service.key'), 'utf8')).trim();
      const byOperator = await fetch(`${service.base}/v1/service/users/${user}/integrations/outlook`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${key}` },
      });
      assert.equal(byOperator.status, 204);

      const events = await waitForEvents(receiver, 5);
      assert.deepEqual(receiver.refused, [], 'every request verified');
      assert.deepEqual(
        events.map(({ event }) => [event.type, event.data.by ?? null]),
        [
          ['connection.created', null],
          ['connection.reconnected', null],
          ['connection.disconnected', 'user'],
          ['connection.created', null],
          ['connection.disconnected', 'operator'],
        ],
      );
      for (const { id, event, body } of events) {
        assert.equal(event.id, id, 'the payload id is the webhook-id');
        assert.equal(event.data.user_id, user);
        assert.equal(event.data.provider, 'microsoft');
        assert.ok(!/TOKMARK|access_token|refresh_token|@/.test(body), `no token or email in ${body}`);
      }
      assert.equal(events[1].event.data.previous_account_changed, false);

      // The delivery log agrees, and a replay verifies too (same id, fresh signature).
      const log = await (await fetch(`${service.base}/v1/service/webhooks/deliveries?status=delivered`, {
        headers: { Authorization: `Bearer ${key}` },
      })).json();
      assert.equal(log.deliveries.length, 5);
      const replay = await fetch(`${service.base}/v1/service/webhooks/deliveries/${log.deliveries[0].id}/retry`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}` },
      });
      assert.equal(replay.status, 202);
      const again = await waitForEvents(receiver, 6);
      assert.equal(again[5].id, log.deliveries[0].event_id);
      assert.deepEqual(receiver.refused, []);

      // A request signed with another secret is refused by the library (the check can fail).
      const forged = new Webhook(secret()).sign('msg_forged', new Date(), '{"type":"connection.created"}');
      assert.throws(() => new Webhook(previous).verify('{"type":"connection.created"}', {
        'webhook-id': 'msg_forged',
        'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
        'webhook-signature': forged,
      }));
    } finally {
      await context.close();
    }
  });
});
