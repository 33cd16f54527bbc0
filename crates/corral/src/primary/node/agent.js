// corral's Node agent: loaded into each Node worker with
// NODE_OPTIONS=--require (docs/node.md, "Keep-alive and reloads"). It makes
// a worker's HTTP/1.1 servers drain without dropping keep-alive clients:
// once a server is closing (Node's cluster `disconnect`, or the app's own
// server.close()), every response carries `Connection: close`, a connection
// with a request in flight closes after its response, and an idle one is
// ended only once it has stayed idle for IDLE_MS since the drain began.
// Its WebSockets are closed with 1001 (going away), so their clients
// reconnect to the new workers (the WebSockets section below). And it
// counts each worker's requests, latency, event-loop lag and heap,
// reported to corral once a second (docs/node.md, "Request metrics").
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

  // The agent adds no property to a connection's socket or to a response
  // (Object.defineProperty on each socket was the dearest part of its work
  // per connection; bench/node/agent_cost.js PER=connection): its state
  // lives in maps keyed by them, a Map entry and one closure per
  // connection, a WeakMap entry per request.
  const state = Symbol('corral.agent');
  const patched = Symbol('corral.agent.patched');
  // The requests in flight: response -> { socket, conn (its socket's state
  // or null), started (for the metrics) }.
  const inFlightResponses = new WeakMap();

  // A server's own state, on the server (one per server, not per connection).
  // `sockets` maps each open HTTP connection to its state.
  function serverState(server) {
    let s = server[state];
    if (!s) {
      s = { sockets: new Map(), draining: false };
      Object.defineProperty(server, state, { value: s, configurable: true });
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

  // `conn` is the socket's state.
  function endIfIdle(socket, conn) {
    if (conn.timer || socket.destroyed) return;
    conn.timer = setTimeout(() => {
      conn.timer = null;
      if (socket.destroyed || conn.inFlight > 0) return;
      const idleFor = Date.now() - conn.idleSince;
      if (idleFor < IDLE_MS) {
        endIfIdle(socket, conn);
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
    if (conn.timer.unref) conn.timer.unref();
  }

  function onConnection(server, socket) {
    if (!socket || typeof socket.on !== 'function') return;
    const srv = serverState(server);
    if (srv.sockets.has(socket)) return;
    const conn = { inFlight: 0, idleSince: Date.now(), timer: null, server: srv };
    srv.sockets.set(socket, conn);
    socket.on('close', () => {
      srv.sockets.delete(socket);
      if (conn.timer) clearTimeout(conn.timer);
    });
    if (srv.draining) endIfIdle(socket, conn);
  }

  function onRequest(server, req, res, started) {
    const srv = serverState(server);
    const socket = req && req.socket;
    const conn = (socket && srv.sockets.get(socket)) || null;
    inFlightResponses.set(res, { socket, conn, started });
    if (conn) conn.inFlight += 1;
    if (srv.draining) closeAfterResponse(res);
  }

  // The response ended (see onResponseClosed): its socket may be idle now.
  function responseEnded(request) {
    const conn = request.conn;
    if (!conn) return;
    conn.inFlight -= 1;
    conn.idleSince = Date.now();
    if (conn.server.draining && conn.inFlight === 0) endIfIdle(request.socket, conn);
  }

  function drain(server) {
    const srv = serverState(server);
    if (srv.draining) return;
    srv.draining = true;
    closeWebSocketsOnDrain(server);
    const now = Date.now();
    for (const [socket, conn] of srv.sockets) {
      if (conn.inFlight > 0) {
        const res = socket._httpMessage;
        if (res) closeAfterResponse(res);
      } else {
        // Idle since the drain began, at the earliest.
        conn.idleSince = Math.max(conn.idleSince, now);
        endIfIdle(socket, conn);
      }
    }
  }

  // ---- WebSockets: closed with 1001 (going away) on drain ----
  //
  // A socket upgraded through a server's 'upgrade' event with
  // `Upgrade: websocket` leaves the HTTP keep-alive rules above (it is no
  // longer idle between requests: it is a WebSocket). Once its server
  // drains, each is sent a close frame with code 1001, the closes spread
  // evenly over CORRAL_WEBSOCKET_CLOSE_AFTER_MS from the drain's start (the
  // first at once, none later than that), so clients reconnect to the new
  // workers a few at a time rather than all at once. The client's close
  // is awaited WS_CLOSE_WAIT_MS, then the socket is destroyed.
  //
  // The close goes through the library's own WebSocket object when there
  // is one: `ws` keeps it on the socket under a symbol named 'websocket',
  // whether the app uses `new WebSocketServer({ server })` or
  // `{ noServer: true }` with handleUpgrade, and so does engine.io's
  // websocket transport (socket.io), which runs on `ws`. Closing through
  // it keeps the library's state right: it knows it sent the close, ends
  // the connection when the client answers, and emits its own 'close'
  // (socket.io: "transport close"). A raw frame written beside it would
  // make `ws` answer the client's close with a second close frame. Only a
  // socket with no such object (another library) that has already
  // answered the handshake gets the raw, unmasked frame 0x88 0x02 0x03
  // 0xE9 and an end; one still in its handshake is destroyed at the bound.
  const WS_CLOSE_WAIT_MS = 1000;
  const WS_RETRY_MS = 50;
  const WS_GOING_AWAY = 1001;
  const WS_CLOSE_FRAME = Buffer.from([0x88, 0x02, 0x03, 0xe9]);
  const wsState = Symbol('corral.agent.websockets');

  const WS_CLOSE_AFTER_MS = (function webSocketCloseAfter() {
    const name = 'CORRAL_WEBSOCKET_CLOSE_AFTER_MS';
    try {
      const value = Number(process.env[name]);
      delete process.env[name];
      return Number.isFinite(value) && value >= 0 ? value : 1000;
    } catch (_) {
      return 1000;
    }
  })();

  function webSockets(server) {
    let sockets = server[wsState];
    if (!sockets) {
      sockets = new Set();
      Object.defineProperty(server, wsState, { value: sockets, configurable: true });
    }
    return sockets;
  }

  function asksForWebSocket(req) {
    const upgrade = req && req.headers && req.headers.upgrade;
    return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket';
  }

  function onUpgrade(server, req, socket) {
    if (!socket || typeof socket.once !== 'function') return;
    const srv = serverState(server);
    // Not HTTP any more: the idle rule must never end it.
    srv.sockets.delete(socket);
    if (!asksForWebSocket(req)) return;
    const sockets = webSockets(server);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    // Upgraded after the drain began: closed as soon as it is open.
    if (srv.draining) closeWebSocket(socket, Date.now() + WS_CLOSE_WAIT_MS);
  }

  // The library's WebSocket object for `socket`, if it keeps one there.
  function libraryWebSocket(socket) {
    for (const key of Object.getOwnPropertySymbols(socket)) {
      if (key.description !== 'websocket') continue;
      const ws = socket[key];
      if (ws && typeof ws.close === 'function') return ws;
    }
    return null;
  }

  function destroyLater(socket, ms) {
    const kill = setTimeout(() => socket.destroy(), ms);
    if (kill.unref) kill.unref();
    socket.once('close', () => clearTimeout(kill));
  }

  // Closes one WebSocket with 1001; waits for a handshake in progress
  // until `giveUpAt`.
  function closeWebSocket(socket, giveUpAt) {
    if (socket.destroyed) return;
    try {
      const ws = libraryWebSocket(socket);
      if (ws) {
        ws.close(WS_GOING_AWAY, 'server going away');
        destroyLater(socket, WS_CLOSE_WAIT_MS);
      } else if (Date.now() < giveUpAt) {
        const retry = setTimeout(() => closeWebSocket(socket, giveUpAt), WS_RETRY_MS);
        if (retry.unref) retry.unref();
      } else if (socket.bytesWritten > 0) {
        socket.end(WS_CLOSE_FRAME);
        destroyLater(socket, WS_CLOSE_WAIT_MS);
      } else {
        socket.destroy();
      }
    } catch (_) {
      socket.destroy();
    }
  }

  function closeWebSocketsOnDrain(server) {
    const sockets = [...webSockets(server)];
    const step = sockets.length > 0 ? WS_CLOSE_AFTER_MS / sockets.length : 0;
    sockets.forEach((socket, index) => {
      const close = () => closeWebSocket(socket, Date.now() + WS_CLOSE_WAIT_MS);
      if (index === 0 || step === 0) close();
      else {
        const later = setTimeout(close, Math.floor(index * step));
        if (later.unref) later.unref();
      }
    });
  }

  // ---- end of WebSockets ----

  // ---- Request metrics (docs/node.md, "Request metrics") ----------------
  // Per worker: requests served, requests in flight, a latency histogram,
  // event-loop lag and heap used, sent to corral over the IPC channel as
  // {cmd: 'NODE_CORRAL_METRICS', ...}. The `NODE_` prefix makes it one of
  // Node's own messages: an app's 'message' listeners never see it, and
  // corral never relays or logs it as a user message. Counts are totals
  // since the worker started, so a report lost costs nothing.
  // Per request: one timestamp kept with the request in flight and a few
  // additions, at the end of the response's shared listener
  // (onResponseClosed); no closure and no string work.
  const metrics = (function requestMetrics() {
    // Upper bounds of the latency buckets, in seconds; the last bucket
    // counts the slower ones. corral's AGENT_LATENCY_BUCKETS is the same.
    const BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const REPORT_MS = 1000;
    // A worker with nothing new to say reports heap and lag this seldom.
    const QUIET_REPORTS_EVERY = 10;
    // monitorEventLoopDelay's sampling period: it records each period as
    // run; the lag is what exceeds it.
    const LAG_RESOLUTION_MS = 20;
    const buckets = new Array(BOUNDS.length + 1).fill(0);
    const now = require('perf_hooks').performance.now.bind(require('perf_hooks').performance);
    let requests = 0;
    let inFlight = 0;
    let sumSeconds = 0;

    // Once per response (see onResponseClosed), with what onRequest returned.
    function responseEnded(since) {
      const seconds = (now() - since) / 1000;
      inFlight -= 1;
      requests += 1;
      sumSeconds += seconds;
      let bucket = 0;
      while (bucket < BOUNDS.length && seconds > BOUNDS[bucket]) bucket += 1;
      buckets[bucket] += 1;
    }

    // Once per request: its start.
    function onRequest() {
      inFlight += 1;
      return now();
    }

    let lag = null;
    try {
      lag = require('perf_hooks').monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
      lag.enable();
    } catch (_) {
      lag = null;
    }

    // Seconds of lag from a delay in nanoseconds, 0 when there is none.
    function lagSeconds(nanoseconds) {
      const over = nanoseconds / 1e9 - LAG_RESOLUTION_MS / 1000;
      return Number.isFinite(over) && over > 0 ? over : 0;
    }

    let sending = false;
    let lastRequests = -1;
    let lastInFlight = -1;
    let quiet = 0;
    function sent() {
      sending = false;
    }

    function report() {
      if (sending || !process.connected || typeof process.send !== 'function') return;
      quiet += 1;
      if (requests === lastRequests && inFlight === lastInFlight && quiet < QUIET_REPORTS_EVERY) {
        return;
      }
      quiet = 0;
      lastRequests = requests;
      lastInFlight = inFlight;
      let lagMean = 0;
      let lagP99 = 0;
      if (lag) {
        lagMean = lagSeconds(lag.mean);
        lagP99 = lagSeconds(lag.percentile(99));
        lag.reset();
      }
      sending = true;
      // With a callback, a closed channel is an error there, not an
      // 'error' event that would kill the worker.
      process.send(
        {
          cmd: 'NODE_CORRAL_METRICS',
          requests,
          inFlight,
          buckets,
          sum: sumSeconds,
          lag: lagMean,
          lagP99,
          heap: process.memoryUsage().heapUsed,
        },
        sent
      );
    }

    const timer = setInterval(() => {
      try {
        report();
      } catch (_) {
        sending = false;
      }
    }, REPORT_MS);
    if (timer.unref) timer.unref();
    return { onRequest, responseEnded };
  })();

  // One listener per response, shared by every response and by the drain and
  // metrics sections above (no closure per request): `this` is the response. 'close'
  // follows 'finish' (on the next tick) on a response sent whole, and ends
  // an aborted one.
  function onResponseClosed() {
    try {
      const request = inFlightResponses.get(this);
      if (request === undefined) return;
      inFlightResponses.delete(this);
      responseEnded(request);
      metrics.responseEnded(request.started);
    } catch (_) {
      // Thrown from a listener, it would reach the application.
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
        else if (type === 'request' && b && typeof b.on === 'function' && !inFlightResponses.has(b)) {
          b.on('close', onResponseClosed);
          onRequest(this, a, b, metrics.onRequest());
        } else if (type === 'upgrade') onUpgrade(this, a, b);
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
  // with an internal message, NODE_CORRAL_APP_METRICS (a 'message' listener
  // would keep the channel referenced, and the worker alive). The agent
  // answers as prom-client's AggregatorRegistry does in a worker: with
  // prom-client's default registry, or nothing when the app has not
  // loaded prom-client.
  const METRICS_REQUEST = 'NODE_CORRAL_APP_METRICS';
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
