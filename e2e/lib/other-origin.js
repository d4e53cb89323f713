// A tiny page server on another 127.0.0.1 port: another origin for the forged-message and
// foreign-opener tests. It serves one empty page; the tests drive it with page.evaluate.

import { createServer } from 'node:http';

export async function startOtherOrigin() {
  const server = createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    response.end('<!doctype html><html lang="en"><head><title>Another origin</title></head><body><p>another origin</p></body></html>\n');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
