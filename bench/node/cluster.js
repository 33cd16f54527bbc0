// Runs bench/node/app.js as a cluster of workers with Node's cluster module.
//
//   node cluster.js [--workers N] [--policy rr|none]
//
// PORT (and HOST, default 127.0.0.1) are passed to the workers. The policy
// defaults to NODE_CLUSTER_SCHED_POLICY ('rr' or 'none'), else Node's default
// (rr on Linux). Prints "listening on HOST:PORT" once every worker listens.
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
    console.error(`cluster.js: --policy must be rr or none, not ${values.policy}`);
    process.exit(2);
  }
  cluster.schedulingPolicy = policies[values.policy];
}

const workers = Number(values.workers);
cluster.setupPrimary({ exec: path.join(__dirname, 'app.js') });

let listening = 0;
cluster.on('listening', (worker, address) => {
  listening += 1;
  if (listening === workers) {
    console.log(`listening on ${address.address}:${address.port}`);
  }
});
cluster.on('exit', (worker, code, signal) => {
  if (!stopping) console.error(`worker ${worker.id} exited (code ${code}, signal ${signal})`);
});

let stopping = false;
function stop() {
  stopping = true;
  for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  cluster.disconnect(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

for (let i = 0; i < workers; i += 1) cluster.fork();
