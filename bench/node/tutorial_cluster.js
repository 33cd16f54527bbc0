// The Node cluster program of the tutorials, in their shape: the primary
// branch forks the workers and forks again when one exits; each worker runs an
// HTTP server that listens on the port itself. Nothing in it knows about
// corral or pm2: bench/run.py and bench/faults.py run it unmodified under
// Node's own primary (`node tutorial_cluster.js`), pm2 (`pm2 start
// tutorial_cluster.js -i 2`) and corral (`corral run -w 2 -- node
// tutorial_cluster.js`), where the manager is the primary.
//
// Only the numbers differ from the tutorials: the port comes from PORT
// (default 8000), and the number of workers from WORKERS (default: one per
// CPU the process may use, as the tutorials do; under `taskset -c 1` that is
// 1, so the benchmark sets WORKERS=2). The answer names `cluster.worker.id`,
// which bench/wrk/shares.lua tallies.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT) || 8000;
const numWorkers = Number(process.env.WORKERS) || os.availableParallelism();

if (cluster.isPrimary) {
  console.log(`Primary ${process.pid} is running`);

  for (let i = 0; i < numWorkers; i++) {
    cluster.fork();
  }

  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died (${signal || code}); forking a new one`);
    cluster.fork();
  });
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200);
      res.end(`Hello from worker ${cluster.worker.id} (pid ${process.pid})\n`);
    })
    .listen(port);

  console.log(`Worker ${process.pid} started`);
}
