// The Node app of the benchmark: answers every request with
// "Hello from node worker <id> (pid <pid>)\n".
//
// It runs unchanged under three managers:
// * Node's cluster module (bench/node/cluster.js) and pm2 cluster mode: the
//   id is cluster.worker.id and it listens on PORT (the primary owns the socket);
// * corral run: the socket arrives as fd 3 (LISTEN_FDS=1) and the id is
//   CORRAL_WORKER_ID.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');

function workerId() {
  if (cluster.worker) return String(cluster.worker.id);
  return process.env.CORRAL_WORKER_ID || process.env.NODE_APP_INSTANCE || '0';
}

function listenTarget() {
  if (process.env.LISTEN_FDS) return { fd: 3 };
  const port = Number(process.env.PORT);
  if (!Number.isInteger(port) || port <= 0) {
    console.error('app.js: set PORT, or pass a socket as fd 3 with LISTEN_FDS=1');
    process.exit(2);
  }
  return { port, host: process.env.HOST || '127.0.0.1' };
}

const greeting = `Hello from node worker ${workerId()} (pid ${process.pid})\n`;

const server = http.createServer((req, res) => {
  res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(greeting),
  });
  res.end(greeting);
});

server.listen(listenTarget());

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
