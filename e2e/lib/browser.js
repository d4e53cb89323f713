// Browser helpers: Debian's Chromium through playwright-core (no browser is ever downloaded),
// and the steps every scenario shares: demo sign-in, the popup consent, status checks.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { screenshotDir } from './paths.js';

export const PROVIDER = 'microsoft';
export const STATUS = Object.freeze({
  connected: 'Connected ✓',
  notConnected: 'Not connected',
  needsReauth: 'Needs reconnect',
});

/** Selectors of one provider's card (`microsoft`, `google`, `dropbox`) and of the page. */
export function selFor(provider) {
  const card = `[data-provider="${provider}"]`;
  return Object.freeze({
    card,
    status: `${card} [data-role=status]`,
    email: `${card} [data-role=email]`,
    displayName: `${card} [data-role=display-name]`,
    error: `${card} [data-role=error]`,
    hint: `${card} [data-role=hint]`,
    summary: `${card} [data-role=summary]`,
    revocation: `${card} [data-role=revocation]`,
    title: `${card} h2`,
    connect: `${card} [data-action=connect]`,
    disconnect: `${card} [data-action=disconnect]`,
    signinForm: '#demo-signin',
    signinInput: '#demo-signin input[name=user]',
    signinSubmit: '#demo-signin [type=submit]',
    signout: '[data-action=signout]',
  });
}

export const sel = selFor(PROVIDER);

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-gpu',
      '--no-first-run',
    ],
  });
}

/** Records, in every page of the context, CSP violations and the messages pages receive. */
export async function instrument(context) {
  await context.addInitScript(() => {
    const seen = { csp: [], messages: [] };
    Object.defineProperty(window, '__e2e', { value: seen });
    document.addEventListener('securitypolicyviolation', (event) => {
      seen.csp.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
    const record = (via) => (event) => {
      let data;
      try {
        data = JSON.stringify(event.data);
      } catch {
        data = String(event.data);
      }
      seen.messages.push({ via, origin: event.origin ?? null, data });
    };
    window.addEventListener('message', record('postMessage'), true);
    try {
      new BroadcastChannel('celeste-connect').onmessage = record('broadcast');
    } catch {
      // No BroadcastChannel in this context.
    }
  });
}

export async function seen(page) {
  return page.evaluate(() => window.__e2e ?? { csp: [], messages: [] });
}

export function uniqueName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/** The text of the provider card's status, trimmed. */
export async function statusText(page) {
  return ((await page.textContent(sel.status)) ?? '').trim();
}

/** Waits until `selector`'s trimmed text matches `expected` (a string for an exact match). */
export async function waitForText(page, selector, expected, timeout = 15_000) {
  const pattern = typeof expected === 'string' ? `^${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$` : expected.source;
  try {
    await page.waitForFunction(
      ([target, source]) => {
        const element = document.querySelector(target);
        return element !== null && new RegExp(source).test(element.textContent.trim());
      },
      [selector, pattern],
      { timeout, polling: 100 },
    );
  } catch (error) {
    const actual = await page.textContent(selector).catch(() => '<no element>');
    throw new Error(`waiting for ${selector} to read ${expected}; it reads ${JSON.stringify(actual?.trim())}\n${error.message}`);
  }
}

export async function waitForStatus(page, expected, timeout = 15_000, provider = PROVIDER) {
  await waitForText(page, selFor(provider).status, expected, timeout);
}

/** Opens the settings page (if `open`) and signs in to the demo as `name`. */
export async function signIn(page, base, name, { open = true } = {}) {
  if (open) await page.goto(`${base}/settings`);
  await page.waitForSelector(sel.signinInput, { state: 'visible' });
  await page.fill(sel.signinInput, name);
  await page.click(sel.signinSubmit);
  await page.waitForSelector(sel.signout, { state: 'visible' });
  await waitForStatus(page, new RegExp(`^(${Object.values(STATUS).join('|')})$`));
}

/** Clicks Connect and waits for the emulator's consent page in the popup. */
export async function openConsentPopup(page, provider = PROVIDER) {
  const popupEvent = page.waitForEvent('popup', { timeout: 10_000 });
  await page.click(selFor(provider).connect);
  const popup = await popupEvent;
  await popup.waitForSelector('input[name=account]', { timeout: 15_000 });
  return popup;
}

/**
 * On the emulator's consent page (popup or same window): picks the first account and clicks
 * `#accept` or `#cancel`. Returns the email the account's label shows, if any.
 */
export async function answerConsent(page, choice) {
  const account = page.locator('input[name=account]').first();
  await account.check();
  const labelText = await account.evaluate((input) => {
    const label = input.closest('label') ?? (input.id ? document.querySelector(`label[for="${input.id}"]`) : null);
    return label ? label.textContent : '';
  });
  const email = /[\w.+-]+@[\w-]+(?:\.[\w-]+)+/.exec(labelText ?? '')?.[0] ?? null;
  await page.click(choice === 'accept' ? '#accept' : '#cancel');
  return email;
}

/** Resolves true when `page` closes within `timeout`, false otherwise. */
export async function closesWithin(page, timeout) {
  if (page.isClosed()) return true;
  try {
    await page.waitForEvent('close', { timeout });
    return true;
  } catch {
    return page.isClosed();
  }
}

/** The demo user's JWT, as the settings page keeps it. */
export async function userToken(page) {
  return page.evaluate(() => sessionStorage.getItem('celeste-connect.jwt'));
}

/** The service's status answer for the user, read from outside the browser. */
export async function apiStatus(base, token) {
  const response = await fetch(`${base}/v1/integrations/outlook/status`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`status answered ${response.status}: ${await response.text()}`);
  return response.json();
}

export async function emulatorStats(base) {
  const response = await fetch(`${base}/emulator/_emulator/stats`);
  if (!response.ok) throw new Error(`emulator stats answered ${response.status}`);
  return response.json();
}

export async function screenshot(page, name, viewport) {
  await mkdir(screenshotDir, { recursive: true });
  if (viewport) await page.setViewportSize(viewport);
  const path = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true, animations: 'disabled' });
  return path;
}

export const DESKTOP = Object.freeze({ width: 1280, height: 800 });
export const PHONE = Object.freeze({ width: 390, height: 844 });
