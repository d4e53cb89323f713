// D4: no provider token reaches the browser. For each provider, a HAR of a whole connect + status + reload flow
// (every page of the context, the popup included), the pages' localStorage/sessionStorage and
// every message they received must hold no emulator token. The emulator puts `TOKMARK-at-`
// in access tokens, `TOKMARK-rt-` in refresh tokens and `TOKMARK-code-` in codes; the code
// legitimately travels in the provider's redirect to the callback, and nowhere else.

import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  DESKTOP,
  STATUS,
  answerConsent,
  closesWithin,
  instrument,
  launchBrowser,
  openConsentPopup,
  seen,
  signIn,
  uniqueName,
  waitForStatus,
} from './lib/browser.js';
import { outputDir } from './lib/paths.js';
import { startService } from './lib/service.js';

const TOKEN_MARKERS = ['TOKMARK-at-', 'TOKMARK-rt-'];
const CODE_MARKER = 'TOKMARK-code-';

/** Every place in a HAR entry that holds `needle`, as short labels. */
function placesOf(entry, needle) {
  const places = [];
  const { request, response } = entry;
  if (request.url.includes(needle)) places.push('request.url');
  for (const header of request.headers) if (header.value.includes(needle)) places.push(`request.header.${header.name.toLowerCase()}`);
  if (request.postData?.text?.includes(needle)) places.push('request.body');
  for (const header of response.headers) if (header.value.includes(needle)) places.push(`response.header.${header.name.toLowerCase()}`);
  if (response.redirectURL?.includes(needle)) places.push('response.redirectURL');
  const body = response.content?.text ?? '';
  const decoded = response.content?.encoding === 'base64' ? Buffer.from(body, 'base64').toString('utf8') : body;
  if (decoded.includes(needle)) places.push('response.body');
  return places;
}

describe('no provider token reaches the browser (D4)', () => {
  let service;
  let browser;

  before(async () => {
    service = await startService({ name: 'token-leak' });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await service?.stop();
  });

  for (const provider of ['microsoft', 'google', 'dropbox']) test(`${provider}: HAR, storage and messages of a whole connect flow hold no token; the code only goes to the callback`, { timeout: 90_000 }, async (t) => {
    await mkdir(outputDir, { recursive: true });
    const harPath = join(outputDir, provider === 'microsoft' ? 'connect-flow.har' : `connect-flow-${provider}.har`);
    const context = await browser.newContext({ viewport: DESKTOP, recordHar: { path: harPath, content: 'embed' } });
    await instrument(context);
    const page = await context.newPage();
    const collected = [];

    await signIn(page, service.base, uniqueName(`har-${provider}`));
    const popup = await openConsentPopup(page, provider);
    await answerConsent(popup, 'accept');
    await closesWithin(popup, 15_000);
    await waitForStatus(page, STATUS.connected, 15_000, provider);
    const storage = async () =>
      page.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage } }));
    collected.push(['storage after connect', await storage()]);
    collected.push(['messages before reload', JSON.stringify((await seen(page)).messages)]);

    await page.reload();
    await waitForStatus(page, STATUS.connected, 15_000, provider);
    collected.push(['storage after reload', await storage()]);
    await context.close(); // writes the HAR

    const har = await readFile(harPath, 'utf8');
    for (const marker of TOKEN_MARKERS) {
      assert.equal(har.includes(marker), false, `${marker} appears in the HAR (${harPath})`);
      for (const [what, text] of collected) assert.equal(text.includes(marker), false, `${marker} in ${what}`);
    }
    for (const [what, text] of collected) {
      assert.equal(text.includes('TOKMARK'), false, `no token marker of any kind in ${what}`);
    }

    // Where does the code appear? Allowed: the provider's redirect to the callback (its Location)
    // and the callback request's URL. Nowhere else: not in a page, a Referer or a later URL.
    const entries = JSON.parse(har).log.entries;
    const hits = [];
    for (const entry of entries) {
      for (const place of placesOf(entry, CODE_MARKER)) hits.push({ url: entry.request.url.split('?')[0], place });
    }
    const isCallback = (url) => /\/v1\/integrations\/[a-z]+\/callback$/.test(url);
    const allowed = (hit) =>
      (hit.place === 'request.url' && isCallback(hit.url)) ||
      ((hit.place === 'response.header.location' || hit.place === 'response.redirectURL') && /\/emulator\//.test(hit.url));
    const unexpected = hits.filter((hit) => !allowed(hit));
    t.diagnostic(`${CODE_MARKER} found in: ${JSON.stringify(hits)}`);
    console.log(`# ${CODE_MARKER} occurrences in the HAR: ${JSON.stringify(hits)}`);
    assert.ok(hits.some((hit) => hit.place === 'request.url' && isCallback(hit.url)), 'the HAR covers the callback');
    assert.deepEqual(unexpected, [], 'the code appears only in the provider redirect and the callback URL');
  });

  test('the service log holds no token marker', () => {
    const logs = service.logs();
    for (const marker of [...TOKEN_MARKERS, CODE_MARKER]) {
      assert.equal(logs.includes(marker), false, `${marker} appears in the service output`);
    }
  });
});
