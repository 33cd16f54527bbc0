// What corral's Node agent adds to each request, in isolation: N times, a
// server's 'request' emission and its response's 'prefinish', 'finish' and 'close', on
// real http.IncomingMessage / http.ServerResponse objects over one socket
// (a keep-alive connection), with nothing else around; prints the CPU
// nanoseconds per request. Run it without and with the agent:
//
//   node bench/node/agent_cost.js
//   NODE_UNIQUE_ID=1 CORRAL_NODE_AGENT=1 node --require AGENT bench/node/agent_cost.js
//
// where AGENT is the agent corral wrote ($TMPDIR/corral-node-agent-UID/agent-HASH.js,
// or crates/corral/src/primary/node/agent.js). NODE_UNIQUE_ID makes the
// process a cluster worker (the agent acts only in one); without an IPC
// channel the agent counts but never sends. The difference of the two runs
// is the agent's CPU per request. bench/run.py measures the same thing in
// whole servers under wrk (rows corral-node-agent-on / -off), and
// bench/node/worker_cost.py side by side with Node's own primary.
//
// PER=connection makes each of the N a new connection with one request: a
// new socket, the server's 'connection' emission (with no listener of
// Node's: only the agent's work), the request as above, and the socket's
// 'close'; what the agent adds is then per connection, as with
// `Connection: close`. Timing is noisy on a busy machine; instruction counts
// are not: with valgrind (apt-get install valgrind), run each case with N=20000
// and N=60000 and divide the difference of `Collected` by 44000 (the
// iterations between the two, warm-up included):
//
//   N=20000 PER=connection NODE_UNIQUE_ID=1 CORRAL_NODE_AGENT=1 valgrind --tool=callgrind \
//     --callgrind-out-file=/dev/null --smc-check=all node --require AGENT bench/node/agent_cost.js
'use strict';

const http = require('node:http');
const net = require('node:net');

const N = Number(process.env.N || 300000);
const perConnection = process.env.PER === 'connection';
const server = http.createServer(() => {});
if (perConnection) server.removeAllListeners('connection');
const keptSocket = new net.Socket();

function request() {
  const socket = perConnection ? new net.Socket() : keptSocket;
  if (perConnection) server.emit('connection', socket);
  const req = new http.IncomingMessage(socket);
  const res = new http.ServerResponse(req);
  server.emit('request', req, res);
  res.emit('prefinish');
  res.emit('finish');
  res.emit('close');
  if (perConnection) socket.emit('close', false);
}

for (let i = 0; i < N / 10; i++) request(); // warm-up
const before = process.cpuUsage();
for (let i = 0; i < N; i++) request();
const used = process.cpuUsage(before);
console.log(((used.user + used.system) * 1000) / N);
