// Imports the service-key credential and every recipe of examples/n8n into a real n8n, with the
// Settings nodes pointed at a running demo, executes each with `n8n execute`, and fails unless
// each one ends in the items it promises. Then marks the Outlook connection needs_reauth (through
// the demo's database; the demo is restarted by `run` so its memory holds no token) and checks
// that the all-users recipe reports it under "Needs attention".
//
// Usage (from `run`): node run-recipes.mjs <phase: recipes|reauth> <demo base> <user id> <data dir>
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const examples = join(here, '..');
const [phase, base, userId, dataDir] = process.argv.slice(2);
const work = join(dataDir, 'n8n');
mkdirSync(work, { recursive: true });
const env = {
  ...process.env,
  N8N_USER_FOLDER: work,
  N8N_DIAGNOSTICS_ENABLED: 'false',
  N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS: 'true',
};
const n8n = (...args) =>
  execFileSync(join(here, 'node_modules', '.bin', 'n8n'), args, {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 << 20,
  });
const idOf = (file) => `cc${file.replace(/[^a-z]/g, '').slice(0, 14)}`.padEnd(16, 'x');

function execute(file) {
  const output = n8n('execute', `--id=${idOf(file)}`, '--rawOutput');
  const result = JSON.parse(output.slice(output.indexOf('{')));
  const error = result.data?.resultData?.error?.message;
  assert.equal(error, undefined, `${file}: ${error}`);
  const runData = result.data.resultData.runData;
  const items = (node, output = 0) => runData[node]?.[0]?.data?.main?.[output] ?? [];
  return { runData, items };
}

/** Imports a recipe with its Settings pointed at this run's demo (it may have a new port). */
function importRecipe(file) {
  const wf = JSON.parse(readFileSync(join(examples, file), 'utf8'));
  wf.id = idOf(file);
  for (const assignment of wf.nodes.find((n) => n.name === 'Settings').parameters.assignments.assignments) {
    if (assignment.name === 'connect_url') assignment.value = base;
    if (assignment.name === 'user_id') assignment.value = userId;
    if (assignment.name === 'graph_url') assignment.value = `${base}/emulator`;
  }
  const path = join(work, file);
  writeFileSync(path, JSON.stringify(wf));
  n8n('import:workflow', `--input=${path}`);
}

if (phase === 'recipes') {
  const key = readFileSync(join(dataDir, 'service.key'), 'utf8').trim();
  const credential = join(work, 'credential.json');
  writeFileSync(credential, JSON.stringify([{
    id: 'celesteConnectKey1',
    name: 'Celeste Connect service key',
    type: 'httpHeaderAuth',
    data: { name: 'Authorization', value: `Bearer ${key}` },
  }]), { mode: 0o600 });
  n8n('import:credentials', `--input=${credential}`);
  // The webhook recipe has no Settings and runs only in `n8n start`: webhook-events.mjs.
  const recipes = readdirSync(examples).filter((f) => f.endsWith('.json') && f !== 'connection-events-webhook.json');
  for (const file of recipes) importRecipe(file);
  const expect = {
    'latest-emails-via-proxy.json': ['Keep subject, from, received', 10, 'subject'],
    'token-then-graph.json': ['Keep subject, from, received', 10, 'subject'],
    'all-connected-users.json': ['Keep user, subject, from, received', 10, 'subject'],
    'gmail-latest-messages-via-proxy.json': ['Keep subject, from, received', 10, 'subject'],
    'dropbox-list-folder-via-proxy.json': ['Keep type, name, path, size', 3, 'name'],
  };
  for (const [file, [node, count, field]] of Object.entries(expect)) {
    const { items } = execute(file);
    assert.equal(items(node).length, count, `${file}: ${count} items out of ${node}`);
    assert.ok(items(node).every((item) => item.json[field]), `${file}: every item has ${field}`);
    console.log(`ok - ${file}: ${count} items, e.g. ${JSON.stringify(items(node)[0].json).slice(0, 160)}`);
  }
} else {
  importRecipe('all-connected-users.json');
  const { items } = execute('all-connected-users.json');
  const attention = items('Needs attention');
  assert.equal(attention.length, 1, 'the user who must reconnect is reported');
  assert.equal(attention[0].json.status, 409);
  console.log(`ok - all-connected-users.json: needs_reauth user under Needs attention: ${attention[0].json.action}`);
}
