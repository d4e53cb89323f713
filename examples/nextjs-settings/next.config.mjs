// The SDK is linked from ../../sdk/js, outside this folder. Next's bundler only resolves files
// under its root, so the root is the repository, and the linked package is compiled like the
// app's own code. In your own app, with the SDK installed from a .tgz (`npm pack sdk/js`), none
// of this is needed.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** @type {import('next').NextConfig} */
const config = {
  reactStrictMode: true,
  transpilePackages: ['@celeste-connect/sdk'],
  turbopack: { root: repositoryRoot },
  outputFileTracingRoot: repositoryRoot,
};

export default config;
