#!/usr/bin/env python3
"""Benchmark messages between a primary and one worker: corral, Node, a bare socket pair.

corral's `ipc_bench` example (a one-worker cluster echoing JSON lines; once with
`serde_json::Value` messages, once `--typed`: structs, parsed straight from the
line's bytes in the worker), Node's
`child_process.fork` IPC (bench/node/ipc.js) and a C socket pair
(bench/c/pingpong.c, the ping-pong ceiling) alternate A B C … for --runs
rounds: ping-pong and pipelined round trips/s, and the round-trip time of 1 MiB
and 16 MiB payloads. corral and Node run unpinned; the C pair pins itself
across the two cores.

Run from the repository root:  python3 bench/messages.py [--quick] [--runs N] …
It builds ipc_bench, compiles pingpong.c (installing gcc if needed), and writes bench/MESSAGES.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness as h

NODE_IPC = h.BENCH / "node" / "ipc.js"
PINGPONG_C = h.BENCH / "c" / "pingpong.c"
DEFAULT_IPC_BENCH = h.REPO / "target" / "release" / "examples" / "ipc_bench"
BUILD_IPC_BENCH = ["cargo", "build", "--release", "-p", "corral-examples", "--example", "ipc_bench"]
LARGE_ROUNDS = 5  # round trips averaged for each large payload
MEASURE_TIMEOUT_S = 120.0  # on top of the two throughput periods
PAUSE_S = 0.5  # between two measurements
WARMUP_S = 1.0  # of the bare pair, unrecorded, before the first round (clocks ramp up)

# The four numbers, in table order: (JSON key, column header).
METRICS = (
    ("ping_pong_round_trips_per_s", "ping-pong round trips/s"),
    ("pipelined_round_trips_per_s", "pipelined round trips/s (100 in flight)"),
    ("rtt_1mib_ms", "1 MiB RTT ms"),
    ("rtt_16mib_ms", "16 MiB RTT ms"),
)
PING_PONG, PIPELINED, RTT_1MIB, _ = (key for key, _ in METRICS)
HEADERS = [name for _, name in METRICS]


@dataclasses.dataclass(frozen=True)
class Impl:
    """One row of the table: a way to exchange messages between two processes."""

    key: str
    label: str
    metrics: tuple[str, ...]  # the JSON keys it prints


IMPLS = (
    Impl("corral", "corral (`ipc_bench` example, `Value` messages)", tuple(key for key, _ in METRICS)),
    Impl("corral-typed", "corral (`ipc_bench --typed`, typed messages)", tuple(key for key, _ in METRICS)),
    Impl("node", "Node (`child_process.fork`, json)", tuple(key for key, _ in METRICS)),
    Impl("bare", "bare socket pair in C (1 byte, pinned across cores)", (PING_PONG,)),
)
CORRAL, TYPED, NODE, BARE = IMPLS


@dataclasses.dataclass
class Measurement(h.Timed):
    values: dict[str, float]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = h.parser(
        "Benchmark messages between a primary and one worker: corral's ipc_bench, Node's child_process IPC "
        "and a bare Unix socket pair in C, alternated, medians reported.",
        "MESSAGES.md",
        "1 run of 1 s",
    )
    p.add_argument("--runs", type=int, help="rounds over the three implementations (default 3)")
    p.add_argument("--seconds", type=float, help="seconds of each throughput measurement (default 2)")
    p.add_argument("--ipc-bench", type=Path, help="corral's ipc_bench binary (default: built first with cargo)")
    args = p.parse_args(argv)
    args.argv = argv
    h.defaults(args, {"runs": 1, "seconds": 1.0}, {"runs": 3, "seconds": 2.0})
    if args.runs < 1 or not args.seconds > 0 or not math.isfinite(args.seconds):
        p.error("--runs must be at least 1 and --seconds above 0")
    return args


def compile_pingpong(directory: Path) -> Path:
    """Compiles bench/c/pingpong.c with `cc -O2` into the directory; Failed if it cannot."""
    cc = h.apt_install("cc", "gcc")
    if cc is None:
        raise h.Failed("no C compiler (cc), and `apt-get install -y gcc` did not provide one")
    binary = directory / "pingpong"
    argv = [cc, "-O2", "-o", str(binary), str(PINGPONG_C)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise h.Failed(f"`{shlex.join(argv)}` took over 120 s") from None
    if done.returncode != 0 or not binary.exists():
        raise h.Failed(f"`{shlex.join(argv)}` failed:\n{h.tail(done.stderr + done.stdout)}")
    return binary


# ---------------------------------------------------------------------------
# Processes: run one measurement, and leave nothing behind


def measure(impl: Impl, argv: list[str], seconds: float, logs: Path, index: int) -> Measurement:
    """Runs one implementation until it prints its JSON line and exits (with a timeout)."""
    timeout = MEASURE_TIMEOUT_S + 2 * seconds
    log_path, out_path = logs / f"{impl.key}-{index}.log", logs / f"{impl.key}-{index}.out"
    busy_before, ours_before = h.machine_busy_us(), h.children_cpu_us(include_self=True)
    started = time.monotonic()
    proc = None
    try:
        # Files, not pipes: a leftover process holding a pipe open must not stop us reading.
        with log_path.open("wb") as stderr, out_path.open("wb") as stdout:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True, cwd=h.REPO
            )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise h.Failed(
                f"no result after {timeout:.0f} s (killed):\n{h.tail(log_path.read_text(errors='replace'))}"
            ) from None
    except OSError as err:
        raise h.Failed(f"cannot run `{shlex.join(argv)}`: {err}") from None
    finally:
        leftovers = h.kill_descendants(grace=0.5)  # a process still running 0.5 s after the leader is a leftover
    elapsed = time.monotonic() - started
    others_us = max(0.0, (h.machine_busy_us() - busy_before) - (h.children_cpu_us(include_self=True) - ours_before))
    log_text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise h.Failed(f"exited with code {proc.returncode}:\n{h.tail(log_text)}")
    values = parse_result(impl, out_path.read_text(errors="replace"), log_text)
    if leftovers:
        h.log(f"  note: killed leftover process(es) {leftovers} after {impl.label} exited")
    return Measurement(values=values, seconds=elapsed, others_us=others_us)


def parse_result(impl: Impl, stdout: str, log_text: str) -> dict[str, float]:
    """The numbers from the last line of stdout, which must be a JSON object with every key."""
    line = h.last_line(stdout)
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise h.Failed(f"its last line on stdout is not JSON: {line!r}\n{h.tail(log_text)}") from None
    if not isinstance(data, dict):
        raise h.Failed(f"printed {line!r}, not a JSON object")
    values = {}
    for key in impl.metrics:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise h.Failed(f"no positive number {key!r} in {line!r}")
        values[key] = float(value)
    return values


def run_rounds(
    args: argparse.Namespace, ipc_bench: Path, pingpong: Path | None, logs: Path, results: h.Results
) -> None:
    """Rounds A B C … A B C …: every implementation once per round, a pause between two."""
    seconds = f"{args.seconds:g}"
    argvs = {
        CORRAL.key: [str(ipc_bench), "--seconds", seconds, "--large-rounds", str(LARGE_ROUNDS)],
        TYPED.key: [str(ipc_bench), "--typed", "--seconds", seconds, "--large-rounds", str(LARGE_ROUNDS)],
        NODE.key: ["node", str(NODE_IPC), "--seconds", seconds, "--large-rounds", str(LARGE_ROUNDS)],
        BARE.key: [str(pingpong), seconds],
    }
    if pingpong is not None:
        h.log(f"warm-up: {WARMUP_S:g} s of the bare socket pair, not recorded")
        with contextlib.suppress(h.Failed):
            measure(BARE, [str(pingpong), f"{WARMUP_S:g}"], WARMUP_S, logs, 0)

    def measure_impl(impl: Impl, round_index: int) -> Measurement:
        m = measure(impl, argvs[impl.key], args.seconds, logs, round_index + 1)
        values = ", ".join(
            f"{name.split(' (')[0]} {value(key, m.values[key])}" for key, name in METRICS if key in m.values
        )
        h.log(f"  {values}, others {m.others_percent:.0f}%")
        if impl is BARE and "cannot pin" in (
            text := (logs / f"bare-{round_index + 1}.log").read_text(errors="replace")
        ):
            results.note(f"bare socket pair: {h.first_line(text)}")
        return m

    h.alternate(args.runs, IMPLS, results, measure_impl, between=PAUSE_S)


# ---------------------------------------------------------------------------
# Report


def value(metric: str, number: float | None) -> str:
    return h.fmt(number, 0 if metric.endswith("_per_s") else 2)


def values(results: h.Results, key: str, metric: str) -> list[float | None]:
    return [None if m is None else m.values.get(metric) for m in results.series(key)]


def results_table(results: h.Results) -> str:
    rows = []
    for impl in IMPLS:
        status = results.status(impl.key)
        cells = []
        for index, (key, _) in enumerate(METRICS):
            if key not in impl.metrics:
                cells.append("—")
            elif status is not None:
                cells.append(status if index == 0 else "–")
            else:
                cells.append(value(key, h.median(values(results, impl.key, key))))
        rows.append([impl.label, *cells])
    return h.table(["implementation", *HEADERS], rows)


def ratio(results: h.Results, top: Impl, bottom: Impl, metric: str) -> float | None:
    return h.median_ratio(values(results, top.key, metric), values(results, bottom.key, metric))


def ratio_table(results: h.Results) -> str:
    rows = []
    for impl, name in ((CORRAL, "corral (Value)"), (TYPED, "corral typed")):
        node = [h.fmt(ratio(results, impl, NODE, key), 2, "×") for key, _ in METRICS]
        bare = [h.fmt(ratio(results, impl, BARE, PING_PONG), 2, "×")] + ["—"] * (len(METRICS) - 1)
        rows += [[f"{name} ÷ Node", *node], [f"{name} ÷ bare socket pair", *bare]]
    typed = [h.fmt(ratio(results, TYPED, CORRAL, key), 2, "×") for key, _ in METRICS]
    rows.append(["corral typed ÷ corral (Value)", *typed])
    return h.table(["comparison", *HEADERS], rows)


def target_table(results: h.Results) -> str:
    """The issue's targets for corral: measured (median) and met or missed."""
    per_s = "{:,.0f} round trips/s"
    goals = []
    for impl, name in ((CORRAL, "Value"), (TYPED, "typed")):
        corral = {key: h.median(values(results, impl.key, key)) for key, _ in METRICS}
        goals += [
            (
                f"{name}: ping-pong ≥ 0.7 × the bare socket pair",
                ratio(results, impl, BARE, PING_PONG),
                "{:.2f}×",
                lambda v: v >= 0.7,
            ),
            (f"{name}: pipelined ≥ 1,000,000 round trips/s", corral[PIPELINED], per_s, lambda v: v >= 1_000_000),
            (f"{name}: 1 MiB round trip ≤ 4 ms", corral[RTT_1MIB], "{:,.2f} ms", lambda v: v <= 4.0),
        ]
    return h.goal_table("target (corral)", goals)


def per_run_table(results: h.Results) -> str:
    rows = []
    for round_index in range(results.runs):
        for impl in (impl for impl in IMPLS if impl.key not in results.unavailable):
            m = results.series(impl.key)[round_index]
            if m is None:
                cells = ["failed"] + ["–"] * len(METRICS)
            else:
                cells = [value(key, m.values[key]) if key in impl.metrics else "—" for key, _ in METRICS]
                cells.append(f"{m.others_percent:.0f}")
            rows.append([str(round_index + 1), impl.label, *cells])
    head = ["run", "implementation", *HEADERS, "other processes' CPU %"]
    return h.table(head, rows, text=["implementation"])


def make_report(args: argparse.Namespace, versions: dict[str, str], load: float, results: h.Results) -> str:
    head = h.header(
        "corral messaging benchmark",
        args,
        versions,
        [
            f"* Runs: {args.runs}, alternating corral (Value), corral (typed), Node, bare socket pair "
            "(A B C D A B C D …); "
            "tables show medians over the runs, ratios are medians of per-run ratios",
            f"* Each run: ping-pong (1 message in flight) for {args.seconds:g} s, pipelined (100 in flight) "
            f"for {args.seconds:g} s, then {LARGE_ROUNDS} round trips each of a 1 MiB and a 16 MiB JSON "
            "string payload (mean round-trip time); one worker echoing every message",
            "* Pinning: **corral and Node run unpinned** (primary and worker, parent and child, share both "
            "cores as the scheduler likes); the bare socket pair pins itself, parent on core 0 and child "
            "on core 1, so each of its round trips crosses cores",
            f"* Load average when the benchmark started: {load:.2f}",
        ],
    )
    parts = [
        head,
        f"## Results (median of {args.runs} run(s))\n\n{results_table(results)}\n\n"
        "Round trips/s: higher is better. RTT (round-trip time): lower is better. "
        "The bare socket pair only measures ping-pong.",
        "## Ratios (median of per-run ratios)\n\n" + ratio_table(results) + "\n\nIn the round trips/s columns "
        "above 1× means corral is faster; in the RTT columns **lower is better**, so below 1× means corral is faster.",
        "## The issue's targets (for reference)\n\n" + target_table(results),
        "## Per run\n\n" + per_run_table(results) + "\n\nOther processes' CPU: what the rest of the machine used "
        f"during the run, in % of one core; above {h.DISTURBED_PERCENT}% the run is suspect.",
    ]
    notes = results.notes + [
        note for impl in IMPLS for note in h.disturbance_note(impl.label, results.series(impl.key), unit="run")
    ]
    return h.report(parts, notes)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    ipc_bench = h.ensure_release_binary(args.ipc_bench, "--ipc-bench", DEFAULT_IPC_BENCH, BUILD_IPC_BENCH)
    results = h.Results(runs=args.runs)
    if (node := h.node_problem()) is not None:
        results.unavailable[NODE.key] = node
        h.log(f"node: n/a ({node})")
    if not {0, 1} <= os.sched_getaffinity(0):
        results.note(
            f"this script may only run on core(s) {sorted(os.sched_getaffinity(0))}: corral and Node inherit that, "
            "and the bare pair cannot pin itself to cores 0 and 1; the numbers are not comparable"
        )
    load = h.warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="corral-messages-") as directory:
        work = Path(directory)
        pingpong = None
        try:
            pingpong = compile_pingpong(work)
        except h.Failed as why:
            results.unavailable[BARE.key] = h.first_line(str(why))
            h.log(f"bare socket pair: n/a ({why})")
        versions = h.tool_versions(**{"corral ipc_bench": f"`{ipc_bench}`"})
        if pingpong is not None:
            versions["cc"] = h.first_line(h.run_text(["cc", "--version"]))
        try:
            if not h.measure_all(lambda: run_rounds(args, ipc_bench, pingpong, work, results)):
                return 130
        finally:
            h.kill_descendants()
    h.publish(make_report(args, versions, load, results), None if args.no_write else args.output)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
