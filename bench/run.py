#!/usr/bin/env python3
"""Benchmark corral against a bare baseline, Node's cluster module and pm2.

Every configuration runs 2 worker processes behind one port on 127.0.0.1 and
takes the same load from wrk (1 thread, 50 connections) in two modes:
keep-alive, and a new connection per request. For each it reports requests/s,
p50/p99 latency, wrk's socket errors and non-2xx answers, each worker's share
of the requests (from the worker id in the body, tallied by bench/wrk/shares.lua),
the server's CPU time per request and the primary's own CPU per connection.

**Server CPU per request is the headline figure.** On a 2-core machine wrk
saturates a core in every configuration, so requests/s mostly measures the
load generator (a badly unbalanced server can even score the highest rate),
and it varies by about 20% between identical runs. The CPU the server spends
per request, summed over the primary and all workers from /proc/PID/stat
(utime + stime), varies by only a few percent, and it is what a cluster
manager adds or saves. See shared/BENCHMARKING.md.

Method: wrk is pinned to core 0 and every server process to core 1 (taskset);
configurations alternate A B C ... A B C ... for --runs rounds; each is warmed
up before it is measured; tables show medians over the rounds, and ratios are
medians of per-round ratios. Runs with a new connection per request last at
most 5 s and are followed by a pause, because they fill the kernel's
TIME_WAIT table; every row listens on the same port, so that table holds at
most one socket per client port and cannot grow from row to row. The CPU used
by all other processes during each run is reported too: a busy machine makes
the run suspect.

Run from the repository root:  python3 bench/run.py [--quick] [--runs N] ...
It installs wrk (apt-get) and pm2 (npm, into bench/node_modules) if missing,
prints Markdown tables and writes them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import itertools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from collections.abc import Sequence
from typing import NoReturn, Protocol

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_APP = BENCH / "node" / "app.js"
NODE_CLUSTER = BENCH / "node" / "cluster.js"
WRK_SCRIPT = BENCH / "wrk" / "shares.lua"
PM2 = BENCH / "node_modules" / ".bin" / "pm2"
DEFAULT_CORRAL = REPO / "target" / "release" / "corral"

WORKERS = 2
CONNECTIONS = 50
CLIENT_CORE = "0"
SERVER_CORE = "1"
CLOSE_RUN_LIMIT_S = 5  # new-connection runs: longer ones fill TIME_WAIT
FIRST_WARMUP_S = 3  # warm-up of the first row measured (see run_rounds)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
DISTURBED_PERCENT = 10  # other processes' CPU (% of a core) that makes a run suspect


# ---------------------------------------------------------------------------
# What is measured: configurations (table rows) and load modes


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table: a way to run 2 workers behind one port."""

    key: str  # short name, for --only
    label: str  # name in the tables
    kind: str  # "bare", "corral", "node-cluster" or "pm2"
    policy: str = ""  # corral --policy, or Node's scheduling policy
    node_app: bool = False  # corral runs bench/node/app.js instead of its demo


CONFIGS = (
    Config("bare", "bare baseline: 2 × corral demo-worker, SO_REUSEPORT", "bare"),
    Config("corral-shared", "corral demo, shared", "corral", "shared"),
    Config("corral-reuseport", "corral demo, reuseport", "corral", "reuseport"),
    Config("corral-round-robin", "corral demo, round-robin", "corral", "round-robin"),
    Config(
        "corral-least-connections",
        "corral demo, least-connections",
        "corral",
        "least-connections",
    ),
    Config("node-rr", "Node cluster, SCHED_RR", "node-cluster", "rr"),
    Config("node-none", "Node cluster, SCHED_NONE", "node-cluster", "none"),
    Config("pm2", "pm2 cluster mode (-i 2)", "pm2"),
    Config("corral-node-shared", "corral run node, shared", "corral", "shared", True),
    Config("corral-node-reuseport", "corral run node, reuseport", "corral", "reuseport", True),
)


@dataclasses.dataclass(frozen=True)
class Mode:
    """A load mode of wrk."""

    key: str
    title: str
    wrk_args: tuple[str, ...]
    new_connection_per_request: bool


MODES = (
    Mode("keep-alive", "Keep-alive (50 connections reused)", (), False),
    Mode(
        "close",
        "New connection per request (Connection: close)",
        ("-H", "Connection: close"),
        True,
    ),
)

# Ratios: (label, numerator key, denominator key); plus every row ÷ "bare".
COMPARISONS = (
    ("corral round-robin ÷ corral reuseport", "corral-round-robin", "corral-reuseport"),
    (
        "corral least-connections ÷ corral reuseport",
        "corral-least-connections",
        "corral-reuseport",
    ),
    ("corral run node, reuseport ÷ Node cluster RR", "corral-node-reuseport", "node-rr"),
    ("corral run node, shared ÷ Node cluster RR", "corral-node-shared", "node-rr"),
    ("corral run node, reuseport ÷ pm2", "corral-node-reuseport", "pm2"),
)


@dataclasses.dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non2xx: int
    shares: dict[str, int]  # requests answered, by worker id


@dataclasses.dataclass
class Measurement:
    """One wrk run against one configuration, and the CPU time spent meanwhile."""

    wrk: WrkResult
    connections: int  # connections wrk opened: 50, or one per request
    seconds: float  # wall time of the run
    server_us: float  # CPU time of the primary and all workers
    primary_us: float | None  # CPU time of the primary alone (None: there is none)
    others_us: float  # CPU time of everything else on the machine but wrk

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_us / max(self.wrk.requests, 1)

    @property
    def primary_us_per_connection(self) -> float | None:
        return None if self.primary_us is None else self.primary_us / max(self.connections, 1)

    @property
    def primary_percent(self) -> float | None:
        if self.primary_us is None:
            return None
        return 100.0 * self.primary_us / self.server_us if self.server_us else 0.0

    @property
    def others_percent(self) -> float:
        """CPU used by other processes during the run, in % of one core."""
        return 100.0 * self.others_us / (self.seconds * 1e6)

    @property
    def disturbed(self) -> bool:
        return self.others_percent > DISTURBED_PERCENT


class Unavailable(Exception):
    """A row that cannot run here (not built yet, a tool missing)."""


class StartFailed(Exception):
    """A configuration did not come up; the message carries its log."""


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    keys = ", ".join(config.key for config in CONFIGS)
    parser = argparse.ArgumentParser(
        description="Benchmark corral's balancing policies against a bare "
        "baseline, Node's cluster module and pm2 (2 workers, wrk -t1 -c50).",
        epilog=f"Rows (for --only): {keys}",
    )
    parser.add_argument("--runs", type=int, help="rounds over all rows (default 3)")
    parser.add_argument(
        "--duration", type=int, help="seconds per wrk run (default 5; new-connection runs at most 5)"
    )
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per row (default 1)")
    parser.add_argument("--pause", type=float, help="seconds of pause after a new-connection run (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s per mode: a check, not results")
    parser.add_argument("--only", help="comma-separated row keys to run (see below)")
    parser.add_argument(
        "--corral",
        type=Path,
        help=f"corral binary (default {DEFAULT_CORRAL.relative_to(REPO)}, built first with cargo)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and servers to separate cores")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "RESULTS.md",
        help="where to write the Markdown report (default bench/RESULTS.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no report")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="measure a run again this many times while other processes disturb it (default 1)",
    )
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 for every row (default: a free one)")
    args = parser.parse_args(argv)
    args.argv = argv
    apply_defaults(args)
    args.configs = select_configs(parser, args)
    return args


def apply_defaults(args: argparse.Namespace) -> None:
    """Fills the options not given, from --quick or the full-run defaults."""
    quick = {"runs": 1, "duration": 2, "warmup": 1, "pause": 1.0}
    full = {"runs": 3, "duration": 5, "warmup": 1, "pause": 2.0}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.runs < 1 or args.duration < 1 or min(args.warmup, args.pause, args.retries) < 0:
        sys.exit(
            "run.py: --runs and --duration must be at least 1; --warmup, --pause, --retries not negative"
        )


def select_configs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Config]:
    if not args.only:
        return list(CONFIGS)
    wanted = [key.strip() for key in args.only.split(",") if key.strip()]
    known = {config.key for config in CONFIGS}
    unknown = [key for key in wanted if key not in known]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(sorted(known))}")
    return [config for config in CONFIGS if config.key in wanted]


def close_duration(args: argparse.Namespace) -> int:
    return min(int(args.duration), CLOSE_RUN_LIMIT_S)


# ---------------------------------------------------------------------------
# Prerequisites


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package if it is missing."""
    if shutil.which("wrk") is None and shutil.which("apt-get") is not None:
        log("wrk is missing: apt-get install -y wrk")
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL)
            subprocess.run(install, stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if path is None:
        die("wrk is required and could not be installed: run `apt-get install wrk` as root")
    return path


def ensure_taskset() -> None:
    if shutil.which("taskset") is None:
        die("taskset (util-linux) is required to pin processes; install it or pass --no-pin")
    if not {int(CLIENT_CORE), int(SERVER_CORE)} <= os.sched_getaffinity(0):
        die(f"pinning needs cores {CLIENT_CORE} and {SERVER_CORE}; pass --no-pin on this machine")


def publish(text: str, output: Path | None) -> None:
    """Prints a report and, unless `output` is None, writes it there."""
    print(text)
    if output is not None:
        output.write_text(text)
        log(f"written to {output}")


def ensure_corral(path: Path | None) -> Path:
    """The corral binary: the one given, or the repository's release build (built first with cargo)."""
    build = ["cargo", "build", "--release", "-p", "corral-cli"]
    return ensure_release_binary(path, "--corral", DEFAULT_CORRAL, build)


def ensure_release_binary(path: Path | None, flag: str, default: Path, build: list[str]) -> Path:
    """`path` if given (passed as `flag`), else `default`, built with `build`
    first (cargo does nothing when it is current), so a stale build is never
    measured."""
    if path is not None:
        if not (path.is_file() and os.access(path, os.X_OK)):
            die(f"{flag} {path}: no executable there")
        return path.resolve()
    if shutil.which("cargo") is None:
        if default.exists():
            log(f"cargo is not on the PATH: using {default} as it is")
            return default
        die(f"{default} is missing and cargo is not on the PATH; pass {flag} PATH")
    log(f"building {default.name}: {shlex.join(build)}")
    result = subprocess.run(build, cwd=REPO)
    if result.returncode != 0 or not default.exists():
        die(f"{shlex.join(build)} failed")
    return default


def node_problem() -> str | None:
    """Why the Node rows cannot run, or None when node (v18 or later) is there."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < 18:
        return f"node {version or '?'} is too old (18 or later needed)"
    return None


def pm2_problem() -> str | None:
    """Installs pm2 into bench/node_modules if missing; says why it cannot run, or None."""
    if PM2.exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (needed to install pm2)"
    log("pm2 is missing: npm install (bench/package.json)")
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BENCH,
        capture_output=True,
        text=True,
    )
    if install.returncode != 0 or not PM2.exists():
        return "pm2 could not be installed: " + last_line(install.stderr or install.stdout)
    return None


class UsesTools(Protocol):
    """A benchmark row, as far as its tools are concerned."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def node_app(self) -> bool: ...


def tool_problems(configs: Sequence[UsesTools]) -> dict[str, str]:
    """For each row that cannot run because a tool is missing, the reason."""
    problems: dict[str, str] = {}
    uses_node = [c for c in configs if c.kind in ("node-cluster", "pm2") or c.node_app]
    node = node_problem() if uses_node else None
    for config in uses_node:
        if node is not None:
            problems[config.key] = node
    if node is None and any(c.kind == "pm2" for c in configs):
        pm2 = pm2_problem()
        if pm2 is not None:
            problems["pm2"] = pm2
    return problems


def tool_versions(wrk: str) -> dict[str, str]:
    versions = {"wrk": first_line(run_text([wrk, "-v"])).split(" [")[0].removeprefix("wrk ")}
    if shutil.which("node"):
        versions["node"] = first_line(run_text(["node", "--version"]))
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        package = json.loads((BENCH / "node_modules" / "pm2" / "package.json").read_text())
        versions["pm2"] = package["version"]
    return versions


# ---------------------------------------------------------------------------
# Processes: /proc, ports, spawning, stopping


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    start: int  # start time in ticks since boot: tells a pid's reuse apart
    ticks: int  # utime + stime, all threads


def read_stat(pid: int) -> ProcStat | None:
    """Fields 4, 14, 15 and 22 of /proc/PID/stat, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        start=int(fields[19]),
        ticks=int(fields[11]) + int(fields[12]),
    )


def process_table() -> dict[int, ProcStat]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                table[stat.pid] = stat
    return table


def process_tree(roots: list[int], table: dict[int, ProcStat]) -> list[ProcStat]:
    """The root processes and all their descendants (threads are counted in their process)."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        found.append(table[pid])
        todo.extend(children.get(pid, []))
    return found


def cpus_allowed(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "?"
    match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    return match.group(1) if match else "?"


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port (TIME_WAIT sockets do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_port() -> int:
    """A free port below the ephemeral range, so that no client connection takes it between rows.

    Every row uses this one port: new-connection runs leave at most one TIME_WAIT
    socket per client port on it, so TIME_WAIT cannot grow from row to row, and
    every row starts from the same state.
    """
    low = 32768
    with contextlib.suppress(FileNotFoundError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in range(max(1024, low - 12000), low):
        if port_is_free(port):
            return port
    die("no free port below the ephemeral port range; pass --port")


def wait_for_port_free(port: int) -> None:
    """Waits (a few seconds at most) until nothing listens on the port any more."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while not port_is_free(port):
        if time.monotonic() > deadline:
            raise StartFailed(f"port {port} is in use by another process (`ss -ltnp 'sport = :{port}'`)")
        time.sleep(0.1)


def http_get(port: int, timeout: float = 2.0) -> str | None:
    """The body of GET / if it answers 200, else None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


STARTS = itertools.count(1)


class Server:
    """The processes of one running configuration, and how to stop them all."""

    def __init__(self, config: Config, logs: Path, port: int) -> None:
        self.config = config
        self.logs = logs
        self.prefix = f"{config.key}-{next(STARTS)}"  # names this start's log files
        self.port = port
        self.procs: list[subprocess.Popen[bytes]] = []  # started by us, each its own process group
        self.roots: list[int] = []  # whose process trees are measured
        self.primary: int | None = None  # the process that balances (None: no primary)
        self.seen: set[tuple[int, int]] = set()  # (pid, start) of every server process seen
        self.stop_hook: Callable[[], None] | None = None  # e.g. `pm2 kill`

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Starts a process in a new session, its output to a log file."""
        path = self.log_path(name)
        with path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.logs / f"{self.prefix}-{name}.log"

    def tree(self) -> list[ProcStat]:
        found = process_tree(self.roots, process_table())
        self.seen.update((stat.pid, stat.start) for stat in found)
        return found

    def cpu_snapshot(self) -> dict[tuple[int, int], int]:
        """CPU ticks of every server process, by (pid, start)."""
        return {(stat.pid, stat.start): stat.ticks for stat in self.tree()}

    def stop(self) -> None:
        """Graceful stop (hook, then SIGTERM), then SIGKILL whatever is left."""
        self.tree()  # note every process alive now, before any is orphaned
        if self.stop_hook is not None:
            with contextlib.suppress(Exception):
                self.stop_hook()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """SIGKILLs the process groups we started that still run, and every server process seen."""
        for proc in self.procs:
            if proc.poll() is None:  # not reaped: its pid is still its process group's
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for pid, start in self.seen:
            stat = read_stat(pid)
            if stat is not None and stat.start == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def wait_for_listening(server: Server, proc: subprocess.Popen[bytes], name: str) -> None:
    """Waits for the line `listening on 127.0.0.1:PORT` in a process's log."""
    path = server.log_path(name)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        match = re.search(r"^listening on \S+:(\d+)\s*$", text, re.M)
        if match:
            if int(match.group(1)) != server.port:
                raise StartFailed(f"listens on port {match.group(1)}, not {server.port}")
            return
        if proc.poll() is not None:
            raise_start_failure(text, f"exited with code {proc.returncode} before listening")
        time.sleep(0.02)
    raise StartFailed(f"no `listening on` line after {START_TIMEOUT_S:.0f} s:\n{tail(path.read_text())}")


def raise_start_failure(log_text: str, what: str) -> None:
    if "not built" in log_text:
        raise Unavailable("not built")
    raise StartFailed(f"{what}:\n{tail(log_text)}")


def wait_until_serving(server: Server) -> None:
    """Waits until all expected processes exist and the port answers 200."""
    expected = WORKERS + (1 if server.primary is not None else 0)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in server.procs:
            if proc.poll() is not None and proc.returncode != 0 and server.config.kind != "pm2":
                raise_start_failure(all_logs(server), f"exited with code {proc.returncode}")
        if len(server.tree()) >= expected and http_get(server.port) is not None:
            return
        time.sleep(0.05)
    raise StartFailed(
        f"not serving with {expected} processes after {START_TIMEOUT_S:.0f} s:\n{tail(all_logs(server))}"
    )


def all_logs(server: Server) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(server.logs.glob(f"{server.prefix}-*.log"))
    )


# ---------------------------------------------------------------------------
# Starting each kind of configuration


@dataclasses.dataclass(frozen=True)
class Context:
    corral: Path
    wrk: str
    pin: bool
    port: int  # every row listens on 127.0.0.1:port
    logs: Path


def pinned(ctx: Context, core: str) -> list[str]:
    return ["taskset", "-c", core] if ctx.pin else []


def start_bare(server: Server, ctx: Context) -> None:
    """Two `corral demo-worker`s on one SO_REUSEPORT port: no primary at all."""
    for worker_id in range(1, WORKERS + 1):
        argv = [
            *pinned(ctx, SERVER_CORE),
            str(ctx.corral),
            "demo-worker",
            "-l",
            f"127.0.0.1:{server.port}",
            "--id",
            str(worker_id),
        ]
        proc = server.spawn(argv, f"worker{worker_id}")
        wait_for_listening(server, proc, f"worker{worker_id}")
        server.roots.append(proc.pid)


def start_corral(server: Server, ctx: Context) -> None:
    """`corral run` with the demo worker, or with bench/node/app.js as each worker."""
    argv = [
        *pinned(ctx, SERVER_CORE),
        str(ctx.corral),
        "run",
        "-w",
        str(WORKERS),
        "-l",
        f"127.0.0.1:{server.port}",
        "--policy",
        server.config.policy,
        "--grace",
        "2",
    ]
    if server.config.node_app:
        argv += ["--", "node", str(NODE_APP)]
    proc = server.spawn(argv, "corral")
    wait_for_listening(server, proc, "corral")
    server.roots = [proc.pid]
    server.primary = proc.pid


def start_node_cluster(server: Server, ctx: Context) -> None:
    """bench/node/cluster.js: Node's cluster module with SCHED_RR or SCHED_NONE."""
    env = {**os.environ, "PORT": str(server.port), "NODE_CLUSTER_SCHED_POLICY": server.config.policy}
    argv = [
        *pinned(ctx, SERVER_CORE),
        "node",
        str(NODE_CLUSTER),
        "--workers",
        str(WORKERS),
        "--policy",
        server.config.policy,
    ]
    proc = server.spawn(argv, "cluster", env)
    wait_for_listening(server, proc, "cluster")
    server.roots = [proc.pid]
    server.primary = proc.pid


def start_pm2(server: Server, ctx: Context) -> None:
    """`pm2 start app.js -i 2` with a private PM2_HOME; the God daemon is the primary."""
    home = Path(tempfile.mkdtemp(prefix="pm2-home-", dir=ctx.logs))
    env = {**os.environ, "PM2_HOME": str(home), "PORT": str(server.port)}

    def pm2_kill() -> None:
        quiet = subprocess.DEVNULL
        subprocess.run([str(PM2), "kill"], env=env, stdout=quiet, stderr=quiet, timeout=30)

    server.stop_hook = pm2_kill
    argv = [
        *pinned(ctx, SERVER_CORE),
        str(PM2),
        "start",
        str(NODE_APP),
        "-i",
        str(WORKERS),
        "--name",
        "bench-node",
    ]
    cli = server.spawn(argv, "pm2-start", env)
    try:
        code = cli.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StartFailed(f"pm2 start did not return:\n{tail(all_logs(server))}") from None
    god = read_pid_file(home / "pm2.pid")
    if god is not None:
        server.roots = [god]
        server.primary = god
        server.tree()
    if code != 0 or god is None:
        raise StartFailed(f"pm2 start failed (code {code}):\n{tail(all_logs(server))}")


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


STARTERS: dict[str, Callable[[Server, Context], None]] = {
    "bare": start_bare,
    "corral": start_corral,
    "node-cluster": start_node_cluster,
    "pm2": start_pm2,
}


@contextlib.contextmanager
def running(config: Config, ctx: Context) -> Iterator[Server]:
    """Starts a configuration, waits until it serves, and always stops it."""
    server = Server(config, ctx.logs, ctx.port)
    wait_for_port_free(ctx.port)
    try:
        STARTERS[config.kind](server, ctx)
        wait_until_serving(server)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Load and measurement


def run_wrk(ctx: Context, port: int, seconds: int, mode: Mode) -> WrkResult:
    argv = [
        *pinned(ctx, CLIENT_CORE),
        ctx.wrk,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        *mode.wrk_args,
        f"http://127.0.0.1:{port}/",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise StartFailed(f"wrk failed (code {done.returncode}):\n{tail(done.stdout + done.stderr)}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    """Reads wrk's report and the lines printed by shares.lua's done()."""

    def number(pattern: str) -> str:
        match = re.search(pattern, text, re.M)
        if match is None:
            raise StartFailed(f"unexpected wrk output (no match for {pattern!r}):\n{tail(text)}")
        return match.group(1)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests=int(number(r"^\s*(\d+) requests in")),
        rps=float(number(r"^Requests/sec:\s*([\d.]+)")),
        p50_ms=latency_ms(number(r"^\s*50%\s+(\S+)")),
        p99_ms=latency_ms(number(r"^\s*99%\s+(\S+)")),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non2xx=int(number(r"^bench-non2xx (\d+)")),
        shares={m.group(1): int(m.group(2)) for m in re.finditer(r"^bench-share (\S+) (\d+)", text, re.M)},
    )


def latency_ms(text: str) -> float:
    """wrk's latency ("412.00us", "1.23ms", "2.00s", "1.00m") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise StartFailed(f"unexpected wrk latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[match.group(2)]
    return float(match.group(1)) * scale


def measure(server: Server, ctx: Context, seconds: int, mode: Mode) -> Measurement:
    """One wrk run, with the CPU times read before and after it."""
    before, busy_before, wrk_before = server.cpu_snapshot(), machine_busy_us(), children_cpu_us()
    started = time.monotonic()
    result = run_wrk(ctx, server.port, seconds, mode)
    elapsed = time.monotonic() - started
    after, busy_after, wrk_after = server.cpu_snapshot(), machine_busy_us(), children_cpu_us()
    if before.keys() != after.keys():
        raise StartFailed(
            "the server's processes changed during the run (one exited or was replaced):\n"
            + tail(all_logs(server))
        )
    server_us = ticks_us(sum(after[key] - before[key] for key in before))
    primary = [key for key in before if key[0] == server.primary]
    return Measurement(
        wrk=result,
        connections=result.requests if mode.new_connection_per_request else CONNECTIONS,
        seconds=elapsed,
        server_us=server_us,
        primary_us=ticks_us(sum(after[key] - before[key] for key in primary)) if primary else None,
        others_us=max(0.0, (busy_after - busy_before) - server_us - (wrk_after - wrk_before)),
    )


def machine_busy_us() -> float:
    """CPU time the whole machine has spent busy since boot (/proc/stat), in µs."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return ticks_us(user + nice + system + irq + softirq)


def children_cpu_us() -> float:
    """CPU time of this script's reaped children (wrk), in µs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def ticks_us(ticks: int) -> float:
    return ticks * 1e6 / CLK_TCK


def warm_up(server: Server, ctx: Context, seconds: int) -> str | None:
    """A keep-alive wrk run that is not recorded; returns a warning if a worker got nothing."""
    if seconds <= 0:
        return None
    result = run_wrk(ctx, server.port, seconds, MODES[0])
    if len(result.shares) < WORKERS:
        return f"{server.config.label}: only worker(s) {sorted(result.shares)} answered during warm-up"
    return None


def time_wait_count() -> int:
    match = re.search(r"\btw (\d+)", Path("/proc/net/sockstat").read_text())
    return int(match.group(1)) if match else 0


def wait_for_time_wait_room() -> None:
    """Before a new-connection run: waits (at most 60 s) while TIME_WAIT is over 3/4 full."""
    try:
        limit = int(Path("/proc/sys/net/ipv4/tcp_max_tw_buckets").read_text())
    except (FileNotFoundError, ValueError):
        return
    if time_wait_count() <= limit * 3 // 4:
        return
    log(f"  TIME_WAIT holds {time_wait_count()} sockets (limit {limit}): waiting for it to drain")
    deadline = time.monotonic() + 60
    while time_wait_count() > limit // 2 and time.monotonic() < deadline:
        time.sleep(1)


def affinity_warning(server: Server, ctx: Context) -> str | None:
    if not ctx.pin:
        return None
    off = {stat.pid: cpus_allowed(stat.pid) for stat in server.tree()}
    off = {pid: cpus for pid, cpus in off.items() if cpus != SERVER_CORE}
    if off:
        return f"{server.config.label}: processes not pinned to core {SERVER_CORE}: {off}"
    return None


# ---------------------------------------------------------------------------
# The rounds


@dataclasses.dataclass
class Results:
    """Measurements by (row key, mode key), one slot per round (None: not measured)."""

    runs: int
    data: dict[tuple[str, str], list[Measurement | None]] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # row key -> reason
    failures: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # row key -> errors
    notes: list[str] = dataclasses.field(default_factory=list)

    def record(self, key: str, mode: Mode, round_index: int, measurement: Measurement) -> None:
        slots = self.data.setdefault((key, mode.key), [None] * self.runs)
        slots[round_index] = measurement

    def series(self, key: str, mode: Mode) -> list[Measurement | None]:
        return self.data.get((key, mode.key), [None] * self.runs)

    def note(self, text: str | None) -> None:
        if text and text not in self.notes:
            self.notes.append(text)
            log("  note: " + text)


def run_rounds(args: argparse.Namespace, ctx: Context, results: Results) -> None:
    """Rounds A B C … A B C …: every row once per round, both modes each time."""
    # The very first run on an idle machine measures high (clock ramp-up, cold
    # caches): the first row of all gets a longer warm-up.
    warmup = max(args.warmup, FIRST_WARMUP_S)
    for round_index in range(args.runs):
        for config in args.configs:
            if config.key in results.unavailable:
                continue
            log(f"[round {round_index + 1}/{args.runs}] {config.label}")
            try:
                run_config(config, args, ctx, results, round_index, warmup)
                warmup = args.warmup
            except Unavailable as why:
                results.unavailable[config.key] = str(why)
                log(f"  n/a ({why})")
            except (StartFailed, subprocess.TimeoutExpired, OSError) as err:
                results.failures.setdefault(config.key, []).append(str(err))
                results.note(f"{config.label} failed in round {round_index + 1}: {first_line(str(err))}")
                log(f"  FAILED: {err}")


def run_config(
    config: Config, args: argparse.Namespace, ctx: Context, results: Results, round_index: int, warmup: int
) -> None:
    """Starts one row, warms it up, measures both modes, stops it."""
    with running(config, ctx) as server:
        results.note(affinity_warning(server, ctx))
        results.note(warm_up(server, ctx, warmup))
        for mode in MODES:
            measurement = measure_undisturbed(server, ctx, args, mode)
            results.record(config.key, mode, round_index, measurement)


def measure_undisturbed(server: Server, ctx: Context, args: argparse.Namespace, mode: Mode) -> Measurement:
    """Measures one mode; a run disturbed by other processes is redone (--retries), the calmest kept."""
    seconds = close_duration(args) if mode.new_connection_per_request else args.duration
    best: Measurement | None = None
    for attempt in range(1 + args.retries):
        if attempt > 0:
            log(f"  {mode.key:10} disturbed by other processes: measuring again")
        if mode.new_connection_per_request:
            wait_for_time_wait_room()
        measurement = measure(server, ctx, seconds, mode)
        log(f"  {mode.key:10} {progress_line(measurement)}")
        if mode.new_connection_per_request:
            time.sleep(args.pause)
        if best is None or measurement.others_percent < best.others_percent:
            best = measurement
        if not best.disturbed:
            break
    assert best is not None
    return best


def progress_line(m: Measurement) -> str:
    primary = "" if m.primary_us is None else f", primary {m.primary_us_per_connection:.1f} µs/conn"
    return (
        f"{m.wrk.rps:,.0f} req/s, CPU {m.cpu_us_per_request:.1f} µs/req{primary}, "
        f"p99 {m.wrk.p99_ms:.2f} ms, shares {format_shares([m])}, "
        f"errors {m.wrk.socket_errors}/{m.wrk.non2xx}, others {m.others_percent:.0f}%"
    )


# ---------------------------------------------------------------------------
# Report


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None, or None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def format_shares(measurements: list[Measurement]) -> str:
    """Median share of each worker id, in percent, in id order: "51/49"."""
    ids = sorted({i for m in measurements for i in m.wrk.shares}, key=lambda i: (len(i), i))
    shares = []
    for worker_id in ids:
        per_run = [
            100.0 * m.wrk.shares.get(worker_id, 0) / max(sum(m.wrk.shares.values()), 1) for m in measurements
        ]
        shares.append(statistics.median(per_run))
    shares += [0.0] * (WORKERS - len(shares))
    return "/".join(f"{share:.0f}" for share in shares)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def row_status(key: str, results: Results) -> str | None:
    """Why a row has no numbers, or None if it has some."""
    if key in results.unavailable:
        return f"n/a ({results.unavailable[key]})"
    if not any(m is not None for mode in MODES for m in results.series(key, mode)):
        return "failed (see Notes)" if key in results.failures else "not run"
    return None


# Columns of the per-mode tables: (header, cell from the measurements of all rounds).
COLUMNS: tuple[tuple[str, Callable[[list[Measurement]], str]], ...] = (
    ("req/s", lambda ms: fmt(median(m.wrk.rps for m in ms), 0)),
    ("p50 ms", lambda ms: fmt(median(m.wrk.p50_ms for m in ms), 2)),
    ("p99 ms", lambda ms: fmt(median(m.wrk.p99_ms for m in ms), 2)),
    (
        "errors socket / non-2xx",
        lambda ms: (
            fmt(median(m.wrk.socket_errors for m in ms), 0) + " / " + fmt(median(m.wrk.non2xx for m in ms), 0)
        ),
    ),
    ("share by worker %", format_shares),
    ("**server CPU µs/req**", lambda ms: f"**{fmt(median(m.cpu_us_per_request for m in ms))}**"),
    ("primary CPU µs/conn", lambda ms: fmt(median(m.primary_us_per_connection for m in ms))),
    ("primary % of server CPU", lambda ms: fmt(median(m.primary_percent for m in ms), 0)),
    ("other processes' CPU % (max)", lambda ms: fmt(max(m.others_percent for m in ms), 0)),
)


def mode_table(mode: Mode, configs: list[Config], results: Results) -> str:
    lines = [
        "| configuration | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for config in configs:
        done = [m for m in results.series(config.key, mode) if m is not None]
        status = row_status(config.key, results)
        if status is not None or not done:
            cells = [status or "failed (see Notes)"] + ["–"] * (len(COLUMNS) - 1)
        else:
            cells = [cell(done) for _, cell in COLUMNS]
        lines.append(f"| {config.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(
    results: Results, mode: Mode, top: str, bottom: str, value: Callable[[Measurement], float]
) -> float | None:
    """Median over rounds of value(top) ÷ value(bottom), both from the same round."""
    ratios = []
    for a, b in zip(results.series(top, mode), results.series(bottom, mode), strict=True):
        if a is not None and b is not None and value(b):
            ratios.append(value(a) / value(b))
    return median(ratios)


def ratio_table(configs: list[Config], results: Results) -> str:
    present = {config.key for config in configs}
    pairs = [(f"{c.label} ÷ bare", c.key, "bare") for c in configs if c.key != "bare" and "bare" in present]
    pairs += [pair for pair in COMPARISONS if pair[1] in present and pair[2] in present]
    values: tuple[tuple[str, Callable[[Measurement], float]], ...] = (
        ("req/s", lambda m: m.wrk.rps),
        ("CPU/req", lambda m: m.cpu_us_per_request),
    )
    head = ["comparison"] + [f"{mode.key} {name}" for mode in MODES for name, _ in values]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for label, top, bottom in pairs:
        cells = [label]
        for mode in MODES:
            for _, value in values:
                quotient = ratio(results, mode, top, bottom, value)
                cells.append("–" if quotient is None else f"{quotient:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(args: argparse.Namespace, ctx: Context, versions: dict[str, str], load: float) -> str:
    command = shlex.join(["python3", "bench/run.py", *args.argv])
    lines = ["# corral benchmark results", ""]
    if args.quick:
        lines += [
            "> **QUICK RUN** (`--quick`): a check that the harness works, not results to quote.",
            "",
        ]
    pin = (
        f"wrk on core {CLIENT_CORE}, every server process on core {SERVER_CORE} (taskset)"
        if ctx.pin
        else "none (--no-pin)"
    )
    lines += [
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: nproc {os.cpu_count()}, kernel {os.uname().release}, {cpu_model()}",
        f"* Command: `{command}` (from the repository root)",
        f"* corral: `{ctx.corral}`; repository at {git_revision()}",
        "* Tools: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"* Load: {WORKERS} workers; `wrk -t1 -c{CONNECTIONS} --latency`, keep-alive {args.duration} s, "
        f"new connection per request {close_duration(args)} s; warm-up {args.warmup} s; "
        f"{args.runs} run(s) alternating the rows; medians shown; a run during which other "
        f"processes used over {DISTURBED_PERCENT}% of a core was measured again (up to {args.retries} time(s))",
        f"* Pinning: {pin}; port 127.0.0.1:{ctx.port} for every row",
        f"* Load average when the benchmark started: {load:.2f}",
    ]
    return "\n".join(lines)


def report(
    args: argparse.Namespace, ctx: Context, versions: dict[str, str], load: float, results: Results
) -> str:
    parts = [header(args, ctx, versions, load)]
    for mode in MODES:
        parts.append(f"## {mode.title}\n\n{mode_table(mode, args.configs, results)}")
    parts.append(
        "## Ratios (median of per-run ratios; CPU/req below 1× means cheaper)\n\n"
        + ratio_table(args.configs, results)
    )
    notes = results.notes + disturbance_notes(args.configs, results)
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"* {note}" for note in notes))
    parts.append("How to read this: bench/README.md.")
    return "\n\n".join(parts) + "\n"


def disturbance_notes(configs: list[Config], results: Results) -> list[str]:
    """One note per row and mode whose kept runs were disturbed by other processes."""
    notes = []
    for config in configs:
        for mode in MODES:
            rounds = [
                f"{index + 1} ({m.others_percent:.0f}%)"
                for index, m in enumerate(results.series(config.key, mode))
                if m is not None and m.disturbed
            ]
            if rounds:
                notes.append(
                    f"{config.label}, {mode.key}: other processes used more than {DISTURBED_PERCENT}% "
                    f"of a core in round {', '.join(rounds)}; rerun on an idle machine"
                )
    return notes


def cpu_model() -> str:
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def git_revision() -> str:
    rev = run_text(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip() or "?"
    dirty = run_text(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]).strip()
    return f"`{rev}`" + (" with uncommitted changes" if dirty else "")


# ---------------------------------------------------------------------------
# Small helpers


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def die(text: str) -> NoReturn:
    log(f"run.py: error: {text}")
    sys.exit(2)


def run_text(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "?"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def log_directory(keep: Path | None) -> Iterator[Path]:
    """The directory given (kept), or a temporary one (removed)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as path:
        yield Path(path)


def raise_on_termination() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every server is stopped."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_termination()
    wrk = ensure_wrk()
    pin = not args.no_pin
    if pin:
        ensure_taskset()
    corral = ensure_corral(args.corral)
    results = Results(runs=args.runs)
    for key, reason in tool_problems(args.configs).items():
        results.unavailable[key] = reason
        log(f"{key}: n/a ({reason})")
    versions = tool_versions(wrk)
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: load average {load:.2f}: other work on this machine will make the numbers noisy")
    if args.port is not None and not port_is_free(args.port):
        die(f"--port {args.port}: something listens there already")
    with log_directory(args.logs) as logs:
        ctx = Context(corral=corral, wrk=wrk, pin=pin, port=args.port or choose_port(), logs=logs)
        started = time.monotonic()
        try:
            run_rounds(args, ctx, results)
        except KeyboardInterrupt:
            log("interrupted: every server was stopped; no report written")
            return 130
        log(f"done in {time.monotonic() - started:.0f} s")
    publish(report(args, ctx, versions, load, results), None if args.no_write else args.output)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
