// Where the suite writes what it leaves behind (screenshots, HAR, service logs): the repo's
// git-ignored test-output/ folder, or $E2E_OUTPUT_DIR.

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const outputDir = resolve(process.env.E2E_OUTPUT_DIR || resolve(repoRoot, 'test-output'));
export const screenshotDir = resolve(outputDir, 'screenshots');
