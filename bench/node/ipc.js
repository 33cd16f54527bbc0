// Measures messages between a parent and one child over Node's IPC channel
// (child_process.fork, serialization 'json', the default): the same four
// numbers as corral's `ipc_bench` example, measured the same way.
//
//   node ipc.js [--seconds S] [--large-rounds N]
//
// The parent forks this file as the child, which sends every message straight
// back. The parent measures ping-pong round trips per second (one message
// `{"seq": n}` in flight), pipelined round trips per second (100 in flight),
// then the mean round-trip time of a 1 MiB and a 16 MiB JSON string payload
// over N rounds. It prints one JSON line on stdout, kills the child and exits.
// bench/messages.py runs it beside corral and a bare socket pair.
'use strict';

const { fork } = require('node:child_process');
const { parseArgs } = require('node:util');

const CHILD_FLAG = '--ipc-child';

if (process.argv.includes(CHILD_FLAG)) {
  child();
} else {
  parent();
}

// The child: echo every message, until the parent goes away.
function child() {
  process.on('message', (message) => process.send(message));
  process.on('disconnect', () => process.exit(0));
  process.send({ ready: true });
}

function parent() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '2' },
      'large-rounds': { type: 'string', default: '5' },
    },
  });
  const seconds = Number(values.seconds);
  const largeRounds = Number(values['large-rounds']);
  if (!(seconds > 0) || !Number.isInteger(largeRounds) || largeRounds < 1) {
    console.error('ipc.js: --seconds must be > 0 and --large-rounds an integer >= 1');
    process.exit(2);
  }

  const worker = fork(__filename, [CHILD_FLAG], { serialization: 'json', stdio: 'inherit' });
  let stopping = false;
  worker.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`ipc.js: the child exited during the measurement (code ${code}, signal ${signal})`);
      process.exit(1);
    }
  });
  worker.on('error', (err) => {
    console.error(`ipc.js: ${err.stack || err}`);
    stop(1);
  });

  // Every message from the child goes to the handler of the current phase.
  let onMessage = (message) => {
    if (message && message.ready === true) {
      run().catch((err) => {
        console.error(`ipc.js: ${err.stack || err}`);
        stop(1);
      });
    }
  };
  worker.on('message', (message) => onMessage(message));

  const results = {};
  async function run() {
    onMessage = () => {};
    results.ping_pong_round_trips_per_s = await roundTripsPerSecond(1);
    results.pipelined_round_trips_per_s = await roundTripsPerSecond(100);
    results.rtt_1mib_ms = await roundTripMs(1 << 20);
    results.rtt_16mib_ms = await roundTripMs(16 << 20);
    process.stdout.write(JSON.stringify(results) + '\n', () => stop(0));
  }

  function stop(code) {
    stopping = true;
    worker.kill('SIGKILL');
    process.exit(code);
  }

  // Keeps `inFlight` small messages going for `seconds`, answering each echo
  // with a new message; the rate counts the messages sent after the first
  // `inFlight`, over the time until the period ended (as ipc_bench does).
  function roundTripsPerSecond(inFlight) {
    return new Promise((resolve) => {
      const periodMs = seconds * 1000;
      const started = performance.now();
      let sent = 0;
      let answered = 0;
      let elapsedMs = null;
      onMessage = () => {
        answered += 1;
        if (elapsedMs === null) {
          const now = performance.now() - started;
          if (now < periodMs) {
            worker.send({ seq: sent });
            sent += 1;
            return;
          }
          elapsedMs = now;
        }
        if (answered === sent) resolve(((sent - inFlight) * 1000) / elapsedMs);
      };
      while (sent < inFlight) {
        worker.send({ seq: sent });
        sent += 1;
      }
    });
  }

  // The mean round-trip time of a `bytes`-long string payload, in ms.
  function roundTripMs(bytes) {
    return new Promise((resolve, reject) => {
      const payload = 'x'.repeat(bytes);
      const started = performance.now();
      let done = 0;
      onMessage = (message) => {
        if (typeof message !== 'string' || message.length !== bytes) {
          reject(new Error(`the echo of a ${bytes}-byte payload came back different`));
          return;
        }
        done += 1;
        if (done < largeRounds) worker.send(payload);
        else resolve((performance.now() - started) / largeRounds);
      };
      worker.send(payload);
    });
  }
}
