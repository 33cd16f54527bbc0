// corral's Node agent: loaded into each Node worker with
// NODE_OPTIONS=--require (docs/node.md, "Keep-alive and reloads"). It makes
// a worker's HTTP/1.1 servers drain without dropping keep-alive clients:
// once a server is closing (Node's cluster `disconnect`, or the app's own
// server.close()), every response carries `Connection: close`, a connection
// with a request in flight closes after its response, and an idle one is
// ended only once it has stayed idle for IDLE_MS since the drain began.
// Plain JavaScript, no dependencies, Node 18+. It never throws into the
// application and does nothing in a process corral did not start.
'use strict';

(function corralNodeAgent() {
  const MARK = 'CORRAL_NODE_AGENT';
  if (process.env[MARK] !== '1') return;
  // The cluster worker itself, not a Node process a wrapper runs first.
  try {
    if (!require('cluster').isWorker) return;
  } catch (_) {
    return;
  }
  // Only this process: a child it starts is not a corral worker.
  try {
    delete process.env[MARK];
    const own = process.env.CORRAL_NODE_AGENT_OPTION;
    delete process.env.CORRAL_NODE_AGENT_OPTION;
    if (own && typeof process.env.NODE_OPTIONS === 'string') {
      const rest = process.env.NODE_OPTIONS.replace(own, '').trim();
      if (rest) process.env.NODE_OPTIONS = rest;
      else delete process.env.NODE_OPTIONS;
    }
  } catch (_) {
    // The environment stays as it is.
  }

  // How long a connection must stay idle after the drain began before it
  // is ended. A client may send a request at the instant a server ends an
  // idle keep-alive connection, and that request is lost (HTTP/1.1 has no
  // way around it); a client that is busy sends within this time and gets
  // its response with `Connection: close` instead.
  const IDLE_MS = 100;
  // A connection ended but not closed by the client is destroyed after this.
  const END_MS = 1000;

  const state = Symbol('corral.agent');
  const patched = Symbol('corral.agent.patched');

  function serverState(server) {
    let s = server[state];
    if (!s) {
      s = { sockets: new Set(), draining: false };
      Object.defineProperty(server, state, { value: s, configurable: true });
    }
    return s;
  }

  function socketState(socket) {
    let s = socket[state];
    if (!s) {
      s = { inFlight: 0, idleSince: Date.now(), timer: null };
      Object.defineProperty(socket, state, { value: s, configurable: true });
    }
    return s;
  }

  function closeAfterResponse(res) {
    try {
      if (!res.headersSent) {
        res.shouldKeepAlive = false;
        res.setHeader('Connection', 'close');
      }
    } catch (_) {
      // Headers already on their way: the idle rule ends the connection.
    }
  }

  function endIfIdle(socket) {
    const s = socketState(socket);
    if (s.timer || socket.destroyed) return;
    s.timer = setTimeout(() => {
      s.timer = null;
      if (socket.destroyed || s.inFlight > 0) return;
      const idleFor = Date.now() - s.idleSince;
      if (idleFor < IDLE_MS) {
        endIfIdle(socket);
        return;
      }
      try {
        socket.end();
        const kill = setTimeout(() => socket.destroy(), END_MS);
        if (kill.unref) kill.unref();
      } catch (_) {
        // Already gone.
      }
    }, IDLE_MS);
    if (s.timer.unref) s.timer.unref();
  }

  function onConnection(server, socket) {
    if (!socket || typeof socket.once !== 'function') return;
    const srv = serverState(server);
    srv.sockets.add(socket);
    const s = socketState(socket);
    socket.once('close', () => {
      srv.sockets.delete(socket);
      if (s.timer) clearTimeout(s.timer);
    });
    if (srv.draining) endIfIdle(socket);
  }

  function onRequest(server, req, res) {
    const srv = serverState(server);
    const socket = req && req.socket;
    if (!socket || !res) return;
    const s = socketState(socket);
    s.inFlight += 1;
    if (srv.draining) closeAfterResponse(res);
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      s.inFlight -= 1;
      s.idleSince = Date.now();
      if (srv.draining && s.inFlight === 0) endIfIdle(socket);
    };
    res.once('finish', finished);
    res.once('close', finished);
  }

  function drain(server) {
    const srv = serverState(server);
    if (srv.draining) return;
    srv.draining = true;
    const now = Date.now();
    for (const socket of srv.sockets) {
      const s = socketState(socket);
      if (s.inFlight > 0) {
        const res = socket._httpMessage;
        if (res) closeAfterResponse(res);
      } else {
        // Idle since the drain began, at the earliest.
        s.idleSince = Math.max(s.idleSince, now);
        endIfIdle(socket);
      }
    }
  }

  function patch(Server) {
    if (!Server || !Server.prototype) return;
    const proto = Server.prototype;
    if (Object.prototype.hasOwnProperty.call(proto, patched)) return;
    Object.defineProperty(proto, patched, { value: true });
    const emit = proto.emit;
    proto.emit = function emitWithAgent(type, a, b) {
      try {
        if (type === 'connection') onConnection(this, a);
        else if (type === 'request') onRequest(this, a, b);
      } catch (_) {
        // The agent's bookkeeping never stands in the application's way.
      }
      return emit.apply(this, arguments);
    };
    const close = proto.close;
    proto.close = function closeWithAgent() {
      let gentle = false;
      try {
        drain(this);
        // Node 19+ closes idle keep-alive connections at once in close();
        // the agent ends them itself, after the idle wait.
        if (typeof this.closeIdleConnections === 'function') {
          Object.defineProperty(this, 'closeIdleConnections', {
            value: function keepIdleConnections() {},
            configurable: true,
            writable: true,
          });
          gentle = true;
        }
      } catch (_) {
        // Close as Node would.
      }
      try {
        return close.apply(this, arguments);
      } finally {
        if (gentle) {
          try {
            delete this.closeIdleConnections;
          } catch (_) {
            // Stays a no-op on a closed server.
          }
        }
      }
    };
  }

  try {
    patch(require('http').Server);
    patch(require('https').Server);
  } catch (_) {
    // Without the agent, as Node would run.
  }

  // ---- prom-client in cluster mode (docs/node.md, "prom-client") ----
  // At a scrape of --metrics, corral asks each worker for its app metrics
  // with an internal message, NODE_CORRAL_METRICS (a 'message' listener
  // would keep the channel referenced, and the worker alive). The agent
  // answers as prom-client's AggregatorRegistry does in a worker: with
  // prom-client's default registry, or nothing when the app has not
  // loaded prom-client.
  const METRICS_REQUEST = 'NODE_CORRAL_METRICS';
  const METRICS_ANSWER = 'prom-client:getMetricsRes';
  const PROM_CLIENT = /[\\/]node_modules[\\/]prom-client[\\/]index\.js$/;

  function loadedPromClient() {
    for (const file of Object.keys(require.cache)) {
      if (PROM_CLIENT.test(file)) return require.cache[file].exports;
    }
    return null;
  }

  function answerMetrics(message) {
    if (!message || message.cmd !== METRICS_REQUEST) return;
    const reply = (fields) => {
      const answer = { type: METRICS_ANSWER, requestId: message.requestId };
      // A closed channel is no error for the app.
      process.send(Object.assign(answer, fields), undefined, {}, () => {});
    };
    const prom = loadedPromClient();
    if (!prom || !prom.register) return reply({ metrics: [] });
    Promise.resolve()
      .then(() => prom.register.getMetricsAsJSON())
      .then(
        (metrics) => reply({ metrics: [metrics] }),
        (err) => reply({ error: String((err && err.message) || err) })
      );
  }

  try {
    process.on('internalMessage', answerMetrics);
  } catch (_) {
    // No app metrics from this worker.
  }
})();
