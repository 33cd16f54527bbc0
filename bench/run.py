#!/usr/bin/env python3
"""Benchmark corral against a bare baseline, Node's cluster module and pm2, with wrk.

Every row runs 2 workers behind one port on 127.0.0.1 and takes the same load
from wrk (1 thread, 50 connections), keep-alive and with a new connection per
request. The headline is server CPU per request (utime + stime of the primary
and all workers, from /proc): on 2 cores req/s mostly measures wrk. wrk runs on
core 0 and the server on core 1; rows alternate A B C … for --runs rounds,
each started fresh and warmed up; medians, and medians of per-round ratios.
The same unmodified Node cluster program (bench/node/tutorial_cluster.js) runs
under Node's own primary, pm2 and corral in the same rounds.

Run from the repository root:  python3 bench/run.py [--quick] [--only ROWS] …
It builds corral, installs wrk and pm2 if missing, and writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import harness as h

WRK_SCRIPT = h.BENCH / "wrk" / "shares.lua"
CONNECTIONS = 50
CLOSE_RUN_LIMIT_S = 5  # new-connection runs: longer ones fill TIME_WAIT
FIRST_WARMUP_S = 3  # warm-up of the first row measured: the first run on an idle machine measures high

# The hand-off fallback, as where the kernel program cannot load.
HAND_OFF = ("--kernel-steering", "off")

CONFIGS = (
    h.Config("bare", "bare baseline: 2 × corral demo-worker, SO_REUSEPORT", "bare"),
    h.Config("corral-shared", "corral demo, shared", "corral", "shared"),
    h.Config("corral-reuseport", "corral demo, reuseport", "corral", "reuseport"),
    h.Config("corral-round-robin", "corral demo, round-robin (kernel steering)", "corral", "round-robin"),
    h.Config(
        "corral-least-connections", "corral demo, least-connections (kernel steering)", "corral", "least-connections"
    ),
    h.Config(
        "corral-least-connections-reports",
        "corral demo, least-connections (kernel steering, counted from worker reports)",
        "corral",
        "least-connections",
        wrapper=h.without_cgroup2(),
    ),
    h.Config("corral-sticky", "corral demo, sticky (kernel steering)", "corral", "sticky"),
    h.Config(
        "corral-round-robin-hand-off",
        "corral demo, round-robin (hand-off)",
        "corral",
        "round-robin",
        corral_args=HAND_OFF,
    ),
    h.Config(
        "corral-least-connections-hand-off",
        "corral demo, least-connections (hand-off)",
        "corral",
        "least-connections",
        corral_args=HAND_OFF,
    ),
    h.Config("corral-sticky-hand-off", "corral demo, sticky (hand-off)", "corral", "sticky", corral_args=HAND_OFF),
    h.Config("node-rr", "Node cluster, SCHED_RR", "node", "rr", h.NODE_CLUSTER),
    h.Config("node-none", "Node cluster, SCHED_NONE", "node", "none", h.NODE_CLUSTER),
    h.Config("pm2", "pm2 cluster mode (-i 2)", "pm2", app=h.NODE_APP),
    h.Config("corral-node-shared", "corral run node, shared", "corral", "shared", h.NODE_APP),
    h.Config("corral-node-reuseport", "corral run node, reuseport", "corral", "reuseport", h.NODE_APP),
    *(h.tutorial("node", policy) for policy in ("rr", "none")),
    h.tutorial("pm2"),
    *(h.tutorial("corral", policy) for policy in ("reuseport", "round-robin")),
    *(h.node_agent(setting) for setting in ("on", "off")),
)


@dataclasses.dataclass(frozen=True)
class Mode:
    """A load mode of wrk."""

    key: str
    title: str
    wrk_args: tuple[str, ...]
    new_connection_per_request: bool
    slow_every: int = 0  # every Nth request of each wrk connection is `/sleep/50` (0: none)

    def applies_to(self, config: h.Config) -> bool:
        """Slow requests need the demo worker's `/sleep/MS`."""
        return self.slow_every == 0 or (config.kind in ("bare", "corral") and config.app is None)


KEEP_ALIVE = Mode("keep-alive", "Keep-alive (50 connections reused)", (), False)
CLOSE = Mode("close", "New connection per request (Connection: close)", ("-H", "Connection: close"), True)
MIXED = Mode(
    "mixed",
    "Mixed latency: new connection per request, 1 request in 10 is `/sleep/50` (demo worker rows only)",
    ("-H", "Connection: close"),
    True,
    slow_every=10,
)
MODES = (KEEP_ALIVE, CLOSE, MIXED)

# Ratios: (label, numerator key, denominator key); plus every row ÷ "bare".
COMPARISONS = (
    ("corral round-robin ÷ corral reuseport", "corral-round-robin", "corral-reuseport"),
    ("corral least-connections ÷ corral reuseport", "corral-least-connections", "corral-reuseport"),
    (
        "corral least-connections (counted from worker reports) ÷ corral reuseport",
        "corral-least-connections-reports",
        "corral-reuseport",
    ),
    ("corral round-robin (hand-off) ÷ corral reuseport", "corral-round-robin-hand-off", "corral-reuseport"),
    (
        "corral least-connections (hand-off) ÷ corral reuseport",
        "corral-least-connections-hand-off",
        "corral-reuseport",
    ),
    ("corral sticky ÷ corral reuseport", "corral-sticky", "corral-reuseport"),
    (
        f"{h.TUTORIAL}: corral round-robin ÷ corral reuseport",
        "tutorial-corral-round-robin",
        "tutorial-corral-reuseport",
    ),
    ("corral sticky (hand-off) ÷ corral reuseport", "corral-sticky-hand-off", "corral-reuseport"),
    ("corral least-connections ÷ corral round-robin (kernel)", "corral-least-connections", "corral-round-robin"),
    ("corral run node, reuseport ÷ Node cluster RR", "corral-node-reuseport", "node-rr"),
    ("corral run node, shared ÷ Node cluster RR", "corral-node-shared", "node-rr"),
    ("corral run node, reuseport ÷ pm2", "corral-node-reuseport", "pm2"),
    ("corral's Node agent: on ÷ off", "corral-node-agent-on", "corral-node-agent-off"),
    *(
        (f"{h.TUTORIAL}: corral {policy} ÷ {other}", f"tutorial-corral-{policy}", key)
        for policy in ("reuseport", "round-robin")
        for other, key in (("Node's primary RR", "tutorial-node-rr"), ("pm2", "tutorial-pm2"))
    ),
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
class Measurement(h.Timed):
    """One wrk run against one row, and the CPU time spent meanwhile (others: all but wrk and the server)."""

    wrk: WrkResult
    connections: int  # connections wrk opened: 50, or one per request
    server_us: float  # CPU time of the primary and all workers
    primary_us: float | None  # CPU time of the primary alone (None: there is none)

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


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = h.parser(
        "Benchmark corral's balancing policies against a bare baseline, Node's cluster module and pm2 "
        "(2 workers, wrk -t1 -c50).",
        "RESULTS.md",
        "1 run of 2 s per mode",
        epilog="Rows (for --only): " + ", ".join(row.key for row in (*CONFIGS, *SHARE_ROWS)),
    )
    h.add_server_options(p)
    p.add_argument("--runs", type=int, help="rounds over all rows (default 3)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 5; new-connection runs at most 5)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up per row (default 1)")
    p.add_argument("--pause", type=float, help="seconds of pause after a new-connection run (default 2)")
    p.add_argument("--only", help="comma-separated row keys to run (see below)")
    p.add_argument("--no-pin", action="store_true", help="do not pin wrk and servers to separate cores")
    p.add_argument("--retries", type=int, default=1, help="measure a disturbed run again this many times (default 1)")
    p.add_argument("--share-samples", type=int, help="wrk -c4 samples per round of the shares-c4 rows (default 10)")
    args = p.parse_args(argv)
    args.argv = argv
    h.defaults(
        args,
        {"runs": 1, "duration": 2, "warmup": 1, "pause": 1.0, "share_samples": 3},
        {"runs": 3, "duration": 5, "warmup": 1, "pause": 2.0, "share_samples": 10},
    )
    if min(args.runs, args.duration, args.share_samples) < 1 or min(args.warmup, args.pause, args.retries) < 0:
        p.error("--runs, --duration and --share-samples must be at least 1; --warmup, --pause, --retries not negative")
    rows = h.select(p, args.only, (*CONFIGS, *SHARE_ROWS), "row")
    args.configs = [row for row in rows if isinstance(row, h.Config)]
    args.share_rows = [row for row in rows if isinstance(row, ShareRow)]
    args.close_seconds = min(args.duration, CLOSE_RUN_LIMIT_S)
    return args


# ---------------------------------------------------------------------------
# Load and measurement


def wrk_argv(server: h.Server, wrk: str, seconds: int, mode: Mode, connections: int = CONNECTIONS) -> list[str]:
    argv = [*server.ctx.pinned(h.CLIENT_CORE), wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    return argv + ["-s", str(WRK_SCRIPT), *mode.wrk_args, f"http://127.0.0.1:{server.port}/"]


def run_wrk(server: h.Server, wrk: str, seconds: int, mode: Mode) -> WrkResult:
    argv = wrk_argv(server, wrk, seconds, mode)
    env = {**os.environ, "BENCH_SLOW_EVERY": str(mode.slow_every)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    if done.returncode != 0:
        raise h.Failed(f"wrk failed (code {done.returncode}):\n{h.tail(done.stdout + done.stderr)}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    """Reads wrk's report and the lines printed by shares.lua's done()."""

    def number(pattern: str) -> str:
        match = re.search(pattern, text, re.M)
        if match is None:
            raise h.Failed(f"unexpected wrk output (no match for {pattern!r}):\n{h.tail(text)}")
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
        raise h.Failed(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[match.group(2)]


def measure(server: h.Server, wrk: str, seconds: int, mode: Mode) -> Measurement:
    """One wrk run, with the CPU times of the server, the machine and wrk read before and after it."""
    before, busy_before, wrk_before = server.cpu_snapshot(), h.machine_busy_us(), h.children_cpu_us()
    started = time.monotonic()
    result = run_wrk(server, wrk, seconds, mode)
    elapsed = time.monotonic() - started
    after, busy_after, wrk_after = server.cpu_snapshot(), h.machine_busy_us(), h.children_cpu_us()
    if before.keys() != after.keys():
        raise h.Failed(
            f"the server's processes changed during the run (one exited or was replaced):\n{server.output()}"
        )
    server_us = h.ticks_us(sum(after[key] - before[key] for key in before))
    primary = [key for key in before if key[0] == server.primary]
    return Measurement(
        wrk=result,
        connections=result.requests if mode.new_connection_per_request else CONNECTIONS,
        seconds=elapsed,
        server_us=server_us,
        primary_us=h.ticks_us(sum(after[key] - before[key] for key in primary)) if primary else None,
        others_us=max(0.0, (busy_after - busy_before) - server_us - (wrk_after - wrk_before)),
    )


def measure_undisturbed(server: h.Server, args: argparse.Namespace, mode: Mode) -> Measurement:
    """Measures one mode; a run disturbed by other processes is redone (--retries), the calmest kept."""
    seconds = args.close_seconds if mode.new_connection_per_request else args.duration
    best: Measurement | None = None
    for attempt in range(1 + args.retries):
        if attempt > 0:
            h.log(f"  {mode.key:10} disturbed by other processes: measuring again")
        if mode.new_connection_per_request:
            h.wait_for_time_wait_room()
        measurement = measure(server, args.wrk, seconds, mode)
        h.log(f"  {mode.key:10} {progress_line(measurement)}")
        if mode.new_connection_per_request:
            time.sleep(args.pause)
        if best is None or measurement.others_percent < best.others_percent:
            best = measurement
        if not best.disturbed:
            break
    assert best is not None
    return best


def warm_up(server: h.Server, args: argparse.Namespace, seconds: int) -> str | None:
    """A keep-alive wrk run that is not recorded; returns a warning if a worker got nothing."""
    result = run_wrk(server, args.wrk, seconds, KEEP_ALIVE)
    if len(result.shares) < h.WORKERS:
        return f"{server.config.label}: only worker(s) {sorted(result.shares)} answered during warm-up"
    return None


def affinity_warning(server: h.Server) -> str | None:
    if not server.ctx.pin:
        return None
    off = {stat.pid: h.cpus_allowed(stat.pid) for stat in server.tree()}
    off = {pid: cpus for pid, cpus in off.items() if cpus != h.SERVER_CORE}
    return f"{server.config.label}: processes not pinned to core {h.SERVER_CORE}: {off}" if off else None


def progress_line(m: Measurement) -> str:
    primary = "" if m.primary_us is None else f", primary {m.primary_us_per_connection:.1f} µs/conn"
    return (
        f"{m.wrk.rps:,.0f} req/s, CPU {m.cpu_us_per_request:.1f} µs/req{primary}, "
        f"p99 {m.wrk.p99_ms:.2f} ms, shares {format_shares([m])}, "
        f"errors {m.wrk.socket_errors}/{m.wrk.non2xx}, others {m.others_percent:.0f}%"
    )


def run_rounds(args: argparse.Namespace, ctx: h.Context, results: h.Results) -> None:
    """Rounds A B C … A B C …: every row once per round, started fresh, warmed up, both modes."""
    warmup = [max(args.warmup, FIRST_WARMUP_S)]

    def measure_row(config: h.Config, _round: int) -> dict[str, Measurement]:
        with h.running(h.Server(config, ctx)) as server:
            results.note(affinity_warning(server))
            if warmup[0] > 0:
                results.note(warm_up(server, args, warmup[0]))
            warmup[0] = args.warmup
            return {mode.key: measure_undisturbed(server, args, mode) for mode in MODES if mode.applies_to(config)}

    h.alternate(args.runs, args.configs, results, measure_row)


# ---------------------------------------------------------------------------
# Share rows: how connections spread over the workers, a count rather than a speed

FEW_CONNECTIONS = 4  # keep-alive with few connections: wrk -c4
FEW_SECONDS = 1  # one sample: wrk -c4 for this long, its connections counted halfway
FRESH_CONNECTIONS = 100  # one sample: this many new connections, one after another


@dataclasses.dataclass(frozen=True)
class ShareRow:
    """A row of the shares table: a cluster and the load whose spread is counted."""

    key: str
    label: str
    config: h.Config
    load: str  # "few": keep-alive wrk -c4 samples; "fresh": FRESH_CONNECTIONS new connections in a row
    module: str | None = None  # a Python module the worker needs


def share_row(
    key: str,
    label: str,
    load: str,
    policy: str,
    command: tuple[str, ...] = (),
    app: Path | None = None,
    module: str | None = None,
) -> ShareRow:
    """A corral cluster: its demo worker, `command`, or the Node cluster program `app` (which listens itself)."""
    config = h.Config(key, label, "corral", policy, app, cluster_program=app is not None, command=command)
    return ShareRow(key, label, config, load, module)


UVICORN = (sys.executable, "-m", "uvicorn", "--fd", "3", "--app-dir", str(h.BENCH), "--log-level", "warning")
SHARE_ROWS = (
    share_row("shares-c4-reuseport", "corral demo, reuseport (the kernel's hash)", "few", "reuseport"),
    share_row("shares-c4-round-robin", "corral demo, round-robin (kernel steering)", "few", "round-robin"),
    share_row("shares-fresh-demo", "corral demo worker, round-robin (kernel steering)", "fresh", "round-robin"),
    share_row(
        "shares-fresh-python-fd3",
        "Python `socket(fileno=3)` server (bench/fd3_server.py), round-robin (kernel steering)",
        "fresh",
        "round-robin",
        command=(sys.executable, str(h.BENCH / "fd3_server.py")),
    ),
    share_row(
        "shares-fresh-uvicorn",
        "uvicorn `--fd 3` (bench/asgi_app.py), round-robin (kernel steering)",
        "fresh",
        "round-robin",
        command=(*UVICORN, "asgi_app:app"),
        module="uvicorn",
    ),
    share_row(
        "shares-fresh-node",
        f"{h.TUTORIAL}, round-robin (kernel steering)",
        "fresh",
        "round-robin",
        app=h.NODE_TUTORIAL,
    ),
)


@dataclasses.dataclass
class ShareSample:
    """One sample: requests answered by worker id, and (few) the kernel's split of wrk's connections."""

    requests: dict[str, int]
    connections: list[int] | None = None  # established connections per worker process, most first

    @property
    def busiest_percent(self) -> float:
        return 100.0 * max(self.requests.values(), default=0) / max(sum(self.requests.values()), 1)

    @property
    def split(self) -> str:
        """"2/2" (connections, few) or "50/50" (requests, fresh), the busiest worker first."""
        counts = self.connections if self.connections is not None else sorted(self.requests.values(), reverse=True)
        counts = [*counts, *[0] * (h.WORKERS - len(counts))]
        return "/".join(str(count) for count in counts)

    @property
    def even(self) -> bool:
        return len(set(self.split.split("/"))) == 1


def share_problems(rows: list[ShareRow]) -> dict[str, str]:
    """For each share row that cannot run because a Python module or node is missing, the reason."""
    problems = {}
    for row in rows:
        if row.module is not None and importlib.util.find_spec(row.module) is None:
            problems[row.key] = f"{row.module} is not installed: pip install {row.module}"
        elif row.config.app is not None and (why := h.node_problem()) is not None:
            problems[row.key] = why
    for key, reason in problems.items():
        h.log(f"{key}: n/a ({reason})")
    return problems


def connections_by_process(port: int) -> list[int]:
    """Established connections on the server's side of `port`, counted per process, most first."""
    listing = h.run_text(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"])
    pids = [match.group(1) for line in listing.splitlines() if (match := re.search(r"pid=(\d+)", line))]
    return sorted(collections.Counter(pids).values(), reverse=True)


def sample_few(server: h.Server, wrk: str) -> ShareSample:
    """wrk -c4 keep-alive for FEW_SECONDS; the connections are counted by worker halfway through."""
    argv = wrk_argv(server, wrk, FEW_SECONDS, KEEP_ALIVE, FEW_CONNECTIONS)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(FEW_SECONDS / 2)
        connections = connections_by_process(server.port)
        out, _ = proc.communicate(timeout=FEW_SECONDS + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise h.Failed(f"wrk failed (code {proc.returncode}):\n{h.tail(out)}")
    return ShareSample(parse_wrk(out).shares, connections)


def sample_fresh(server: h.Server) -> ShareSample:
    """FRESH_CONNECTIONS requests one after another, each on a new connection, tallied by worker."""
    requests: collections.Counter[str] = collections.Counter()
    for _ in range(FRESH_CONNECTIONS):
        body = h.http_get(server.port)
        match = None if body is None else re.search(r"worker (\d+)", body)
        if match is None:
            raise h.Failed(f"no answer naming a worker (got {body!r}):\n{server.output()}")
        requests[match.group(1)] += 1
    return ShareSample(dict(requests))


def wait_all_ready(server: h.Server) -> None:
    """Until every worker is ready, the kernel steers among fewer: wait for corral's `worker N ready` lines."""
    for worker_id in range(1, h.WORKERS + 1):
        server.wait_line(rf"\bworker {worker_id} ready \(pid \d+\)")


def run_share_rounds(args: argparse.Namespace, ctx: h.Context, results: h.Results) -> None:
    """Every share row once per round, started fresh: `--share-samples` wrk -c4 samples, or one fresh sample."""

    def measure_row(row: ShareRow, _round: int) -> list[ShareSample]:
        with h.running(h.Server(row.config, ctx)) as server:
            wait_all_ready(server)
            if row.load == "few":
                return [sample_few(server, args.wrk) for _ in range(args.share_samples)]
            return [sample_fresh(server)]

    h.alternate(args.runs, args.share_rows, results, measure_row)


def share_samples(results: h.Results, key: str) -> list[ShareSample]:
    return [sample for samples in results.series(key) if samples is not None for sample in samples]


def share_section(rows: list[ShareRow], results: h.Results) -> str | None:
    """The shares table and its goals, or None when no share row ran."""
    if not rows:
        return None
    table_rows, goals = [], []
    for row in rows:
        samples = share_samples(results, row.key)
        status = results.status(row.key)
        load = "keep-alive, wrk -c4" if row.load == "few" else f"{FRESH_CONNECTIONS} new connections"
        if status is not None or not samples:
            table_rows.append([row.label, load, status or "failed (see Notes)", "–", "–", "–"])
            continue
        busiest = [sample.busiest_percent for sample in samples]
        splits = collections.Counter(sample.split for sample in samples)
        even = sum(sample.even for sample in samples)
        table_rows.append(
            [
                row.label,
                load,
                str(len(samples)),
                ", ".join(f"{split} ×{count}" for split, count in splits.most_common()),
                f"{min(busiest):.0f} / {statistics.median(busiest):.0f} / {max(busiest):.0f}",
                f"{even} of {len(samples)}",
            ]
        )
        if row.config.policy == "round-robin":
            what = "2/2 connections" if row.load == "few" else "exactly 50/50"
            goals.append((f"{row.label}: {what} in every sample", even / len(samples), "{:.0%}", lambda v: v == 1))
    head = [
        "cluster",
        "load",
        "samples",
        "split by worker (samples)",
        "busiest worker's share of requests %, min / median / max",
        "even samples",
    ]
    return (
        "## Shares: how connections spread over the 2 workers (issue 22)\n\n"
        f"A count, not a speed. keep-alive, wrk -c4: each sample is `wrk -t1 -c{FEW_CONNECTIONS}` for "
        f"{FEW_SECONDS} s on a running cluster, and its split is the kernel's: the established connections of "
        f"each worker process (`ss`), counted halfway through. {FRESH_CONNECTIONS} new connections: each sample is "
        f"{FRESH_CONNECTIONS} requests one after another, each on a new connection, and its split is the "
        "requests each worker answered. Busiest first.\n\n"
        + h.table(head, table_rows, text=["cluster", "load", "split by worker (samples)"])
        + "\n\n"
        + h.goal_table("goal", goals)
    )


# ---------------------------------------------------------------------------
# Report


def series(results: h.Results, key: str, mode: Mode) -> list[Measurement | None]:
    return [None if r is None else r.get(mode.key) for r in results.series(key)]


def format_shares(measurements: list[Measurement]) -> str:
    """Median share of each worker id, in percent, in id order: "51/49"."""
    ids = sorted({i for m in measurements for i in m.wrk.shares}, key=lambda i: (len(i), i))
    shares = [
        statistics.median(100.0 * m.wrk.shares.get(i, 0) / max(sum(m.wrk.shares.values()), 1) for m in measurements)
        for i in ids
    ]
    shares += [0.0] * (h.WORKERS - len(shares))
    return "/".join(f"{share:.0f}" for share in shares)


# Columns of the per-mode tables: (header, cell from the measurements of all rounds).
COLUMNS: tuple[tuple[str, Callable[[list[Measurement]], str]], ...] = (
    ("req/s", lambda ms: h.fmt(h.median(m.wrk.rps for m in ms), 0)),
    ("p50 ms", lambda ms: h.fmt(h.median(m.wrk.p50_ms for m in ms), 2)),
    ("p99 ms", lambda ms: h.fmt(h.median(m.wrk.p99_ms for m in ms), 2)),
    (
        "errors socket / non-2xx",
        lambda ms: (
            h.fmt(h.median(m.wrk.socket_errors for m in ms), 0) + " / " + h.fmt(h.median(m.wrk.non2xx for m in ms), 0)
        ),
    ),
    ("share by worker %", format_shares),
    ("**server CPU µs/req**", lambda ms: f"**{h.fmt(h.median(m.cpu_us_per_request for m in ms))}**"),
    ("primary CPU µs/conn", lambda ms: h.fmt(h.median(m.primary_us_per_connection for m in ms))),
    ("primary % of server CPU", lambda ms: h.fmt(h.median(m.primary_percent for m in ms), 0)),
    ("other processes' CPU % (max)", lambda ms: h.fmt(max(m.others_percent for m in ms), 0)),
)


def mode_table(mode: Mode, configs: list[h.Config], results: h.Results) -> str:
    rows = []
    for config in (config for config in configs if mode.applies_to(config)):
        done = [m for m in series(results, config.key, mode) if m is not None]
        status = results.status(config.key)
        if status is not None or not done:
            cells = [status or "failed (see Notes)"] + ["–"] * (len(COLUMNS) - 1)
        else:
            cells = [cell(done) for _, cell in COLUMNS]
        rows.append([config.label, *cells])
    return h.table(["configuration", *(name for name, _ in COLUMNS)], rows)


def ratio(
    results: h.Results, mode: Mode, top: str, bottom: str, value: Callable[[Measurement], float | None]
) -> float | None:
    """Median over rounds of value(top) ÷ value(bottom), both from the same round."""

    def values(key: str) -> list[float | None]:
        return [None if m is None else value(m) for m in series(results, key, mode)]

    return h.median_ratio(values(top), values(bottom))


def ratio_table(configs: list[h.Config], results: h.Results) -> str:
    present = {config.key for config in configs}
    pairs = [(f"{c.label} ÷ bare", c.key, "bare") for c in configs if c.key != "bare" and "bare" in present]
    pairs += [pair for pair in COMPARISONS if pair[1] in present and pair[2] in present]
    values: tuple[tuple[str, Callable[[Measurement], float]], ...] = (
        ("req/s", lambda m: m.wrk.rps),
        ("CPU/req", lambda m: m.cpu_us_per_request),
    )
    head = ["comparison"] + [f"{mode.key} {name}" for mode in MODES for name, _ in values]
    rows = [
        [label] + [h.fmt(ratio(results, mode, top, bottom, value), 2, "×") for mode in MODES for _, value in values]
        for label, top, bottom in pairs
    ]
    return h.table(head, rows)


def goal_section(title: str, intro: str, goals: list) -> str | None:
    """A report section of goals under `title`, or None when no goal's rows ran."""
    if not goals:
        return None
    return f"## {title}\n\n{intro}\n\n" + h.goal_table("goal", goals)


def node_goals(configs: list[h.Config], results: h.Results) -> str | None:
    """Issue 10's goals for the unmodified Node cluster program, new connection per request."""
    present = {config.key for config in configs}
    goals = []
    for policy in ("reuseport", "round-robin"):
        corral = f"tutorial-corral-{policy}"
        for other, key, speed in (("Node's primary (rr)", "tutorial-node-rr", 2.0), ("pm2", "tutorial-pm2", 2.5)):
            if {corral, key} <= present:
                rps = ratio(results, CLOSE, corral, key, lambda m: m.wrk.rps)
                cpu = ratio(results, CLOSE, corral, key, lambda m: m.cpu_us_per_request)
                goals.append(
                    (f"corral {policy} ÷ {other}: req/s ≥ {speed:g}×", rps, "{:.2f}×", lambda v, s=speed: v >= s)
                )
                goals.append((f"corral {policy} ÷ {other}: server CPU/req ≤ 0.5×", cpu, "{:.2f}×", lambda v: v <= 0.5))
    if {"tutorial-corral-round-robin", "tutorial-node-rr"} <= present:
        keys = ("tutorial-corral-round-robin", "tutorial-node-rr")
        primary = ratio(results, CLOSE, *keys, lambda m: m.primary_us_per_connection)
        goals.append(
            (
                "corral round-robin's primary CPU/conn ÷ Node's primary (rr) ≤ 0.25×",
                primary,
                "{:.2f}×",
                lambda v: v <= 0.25,
            )
        )
    return goal_section(
        f"The {h.TUTORIAL} (`bench/node/tutorial_cluster.js`), unmodified: issue 10's goals",
        "New connection per request; medians of per-round ratios.",
        goals,
    )


def handoff_goals(configs: list[h.Config], results: h.Results) -> str | None:
    """Issue 13's goals for the policies that hand connections out, new connection per request."""
    present = {config.key for config in configs}
    goals = []
    for policy, bound in (("round-robin", 1.08), ("least-connections", 1.10)):
        key = f"corral-{policy}-hand-off"
        if {key, "bare"} <= present:
            cpu = ratio(results, CLOSE, key, "bare", lambda m: m.cpu_us_per_request)
            goals.append((f"{policy} ÷ bare: server CPU/req ≤ {bound:.2f}×", cpu, "{:.2f}×", lambda v, b=bound: v <= b))
    for policy in ("round-robin", "least-connections"):
        key = f"corral-{policy}-hand-off"
        if key in present:
            primary = h.median(m.primary_us_per_connection for m in series(results, key, CLOSE) if m is not None)
            goals.append((f"{policy}: primary CPU/conn ≤ 6 µs", primary, "{:.1f} µs", lambda v: v <= 6.0))
    if {"corral-round-robin-hand-off", "corral-reuseport"} <= present:
        p99 = ratio(results, CLOSE, "corral-round-robin-hand-off", "corral-reuseport", lambda m: m.wrk.p99_ms)
        goals.append(("round-robin ÷ reuseport: p99 latency ≤ 1.2×", p99, "{:.2f}×", lambda v: v <= 1.2))
    return goal_section(
        "Hand-off policies (the fallback, `--kernel-steering off`): issue 13's goals",
        "New connection per request; medians (of per-round ratios for the ratios).",
        goals,
    )


def steering_goals(configs: list[h.Config], results: h.Results) -> str | None:
    """Issue 22's goals for kernel steering: its cost against reuseport, and least-connections on a mixed load."""
    present = {config.key for config in configs}
    goals = []
    for policy in ("round-robin", "least-connections", "sticky"):
        key = f"corral-{policy}"
        if {key, "corral-reuseport"} <= present:
            cpu = ratio(results, CLOSE, key, "corral-reuseport", lambda m: m.cpu_us_per_request)
            goals.append((f"{policy} (kernel) ÷ reuseport: server CPU/req ≤ 1.02×", cpu, "{:.2f}×", lambda v: v <= 1.02))
    if {"corral-least-connections", "corral-round-robin"} <= present:
        for name, value in (("p50", lambda m: m.wrk.p50_ms), ("p99", lambda m: m.wrk.p99_ms)):
            lower = ratio(results, MIXED, "corral-least-connections", "corral-round-robin", value)
            goals.append(
                (f"mixed load: least-connections ÷ round-robin (kernel), {name} < 1×", lower, "{:.2f}×", lambda v: v < 1)
            )
    return goal_section(
        "Kernel steering: issue 22's goals",
        "New connection per request (the mixed mode for latency); medians of per-round ratios.",
        goals,
    )


def agent_goals(configs: list[h.Config], results: h.Results) -> str | None:
    """Issue 21's goal: corral's Node agent (request metrics, keep-alive drain) does not show in CPU per request."""
    present = {config.key for config in configs}
    keys = ("corral-node-agent-on", "corral-node-agent-off")
    if not set(keys) <= present:
        return None
    goals = []
    costs = []
    for mode in (mode for mode in MODES if mode.slow_every == 0):
        cpu = ratio(results, mode, *keys, lambda m: m.cpu_us_per_request)
        goals.append((f"{mode.key}: server CPU/req, agent on ÷ off ≤ 1.02×", cpu, "{:.3f}×", lambda v: v <= 1.02))
        on, off = (h.median(m.cpu_us_per_request for m in series(results, key, mode) if m is not None) for key in keys)
        if on is not None and off is not None:
            costs.append(f"{mode.key} {on:.1f} vs {off:.1f} µs/req ({on - off:+.1f} µs)")
    return (
        "## corral's Node agent: its cost per request (issue 21)\n\n"
        f"The {h.TUTORIAL} under corral (reuseport), `--node-agent on` and `off` in the same rounds; "
        "medians of per-round ratios. Server CPU per request, medians, on vs off: "
        + ("; ".join(costs) or "not measured")
        + ".\n\n"
        + h.goal_table("goal", goals)
    )


def disturbance_notes(configs: list[h.Config], results: h.Results) -> list[str]:
    """One note per row and mode whose kept runs were disturbed by other processes."""
    return [
        note
        for config in configs
        for mode in MODES
        for note in h.disturbance_note(f"{config.label}, {mode.key}", series(results, config.key, mode))
    ]


def make_report(
    args: argparse.Namespace, ctx: h.Context, versions: dict[str, str], load: float, results: h.Results
) -> str:
    pin = (
        f"wrk on core {h.CLIENT_CORE}, every server process on core {h.SERVER_CORE} (taskset)"
        if ctx.pin
        else "none (--no-pin)"
    )
    head = h.header(
        "corral benchmark results",
        args,
        versions,
        [
            f"* corral: `{ctx.corral}`",
            f"* Load: {h.WORKERS} workers; `wrk -t1 -c{CONNECTIONS} --latency`, keep-alive {args.duration} s, "
            f"new connection per request {args.close_seconds} s; warm-up {args.warmup} s; "
            f"{args.runs} run(s) alternating the rows; medians shown; a run during which other "
            f"processes used over {h.DISTURBED_PERCENT}% of a core was measured again (up to {args.retries} time(s))",
            f"* Pinning: {pin}; port 127.0.0.1:{ctx.port} for every row",
            f"* Load average when the benchmark started: {load:.2f}",
        ],
    )
    parts = [head]
    if args.configs:
        parts += [f"## {mode.title}\n\n{mode_table(mode, args.configs, results)}" for mode in MODES]
        parts.append(
            "## Ratios (median of per-run ratios; CPU/req below 1× means cheaper)\n\n"
            + ratio_table(args.configs, results)
        )
    for goals in (
        share_section(args.share_rows, results),
        steering_goals(args.configs, results),
        handoff_goals(args.configs, results),
        node_goals(args.configs, results),
        agent_goals(args.configs, results),
    ):
        if goals:
            parts.append(goals)
    return h.report(parts, results.notes + disturbance_notes(args.configs, results))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.wrk = h.apt_install("wrk", "wrk") or h.die(
        "wrk is required and could not be installed: run `apt-get install wrk`"
    )
    if not args.no_pin:
        h.ensure_taskset()
    corral = h.ensure_corral(args.corral)
    results = h.Results(runs=args.runs)
    results.unavailable.update(h.tool_problems(args.configs))
    results.unavailable.update(share_problems(args.share_rows))
    versions = h.tool_versions(wrk=h.first_line(h.run_text([args.wrk, "-v"])).split(" [")[0].removeprefix("wrk "))
    load = h.warn_if_busy()
    with h.log_directory(args.logs) as logs:
        ctx = h.Context(corral=corral, port=h.choose_port(args.port), logs=logs, pin=not args.no_pin)

        def run_all() -> None:
            run_rounds(args, ctx, results)
            run_share_rounds(args, ctx, results)

        if not h.measure_all(run_all):
            return 130
    h.publish(make_report(args, ctx, versions, load, results), None if args.no_write else args.output)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
