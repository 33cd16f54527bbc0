#!/usr/bin/env python3
"""What a Node worker costs per request under each primary, measured side by side.

The tutorial cluster program (bench/node/tutorial_cluster.js, unmodified)
under Node's own primary with SCHED_NONE (the workers share one listening
socket: no primary on the path, so the fair measure of what a worker costs),
corral reuseport with its Node agent on and off, and corral round-robin
(kernel steering where it loads). Unlike bench/run.py, every server is started
once and stays up (each on its own port), and the rounds are short runs of wrk
that visit the servers in turn, the order rotated each round: on a machine
where other work comes and goes, neighbouring runs see about the same
disturbance, so the medians of per-round ratios hold better than absolute
numbers. Server CPU per request (utime + stime from /proc of the primary and
its workers) is the headline, as in run.py; the workers' part is given apart.

Run from the repository root:

    python3 bench/node/worker_cost.py [--rounds 9] [--seconds 2] [--mode close|keep-alive|both]

It prints a Markdown report (and writes it with --output FILE).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness as h  # noqa: E402
import run  # noqa: E402


def named(config: h.Config) -> h.Config:
    """The row with a cluster name of its own: two corral clusters of one program may not share a control socket."""
    if config.kind != "corral":
        return config
    return dataclasses.replace(config, corral_args=(*config.corral_args, "--name", f"bench-{config.key}"))


ROWS = tuple(
    named(config)
    for config in (
        h.tutorial("node", "none"),
        h.node_agent("off"),
        h.node_agent("on"),
        h.tutorial("corral", "round-robin"),
    )
)
MODES = {"close": run.CLOSE, "keep-alive": run.KEEP_ALIVE}


def with_agent(path: Path) -> h.Config:
    """Node's own primary (SCHED_NONE) with corral's Node agent at `path` loaded into its workers, as corral does."""
    key = f"tutorial-node-none-agent-{path.stem}"
    env = (("NODE_OPTIONS", f"--require {path.resolve()}"), ("CORRAL_NODE_AGENT", "1"))
    return dataclasses.replace(h.tutorial("node", "none"), key=key, label=f"{h.TUTORIAL}, SCHED_NONE, agent {path}", env=env)


@dataclasses.dataclass
class Sample:
    requests: int
    rps: float
    server_us: float
    workers_us: float
    others_percent: float

    @property
    def cpu(self) -> float:
        return self.server_us / max(self.requests, 1)

    @property
    def worker_cpu(self) -> float:
        return self.workers_us / max(self.requests, 1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="rounds over all rows (default 9)")
    p.add_argument("--seconds", type=int, default=2, help="seconds per wrk run (default 2)")
    p.add_argument("--mode", choices=("close", "keep-alive", "both"), default="close")
    p.add_argument("--only", help="comma-separated rows: " + ", ".join(row.key for row in ROWS))
    p.add_argument(
        "--agent",
        type=Path,
        action="append",
        default=[],
        help="add a row: Node's own primary (SCHED_NONE) with this agent file loaded in its workers (repeatable)",
    )
    p.add_argument("--corral", type=Path, help="the corral binary (default: build target/release/corral)")
    p.add_argument("--output", type=Path, help="also write the report to this file")
    args = p.parse_args(argv)
    args.argv = argv
    rows = (*ROWS, *(with_agent(path) for path in args.agent))
    args.rows = h.select(p, args.only, rows, "row")
    args.modes = list(MODES.values()) if args.mode == "both" else [MODES[args.mode]]
    return args


def sample(server: h.Server, wrk: str, seconds: int, mode: run.Mode) -> Sample:
    if mode.new_connection_per_request:
        h.wait_for_time_wait_room()
    m = run.measure(server, wrk, seconds, mode)
    return Sample(m.wrk.requests, m.wrk.rps, m.server_us, m.server_us - (m.primary_us or 0.0), m.others_percent)


def rounds(args: argparse.Namespace, servers: list[h.Server], wrk: str) -> dict[tuple[str, str], list[Sample]]:
    """Round r visits the servers starting at the r-th: no row is always first after a pause."""
    data: dict[tuple[str, str], list[Sample]] = {}
    for index in range(args.rounds):
        order = servers[index % len(servers) :] + servers[: index % len(servers)]
        for server in order:
            for mode in args.modes:
                got = sample(server, wrk, args.seconds, mode)
                data.setdefault((server.config.key, mode.key), []).append(got)
                h.log(
                    f"[{index + 1}/{args.rounds}] {server.config.key:28} {mode.key:10} {got.rps:8,.0f} req/s "
                    f"{got.cpu:6.1f} µs/req (workers {got.worker_cpu:6.1f}), others {got.others_percent:.0f}%"
                )
                if mode.new_connection_per_request:
                    time.sleep(1)
    return data


def report(args: argparse.Namespace, data: dict[tuple[str, str], list[Sample]], load: float) -> str:
    base = args.rows[0]
    parts = [
        "# A Node worker's cost per request, side by side",
        "",
        f"* Command: `python3 bench/node/worker_cost.py {' '.join(args.argv)}` (from the repository root); "
        f"repository at {h.git_revision()}",
        f"* {args.rounds} rounds of `wrk -t1 -c{run.CONNECTIONS}` for {args.seconds} s per row and mode, the rows "
        "running side by side (each on its own port), visited in turn with the order rotated each round; "
        "wrk on core 0, the servers on core 1",
        f"* Load average at the start: {load:.2f}; other processes' CPU during the runs, median: "
        + h.fmt(statistics.median(s.others_percent for samples in data.values() for s in samples), 0)
        + "% of a core",
        "",
    ]
    for mode in args.modes:
        rows = []
        for config in args.rows:
            samples = data.get((config.key, mode.key), [])
            bases = data.get((base.key, mode.key), [])
            ratios = [a.cpu / b.cpu for a, b in zip(samples, bases, strict=False) if b.cpu]
            rows.append(
                [
                    config.label,
                    h.fmt(h.median(s.rps for s in samples), 0),
                    f"**{h.fmt(h.median(s.cpu for s in samples))}**",
                    h.fmt(h.median(s.worker_cpu for s in samples)),
                    h.fmt(min((s.cpu for s in samples), default=None)) + " – " + h.fmt(max((s.cpu for s in samples), default=None)),
                    h.fmt(h.median(ratios), 2, "×"),
                ]
            )
        head = [
            "configuration",
            "req/s",
            "**server CPU µs/req**",
            "workers' CPU µs/req",
            "server CPU µs/req, min – max",
            f"CPU/req ÷ {base.key}",
        ]
        parts += [f"## {mode.title}", "", h.table(head, rows), ""]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wrk = h.apt_install("wrk", "wrk") or h.die("wrk is required: apt-get install wrk")
    h.ensure_taskset()
    corral = h.ensure_corral(args.corral)
    if (why := h.node_problem()) is not None:
        h.die(why)
    load = h.warn_if_busy()
    data: dict[tuple[str, str], list[Sample]] = {}

    def work() -> None:
        with h.log_directory(None) as logs, contextlib.ExitStack() as stack:
            servers = []
            for config in args.rows:
                ctx = h.Context(corral=corral, port=h.choose_port(None), logs=logs, pin=True)
                servers.append(stack.enter_context(h.running(h.Server(config, ctx))))
            for server in servers:
                run.run_wrk(server, wrk, 1, run.KEEP_ALIVE)  # warm-up
            data.update(rounds(args, servers, wrk))

    if not h.measure_all(work):
        return 130
    text = report(args, data, load)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
