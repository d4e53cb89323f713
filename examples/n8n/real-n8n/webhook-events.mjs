// Runs connection-events-webhook.json the way its README says: active in `n8n start`, the
// demo's signed webhooks sent to its production URL. Real events only: the demo user connects
// three providers (connection.created), then the emulator revokes the Outlook grant and a token
// request makes the service's refresh fail with invalid_grant (connection.needs_reauth). A
// redelivery of that event (the delivery log's retry) must be dropped as a duplicate, and
// requests signed with another secret, or unsigned, must get 401. Passes only if the demo's
// delivery log shows every event delivered (204) and n8n's saved executions show each one
// verified by the Code node, with the needs_reauth one, and only it, reaching Needs attention.
//
// Usage (from `run`): node webhook-events.mjs <celeste-connect binary> <work dir>
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [bin, workDir] = process.argv.slice(2);
const RECIPE = 'connection-events-webhook.json';
const WORKFLOW_ID = 'ccconnectionevts';
const STARTUP_TIMEOUT_MS = 120_000;
const DELIVERY_TIMEOUT_MS = 60_000;
const flatted = createRequire(join(here, 'node_modules', 'n8n', 'package.json'))('flatted');

const launched = [];
// On failure, the end of each program's output (`run` deletes the folders), and no program left.
process.on('exit', (code) => {
  for (const { name, child, output } of launched) {
    if (code !== 0) process.stderr.write(`--- last lines of ${name}:\n${output().split('\n').slice(-25).join('\n')}\n`);
    child.kill();
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1));

/** Starts a program, keeping its output in memory. */
function launch(name, command, args, env) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const running = { name, child, output: () => output, exited };
  launched.push(running);
  return running;
}

/** Polls `probe` until it returns a value, failing after `ms` or once `running` has exited. */
async function waitFor(what, ms, probe, running) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    if (running && running.child.exitCode !== null) {
      throw new Error(`${what}: ${running.name} exited`);
    }
    const value = await probe().catch((error) => { last = error; });
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s (${last ?? 'no answer yet'})`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// --- the signing secret, as an operator makes it ---------------------------------------------
const keygen = execFileSync(bin, ['keygen', 'webhook', 'n8n'], { encoding: 'utf8' });
const secret = /^\s+(whsec_\S+)$/m.exec(keygen)[1];

// --- n8n: the workflow imported and activated, then `n8n start` ------------------------------
const n8nFolder = join(workDir, 'n8n-events');
mkdirSync(n8nFolder, { recursive: true });
const n8nPort = await freePort();
const hookUrl = `http://127.0.0.1:${n8nPort}/webhook/celeste-connect-events`;
const n8nEnv = {
  ...process.env,
  N8N_USER_FOLDER: n8nFolder,
  N8N_PORT: String(n8nPort),
  N8N_LISTEN_ADDRESS: '127.0.0.1',
  N8N_RUNNERS_BROKER_PORT: String(await freePort()),
  N8N_DIAGNOSTICS_ENABLED: 'false',
  N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
  N8N_TEMPLATES_ENABLED: 'false',
  N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS: 'true',
  // What the README asks of the operator.
  CONNECT_WEBHOOK_SECRET: secret,
  NODE_FUNCTION_ALLOW_BUILTIN: 'crypto',
};
const n8nBin = join(here, 'node_modules', '.bin', 'n8n');
const n8nCli = (...args) =>
  execFileSync(n8nBin, args, { env: n8nEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

const workflow = JSON.parse(readFileSync(join(here, '..', RECIPE), 'utf8'));
workflow.id = WORKFLOW_ID;
// The recipe saves no execution (payloads stay out of n8n's database); this copy saves them
// all, since they are what the check reads. (EXECUTIONS_DATA_SAVE_* would not do: a workflow's
// own settings win over them.)
Object.assign(workflow.settings, { saveDataSuccessExecution: 'all', saveDataErrorExecution: 'all' });
const workflowFile = join(n8nFolder, RECIPE);
writeFileSync(workflowFile, JSON.stringify(workflow));
n8nCli('import:workflow', `--input=${workflowFile}`);
n8nCli('update:workflow', `--id=${WORKFLOW_ID}`, '--active=true');

const started = Date.now();
const n8n = launch('n8n start', n8nBin, ['start'], n8nEnv);
await waitFor('n8n /healthz', STARTUP_TIMEOUT_MS, async () =>
  (await fetch(`http://127.0.0.1:${n8nPort}/healthz`)).ok, n8n);
// /healthz answers before the active workflows are registered: wait until the production URL
// answers neither 404 (not registered yet) nor 503 (database not ready yet). This first request
// is unsigned: the workflow must refuse it.
const unsigned = await waitFor('the production webhook', STARTUP_TIMEOUT_MS, async () => {
  const answer = await fetch(hookUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  return ![404, 503].includes(answer.status) && answer.status;
}, n8n);
console.log(`n8n start ready in ${((Date.now() - started) / 1000).toFixed(1)} s on ${hookUrl}`);

// --- the demo, sending to that URL -------------------------------------------------------------
const demoDir = join(workDir, 'demo-events');
const demo = launch('celeste-connect demo', bin, ['demo', '--listen', '127.0.0.1:0', '--data-dir', demoDir], {
  ...process.env,
  CONNECT_WEBHOOK_ENDPOINTS: `n8n:${hookUrl}`,
  CONNECT_WEBHOOK_SECRETS: `n8n:${secret}`,
});
const base = await waitFor('the demo', STARTUP_TIMEOUT_MS, async () =>
  /^listening on (http:\S+)$/m.exec(demo.output())?.[1], demo);
const serviceKey = readFileSync(join(demoDir, 'service.key'), 'utf8').trim();
const service = async (method, path) => {
  const answer = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${serviceKey}` } });
  return { status: answer.status, body: await answer.json() };
};

const deliveriesToN8n = async () =>
  (await service('GET', '/v1/service/webhooks/deliveries?endpoint=n8n&limit=200')).body.deliveries;

/** Waits until the delivery log holds `count` deliveries to n8n, none of them pending. */
async function settledDeliveries(count) {
  return waitFor(`${count} webhook deliveries`, DELIVERY_TIMEOUT_MS, async () => {
    const deliveries = await deliveriesToN8n();
    return deliveries.length >= count && deliveries.every((d) => d.status !== 'pending') && deliveries;
  }, demo);
}

// Tokens that live 30 minutes, so a request for one valid an hour refreshes at once.
await fetch(`${base}/emulator/_emulator/access-token-lifetime`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ secs: 1800 }),
});
const userId = execFileSync('node', [join(here, 'connect-demo-user.mjs'), base], { encoding: 'utf8' }).trim();
await settledDeliveries(3);

// The user revokes the app's access at Microsoft; the next refresh gets invalid_grant.
const accounts = await (await fetch(`${base}/emulator/_emulator/accounts`)).json();
for (const account of accounts) {
  const revoked = await fetch(`${base}/emulator/_emulator/accounts/${encodeURIComponent(account.id)}/revoke-grant`, { method: 'POST' });
  assert.ok(revoked.ok, `revoke-grant ${account.id}`);
}
const token = await service('GET', `/v1/service/users/${userId}/integrations/outlook/token?min_ttl=3600`);
assert.equal(token.status, 409, `the token request after the revocation: ${JSON.stringify(token.body)}`);
let deliveries = await settledDeliveries(4);
const reauth = deliveries.find((d) => d.event_type === 'connection.needs_reauth');
assert.ok(reauth, 'a connection.needs_reauth event was sent');

// The same event again (same webhook-id, new timestamp and signature): a duplicate for n8n.
const retried = await service('POST', `/v1/service/webhooks/deliveries/${reauth.id}/retry`);
assert.equal(retried.status, 202);
assert.equal(retried.body.status, 'pending');
deliveries = await waitFor('the redelivery', DELIVERY_TIMEOUT_MS, async () => {
  const all = await deliveriesToN8n();
  const again = all.find((d) => d.id === reauth.id);
  if (again.status === 'delivered') return all;
  throw new Error(JSON.stringify({ ...again, payload: undefined }));
}, demo);
for (const d of deliveries) {
  assert.equal(d.status, 'delivered', `${d.event_type}: ${d.last_status} ${d.last_error ?? ''} ${d.last_response ?? ''}`);
  assert.equal(d.last_status, 204, `${d.event_type} answered 204`);
  console.log(`ok - delivered to n8n: ${d.event_type} ${d.payload.data.provider} ${d.event_id} -> ${d.last_status} (attempts ${d.attempts})`);
}

// A request signed with another secret, as a forger would send it.
const forgedId = 'msg_forged0000000000000000000000';
const forged = JSON.stringify({ ...reauth.payload, id: forgedId });
const now = Math.floor(Date.now() / 1000);
const forgedSignature = createHmac('sha256', randomBytes(32)).update(`${forgedId}.${now}.${forged}`).digest('base64');
const forgedAnswer = await fetch(hookUrl, {
  method: 'POST',
  headers: {
    'content-type': 'application/json',
    'webhook-id': forgedId,
    'webhook-timestamp': String(now),
    'webhook-signature': `v1,${forgedSignature}`,
  },
  body: forged,
});
assert.equal(forgedAnswer.status, 401, 'a wrong signature is refused');
assert.equal(unsigned, 401, 'an unsigned request is refused');
console.log(`ok - wrong signature -> ${forgedAnswer.status}, unsigned -> ${unsigned}`);

// --- what n8n ran --------------------------------------------------------------------------------
// One per delivery attempt, one for the attempts before the retry (which counts again from 0), and
// the two refused requests.
const expected = deliveries.reduce((sum, d) => sum + d.attempts, 0) + reauth.attempts + 2;
// n8n writes an execution when it starts, and its data and its end in separate statements: wait
// until every one has ended and holds the Webhook node's output.
const executions = await waitFor('n8n saved executions', DELIVERY_TIMEOUT_MS, async () => {
  const rows = JSON.parse(execFileSync('sqlite3', ['-json', '-cmd', '.timeout 5000', join(n8nFolder, '.n8n', 'database.sqlite'),
    `select e.id, e.status, d.data from execution_entity e join execution_data d on d.executionId = e.id
     where e.workflowId = '${WORKFLOW_ID}' and e.stoppedAt is not null order by e.id`], { encoding: 'utf8' }) || '[]')
    .map((row) => ({ ...row, run: flatted.parse(row.data).resultData }));
  return rows.length >= expected && rows.every((row) => row.run.runData['Connection events']) && rows;
});
const seen = executions.map(({ id, status, run }) => {
  assert.equal(run.error, undefined, `execution ${id}: ${run.error?.message}`);
  const output = (node, index = 0) => run.runData[node]?.[0]?.data?.main?.[index] ?? [];
  const verdict = output('Verify signature')[0]?.json
    ?? { valid: false, reason: `Verify signature failed: ${output('Verify signature', 1)[0]?.json.error}` };
  // The Code node must have checked the raw bytes (the Webhook node's Raw Body option).
  assert.ok(output('Connection events')[0].binary?.data, `execution ${id}: no raw body`);
  return {
    id,
    status,
    verdict,
    accepted: output('Signed by Celeste Connect?', 0).length === 1,
    refused: run.runData['Refuse (401)'] !== undefined,
    failed: run.runData['Fail (500)'] !== undefined,
    attention: output('Needs attention')[0]?.json,
  };
});
for (const e of seen) {
  const what = e.failed ? `answered 500: ${e.verdict.reason}`
    : !e.verdict.valid ? `refused (401): ${e.verdict.reason}`
    : e.verdict.duplicate ? `verified, duplicate of ${e.verdict.id}: dropped`
      : `verified ${e.verdict.type} ${e.verdict.provider} ${e.verdict.id}`;
  console.log(`n8n execution ${e.id} (${e.status}): ${what}${e.attention ? ` -> Needs attention ${JSON.stringify(e.attention)}` : ''}`);
}
assert.deepEqual(seen.filter((e) => e.failed).map((e) => e.id), [], 'no check failed (500)');
const verified = seen.filter((e) => e.verdict.valid && !e.verdict.duplicate);
assert.deepEqual(verified.map((e) => e.verdict.type).sort(),
  ['connection.created', 'connection.created', 'connection.created', 'connection.needs_reauth']);
assert.ok(verified.every((e) => e.accepted && !e.refused));
const duplicates = seen.filter((e) => e.verdict.duplicate);
assert.equal(duplicates.length, 1, 'the redelivery is marked duplicate');
assert.equal(duplicates[0].verdict.id, reauth.event_id);
assert.equal(duplicates[0].attention, undefined, 'a duplicate does not reach Needs attention');
const attention = seen.filter((e) => e.attention);
assert.equal(attention.length, 1, 'only the needs_reauth event reaches Needs attention');
assert.equal(attention[0].attention.user_id, userId);
assert.equal(attention[0].attention.provider, 'microsoft');
assert.equal(attention[0].attention.event_id, reauth.event_id);
assert.match(attention[0].attention.reason, /^invalid_grant/);
const refused = seen.filter((e) => !e.verdict.valid);
assert.deepEqual(refused.map((e) => e.verdict.reason).sort(), ['missing webhook headers', 'signature does not match']);
assert.ok(refused.every((e) => e.refused && !e.accepted));
console.log(`ok - ${RECIPE}: ${verified.length} events verified in n8n, needs_reauth -> Needs attention, `
  + `duplicate dropped, ${refused.length} refused with 401`);

// Stop both before `run` deletes their folders.
for (const running of [n8n, demo]) running.child.kill();
await Promise.all([n8n.exited, demo.exited]);
