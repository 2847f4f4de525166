#!/usr/bin/env node
// Development server for the dashboard: serves api/dashboard/ the way keyledger does
// (GET / → index.html, GET /ui/<path> → the file, with the same security headers) and
// proxies the API (/v1/…, /openapi.json, /healthz, /readyz, /metrics) to a running keyledger.
// Edits to api/dashboard show on reload, no rebuild of the server needed.
//
//   node devserver.mjs --upstream http://127.0.0.1:PORT [--port 8081] [--root DIR]
//
// Prints "devserver listening on 127.0.0.1:PORT" once it accepts connections.

import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const upstream = new URL(args.upstream || 'http://127.0.0.1:8080');
const root = resolve(args.root || join(here, '../../../api/dashboard'));
const port = Number(args.port ?? 0);

export const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};
const PROXIED = /^\/(v1\/|openapi\.json$|healthz$|readyz$|metrics$)/;

function proxy(req, res) {
  const out = http.request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  out.on('error', (err) => {
    res.writeHead(502, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'bad_gateway', message: `upstream: ${err.message}` } }));
  });
  req.pipe(out);
}

async function serveFile(pathname, res) {
  const rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname.slice('/ui/'.length));
  const file = resolve(root, rel);
  const type = TYPES[extname(file)];
  if (!type || !file.startsWith(root + sep)) {
    return false;
  }
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) {
      return false;
    }
  } catch {
    return false;
  }
  res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-cache', ...SECURITY_HEADERS });
  createReadStream(file).pipe(res);
  return true;
}

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  if (PROXIED.test(pathname)) {
    proxy(req, res);
    return;
  }
  if ((req.method === 'GET' || req.method === 'HEAD') && (pathname === '/' || pathname.startsWith('/ui/'))) {
    if (await serveFile(pathname, res)) {
      return;
    }
  }
  res.writeHead(404, { 'Content-Type': 'application/json', ...SECURITY_HEADERS });
  res.end(JSON.stringify({ error: { code: 'not_found', message: 'no such route' } }));
});

server.listen(port, '127.0.0.1', () => {
  console.log(`devserver listening on 127.0.0.1:${server.address().port} (upstream ${upstream.origin}, root ${root})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
