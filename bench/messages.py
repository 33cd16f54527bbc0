#!/usr/bin/env python3
"""Benchmark messages between a primary and one worker: corral, Node, a bare socket pair.

Three implementations, measured in the same run and alternated
(A B C A B C ...) for --runs rounds; tables show medians over the rounds, and
ratios are medians of per-round ratios (see shared/BENCHMARKING.md):

* **corral**: the example `target/release/examples/ipc_bench`, a one-worker
  corral cluster whose worker echoes every message (newline-delimited JSON over
  a Unix stream socket).
* **Node**: `bench/node/ipc.js`, `child_process.fork` with the default 'json'
  serialization, `child.send()` / `process.on('message')`, the child echoing.
* **bare socket pair**: `bench/c/pingpong.c`, `socketpair(AF_UNIX, SOCK_STREAM)`
  and one byte each way, parent on core 0 and child on core 1: the ceiling for
  ping-pong. It has no other number.

corral and Node measure the same four numbers the same way: ping-pong round
trips per second (one `{"seq": n}` message in flight), pipelined round trips
per second (100 in flight), each for --seconds, then the mean round-trip time
of a 1 MiB and of a 16 MiB JSON string payload over 5 round trips. corral and
Node run unpinned: the primary and the worker need both cores, as the C pair,
which pins itself across the two cores.

Run from the repository root:  python3 bench/messages.py [--quick] [--runs N] ...
It builds ipc_bench with cargo if it is missing, compiles pingpong.c with
`cc -O2` into a temporary directory (installing gcc with apt-get if there is
no cc), prints Markdown tables and writes them to bench/MESSAGES.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import errno
import json
import math
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

# Helpers shared with the HTTP benchmark (bench/run.py, next to this file).
from run import (
    cpu_model,
    ensure_release_binary,
    publish,
    first_line,
    git_revision,
    last_line,
    machine_busy_us,
    median,
    node_problem,
    process_table,
    process_tree,
    raise_on_termination,
    run_text,
    tail,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_IPC = BENCH / "node" / "ipc.js"
PINGPONG_C = BENCH / "c" / "pingpong.c"
DEFAULT_IPC_BENCH = REPO / "target" / "release" / "examples" / "ipc_bench"
BUILD_IPC_BENCH = ["cargo", "build", "--release", "-p", "corral-examples", "--example", "ipc_bench"]

LARGE_ROUNDS = 5  # round trips averaged for each large payload
MEASURE_TIMEOUT_S = 120.0  # on top of the two throughput periods
STOP_TIMEOUT_S = 5.0
PAUSE_S = 0.5  # between two measurements
WARMUP_S = 1.0  # of the bare pair, unrecorded, before the first round (clocks ramp up)
DISTURBED_PERCENT = 10  # other processes' CPU (% of a core) that makes a run suspect
PR_SET_CHILD_SUBREAPER = 36

# The four numbers, in table order: (JSON key, column header, higher is better).
METRICS = (
    ("ping_pong_round_trips_per_s", "ping-pong round trips/s", True),
    ("pipelined_round_trips_per_s", "pipelined round trips/s (100 in flight)", True),
    ("rtt_1mib_ms", "1 MiB RTT ms", False),
    ("rtt_16mib_ms", "16 MiB RTT ms", False),
)
PING_PONG, PIPELINED, RTT_1MIB, _RTT_16MIB = (key for key, _, _ in METRICS)


@dataclasses.dataclass(frozen=True)
class Impl:
    """One row of the table: a way to exchange messages between two processes."""

    key: str
    label: str
    metrics: tuple[str, ...]  # the JSON keys it prints


IMPLS = (
    Impl("corral", "corral (`ipc_bench` example)", tuple(key for key, _, _ in METRICS)),
    Impl("node", "Node (`child_process.fork`, json)", tuple(key for key, _, _ in METRICS)),
    Impl("bare", "bare socket pair in C (1 byte, pinned across cores)", (PING_PONG,)),
)
CORRAL, NODE, BARE = IMPLS


@dataclasses.dataclass
class Measurement:
    values: dict[str, float]
    seconds: float  # wall time of the run
    others_us: float  # CPU time of every other process on the machine meanwhile

    @property
    def others_percent(self) -> float:
        """CPU used by other processes during the run, in % of one core."""
        return 100.0 * self.others_us / (self.seconds * 1e6) if self.seconds else 0.0


class MeasureFailed(Exception):
    """A run that failed; the message says why and carries the end of its log."""


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark messages between a primary and one worker: corral's ipc_bench, "
        "Node's child_process IPC and a bare Unix socket pair in C, alternated, medians reported.",
    )
    parser.add_argument("--runs", type=int, help="rounds over the three implementations (default 3)")
    parser.add_argument(
        "--seconds",
        type=float,
        help="seconds of each throughput measurement, ping-pong and pipelined (default 2)",
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s: a check, not results")
    parser.add_argument(
        "--ipc-bench",
        type=Path,
        help=f"corral's ipc_bench binary (default {DEFAULT_IPC_BENCH.relative_to(REPO)}, built first with cargo)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "MESSAGES.md",
        help="where to write the Markdown report (default bench/MESSAGES.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; write no report")
    args = parser.parse_args(argv)
    args.argv = argv
    defaults = {"runs": 1, "seconds": 1.0} if args.quick else {"runs": 3, "seconds": 2.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.runs < 1 or not args.seconds > 0 or not math.isfinite(args.seconds):
        parser.error("--runs must be at least 1 and --seconds above 0")
    return args


# ---------------------------------------------------------------------------
# Prerequisites


def ensure_ipc_bench(path: Path | None) -> Path:
    """corral's ipc_bench: the one given, or the repository's release build (built first with cargo)."""
    return ensure_release_binary(path, "--ipc-bench", DEFAULT_IPC_BENCH, BUILD_IPC_BENCH)


def ensure_cc() -> str | None:
    """A C compiler's path, installing gcc with apt-get if there is none; None if that fails."""
    if shutil.which("cc") is None and shutil.which("apt-get") is not None:
        log("cc is missing: apt-get install -y gcc")
        install = ["apt-get", "install", "-y", "gcc"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run(install, stdout=subprocess.DEVNULL, timeout=600).returncode != 0:
                subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL, timeout=600)
                subprocess.run(install, stdout=subprocess.DEVNULL, timeout=600)
    return shutil.which("cc")


def compile_pingpong(directory: Path) -> Path:
    """Compiles bench/c/pingpong.c with `cc -O2` into the directory; MeasureFailed if it cannot."""
    cc = ensure_cc()
    if cc is None:
        raise MeasureFailed("no C compiler (cc), and `apt-get install -y gcc` did not provide one")
    binary = directory / "pingpong"
    argv = [cc, "-O2", "-o", str(binary), str(PINGPONG_C)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise MeasureFailed(f"`{shlex.join(argv)}` took over 120 s") from None
    if done.returncode != 0 or not binary.exists():
        raise MeasureFailed(f"`{shlex.join(argv)}` failed:\n{tail(done.stderr + done.stdout)}")
    return binary


def tool_versions(ipc_bench: Path) -> dict[str, str]:
    versions = {"corral ipc_bench": f"`{ipc_bench}` (repository at {git_revision()})"}
    if shutil.which("node"):
        versions["node"] = first_line(run_text(["node", "--version"]))
    if shutil.which("cc"):
        versions["cc"] = first_line(run_text(["cc", "--version"]))
    return versions


def check_cores() -> str | None:
    """A warning if this script may not use cores 0 and 1 (the runs need both)."""
    allowed = os.sched_getaffinity(0)
    if not {0, 1} <= allowed:
        return (
            f"this script may only run on core(s) {sorted(allowed)}: corral and Node inherit that, "
            "and the bare pair cannot pin itself to cores 0 and 1; the numbers are not comparable"
        )
    return None


# ---------------------------------------------------------------------------
# Processes: run one measurement, and leave nothing behind


def become_subreaper() -> None:
    """Orphans of our children (a worker whose primary died) are re-parented to us, so we can kill them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants() -> list[int]:
    """Every live or zombie process below this script."""
    me = os.getpid()
    return [stat.pid for stat in process_tree([me], process_table()) if stat.pid != me]


def clean_up(proc: subprocess.Popen[bytes] | None) -> list[int]:
    """SIGKILLs whatever we started that is still there and reaps it; returns the pids it had to kill.

    The leader runs in its own process group, but corral puts its worker in
    another one: so every descendant of this script is found in /proc and
    killed by pid (orphans come back to us: we are a child subreaper). A
    process still running half a second after the leader ended is a leftover.
    """
    killed = []
    if proc is not None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT_S)
    now = time.monotonic()
    grace, deadline = now + 0.5, now + STOP_TIMEOUT_S
    while True:
        reap_orphans()
        left = descendants()
        if not left or time.monotonic() > deadline:
            break
        if time.monotonic() >= grace:
            for pid in left:
                if not is_zombie(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    if pid not in killed:
                        killed.append(pid)
        time.sleep(0.02)
    if left:
        log(f"warning: process(es) {left} would not go away")
    return killed


def is_zombie(pid: int) -> bool:
    """Whether the process has exited and waits to be reaped (or is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return text[text.rindex(")") + 2 :].startswith(("Z", "X"))


def reap_orphans() -> None:
    """Reaps every child that has exited (orphans re-parented to us included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as err:
            if err.errno == errno.EINTR:
                continue
            return
        if pid == 0:
            return


def children_cpu_us() -> float:
    """CPU time of this script and of its reaped descendants, in µs."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime) * 1e6


def measure(impl: Impl, argv: list[str], seconds: float, logs: Path, index: int) -> Measurement:
    """Runs one implementation until it prints its JSON line and exits (with a timeout)."""
    timeout = MEASURE_TIMEOUT_S + 2 * seconds
    log_path = logs / f"{impl.key}-{index}.log"
    out_path = logs / f"{impl.key}-{index}.out"
    busy_before, ours_before = machine_busy_us(), children_cpu_us()
    started = time.monotonic()
    proc = None
    try:
        # Files, not pipes: a leftover process holding a pipe open must not stop us reading.
        with log_path.open("wb") as stderr, out_path.open("wb") as stdout:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                cwd=REPO,
            )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MeasureFailed(
                f"no result after {timeout:.0f} s (killed):\n{tail(log_path.read_text(errors='replace'))}"
            ) from None
    except OSError as err:
        raise MeasureFailed(f"cannot run `{shlex.join(argv)}`: {err}") from None
    finally:
        leftovers = clean_up(proc)
    elapsed = time.monotonic() - started
    others_us = max(0.0, (machine_busy_us() - busy_before) - (children_cpu_us() - ours_before))
    log_text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise MeasureFailed(f"exited with code {proc.returncode}:\n{tail(log_text)}")
    stdout_text = out_path.read_text(errors="replace")
    values = parse_result(impl, stdout_text, log_text)
    if leftovers:
        log(f"  note: killed leftover process(es) {leftovers} after {impl.label} exited")
    return Measurement(values=values, seconds=elapsed, others_us=others_us)


def parse_result(impl: Impl, stdout: str, log_text: str) -> dict[str, float]:
    """The numbers from the last line of stdout, which must be a JSON object with every key."""
    line = last_line(stdout)
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise MeasureFailed(f"its last line on stdout is not JSON: {line!r}\n{tail(log_text)}") from None
    if not isinstance(data, dict):
        raise MeasureFailed(f"printed {line!r}, not a JSON object")
    values = {}
    for key in impl.metrics:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise MeasureFailed(f"no positive number {key!r} in {line!r}")
        values[key] = float(value)
    return values


def commands(args: argparse.Namespace, ipc_bench: Path, pingpong: Path | None) -> dict[str, list[str]]:
    seconds = f"{args.seconds:g}"
    argvs = {
        CORRAL.key: [str(ipc_bench), "--seconds", seconds, "--large-rounds", str(LARGE_ROUNDS)],
        NODE.key: ["node", str(NODE_IPC), "--seconds", seconds, "--large-rounds", str(LARGE_ROUNDS)],
    }
    if pingpong is not None:
        argvs[BARE.key] = [str(pingpong), seconds]
    return argvs


# ---------------------------------------------------------------------------
# The rounds


@dataclasses.dataclass
class Results:
    runs: int
    data: dict[str, list[Measurement | None]] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> reason
    failures: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def series(self, key: str) -> list[Measurement | None]:
        return self.data.setdefault(key, [None] * self.runs)

    def values(self, key: str, metric: str) -> list[float | None]:
        return [None if m is None else m.values.get(metric) for m in self.series(key)]

    def note(self, text: str | None) -> None:
        if text and text not in self.notes:
            self.notes.append(text)
            log("  note: " + text)


def run_rounds(args: argparse.Namespace, argvs: dict[str, list[str]], logs: Path, results: Results) -> None:
    """Rounds A B C … A B C …: every implementation once per round."""
    if BARE.key in argvs:
        log(f"warm-up: {WARMUP_S:g} s of the bare socket pair, not recorded")
        with contextlib.suppress(MeasureFailed):
            measure(BARE, [argvs[BARE.key][0], f"{WARMUP_S:g}"], WARMUP_S, logs, 0)
    for round_index in range(args.runs):
        for impl in IMPLS:
            if impl.key in results.unavailable:
                continue
            log(f"[round {round_index + 1}/{args.runs}] {impl.label}")
            try:
                m = measure(impl, argvs[impl.key], args.seconds, logs, round_index + 1)
            except MeasureFailed as err:
                results.failures.setdefault(impl.key, []).append(str(err))
                results.note(f"{impl.label} failed in round {round_index + 1}: {summary(err)}")
                log(f"  FAILED: {err}")
                continue
            finally:
                time.sleep(PAUSE_S)
            results.series(impl.key)[round_index] = m
            log("  " + progress_line(m))
            if impl is BARE:
                results.note(pin_warning(logs / f"{BARE.key}-{round_index + 1}.log"))


def progress_line(m: Measurement) -> str:
    parts = [
        f"{name.split(' (')[0]} {format_value(key, m.values[key])}"
        for key, name, _ in METRICS
        if key in m.values
    ]
    return ", ".join(parts) + f", others {m.others_percent:.0f}%"


def pin_warning(log_path: Path) -> str | None:
    with contextlib.suppress(FileNotFoundError):
        text = log_path.read_text(errors="replace")
        if "cannot pin" in text:
            return f"bare socket pair: {first_line(text)}"
    return None


# ---------------------------------------------------------------------------
# Report


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if metric.endswith("_per_s") else f"{value:,.2f}"


def row_status(key: str, results: Results) -> str | None:
    if key in results.unavailable:
        return f"n/a ({results.unavailable[key]})"
    if all(m is None for m in results.series(key)):
        return "failed (see Notes)" if key in results.failures else "not run"
    return None


def results_table(results: Results) -> str:
    lines = [
        "| implementation | " + " | ".join(header for _, header, _ in METRICS) + " |",
        "| --- |" + " ---: |" * len(METRICS),
    ]
    for impl in IMPLS:
        status = row_status(impl.key, results)
        cells = []
        for index, (key, _, _) in enumerate(METRICS):
            if key not in impl.metrics:
                cells.append("—")
            elif status is not None:
                cells.append(status if index == 0 else "–")
            else:
                cells.append(format_value(key, median(results.values(impl.key, key))))
        lines.append(f"| {impl.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(results: Results, top: str, bottom: str, metric: str) -> float | None:
    """Median over rounds of top ÷ bottom, both from the same round."""
    quotients = []
    for a, b in zip(results.values(top, metric), results.values(bottom, metric), strict=True):
        if a is not None and b:
            quotients.append(a / b)
    return median(quotients)


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def ratio_table(results: Results) -> str:
    head = ["comparison"] + [header for _, header, _ in METRICS]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(METRICS)]
    node = [format_ratio(ratio(results, CORRAL.key, NODE.key, key)) for key, _, _ in METRICS]
    lines.append("| corral ÷ Node | " + " | ".join(node) + " |")
    bare = [format_ratio(ratio(results, CORRAL.key, BARE.key, PING_PONG))] + ["—"] * (len(METRICS) - 1)
    lines.append("| corral ÷ bare socket pair | " + " | ".join(bare) + " |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Target:
    text: str
    value: Callable[[Results], float | None]
    show: Callable[[float], str]
    met: Callable[[float], bool]


TARGETS = (
    Target(
        "ping-pong ≥ 60,000 round trips/s",
        lambda r: median(r.values(CORRAL.key, PING_PONG)),
        lambda v: f"{v:,.0f} round trips/s",
        lambda v: v >= 60_000,
    ),
    Target(
        "ping-pong ≥ 0.75 × the bare socket pair",
        lambda r: ratio(r, CORRAL.key, BARE.key, PING_PONG),
        lambda v: f"{v:.2f}×",
        lambda v: v >= 0.75,
    ),
    Target(
        "pipelined ≥ 1,000,000 round trips/s",
        lambda r: median(r.values(CORRAL.key, PIPELINED)),
        lambda v: f"{v:,.0f} round trips/s",
        lambda v: v >= 1_000_000,
    ),
    Target(
        "1 MiB round trip ≤ 5 ms",
        lambda r: median(r.values(CORRAL.key, RTT_1MIB)),
        lambda v: f"{v:,.2f} ms",
        lambda v: v <= 5.0,
    ),
)


def target_table(results: Results) -> str:
    lines = ["| target (corral) | measured (median) | |", "| --- | ---: | --- |"]
    for target in TARGETS:
        value = target.value(results)
        if value is None:
            lines.append(f"| {target.text} | n/a | not measured |")
        else:
            verdict = "**met**" if target.met(value) else "**missed**"
            lines.append(f"| {target.text} | {target.show(value)} | {verdict} |")
    return "\n".join(lines)


def per_run_table(results: Results) -> str:
    head = ["run", "implementation"] + [header for _, header, _ in METRICS] + ["other processes' CPU %"]
    lines = ["| " + " | ".join(head) + " |", "| ---: | --- |" + " ---: |" * (len(METRICS) + 1)]
    for round_index in range(results.runs):
        for impl in IMPLS:
            if impl.key in results.unavailable:
                continue
            m = results.series(impl.key)[round_index]
            if m is None:
                cells = ["failed"] + ["–"] * len(METRICS)
            else:
                cells = [
                    format_value(key, m.values[key]) if key in impl.metrics else "—" for key, _, _ in METRICS
                ] + [f"{m.others_percent:.0f}"]
            lines.append(f"| {round_index + 1} | {impl.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(args: argparse.Namespace, versions: dict[str, str], load: float) -> str:
    command = shlex.join(["python3", "bench/messages.py", *args.argv])
    lines = ["# corral messaging benchmark", ""]
    if args.quick:
        lines += ["> **QUICK RUN** (`--quick`): a check that the harness works, not results to quote.", ""]
    lines += [
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: nproc {os.cpu_count()}, kernel {os.uname().release} (`uname -r`), {cpu_model()}",
        f"* Command: `{command}` (from the repository root)",
        f"* Runs: {args.runs}, alternating corral, Node, bare socket pair (A B C A B C …); "
        "tables show medians over the runs, ratios are medians of per-run ratios",
        f"* Each run: ping-pong (1 message in flight) for {args.seconds:g} s, pipelined (100 in flight) "
        f"for {args.seconds:g} s, then {LARGE_ROUNDS} round trips each of a 1 MiB and a 16 MiB JSON "
        "string payload (mean round-trip time); one worker echoing every message",
        "* Pinning: **corral and Node run unpinned** (primary and worker, parent and child, share both "
        "cores as the scheduler likes); the bare socket pair pins itself, parent on core 0 and child "
        "on core 1, so each of its round trips crosses cores",
        "* Versions: " + "; ".join(f"{name} {version}" for name, version in versions.items()),
        f"* Load average when the benchmark started: {load:.2f}",
    ]
    return "\n".join(lines)


def report(args: argparse.Namespace, versions: dict[str, str], load: float, results: Results) -> str:
    parts = [
        header(args, versions, load),
        f"## Results (median of {args.runs} run(s))\n\n{results_table(results)}\n\n"
        "Round trips/s: higher is better. RTT (round-trip time): lower is better. "
        "The bare socket pair only measures ping-pong.",
        "## Ratios (median of per-run ratios)\n\n"
        + ratio_table(results)
        + "\n\nIn the round trips/s columns above 1× means corral is faster; in the RTT columns "
        "**lower is better**, so below 1× means corral is faster.",
        "## The issue's targets (for reference)\n\n" + target_table(results),
        "## Per run\n\n"
        + per_run_table(results)
        + f"\n\nOther processes' CPU: what the rest of the machine used during the run, in % of one "
        f"core; above {DISTURBED_PERCENT}% the run is suspect.",
    ]
    notes = results.notes + disturbance_notes(results)
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"* {note}" for note in notes))
    parts.append("How to read this: bench/README.md.")
    return "\n\n".join(parts) + "\n"


def disturbance_notes(results: Results) -> list[str]:
    notes = []
    for impl in IMPLS:
        rounds = [
            f"{index + 1} ({m.others_percent:.0f}%)"
            for index, m in enumerate(results.series(impl.key))
            if m is not None and m.others_percent > DISTURBED_PERCENT
        ]
        if rounds:
            notes.append(
                f"{impl.label}: other processes used more than {DISTURBED_PERCENT}% of a core in "
                f"run {', '.join(rounds)}; rerun on an idle machine"
            )
    return notes


# ---------------------------------------------------------------------------
# Small helpers


def summary(err: Exception) -> str:
    """One line for Notes: what failed, and the last line of its log."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0].rstrip(":") + (f" (log ends: `{lines[-1]}`)" if len(lines) > 1 else "")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def die(text: str) -> NoReturn:
    log(f"messages.py: error: {text}")
    sys.exit(2)


@contextlib.contextmanager
def work_directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="corral-messages-") as path:
        yield Path(path)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_termination()
    become_subreaper()
    ipc_bench = ensure_ipc_bench(args.ipc_bench)
    results = Results(runs=args.runs)
    node = node_problem()
    if node is not None:
        results.unavailable[NODE.key] = node
        log(f"node: n/a ({node})")
    results.note(check_cores())
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: load average {load:.2f}: other work on this machine will make the numbers noisy")
    with work_directory() as work:
        pingpong = None
        try:
            pingpong = compile_pingpong(work)
        except MeasureFailed as why:
            results.unavailable[BARE.key] = first_line(str(why))
            log(f"bare socket pair: n/a ({why})")
        versions = tool_versions(ipc_bench)
        started = time.monotonic()
        try:
            run_rounds(args, commands(args, ipc_bench, pingpong), work, results)
        except KeyboardInterrupt:
            log("interrupted: every process was stopped; no report written")
            return 130
        finally:
            clean_up(None)
        log(f"done in {time.monotonic() - started:.0f} s")
    publish(report(args, versions, load, results), None if args.no_write else args.output)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
