#!/usr/bin/env python3
"""Benchmark faults under load: rolling reloads, killed workers, time to replace a worker.

corral, Node's cluster module and pm2 each run 2 workers behind one port on
127.0.0.1 while a small load generator in this script (8 client threads, a new
connection per request: `GET /` with `Connection: close`, paced to 1,000
requests/s in all) counts every request: succeeded, connection refused, or
failed otherwise (reset, timeout, a bad or empty answer: a request lost in
flight). Counts, not rates, are the point: wrk cannot say which request failed
in which scenario.

Scenarios, each on a freshly started cluster:

1. **rolling reload**: 5 reloads back to back under load. corral: SIGHUP to
   the primary, then its stderr line `rolling reload complete`; Node:
   bench/node/cluster_reload.js (SIGHUP: fork the replacement, wait for its
   'listening', `disconnect()` the old worker), then its line `rolling reload
   complete`; pm2: `pm2 reload app`.
2. **kill a worker every 300 ms for 3 s** under load: SIGKILL a random worker
   (the primary's children; pm2: the God daemon's children).
3. **time from a worker's death to its replacement being ready**, idle:
   SIGKILL one worker at T, then the first arrival of corral's stderr line
   `worker N ready (pid NEW)`, of cluster_reload.js's `worker N listening (pid
   NEW)`, or of a new pid `online` in `pm2 jlist` (polled: coarser). Lines are
   timestamped as they arrive. Repeated 5 times; the median is reported.

Nothing is pinned: the load generator and the servers share the machine's cores.

Run from the repository root:  python3 bench/faults.py [--quick] [--output FILE] [--no-write] [--corral PATH]
It uses target/release/corral (built first with cargo) and pm2 from
bench/node_modules (npm install if missing), prints Markdown tables and writes
them to bench/FAULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

# Helpers shared with the HTTP benchmark (bench/run.py, next to this file).
from run import (
    DEFAULT_CORRAL,
    NODE_APP,
    PM2,
    Config,
    Server,
    StartFailed,
    Unavailable,
    choose_port,
    cpu_model,
    ensure_release_binary,
    publish,
    tool_problems,
    first_line,
    git_revision,
    node_problem,
    port_is_free,
    process_table,
    raise_on_termination,
    read_pid_file,
    run_text,
    tail,
    wait_for_listening,
    wait_for_port_free,
    wait_for_time_wait_room,
    wait_until_serving,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_CLUSTER_RELOAD = BENCH / "node" / "cluster_reload.js"
BUILD_CORRAL = ["cargo", "build", "--release", "-p", "corral-cli"]

WORKERS = 2
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
START_TIMEOUT_S = 30.0
PM2_NAME = "app"
READY_TARGET_MS = 50.0  # the target, for corral's Rust demo worker

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# ---------------------------------------------------------------------------
# What is measured


@dataclasses.dataclass(frozen=True)
class System:
    """One row: a way to run 2 workers behind one port."""

    key: str
    label: str
    kind: str  # "corral", "node-cluster" or "pm2"
    policy: str = ""  # corral --policy
    node_app: bool = False  # corral runs bench/node/app.js instead of its demo worker
    ready_how: str = ""  # how scenario 3 sees the replacement ready ("" = not measured)


SYSTEMS = (
    System(
        "corral-reuseport",
        "corral demo, reuseport",
        "corral",
        "reuseport",
        ready_how="stderr line `worker N ready (pid NEW)`",
    ),
    System(
        "corral-round-robin",
        "corral demo, round-robin",
        "corral",
        "round-robin",
        ready_how="stderr line `worker N ready (pid NEW)`",
    ),
    System("corral-node", "corral run node app.js, reuseport", "corral", "reuseport", node_app=True),
    System(
        "node-cluster",
        "Node cluster (cluster_reload.js, SCHED_RR)",
        "node-cluster",
        "rr",
        ready_how="replacement's 'listening' event, printed by cluster_reload.js",
    ),
    System(
        "pm2",
        f"pm2 cluster mode (-i {WORKERS})",
        "pm2",
        ready_how="`pm2 jlist` polled until a new pid is `online` (coarser)",
    ),
)

SCENARIOS = ("reload", "kill", "ready")
SCENARIO_TITLES = {
    "reload": "Rolling reload",
    "kill": "A worker SIGKILLed every 300 ms",
    "ready": "Worker death to replacement ready",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes of the scenarios (--quick makes them smaller)."""

    reloads: int
    kill_seconds: float
    ready_repeats: int
    rate: float = RATE  # requests/s offered (0: unpaced)


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


class Results:
    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.unavailable: dict[tuple[str, str], str] = {}
        self.failures: dict[tuple[str, str], str] = {}
        self.skipped: dict[tuple[str, str], str] = {}
        self.unavailable_systems: dict[str, str] = {}  # system key -> why it cannot run here
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log("  note: " + text)


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
        self.threads = [
            threading.Thread(target=self.client, args=(i,), name=f"client-{i}", daemon=True)
            for i in range(clients)
        ]
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
                # A steady pace; a client that fell behind (a stalled request)
                # does not catch up with a burst.
                delay = next_at - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    break
                next_at = max(next_at + self.interval, time.monotonic())
            outcome = self.request()
            now = time.monotonic()
            if outcome == "ok":
                tally.succeeded += 1
                done_at.append(now)
            elif outcome == "refused":
                tally.refused += 1
            else:
                tally.failed += 1
                tally.kinds[outcome] += 1

    def request(self) -> str:
        """One request on a new connection: "ok", "refused", or what went wrong."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_TIMEOUT_S)
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "connect timeout"
        except OSError as err:
            return f"connect {type(err).__name__}"
        try:
            sock.sendall(REQUEST)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
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
# A running cluster: its processes, and its output timestamped line by line


class Cluster(Server):
    """run.Server (stop, process-tree cleanup), whose processes' output is read as it arrives."""

    def __init__(self, system: System, logs: Path, port: int) -> None:
        config = Config(system.key, system.label, system.kind, system.policy, system.node_app)
        super().__init__(config, logs, port)
        self.system = system
        self.lines: list[tuple[float, str]] = []  # (arrival, line), stdout and stderr
        self.changed = threading.Condition()
        self.readers: list[threading.Thread] = []
        self.pm2_env: dict[str, str] | None = None
        self.following = threading.Event()  # set: stop following files
        self.files: list[BinaryIO] = []  # the log files the readers write

    def follow(self, path: Path) -> None:
        """Adds the lines appended to a file (polled every 2 ms) to `lines`, timestamped on arrival."""

        def run() -> None:
            offset, partial = 0, b""
            while not self.following.wait(0.002):
                try:
                    with path.open("rb") as file:
                        file.seek(offset)
                        data = file.read()
                except FileNotFoundError:
                    continue
                if not data:
                    continue
                arrival = time.monotonic()
                offset += len(data)
                *complete, partial = (partial + data).split(b"\n")
                with self.changed:
                    self.lines.extend((arrival, raw.decode(errors="replace")) for raw in complete)
                    self.changed.notify_all()

        reader = threading.Thread(target=run, daemon=True)
        reader.start()
        self.readers.append(reader)

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Starts a process in a new session; a thread per stream timestamps its lines and logs them."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        out = self.log_path(name).open("ab")
        self.files.append(out)
        lock = threading.Lock()
        for stream in (proc.stdout, proc.stderr):
            reader = threading.Thread(target=self.read, args=(stream, out, lock), daemon=True)
            reader.start()
            self.readers.append(reader)
        return proc

    def read(self, stream: BinaryIO, out: BinaryIO, lock: threading.Lock) -> None:
        for raw in iter(stream.readline, b""):
            arrival = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            with lock:
                out.write(raw)
                out.flush()
            with self.changed:
                self.lines.append((arrival, line))
                self.changed.notify_all()
        stream.close()

    def wait_line(
        self,
        pattern: str,
        after: float,
        timeout: float,
        accept: Callable[[re.Match[str]], bool] | None = None,
    ) -> tuple[float, re.Match[str]]:
        """The first line matching `pattern` (and `accept`) that arrived after `after` (a monotonic time)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                for arrival, line in self.lines[seen:]:
                    match = regex.search(line)
                    if arrival >= after and match and (accept is None or accept(match)):
                        return arrival, match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StartFailed(
                        f"no line matching {pattern!r} within {timeout:.0f} s:\n{self.output()}"
                    )
                self.changed.wait(left)

    def output(self, lines: int = 15) -> str:
        with self.changed:
            return tail("\n".join(line for _, line in self.lines), lines)

    def workers(self) -> list[int]:
        """The worker pids: the primary's (pm2: the God daemon's) live children."""
        table = process_table()
        self.seen.update((stat.pid, stat.start) for stat in table.values() if stat.ppid == self.primary)
        return sorted(
            stat.pid for stat in table.values() if stat.ppid == self.primary and not is_zombie(stat.pid)
        )

    def stop(self) -> None:
        super().stop()
        self.following.set()
        for reader in self.readers:
            reader.join(timeout=2)
        for file in self.files:
            file.close()


def is_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return text[text.rindex(")") + 2 :].startswith(("Z", "X"))


@dataclasses.dataclass(frozen=True)
class Context:
    corral: Path
    port: int
    logs: Path


def start_corral(cluster: Cluster, ctx: Context) -> None:
    argv = [
        str(ctx.corral),
        "run",
        "-w",
        str(WORKERS),
        "-l",
        f"127.0.0.1:{cluster.port}",
        "--policy",
        cluster.system.policy,
        "--grace",
        "2",
    ]
    if cluster.system.node_app:
        argv += ["--", "node", str(NODE_APP)]
    started = time.monotonic()
    proc = cluster.spawn(argv, "corral")
    cluster.roots = [proc.pid]
    cluster.primary = proc.pid
    wait_for_listening(cluster, proc, "corral")
    for worker_id in range(1, WORKERS + 1):
        cluster.wait_line(rf"\bworker {worker_id} ready \(pid \d+\)", started, START_TIMEOUT_S)


def start_node_cluster(cluster: Cluster, ctx: Context) -> None:
    env = {**os.environ, "PORT": str(cluster.port)}
    argv = ["node", str(NODE_CLUSTER_RELOAD), "--workers", str(WORKERS), "--policy", cluster.system.policy]
    proc = cluster.spawn(argv, "cluster", env)
    cluster.roots = [proc.pid]
    cluster.primary = proc.pid
    wait_for_listening(cluster, proc, "cluster")


def start_pm2(cluster: Cluster, ctx: Context) -> None:
    """`pm2 start app.js -i 2 --name app` with a private PM2_HOME; the God daemon is the primary."""
    home = Path(tempfile.mkdtemp(prefix="pm2-home-", dir=ctx.logs))
    env = {**os.environ, "PM2_HOME": str(home), "PORT": str(cluster.port)}
    cluster.pm2_env = env

    def pm2_kill() -> None:
        quiet = subprocess.DEVNULL
        subprocess.run([str(PM2), "kill"], env=env, stdout=quiet, stderr=quiet, timeout=30)

    cluster.stop_hook = pm2_kill
    cluster.follow(home / "pm2.log")  # the God daemon's log: `App [app:0] online`
    argv = [str(PM2), "start", str(NODE_APP), "-i", str(WORKERS), "--name", PM2_NAME]
    cli = cluster.spawn(argv, "pm2-start", env)
    try:
        code = cli.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StartFailed(f"pm2 start did not return:\n{cluster.output()}") from None
    god = read_pid_file(home / "pm2.pid")
    if god is not None:
        cluster.roots = [god]
        cluster.primary = god
        cluster.tree()
    if code != 0 or god is None:
        raise StartFailed(f"pm2 start failed (code {code}):\n{cluster.output()}")


STARTERS: dict[str, Callable[[Cluster, Context], None]] = {
    "corral": start_corral,
    "node-cluster": start_node_cluster,
    "pm2": start_pm2,
}


@contextlib.contextmanager
def running(system: System, ctx: Context) -> Iterator[Cluster]:
    """Starts a system, waits until it serves with all its workers, and always stops it."""
    cluster = Cluster(system, ctx.logs, ctx.port)
    wait_for_port_free(ctx.port)
    try:
        STARTERS[system.kind](cluster, ctx)
        wait_until_serving(cluster)
        wait_for_workers(cluster)
        yield cluster
    finally:
        cluster.stop()


def wait_for_workers(cluster: Cluster, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while len(cluster.workers()) != WORKERS:
        if time.monotonic() > deadline:
            raise StartFailed(
                f"{len(cluster.workers())} workers instead of {WORKERS} after {timeout:.0f} s:\n"
                + cluster.output()
            )
        time.sleep(0.02)


def recover(cluster: Cluster, load: Load) -> None:
    """After the faults: waits until there are 2 workers again and requests succeed."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    wait_for_workers(cluster, RECOVERY_TIMEOUT_S)
    before = load.succeeded()
    while load.succeeded() < before + 20:
        if time.monotonic() > deadline:
            raise StartFailed(f"no request succeeds after the faults:\n{cluster.output()}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# The scenarios


def scenario_reload(cluster: Cluster, plan: Plan, outcome: Outcome) -> None:
    """`plan.reloads` rolling reloads back to back under load."""
    with Load(cluster.port, plan.rate) as load:
        time.sleep(LEAD_IN_S)
        for _ in range(plan.reloads):
            started = time.monotonic()
            reload(cluster)
            outcome.fault_seconds.append(time.monotonic() - started)
            outcome.faults += 1
        recover(cluster, load)
        time.sleep(COOL_DOWN_S)
        outcome.tally = load.stop()


def reload(cluster: Cluster) -> None:
    """One rolling reload, until it is complete."""
    system = cluster.system
    if system.kind == "pm2":
        assert cluster.pm2_env is not None
        done = subprocess.run(
            [str(PM2), "reload", PM2_NAME],
            env=cluster.pm2_env,
            capture_output=True,
            text=True,
            timeout=RELOAD_TIMEOUT_S,
        )
        if done.returncode != 0:
            output = tail(done.stdout + done.stderr)
            raise StartFailed(f"pm2 reload failed (code {done.returncode}):\n{output}")
        return
    assert cluster.primary is not None
    sent = time.monotonic()
    os.kill(cluster.primary, signal.SIGHUP)
    pattern = r"rolling reload (complete|aborted)|does not do yet"
    _, match = cluster.wait_line(pattern, sent, RELOAD_TIMEOUT_S)
    if match.group(0) == "does not do yet":
        raise Unavailable("this corral binary ignores SIGHUP (built before rolling reloads): rebuild it")
    if match.group(1) == "aborted":
        raise StartFailed(f"the rolling reload was aborted:\n{cluster.output()}")


def scenario_kill(cluster: Cluster, plan: Plan, outcome: Outcome) -> None:
    """SIGKILL a random worker every 300 ms for `plan.kill_seconds` under load."""
    chooser = random.Random(300)
    with Load(cluster.port, plan.rate) as load:
        time.sleep(LEAD_IN_S)
        started = time.monotonic()
        next_kill = started + KILL_INTERVAL_S
        while next_kill <= started + plan.kill_seconds + 0.01:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            next_kill += KILL_INTERVAL_S
            workers = cluster.workers()
            if not workers:
                outcome.notes.append("no worker alive at one kill time")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(chooser.choice(workers), signal.SIGKILL)
                outcome.faults += 1
        recover(cluster, load)
        time.sleep(COOL_DOWN_S)
        outcome.tally = load.stop()


def scenario_ready(cluster: Cluster, plan: Plan, outcome: Outcome) -> None:
    """SIGKILL one worker while idle; time until its replacement is ready. `plan.ready_repeats` times."""
    chooser = random.Random(50)
    for _ in range(plan.ready_repeats):
        time.sleep(SETTLE_S)
        wait_for_workers(cluster)
        before = set(cluster.workers())
        victim = chooser.choice(sorted(before))
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        ready_at = wait_for_replacement(cluster, before, killed_at, outcome)
        outcome.ready_ms.append(1000 * (ready_at - killed_at))
        outcome.faults += 1


def wait_for_replacement(cluster: Cluster, before: set[int], killed_at: float, outcome: Outcome) -> float:
    """When the replacement was seen ready (a monotonic time)."""

    def new_pid(match: re.Match[str]) -> bool:
        return int(match.group(1)) not in before

    if cluster.system.kind == "corral":
        pattern = r"\bworker \d+ ready \(pid (\d+)\)"
        arrival, _ = cluster.wait_line(pattern, killed_at, READY_TIMEOUT_S, new_pid)
        return arrival
    if cluster.system.kind == "node-cluster":
        pattern = r"^worker \d+ listening \(pid (\d+)\)"
        arrival, _ = cluster.wait_line(pattern, killed_at, READY_TIMEOUT_S, new_pid)
        return arrival
    deadline = killed_at + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        asked = time.monotonic()
        online = pm2_online_pids(cluster)
        answered = time.monotonic()
        outcome.poll_ms.append(1000 * (answered - asked))
        if len(online) == WORKERS and online - before:
            arrival, _ = cluster.wait_line(rf"App \[{PM2_NAME}:\d+\] online", killed_at, READY_TIMEOUT_S)
            outcome.log_ready_ms.append(1000 * (arrival - killed_at))
            return answered
    raise StartFailed(f"pm2 shows no new online process after {READY_TIMEOUT_S:.0f} s")


def pm2_online_pids(cluster: Cluster) -> set[int]:
    assert cluster.pm2_env is not None
    done = subprocess.run(
        [str(PM2), "jlist"], env=cluster.pm2_env, capture_output=True, text=True, timeout=30
    )
    start = done.stdout.find("[")
    if done.returncode != 0 or start < 0:
        raise StartFailed(f"pm2 jlist failed (code {done.returncode}):\n{tail(done.stdout + done.stderr)}")
    processes = json.loads(done.stdout[start:])
    return {
        int(p["pid"])
        for p in processes
        if p.get("name") == PM2_NAME and p.get("pm2_env", {}).get("status") == "online" and p.get("pid")
    }


SCENARIO_RUNNERS: dict[str, Callable[[Cluster, Plan, Outcome], None]] = {
    "reload": scenario_reload,
    "kill": scenario_kill,
    "ready": scenario_ready,
}


def run_all(args: argparse.Namespace, ctx: Context, results: Results) -> None:
    for scenario in args.scenarios:
        for system in args.systems:
            key = (system.key, scenario)
            if system.key in results.unavailable_systems:
                results.unavailable[key] = results.unavailable_systems[system.key]
                continue
            if scenario == "ready" and not system.ready_how:
                results.skipped[key] = "not measured (see How to read this)"
                continue
            log(f"[{scenario}] {system.label}")
            wait_for_time_wait_room()
            outcome = Outcome(load_average=os.getloadavg()[0])
            try:
                with running(system, ctx) as cluster:
                    SCENARIO_RUNNERS[scenario](cluster, args.plan, outcome)
                results.outcomes[key] = outcome
                log("  " + progress_line(scenario, outcome))
            except Unavailable as why:
                results.unavailable[key] = str(why)
                log(f"  n/a ({why})")
            except (StartFailed, subprocess.TimeoutExpired, OSError, ValueError) as err:
                results.failures[key] = str(err)
                title = SCENARIO_TITLES[scenario].lower()
                results.note(f"{system.label}, {title}: failed: {first_line(str(err))}")
                log(f"  FAILED: {err}")


def progress_line(scenario: str, o: Outcome) -> str:
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


def cell_status(results: Results, key: tuple[str, str]) -> str | None:
    if key in results.unavailable:
        return f"n/a ({results.unavailable[key]})"
    if key in results.skipped:
        return results.skipped[key]
    if key in results.failures:
        return "failed (see Notes)"
    if key not in results.outcomes:
        return "not run"
    return None


def kinds_text(tally: Tally) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in tally.kinds.most_common()) or "–"


def load_table(scenario: str, systems: list[System], results: Results) -> str:
    faults = "reloads" if scenario == "reload" else "workers killed"
    head = [
        "system",
        faults,
        "requests succeeded",
        "connections refused",
        "other failures",
        "failure kinds",
        "longest pause ms",
        "req/s",
        "load avg",
    ]
    if scenario == "reload":
        head.insert(2, "ms per reload (median)")
    align = " | ".join("---" if name == "failure kinds" else "---:" for name in head[1:])
    lines = ["| " + " | ".join(head) + " |", f"| --- | {align} |"]
    for system in systems:
        key = (system.key, scenario)
        status = cell_status(results, key)
        outcome = results.outcomes.get(key)
        if status is not None or outcome is None or outcome.tally is None:
            cells = [status or "failed"] + ["–"] * (len(head) - 2)
        else:
            t = outcome.tally
            cells = [str(outcome.faults)]
            if scenario == "reload":
                cells.append(f"{1000 * statistics.median(outcome.fault_seconds):,.0f}")
            cells += [
                f"{t.succeeded:,}",
                f"**{t.refused}**",
                f"**{t.failed}**",
                kinds_text(t),
                f"{t.longest_pause_ms:,.0f}",
                f"{t.succeeded / t.seconds:,.0f}" if t.seconds else "–",
                f"{outcome.load_average:.2f}",
            ]
        lines.append(f"| {system.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ready_table(systems: list[System], results: Results) -> str:
    head = ["system", "**median ms**", "min – max ms", "samples", "seen ready by", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: | ---: | ---: | --- | ---: |"]
    for system in systems:
        key = (system.key, "ready")
        status = cell_status(results, key)
        outcome = results.outcomes.get(key)
        if status is not None or outcome is None or not outcome.ready_ms:
            lines.append(f"| {system.label} | {status or 'failed'} | – | – | – | – |")
            continue
        ms = outcome.ready_ms
        how = system.ready_how
        if outcome.poll_ms:
            how += f"; one `pm2 jlist` takes {statistics.median(outcome.poll_ms):.0f} ms (median)"
        lines.append(
            f"| {system.label} | **{statistics.median(ms):.1f}** | {min(ms):.1f} – {max(ms):.1f} | "
            f"{len(ms)} | {how} | {outcome.load_average:.2f} |"
        )
        if outcome.log_ready_ms:
            ms = outcome.log_ready_ms
            lines.append(
                f"| {system.label}, from its log | **{statistics.median(ms):.1f}** | "
                f"{min(ms):.1f} – {max(ms):.1f} | {len(ms)} | the same kills: the God daemon's line "
                f"`App [{PM2_NAME}:N] online` in `$PM2_HOME/pm2.log` (followed every 2 ms) | "
                f"{outcome.load_average:.2f} |"
            )
    return "\n".join(lines)


def target_line(results: Results) -> str | None:
    outcome = results.outcomes.get(("corral-reuseport", "ready"))
    if outcome is None or not outcome.ready_ms:
        return None
    median = statistics.median(outcome.ready_ms)
    verdict = "**met**" if median <= READY_TARGET_MS else "**missed**"
    return (
        f"Target (from the issue): a dead worker's replacement ready in ≤ {READY_TARGET_MS:.0f} ms for "
        f"corral's Rust demo worker. Measured median under reuseport: {median:.1f} ms: {verdict}."
    )


def header(
    args: argparse.Namespace, ctx: Context, versions: dict[str, str], loads: tuple[float, float]
) -> str:
    command = shlex.join(["python3", "bench/faults.py", *args.argv])
    lines = ["# corral fault benchmark results", ""]
    if args.quick:
        lines += ["> **QUICK RUN** (`--quick`): a check that the harness works, not results to quote.", ""]
    plan = args.plan
    lines += [
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: nproc {os.cpu_count()}, kernel {os.uname().release} (`uname -r`), {cpu_model()}",
        f"* Command: `{command}` (from the repository root)",
        f"* corral: `{ctx.corral}` (modified {binary_time(ctx.corral)}); repository at {git_revision()}",
        "* Tools: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"* Clusters: {WORKERS} workers on 127.0.0.1:{ctx.port}, started afresh for every scenario; "
        "corral with `--grace 2`",
        f"* Load: {CLIENTS} client threads in this script, each sending `GET /` on a new connection "
        f"(`Connection: close`) one after another, "
        + (
            f"paced to {plan.rate:,.0f} requests/s in all (a client that falls behind does not catch up), "
            if plan.rate
            else "as fast as they can (`--rate 0`), "
        )
        + f"{REQUEST_TIMEOUT_S:.0f} s timeout per request; "
        f"{LEAD_IN_S} s of load before the first fault, and {COOL_DOWN_S} s after the cluster is whole again",
        f"* Scenarios: {plan.reloads} rolling reloads back to back; a random worker SIGKILLed every "
        f"{KILL_INTERVAL_S * 1000:.0f} ms for {plan.kill_seconds:g} s; {plan.ready_repeats} idle kills "
        f"{SETTLE_S} s apart, timed until the replacement is ready. One run of each",
        "* Pinning: none: the load generator, the primaries and the workers share the cores",
        f"* Load average (1 min) at the start: {loads[0]:.2f}, at the end: {loads[1]:.2f} "
        "(other work on the machine raises it; per-row values below)",
    ]
    return "\n".join(lines)


HOW_TO_READ = """\
## How to read this

Every request is a new connection, and the load is paced: every row is offered
the same {rate} requests/s (the succeeded counts differ mostly with how long
the scenario ran: a slow reload runs longer). A client waits for its request
before it sends the next, so **req/s** (succeeded ÷ the run's length) falls
below the offered rate when clients were stuck on requests that failed slowly.

**Connections refused** are new connections turned away because nothing was
accepting on the port (the client sees `ECONNREFUSED`). **Other failures** are
requests whose connection was accepted and which then got no proper answer:
reset, closed without an answer (`empty answer`), no answer within
{timeout:.0f} s (`timeout`: the connection stayed open, unanswered), or an
answer other than 200; the kinds column says which. A reload should lose
nothing. When a worker is SIGKILLed, a request it was serving at that instant
can only fail, so up to one failure per kill and client is expected; a
`timeout` means a connection was accepted and then left hanging. In the Node
cluster and pm2 rows (pm2's cluster mode is Node's cluster module in its God
daemon) the timeouts start at the instants of the kills: Node's round-robin
primary (`RoundRobinHandle.handoff` in Node 20) keeps a connection it handed to
a worker open until the worker acknowledges it, and when the worker dies first
nothing closes or re-hands that connection, so the client waits until it gives
up. pm2 stops a reloaded worker with SIGINT, its default kill signal, which
`app.js` does not handle (it drains on SIGTERM, which corral sends, and
`cluster_reload.js` uses `disconnect()`): the old worker dies at once, which
accounts for part of pm2's reload failures (`PM2_KILL_SIGNAL=SIGTERM` in this
script's environment makes pm2 send SIGTERM instead). On SIGTERM, `app.js`
closes its server and then every open connection (`closeAllConnections()`), so
a request it has just accepted can be reset as `corral run node` retires it in
a reload. **Longest pause** is the longest time during the run when none of the
{clients} clients completed a request: the worst stall a client saw. Under
corral's `reuseport` the connections that the kernel queues on a dead worker's
socket wait there for its replacement instead of failing: with `node app.js`
(which takes tens of ms to start) the clients stall meanwhile.

Readiness is timed from the SIGKILL to the moment the line saying the
replacement is ready reaches this script, so it includes the primary noticing
the death and starting a new process. corral logs `worker N ready` when the
worker says it serves (the demo worker says so once its server holds the
listener). Node's `'listening'` event fires in the primary when the worker's
server listens. pm2 is polled with `pm2 jlist`, and each call takes about as
long as what it measures: that row gives an upper bound, and the row "from its
log" times the same kills by the God daemon's own `online` line. pm2 marks a
cluster worker `online` when the worker process has started, before it listens,
so pm2's numbers are not directly comparable to the others. `corral run node`
is not timed: `app.js` never says it is ready, so corral counts a crash
replacement as ready as soon as it is started, and its line would time only the
spawn. For the same reason a reload of `corral run node` takes about 1 s per
worker: a replacement that does not say it is ready counts as ready after 1 s
alive (`--ready auto`).

A load average near or above {nproc} (the number of cores) means other work
competed with the benchmark: the failure counts still hold, the rates and times
less so. Each scenario ran once: counts of a few failures vary from run to run.
"""


def report(
    args: argparse.Namespace,
    ctx: Context,
    versions: dict[str, str],
    loads: tuple[float, float],
    results: Results,
) -> str:
    parts = [header(args, ctx, versions, loads)]
    if "reload" in args.scenarios:
        parts.append(
            f"## 1. Rolling reload: {args.plan.reloads} back to back under load\n\n"
            "corral: `kill -HUP <primary>`, then its `rolling reload complete` line; Node: `kill -HUP` "
            "to `bench/node/cluster_reload.js`, then its `rolling reload complete` line; "
            f"pm2: `pm2 reload {PM2_NAME}`.\n\n" + load_table("reload", args.systems, results)
        )
    if "kill" in args.scenarios:
        parts.append(
            f"## 2. A random worker SIGKILLed every {KILL_INTERVAL_S * 1000:.0f} ms for "
            f"{args.plan.kill_seconds:g} s under load\n\n" + load_table("kill", args.systems, results)
        )
    if "ready" in args.scenarios:
        text = (
            f"## 3. Worker death to replacement ready (idle, {args.plan.ready_repeats} kills)\n\n"
            + ready_table(args.systems, results)
        )
        target = target_line(results)
        if target:
            text += "\n\n" + target
        parts.append(text)
    rate = f"{args.plan.rate:,.0f}" if args.plan.rate else "unpaced (`--rate 0`): as many"
    how = HOW_TO_READ.format(timeout=REQUEST_TIMEOUT_S, clients=CLIENTS, nproc=os.cpu_count(), rate=rate)
    parts.append(how.rstrip())
    notes = list(results.notes)
    for (key, scenario), outcome in results.outcomes.items():
        for note in outcome.notes:
            notes.append(f"{key}, {scenario}: {note}")
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"* {note}" for note in notes))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------
# Command line and main


def parse_args(argv: list[str]) -> argparse.Namespace:
    keys = ", ".join(system.key for system in SYSTEMS)
    parser = argparse.ArgumentParser(
        description="Faults under load: rolling reloads, killed workers and replacement time, "
        "for corral, Node's cluster module and pm2 (2 workers, new connection per request).",
        epilog=f"Systems (for --only): {keys}. Scenarios (for --scenarios): {', '.join(SCENARIOS)}.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller scenarios, about a minute: a check, not results"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "FAULTS.md",
        help="where to write the Markdown report (default bench/FAULTS.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no report")
    parser.add_argument(
        "--corral", type=Path, help="corral binary (default target/release/corral, built first with cargo)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help=f"requests/s offered by the {CLIENTS} clients together (default {RATE}; 0: as fast as they can)",
    )
    parser.add_argument("--only", metavar="LIST", help="comma-separated systems to run (see below)")
    parser.add_argument(
        "--scenarios", dest="scenarios_text", metavar="LIST", help="comma-separated scenarios to run (default all)"
    )
    parser.add_argument("--logs", type=Path, help="keep the clusters' logs in this directory")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 for every cluster (default: a free one)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.plan = QUICK if args.quick else FULL
    if args.rate is not None:
        if args.rate < 0:
            parser.error("--rate must be 0 (unpaced) or more")
        args.plan = dataclasses.replace(args.plan, rate=args.rate)
    args.systems = list(SYSTEMS)
    if args.only:
        wanted = {key.strip() for key in args.only.split(",") if key.strip()}
        unknown = wanted - {system.key for system in SYSTEMS}
        if unknown:
            parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; systems: {keys}")
        args.systems = [system for system in SYSTEMS if system.key in wanted]
    return args


def select_scenarios(text: str | None) -> list[str]:
    if not text:
        return list(SCENARIOS)
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        die(f"unknown scenario(s) {', '.join(unknown)}; scenarios: {', '.join(SCENARIOS)}")
    return [name for name in SCENARIOS if name in wanted]


def binary_time(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return stamp.isoformat(timespec="seconds")


def tool_versions() -> dict[str, str]:
    versions = {}
    if node_problem() is None:
        versions["node"] = first_line(run_text(["node", "--version"]))
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        package = json.loads((BENCH / "node_modules" / "pm2" / "package.json").read_text())
        versions["pm2"] = package["version"]
    versions["python"] = sys.version.split()[0]
    return versions


@contextlib.contextmanager
def log_directory(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="corral-faults-") as path:
        yield Path(path)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def die(text: str) -> NoReturn:
    log(f"faults.py: error: {text}")
    sys.exit(2)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.scenarios = select_scenarios(args.scenarios_text)
    raise_on_termination()
    corral = ensure_release_binary(args.corral, "--corral", DEFAULT_CORRAL, BUILD_CORRAL)
    results = Results()
    results.unavailable_systems = tool_problems(args.systems)
    for key, reason in results.unavailable_systems.items():
        log(f"{key}: n/a ({reason})")
    versions = tool_versions()
    load_start = os.getloadavg()[0]
    if args.port is not None and not port_is_free(args.port):
        die(f"--port {args.port}: something listens there already")
    with log_directory(args.logs) as logs:
        ctx = Context(corral=corral, port=args.port or choose_port(), logs=logs)
        started = time.monotonic()
        try:
            run_all(args, ctx, results)
        except KeyboardInterrupt:
            log("interrupted: every cluster was stopped; no report written")
            return 130
        log(f"done in {time.monotonic() - started:.0f} s")
    text = report(args, ctx, versions, (load_start, os.getloadavg()[0]), results)
    publish(text, None if args.no_write else args.output)
    return 1 if results.failures else 0



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
