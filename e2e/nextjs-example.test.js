// examples/nextjs-settings as shipped, in local mode (no Supabase project): built with
// `next build`, served by `next start` on its own origin, signed in through the demo, it
// connects Outlook in the popup, still shows the connection after a reload, and disconnects.
// Needs the example's node_modules (scripts/prepare installs them).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { DESKTOP, answerConsent, launchBrowser, uniqueName } from './lib/browser.js';
import { outputDir, repoRoot } from './lib/paths.js';
import { startService } from './lib/service.js';

const EXAMPLE = join(repoRoot, 'examples', 'nextjs-settings');
const NEXT_BIN = join(EXAMPLE, 'node_modules', '.bin', 'next');
const START_TIMEOUT_MS = 60_000;

/** A port nothing listens on right now (the app's origin must be known before the demo starts). */
async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `next start` on 127.0.0.1:port, resolved once it prints that it is ready. */
async function startNext(port, connectUrl) {
  const child = spawn(NEXT_BIN, ['start', '-H', '127.0.0.1', '-p', String(port)], {
    cwd: EXAMPLE,
    env: { ...process.env, CONNECT_URL: connectUrl, SUPABASE_URL: '', SUPABASE_ANON_KEY: '', NEXT_TELEMETRY_DISABLED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`next start did not get ready:\n${output}`)), START_TIMEOUT_MS);
    const onData = (chunk) => {
      output += chunk;
      if (/Ready in/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`next start exited (${code}):\n${output}`));
    });
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    origin: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      await mkdir(join(outputDir, 'logs'), { recursive: true });
      await writeFile(join(outputDir, 'logs', 'nextjs-example.log'), output);
    },
  };
}

const statusText = (page) => page.locator('main [role=status]').textContent();

describe('the Next.js example against the demo (local mode)', () => {
  let service;
  let app;
  let browser;

  before(async () => {
    assert.ok(existsSync(NEXT_BIN), 'examples/nextjs-settings has no node_modules: run scripts/prepare');
    // `next build` as shipped: it must resolve the SDK linked from ../../sdk/js.
    const build = spawnSync(NEXT_BIN, ['build'], {
      cwd: EXAMPLE,
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' },
      encoding: 'utf8',
    });
    assert.equal(build.status, 0, `next build failed:\n${build.stdout}\n${build.stderr}`);
    const port = await freePort();
    service = await startService({ name: 'nextjs-example', env: { CONNECT_APP_ORIGINS: `http://127.0.0.1:${port}` } });
    app = await startNext(port, service.base);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await app?.stop();
    await service?.stop();
  });

  test('signs in, connects, survives a reload and disconnects on its own origin', { timeout: 90_000 }, async () => {
    const context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    try {
      await page.goto(`${app.origin}/`);
      assert.equal(new URL(page.url()).pathname, '/settings', '/ leads to the settings page');
      const name = uniqueName('nextjs');
      await page.fill('#demo-signin input[name=user]', name);
      await page.click('#demo-signin [type=submit]');
      await page.waitForSelector('[data-role=user]');
      await page.waitForFunction(() => document.querySelector('[role=status]')?.textContent === 'Not connected');

      const popupEvent = page.waitForEvent('popup');
      await page.click('button:has-text("Connect Outlook")');
      const popup = await popupEvent;
      await popup.waitForSelector('input[name=account]', { timeout: 15_000 });
      await answerConsent(popup, 'accept');
      await page.waitForFunction(() => document.querySelector('[role=status]')?.textContent === 'Connected ✓', null, {
        timeout: 20_000,
      });
      assert.match(await page.locator('dd').first().textContent(), /@/);

      await page.reload();
      await page.waitForFunction(() => document.querySelector('[role=status]')?.textContent === 'Connected ✓', null, {
        timeout: 15_000,
      });

      await page.click('button:has-text("Disconnect")');
      await page.waitForFunction(() => document.querySelector('[role=status]')?.textContent === 'Not connected', null, {
        timeout: 15_000,
      });
      assert.equal(await statusText(page), 'Not connected');
      assert.equal(await page.locator('main [role=alert]').count(), 0, 'no error shown');
    } finally {
      await context.close();
    }
  });
});
