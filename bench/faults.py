#!/usr/bin/env python3
"""Benchmark faults under load: rolling reloads (new connections, keep-alive), killed workers, replacement time.

corral, Node's cluster module and pm2 each run 2 workers behind one port while
8 client threads in this script send requests on new connections, paced to
1,000/s, and count every one: succeeded, refused, or failed in flight (wrk
cannot say which request failed when). Each scenario starts a fresh cluster:
5 rolling reloads; the same under keep-alive load (each client keeps one
connection and does not retry); a random worker SIGKILLed every 300 ms for 3 s; the time from
a worker's death to its replacement being ready (idle, 5 times). Unpinned.

Run from the repository root:  python3 bench/faults.py [--quick] [--only SYSTEMS] [--scenarios …]
It builds corral, installs pm2 if missing, and writes bench/FAULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import harness as h

CLIENTS = 8  # load generator threads
RATE = 1000  # requests/s offered by all clients together (0: each client as fast as it can)
REQUEST_TIMEOUT_S = 3.0  # per request (connect, send, read to the end)
KILL_INTERVAL_S = 0.3
LEAD_IN_S = 0.5  # load before the first fault
COOL_DOWN_S = 1.0  # load after the cluster is whole again
RECOVERY_TIMEOUT_S = 15.0  # after the faults: back to 2 workers, serving
RELOAD_TIMEOUT_S = 60.0  # one rolling reload
READY_TIMEOUT_S = 10.0  # one replacement
SETTLE_S = 1.5  # between two kills of the readiness scenario (a replacement up 1 s is stable)
PM2_NAME = "app"
READY_TARGET_MS = 50.0  # the target, for corral's Rust demo worker
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
CORRAL_READY = "stderr line `worker N ready (pid NEW)`"

SYSTEMS = (
    h.Config("corral-reuseport", "corral demo, reuseport", "corral", "reuseport"),
    h.Config("corral-round-robin", "corral demo, round-robin", "corral", "round-robin"),
    h.Config("corral-node", "corral run node app.js, reuseport", "corral", "reuseport", h.NODE_APP),
    h.Config("node-cluster", "Node cluster (cluster_reload.js, SCHED_RR)", "node", "rr", h.NODE_CLUSTER_RELOAD),
    h.Config("pm2", f"pm2 cluster mode (-i {h.WORKERS})", "pm2", app=h.NODE_APP),
    *(h.tutorial("corral", policy) for policy in ("reuseport", "round-robin")),
    h.tutorial("node", "rr"),
    h.tutorial("pm2"),
)
# How scenario 3 sees a replacement ready; the other systems are not timed (bench/README.md says why).
READY_HOW = {
    "corral-reuseport": CORRAL_READY,
    "corral-round-robin": CORRAL_READY,
    "node-cluster": "replacement's 'listening' event, printed by cluster_reload.js",
    "pm2": "`pm2 jlist` polled until a new pid is `online` (coarser)",
    "tutorial-corral-reuseport": CORRAL_READY + ", once the replacement's `listen()` is answered",
    "tutorial-corral-round-robin": CORRAL_READY + ", once the replacement's `listen()` is answered",
}
NO_RELOAD = {"tutorial-node-rr": "the program codes no reload: SIGHUP stops Node's primary"}
SCENARIOS = ("reload", "keepalive", "kill", "ready")
KEEP_ALIVE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of the scenarios (--quick makes them smaller)."""

    reloads: int
    kill_seconds: float
    ready_repeats: int
    rate: float = RATE  # requests/s offered (0: unpaced)
    reload_every: float = 0.0  # seconds from one reload's start to the next (0: back to back)


FULL = Plan(reloads=5, kill_seconds=3.0, ready_repeats=5)
QUICK = Plan(reloads=2, kill_seconds=1.5, ready_repeats=3)


@dataclasses.dataclass
class Tally:
    """What the load generator counted."""

    succeeded: int = 0
    refused: int = 0
    failed: int = 0  # everything else: reset, timeout, bad or empty answer
    kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    longest_pause_ms: float = 0.0  # the longest time without a request completing
    seconds: float = 0.0


@dataclasses.dataclass
class Outcome:
    """One scenario on one system."""

    tally: Tally | None = None
    faults: int = 0  # reloads done or workers killed
    fault_seconds: list[float] = dataclasses.field(default_factory=list)  # per reload
    ready_ms: list[float] = dataclasses.field(default_factory=list)
    poll_ms: list[float] = dataclasses.field(default_factory=list)  # pm2 jlist call durations
    log_ready_ms: list[float] = dataclasses.field(default_factory=list)  # pm2: its log's `online` line
    load_average: float = 0.0  # 1-minute load average when the scenario started
    notes: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------
# The load generator


class Load:
    """Client threads, each sending `GET /` on a new connection, one after another, until stopped."""

    def __init__(self, port: int, rate: float, clients: int = CLIENTS) -> None:
        self.port = port
        self.interval = clients / rate if rate > 0 else 0.0  # between two requests of one client
        self.stopping = threading.Event()
        self.tallies = [Tally() for _ in range(clients)]
        self.done_at: list[list[float]] = [[] for _ in range(clients)]  # completion times
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        self.started = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 1)

    def succeeded(self) -> int:
        return sum(t.succeeded for t in self.tallies)

    def client(self, index: int) -> None:
        tally, done_at = self.tallies[index], self.done_at[index]
        next_at = self.started + self.interval * index / len(self.tallies)  # clients staggered
        while not self.stopping.is_set():
            if self.interval:
                # A steady pace; a client that fell behind (a stalled request) does not catch up with a burst.
                delay = next_at - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    break
                next_at = max(next_at + self.interval, time.monotonic())
            outcome = self.request(index)
            if outcome == "ok":
                tally.succeeded += 1
                done_at.append(time.monotonic())
            elif outcome == "refused":
                tally.refused += 1
            else:
                tally.failed += 1
                tally.kinds[outcome] += 1

    def request(self, _client: int) -> str:
        """One request on a new connection: "ok", "refused", or what went wrong."""
        sock = connect(self.port)
        if isinstance(sock, str):
            return sock
        try:
            sock.sendall(REQUEST)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return "timeout"
        except ConnectionResetError:
            return "reset"
        except BrokenPipeError:
            return "broken pipe"
        except OSError as err:
            return type(err).__name__
        finally:
            sock.close()
        return check_response(b"".join(chunks))

    def stop(self) -> Tally:
        ended = time.monotonic()  # the clients may take a while to notice (a request in flight)
        self.__exit__()
        total = Tally(seconds=ended - self.started)
        for tally in self.tallies:
            total.succeeded += tally.succeeded
            total.refused += tally.refused
            total.failed += tally.failed
            total.kinds.update(tally.kinds)
        times = sorted([self.started, *(t for done in self.done_at for t in done if t < ended), ended])
        total.longest_pause_ms = 1000 * max(b - a for a, b in zip(times, times[1:], strict=False))
        return total


def connect(port: int) -> socket.socket | str:
    """A new connection to the cluster, or why there is none ("refused", …)."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "connect timeout"
    except OSError as err:
        return f"connect {type(err).__name__}"


class KeepAliveLoad(Load):
    """Client threads, each keeping one HTTP/1.1 connection and sending `GET /` on it, one after another.

    A client that does not retry: a request sent on a kept connection that the
    server then closes or resets without answering is lost (`closed
    unanswered`, `reset`), as it would be for wrk or a browser's fetch. A
    response with `Connection: close`, or a connection the server closed
    between two requests and the client saw closed before sending, only makes
    the client open a new connection for its next request.
    """

    def __init__(self, port: int, rate: float, clients: int = CLIENTS) -> None:
        super().__init__(port, rate, clients)
        self.connections: list[socket.socket | None] = [None] * clients
        self.opened = [0] * clients  # connections each client opened

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for index, sock in enumerate(self.connections):
            if sock is not None:
                sock.close()
                self.connections[index] = None

    def connection(self, client: int) -> socket.socket | str:
        """The client's kept connection, a new one if the server closed it, or why there is none."""
        sock = self.connections[client]
        if sock is not None and closed_by_peer(sock):
            sock.close()
            sock = None
        if sock is None:
            sock = connect(self.port)
            if isinstance(sock, str):
                return sock
            self.opened[client] += 1
            self.connections[client] = sock
        return sock

    def request(self, client: int) -> str:
        sock = self.connection(client)
        if isinstance(sock, str):
            return sock
        outcome, keep = "ok", False
        try:
            sock.sendall(KEEP_ALIVE_REQUEST)
            outcome, keep = read_response(sock)
        except TimeoutError:
            outcome = "timeout"
        except ConnectionResetError:
            outcome = "reset"
        except BrokenPipeError:
            outcome = "broken pipe"
        except OSError as err:
            outcome = type(err).__name__
        if not keep:
            sock.close()
            self.connections[client] = None
        return outcome


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) a kept connection that has nothing to read: seen without waiting."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        finally:
            sock.setblocking(True)
            sock.settimeout(REQUEST_TIMEOUT_S)
    except BlockingIOError:
        return False
    except OSError:
        return True


class Truncated(Exception):
    """The server closed the connection in the middle of a response."""


class Reader:
    """A connection's bytes, read as a response needs them (its head, a body, chunk by chunk)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.data = sock, b""

    def until(self, mark: bytes) -> bytes:
        """The bytes up to `mark` (consumed with it)."""
        while mark not in self.data:
            self.more()
        found, _, self.data = self.data.partition(mark)
        return found

    def exactly(self, count: int) -> bytes:
        while len(self.data) < count:
            self.more()
        found, self.data = self.data[:count], self.data[count:]
        return found

    def more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Truncated
        self.data += chunk


def read_response(sock: socket.socket) -> tuple[str, bool]:
    """One response (a Content-Length or chunked body): its outcome, and whether the connection stays open."""
    reader = Reader(sock)
    try:
        head = reader.until(b"\r\n\r\n")
    except Truncated:
        return ("closed unanswered" if not reader.data else "truncated answer"), False
    try:
        body = read_body(reader, head)
    except Truncated:
        return "truncated answer", False
    if body is None:
        return "no length", False
    keep = re.search(rb"(?im)^connection:\s*close\s*$", head) is None
    return check_response(head + b"\r\n\r\n" + body), keep


def read_body(reader: Reader, head: bytes) -> bytes | None:
    """The body the head announces; None when it announces no length (the body then ends with the connection)."""
    if re.search(rb"(?im)^transfer-encoding:\s*chunked\s*$", head):
        body = b""
        while size := int(reader.until(b"\r\n").split(b";")[0], 16):
            body += reader.exactly(size)
            reader.until(b"\r\n")
        while reader.until(b"\r\n"):  # trailers, up to the empty line
            pass
        return body
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return None if match is None else reader.exactly(int(match.group(1)))


def check_response(data: bytes) -> str:
    if not data:
        return "empty answer"
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        return "bad answer"
    if status[1] != b"200":
        return f"status {status[1].decode(errors='replace')}"
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if match and len(body) < int(match.group(1)):
        return "truncated answer"
    return "ok"


# ---------------------------------------------------------------------------
# A running cluster


@contextlib.contextmanager
def started(config: h.Config, ctx: h.Context) -> Iterator[h.Server]:
    """Starts a system, waits until it serves with all its workers ready, and always stops it.

    Its output is timestamped line by line as it arrives (and pm2's log, where
    its God daemon says a worker is online), for the readiness scenario.
    """
    begun = time.monotonic()
    with h.running(h.Server(config, ctx)) as cluster:
        if config.kind == "corral":
            for worker_id in range(1, h.WORKERS + 1):
                cluster.wait_line(rf"\bworker {worker_id} ready \(pid \d+\)", begun, h.START_TIMEOUT_S)
        if cluster.pm2_env is not None:
            cluster.follow(Path(cluster.pm2_env["PM2_HOME"]) / "pm2.log", "pm2-log")  # `App [app:0] online`
        wait_for_workers(cluster)
        yield cluster


def wait_for_workers(cluster: h.Server, timeout: float = h.START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while len(cluster.workers()) != h.WORKERS:
        if time.monotonic() > deadline:
            raise h.Failed(
                f"{len(cluster.workers())} workers instead of {h.WORKERS} after {timeout:.0f} s:\n{cluster.output()}"
            )
        time.sleep(0.02)


def recover(cluster: h.Server, load: Load) -> None:
    """After the faults: waits until there are 2 workers again and requests succeed."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    wait_for_workers(cluster, RECOVERY_TIMEOUT_S)
    before = load.succeeded()
    while load.succeeded() < before + 20:
        if time.monotonic() > deadline:
            raise h.Failed(f"no request succeeds after the faults:\n{cluster.output()}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# The scenarios


def under_load(
    cluster: h.Server, plan: Plan, outcome: Outcome, faults: Callable[[], None], kind: type[Load] = Load
) -> None:
    """Load, a lead-in, the faults, recovery, a cool-down: what the clients saw goes in `outcome`."""
    with kind(cluster.port, plan.rate) as load:
        time.sleep(LEAD_IN_S)
        faults()
        recover(cluster, load)
        time.sleep(COOL_DOWN_S)
        outcome.tally = load.stop()


def scenario_reload(cluster: h.Server, plan: Plan, outcome: Outcome, kind: type[Load] = Load) -> None:
    """`plan.reloads` rolling reloads under load, back to back or one every `plan.reload_every` s."""

    def reloads() -> None:
        for _ in range(plan.reloads):
            begun = time.monotonic()
            reload(cluster)
            outcome.fault_seconds.append(time.monotonic() - begun)
            outcome.faults += 1
            time.sleep(max(0.0, plan.reload_every - (time.monotonic() - begun)))

    under_load(cluster, plan, outcome, reloads, kind)


def scenario_keep_alive(cluster: h.Server, plan: Plan, outcome: Outcome) -> None:
    """The rolling reloads of `scenario_reload`, under keep-alive load."""
    scenario_reload(cluster, plan, outcome, KeepAliveLoad)


def reload(cluster: h.Server) -> None:
    """One rolling reload, until it is complete."""
    if cluster.pm2_env is not None:
        argv = [str(h.PM2), "reload", PM2_NAME]
        done = subprocess.run(argv, env=cluster.pm2_env, capture_output=True, text=True, timeout=RELOAD_TIMEOUT_S)
        if done.returncode != 0:
            raise h.Failed(f"pm2 reload failed (code {done.returncode}):\n{h.tail(done.stdout + done.stderr)}")
        return
    assert cluster.primary is not None
    sent = time.monotonic()
    os.kill(cluster.primary, signal.SIGHUP)
    _, match = cluster.wait_line(r"rolling reload (complete|aborted)|does not do yet", sent, RELOAD_TIMEOUT_S)
    if match.group(0) == "does not do yet":
        raise h.Unavailable("this corral binary ignores SIGHUP (built before rolling reloads): rebuild it")
    if match.group(1) == "aborted":
        raise h.Failed(f"the rolling reload was aborted:\n{cluster.output()}")


def scenario_kill(cluster: h.Server, plan: Plan, outcome: Outcome) -> None:
    """SIGKILL a random worker every 300 ms for `plan.kill_seconds` under load."""
    chooser = random.Random(300)

    def kills() -> None:
        begun = time.monotonic()
        next_kill = begun + KILL_INTERVAL_S
        while next_kill <= begun + plan.kill_seconds + 0.01:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            next_kill += KILL_INTERVAL_S
            workers = cluster.workers()
            if not workers:
                outcome.notes.append("no worker alive at one kill time")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(chooser.choice(workers), signal.SIGKILL)
                outcome.faults += 1

    under_load(cluster, plan, outcome, kills)


def scenario_ready(cluster: h.Server, plan: Plan, outcome: Outcome) -> None:
    """SIGKILL one worker while idle; time until its replacement is ready. `plan.ready_repeats` times."""
    chooser = random.Random(50)
    for _ in range(plan.ready_repeats):
        time.sleep(SETTLE_S)
        wait_for_workers(cluster)
        before = set(cluster.workers())
        killed_at = time.monotonic()
        os.kill(chooser.choice(sorted(before)), signal.SIGKILL)
        outcome.ready_ms.append(1000 * (wait_for_replacement(cluster, before, killed_at, outcome) - killed_at))
        outcome.faults += 1


def wait_for_replacement(cluster: h.Server, before: set[int], killed_at: float, outcome: Outcome) -> float:
    """When the replacement was seen ready (a monotonic time)."""

    def new_pid(match: re.Match[str]) -> bool:
        return int(match.group(1)) not in before

    if cluster.pm2_env is None:
        corral = cluster.config.kind == "corral"
        pattern = r"\bworker \d+ ready \(pid (\d+)\)" if corral else r"^worker \d+ listening \(pid (\d+)\)"
        return cluster.wait_line(pattern, killed_at, READY_TIMEOUT_S, new_pid)[0]
    deadline = killed_at + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        asked = time.monotonic()
        online = pm2_online_pids(cluster)
        answered = time.monotonic()
        outcome.poll_ms.append(1000 * (answered - asked))
        if len(online) == h.WORKERS and online - before:
            arrival, _ = cluster.wait_line(rf"App \[{PM2_NAME}:\d+\] online", killed_at, READY_TIMEOUT_S)
            outcome.log_ready_ms.append(1000 * (arrival - killed_at))
            return answered
    raise h.Failed(f"pm2 shows no new online process after {READY_TIMEOUT_S:.0f} s")


def pm2_online_pids(cluster: h.Server) -> set[int]:
    done = subprocess.run([str(h.PM2), "jlist"], env=cluster.pm2_env, capture_output=True, text=True, timeout=30)
    start = done.stdout.find("[")
    if done.returncode != 0 or start < 0:
        raise h.Failed(f"pm2 jlist failed (code {done.returncode}):\n{h.tail(done.stdout + done.stderr)}")
    return {
        int(p["pid"])
        for p in json.loads(done.stdout[start:])
        if p.get("name") == PM2_NAME and p.get("pm2_env", {}).get("status") == "online" and p.get("pid")
    }


RUNNERS: dict[str, Callable[[h.Server, Plan, Outcome], None]] = {
    "reload": scenario_reload,
    "keepalive": scenario_keep_alive,
    "kill": scenario_kill,
    "ready": scenario_ready,
}


class Case(typing.NamedTuple):
    """One scenario on one system, on a fresh cluster."""

    system: h.Config
    scenario: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.system.key, self.scenario)

    @property
    def label(self) -> str:
        return f"{self.system.label}, {self.scenario}"


def run_all(args: argparse.Namespace, ctx: h.Context, results: h.Results) -> None:
    """Every scenario on every system, each on a fresh cluster; a failing one is noted, never fatal."""

    def run(case: Case, _round: int) -> Outcome:
        h.wait_for_time_wait_room()
        outcome = Outcome(load_average=os.getloadavg()[0])
        with started(case.system, ctx) as cluster:
            RUNNERS[case.scenario](cluster, args.plan, outcome)
        h.log("  " + progress_line(outcome))
        return outcome

    h.alternate(1, [Case(system, scenario) for scenario in args.scenarios for system in args.systems], results, run)


def progress_line(o: Outcome) -> str:
    parts = [f"{o.faults} faults"]
    if o.tally is not None:
        t = o.tally
        parts.append(
            f"{t.succeeded} ok, {t.refused} refused, {t.failed} failed {dict(t.kinds) or ''}, "
            f"longest pause {t.longest_pause_ms:.0f} ms"
        )
    if o.ready_ms:
        parts.append("ready ms " + ", ".join(f"{ms:.1f}" for ms in o.ready_ms))
    if o.log_ready_ms:
        parts.append("from the log " + ", ".join(f"{ms:.1f}" for ms in o.log_ready_ms))
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Report


def outcome_of(results: h.Results, key: tuple[str, str]) -> tuple[str | None, Outcome | None]:
    status = results.status(key)
    return status, None if status is not None else results.series(key)[0]


def load_table(scenario: str, systems: list[h.Config], results: h.Results) -> str:
    reloads = scenario in ("reload", "keepalive")
    head = ["system", "reloads" if reloads else "workers killed", "requests succeeded"]
    head += ["connections refused", "other failures", "failure kinds", "longest pause ms", "req/s", "load avg"]
    if reloads:
        head.insert(2, "ms per reload (median)")
    rows = []
    for system in systems:
        status, outcome = outcome_of(results, (system.key, scenario))
        if outcome is None or outcome.tally is None:
            rows.append([system.label, status or "failed"] + ["–"] * (len(head) - 2))
            continue
        t = outcome.tally
        cells = [str(outcome.faults)]
        if reloads:
            cells.append(f"{1000 * statistics.median(outcome.fault_seconds):,.0f}")
        kinds = ", ".join(f"{kind} {count}" for kind, count in t.kinds.most_common()) or "–"
        cells += [f"{t.succeeded:,}", f"**{t.refused}**", f"**{t.failed}**", kinds, f"{t.longest_pause_ms:,.0f}"]
        cells += [f"{t.succeeded / t.seconds:,.0f}" if t.seconds else "–", f"{outcome.load_average:.2f}"]
        rows.append([system.label, *cells])
    return h.table(head, rows, text=["system", "failure kinds"])


def ready_table(systems: list[h.Config], results: h.Results) -> str:
    rows = []
    for system in systems:
        status, outcome = outcome_of(results, (system.key, "ready"))
        if outcome is None or not outcome.ready_ms:
            rows.append([system.label, status or "failed", "–", "–", "–", "–"])
            continue
        how = READY_HOW[system.key]
        if outcome.poll_ms:
            how += f"; one `pm2 jlist` takes {statistics.median(outcome.poll_ms):.0f} ms (median)"
        rows.append([system.label, *ms_cells(outcome.ready_ms), how, f"{outcome.load_average:.2f}"])
        if outcome.log_ready_ms:
            how = (
                f"the same kills: the God daemon's line `App [{PM2_NAME}:N] online` in `$PM2_HOME/pm2.log` "
                "(followed every 2 ms)"
            )
            rows.append(
                [f"{system.label}, from its log", *ms_cells(outcome.log_ready_ms), how, f"{outcome.load_average:.2f}"]
            )
    head = ["system", "**median ms**", "min – max ms", "samples", "seen ready by", "load avg"]
    return h.table(head, rows, text=["system", "seen ready by"])


def ms_cells(ms: list[float]) -> list[str]:
    return [f"**{statistics.median(ms):.1f}**", f"{min(ms):.1f} – {max(ms):.1f}", str(len(ms))]


def target_line(results: h.Results) -> str | None:
    _, outcome = outcome_of(results, ("corral-reuseport", "ready"))
    if outcome is None or not outcome.ready_ms:
        return None
    median = statistics.median(outcome.ready_ms)
    verdict = "**met**" if median <= READY_TARGET_MS else "**missed**"
    return (
        f"Target (from the issue): a dead worker's replacement ready in ≤ {READY_TARGET_MS:.0f} ms for "
        f"corral's Rust demo worker. Measured median under reuseport: {median:.1f} ms: {verdict}."
    )


def make_report(
    args: argparse.Namespace, ctx: h.Context, versions: dict[str, str], loads: tuple[float, float], results: h.Results
) -> str:
    plan = args.plan
    pace = f"paced to {plan.rate:,.0f} requests/s in all (a client that falls behind does not catch up)"
    head = h.header(
        "corral fault benchmark results",
        args,
        versions,
        [
            f"* corral: `{ctx.corral}` (modified {h.binary_time(ctx.corral)})",
            f"* Clusters: {h.WORKERS} workers on 127.0.0.1:{ctx.port}, started afresh for every scenario; "
            "corral with `--grace 2`",
            f"* Load: {CLIENTS} client threads in this script, each sending `GET /` on a new connection "
            f"(`Connection: close`) one after another, {pace if plan.rate else 'as fast as they can (`--rate 0`)'}, "
            f"{REQUEST_TIMEOUT_S:.0f} s timeout per request; {LEAD_IN_S} s of load before the first fault, and "
            f"{COOL_DOWN_S} s after the cluster is whole again",
            f"* Scenarios: {plan.reloads} rolling reloads "
            + (f"one every {plan.reload_every:g} s;" if plan.reload_every else "back to back;")
            + f" a random worker SIGKILLed every "
            f"{KILL_INTERVAL_S * 1000:.0f} ms for {plan.kill_seconds:g} s; {plan.ready_repeats} idle kills "
            f"{SETTLE_S} s apart, timed until the replacement is ready. One run of each",
            "* Pinning: none: the load generator, the primaries and the workers share the cores",
            f"* Load average (1 min) at the start: {loads[0]:.2f}, at the end: {loads[1]:.2f} "
            "(other work on the machine raises it; per-row values below)",
        ],
    )
    parts = [head]
    if "reload" in args.scenarios:
        parts.append(
            f"## 1. Rolling reload: {plan.reloads} "
            + (f"one every {plan.reload_every:g} s" if plan.reload_every else "back to back")
            + " under load\n\n"
            "corral: `kill -HUP <primary>`, then its `rolling reload complete` line; Node: `kill -HUP` "
            "to `bench/node/cluster_reload.js`, then its `rolling reload complete` line; "
            f"pm2: `pm2 reload {PM2_NAME}`.\n\n" + load_table("reload", args.systems, results)
        )
    if "keepalive" in args.scenarios:
        parts.append(
            f"## 1b. Rolling reload: {plan.reloads} "
            + (f"one every {plan.reload_every:g} s" if plan.reload_every else "back to back")
            + " under keep-alive load\n\n"
            f"The reloads of section 1, while each of the {CLIENTS} clients keeps one HTTP/1.1 connection "
            "and sends its requests on it, one after another, at the same pace, and never retries: a request "
            "sent on a kept connection that the server then closes without answering is lost "
            "(`closed unanswered`, `reset`). A response with `Connection: close`, or a connection seen closed "
            "before the next request, makes the client open a new one.\n\n"
            + load_table("keepalive", args.systems, results)
        )
    if "kill" in args.scenarios:
        parts.append(
            f"## 2. A random worker SIGKILLed every {KILL_INTERVAL_S * 1000:.0f} ms for "
            f"{plan.kill_seconds:g} s under load\n\n" + load_table("kill", args.systems, results)
        )
    if "ready" in args.scenarios:
        target = target_line(results)
        parts.append(
            f"## 3. Worker death to replacement ready (idle, {plan.ready_repeats} kills)\n\n"
            + ready_table(args.systems, results)
            + (f"\n\n{target}" if target else "")
        )
    notes = list(results.notes)
    for (key, scenario), outcomes in results.data.items():
        notes += [f"{key}, {scenario}: {note}" for outcome in outcomes if outcome for note in outcome.notes]
    return h.report(parts, notes, "How to read this: bench/README.md, section Faults.")


# ---------------------------------------------------------------------------
# Command line and main


def parse_args(argv: list[str]) -> argparse.Namespace:
    keys = ", ".join(system.key for system in SYSTEMS)
    p = h.parser(
        "Faults under load: rolling reloads, killed workers and replacement time, for corral, Node's "
        "cluster module and pm2 (2 workers, new connection per request).",
        "FAULTS.md",
        "smaller scenarios, about a minute",
        epilog=f"Systems (for --only): {keys}. Scenarios (for --scenarios): {', '.join(SCENARIOS)}.",
    )
    h.add_server_options(p)
    p.add_argument(
        "--rate", type=float, help=f"requests/s offered by the {CLIENTS} clients together (default {RATE}; 0: unpaced)"
    )
    p.add_argument(
        "--reloads",
        type=int,
        metavar="N",
        help=f"rolling reloads back to back in the reload scenario (default {FULL.reloads}); "
        "e.g. 36 for a soak",
    )
    p.add_argument(
        "--reload-every",
        type=float,
        metavar="SECONDS",
        help="start a reload every SECONDS instead of back to back (e.g. 5 for the 3-minute soak)",
    )
    p.add_argument("--only", metavar="LIST", help="comma-separated systems to run (see below)")
    p.add_argument("--scenarios", metavar="LIST", help="comma-separated scenarios to run (default all)")
    args = p.parse_args(argv)
    args.argv = argv
    args.plan = QUICK if args.quick else FULL
    if args.rate is not None:
        if args.rate < 0:
            p.error("--rate must be 0 (unpaced) or more")
        args.plan = dataclasses.replace(args.plan, rate=args.rate)
    if args.reloads is not None:
        if args.reloads < 1:
            p.error("--reloads must be 1 or more")
        args.plan = dataclasses.replace(args.plan, reloads=args.reloads)
    if args.reload_every is not None:
        if args.reload_every < 0:
            p.error("--reload-every must be 0 (back to back) or more")
        args.plan = dataclasses.replace(args.plan, reload_every=args.reload_every)
    args.systems = h.select(p, args.only, SYSTEMS, "system")
    args.scenarios = h.select(p, args.scenarios, SCENARIOS, "scenario")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    corral = h.ensure_corral(args.corral)
    results = h.Results(runs=1)
    for key, reason in h.tool_problems(args.systems).items():
        results.unavailable.update({(key, scenario): reason for scenario in SCENARIOS})
    for system in args.systems:
        if system.key not in READY_HOW:
            results.unavailable[(system.key, "ready")] = "not timed: bench/README.md says why"
        if system.key in NO_RELOAD:
            results.unavailable[(system.key, "reload")] = NO_RELOAD[system.key]
            results.unavailable[(system.key, "keepalive")] = NO_RELOAD[system.key]
    versions = h.tool_versions()
    load_start = os.getloadavg()[0]
    with h.log_directory(args.logs) as logs, tempfile.TemporaryDirectory(prefix="corral-faults-") as runtime:
        # corral's control sockets in a runtime directory of this run's own: a cluster of the same name
        # running on this machine (the tutorial program's, from bench/run.py) would refuse to start.
        os.environ["XDG_RUNTIME_DIR"] = runtime
        ctx = h.Context(corral=corral, port=h.choose_port(args.port), logs=logs)
        if not h.measure_all(lambda: run_all(args, ctx, results)):
            return 130
    text = make_report(args, ctx, versions, (load_start, os.getloadavg()[0]), results)
    h.publish(text, None if args.no_write else args.output)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
