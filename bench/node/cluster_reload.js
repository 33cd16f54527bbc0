// Runs bench/node/app.js as a cluster of workers with Node's cluster module,
// as bench/node/cluster.js does, plus what a Node user writes to survive faults
// and deploy without downtime (bench/faults.py measures it):
//
// * a worker that exits unexpectedly is forked again at once (no backoff);
// * SIGHUP is a rolling reload: for each worker in turn, fork its replacement,
//   wait for the replacement's 'listening' event, then `worker.disconnect()`
//   the old one (it closes its server, finishes its connections and exits);
//   the next worker is replaced once the old one has exited. A SIGHUP during a
//   reload queues one more.
//
//   node cluster_reload.js [--workers N] [--policy rr|none]
//
// PORT (and HOST, default 127.0.0.1) are passed to the workers. Output, one
// line per event, on stdout:
//   listening on HOST:PORT                        once every first worker listens
//   worker ID listening (pid PID)                 every worker, replacements included
//   worker ID exited unexpectedly (code C, signal S): forking a replacement
//   rolling reload complete: N workers replaced
'use strict';

const cluster = require('node:cluster');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '2' },
    policy: { type: 'string', default: process.env.NODE_CLUSTER_SCHED_POLICY || '' },
  },
});

const policies = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE };
if (values.policy !== '') {
  if (!(values.policy in policies)) {
    console.error(`cluster_reload.js: --policy must be rr or none, not ${values.policy}`);
    process.exit(2);
  }
  cluster.schedulingPolicy = policies[values.policy];
}

const workers = Number(values.workers);
const DRAIN_TIMEOUT_MS = 5000; // an old worker still running this long after disconnect() is killed
cluster.setupPrimary({ exec: path.join(__dirname, 'app.js') });

let stopping = false;
const retiring = new Set(); // workers disconnected on purpose: their exit is expected

let firstListening = 0;
let announced = false;
cluster.on('listening', (worker, address) => {
  console.log(`worker ${worker.id} listening (pid ${worker.process.pid})`);
  if (!announced) {
    firstListening += 1;
    if (firstListening === workers) {
      announced = true;
      console.log(`listening on ${address.address}:${address.port}`);
    }
  }
});

cluster.on('exit', (worker, code, signal) => {
  if (stopping || retiring.delete(worker)) return;
  console.log(
    `worker ${worker.id} exited unexpectedly (code ${code}, signal ${signal}): forking a replacement`,
  );
  cluster.fork();
});

// Rolling reload on SIGHUP.
let reloading = false;
let queued = false;

function reload() {
  if (stopping) return;
  if (reloading) {
    queued = true;
    return;
  }
  reloading = true;
  const old = Object.values(cluster.workers);
  let replaced = 0;
  const next = () => {
    if (stopping) return;
    const current = old.shift();
    if (current === undefined) {
      console.log(`rolling reload complete: ${replaced} workers replaced`);
      reloading = false;
      if (queued) {
        queued = false;
        reload();
      }
      return;
    }
    if (current.isDead()) {
      next(); // it died meanwhile and was forked again by the 'exit' handler
      return;
    }
    const fresh = cluster.fork();
    const died = () => {
      // The replacement died before it listened (the 'exit' handler forks it
      // again): keep the old worker and go on with the next one.
      console.log(`rolling reload: the replacement for worker ${current.id} died before listening`);
      next();
    };
    fresh.once('exit', died);
    fresh.once('listening', () => {
      fresh.removeListener('exit', died);
      retiring.add(current);
      const timer = setTimeout(() => current.process.kill('SIGKILL'), DRAIN_TIMEOUT_MS);
      current.once('exit', () => {
        clearTimeout(timer);
        replaced += 1;
        next();
      });
      current.disconnect();
    });
  };
  next();
}

function stop() {
  stopping = true;
  for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  cluster.disconnect(() => process.exit(0));
  setTimeout(() => process.exit(0), DRAIN_TIMEOUT_MS).unref();
}

process.on('SIGHUP', reload);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

for (let i = 0; i < workers; i += 1) cluster.fork();
