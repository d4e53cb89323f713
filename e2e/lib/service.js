// Starts `celeste-connect demo` on a free port for a test file and stops it afterwards. The
// demo mounts the provider emulator in-process at {base}/emulator. No readiness sleep: the demo
// binds before it prints `listening on …`, so the address is usable once the line appears.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { outputDir, repoRoot } from './paths.js';

const START_TIMEOUT_MS = 60_000;

export function serviceBinary() {
  return process.env.CELESTE_CONNECT_BIN || join(repoRoot, 'target', 'debug', 'celeste-connect');
}

/**
 * @param {{name: string, env?: Record<string, string>}} options  name: used for the log file
 * @returns {Promise<{base: string, dataDir: string, logs: () => string, stop: () => Promise<void>}>}
 */
export async function startService({ name, env = {} }) {
  const bin = serviceBinary();
  if (!existsSync(bin)) {
    throw new Error(`celeste-connect binary not found at ${bin}; build it (cargo build) or set CELESTE_CONNECT_BIN`);
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'celeste-e2e-'));
  const child = spawn(bin, ['demo', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');

  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`celeste-connect demo did not print its address within ${START_TIMEOUT_MS} ms:\n${output}`));
    }, START_TIMEOUT_MS);
    const onData = (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`celeste-connect demo exited (${code ?? signal}) before listening:\n${output}`));
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });

  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    base,
    /** The demo's data folder (its SQLite database is `connect.db`). */
    dataDir,
    logs: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await mkdir(join(outputDir, 'logs'), { recursive: true });
      await writeFile(join(outputDir, 'logs', `${name}.log`), output);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
