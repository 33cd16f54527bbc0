#!/usr/bin/env python3
"""How corral's own bookkeeping scales with the number of workers.

For each worker count N, with the built-in demo worker:

    corral run -w N -l 127.0.0.1:PORT --grace 5 --control SOCKET

it measures the time from start until every worker is ready (`corral status
--json`), how long `corral reload` takes (it waits for the rolling reload to
complete, `--max-surge` as given), and the time from SIGTERM to the primary's
exit. The demo worker exits promptly when asked, so the stop time is the
supervisor's, not the grace period's.

    python3 bench/scale.py                       # 100, 500 and 1000 workers
    python3 bench/scale.py --workers 200 --corral /tmp/corral-before

The table goes to stdout in Markdown (bench/SCALE.md keeps one).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORRAL = REPO / "target" / "release" / "corral"
# Per worker the primary holds a few descriptors (its sockets, channels and
# output pipes), twice over during a reload.
FDS_PER_WORKER = 16
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 300.0
RELOAD_TIMEOUT_S = 300.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_fd_limit(workers: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, workers * FDS_PER_WORKER + 1024)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        log(f"raised the open-file limit from {soft} to {wanted}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status(corral: Path, control: Path) -> dict | None:
    done = subprocess.run(
        [str(corral), "status", "--json", "--control", str(control)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def ready_count(state: dict | None) -> int:
    if state is None:
        return 0
    return sum(1 for worker in state["workers"] if worker["state"] == "ready")


def wait_until_ready(corral: Path, control: Path, workers: int, primary: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if primary.poll() is not None:
            raise RuntimeError(f"corral exited with {primary.returncode} before it was ready")
        if control.exists() and ready_count(status(corral, control)) >= workers:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{workers} workers were not ready within {READY_TIMEOUT_S:.0f} s")


def timed_reload(corral: Path, control: Path, timeout: float) -> float | None:
    """How long `corral reload` took; `None` if it did not finish in time."""
    began = time.monotonic()
    try:
        reload = subprocess.run(
            [str(corral), "reload", "--control", str(control)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        log(f"  reload did not finish within {timeout:.0f} s")
        return None
    if reload.returncode != 0:
        raise RuntimeError(f"corral reload failed: {reload.stdout}{reload.stderr}")
    return time.monotonic() - began


def measure(corral: Path, workers: int, args: argparse.Namespace, workdir: Path) -> dict:
    control = workdir / f"scale-{workers}.sock"
    output = open(workdir / f"scale-{workers}.log", "wb")
    command = [
        str(corral), "run", "-w", str(workers), "-l", f"127.0.0.1:{free_port()}",
        "--grace", str(args.grace), "--max-surge", str(args.max_surge),
        "--name", f"scale{workers}", "--control", str(control),
    ]  # fmt: skip
    log(f"$ {shlex.join(command)}")
    started = time.monotonic()
    primary = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(corral, control, workers, primary)
        ready_s = time.monotonic() - started
        log(f"  {workers} ready after {ready_s:.2f} s")
        time.sleep(1.0)
        reload_s = None
        if not args.no_reload:
            reload_s = timed_reload(corral, control, args.reload_timeout)
            if reload_s is not None:
                log(f"  reload took {reload_s:.2f} s")
                wait_until_ready(corral, control, workers, primary)
        time.sleep(1.0)
        began = time.monotonic()
        primary.send_signal(signal.SIGTERM)
        primary.wait(timeout=STOP_TIMEOUT_S)
        stop_s = time.monotonic() - began
        log(f"  SIGTERM to exit {stop_s:.2f} s (exit code {primary.returncode})")
        return {"ready": ready_s, "reload": reload_s, "stop": stop_s}
    finally:
        if primary.poll() is None:
            primary.kill()  # its workers follow (parent-death signal)
            primary.wait()
        output.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corral", type=Path, default=DEFAULT_CORRAL)
    parser.add_argument("--workers", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--grace", type=int, default=5)
    parser.add_argument("--max-surge", type=int, default=1)
    parser.add_argument("--label", default=None, help="the table's row label (default: the binary)")
    parser.add_argument("--no-reload", action="store_true", help="measure start and stop only")
    parser.add_argument("--reload-timeout", type=float, default=RELOAD_TIMEOUT_S,
                        help="give up waiting for the reload after this many seconds "
                        "(the stop is then measured during it)")
    args = parser.parse_args()
    if not args.corral.exists():
        sys.exit(f"scale.py: error: {args.corral} does not exist: build it with "
                 "`cargo build --release -p corral-cli` or pass --corral PATH")
    raise_fd_limit(max(args.workers))
    label = args.label or str(args.corral)
    rows = []
    with tempfile.TemporaryDirectory(prefix="corral-scale-") as workdir:
        for workers in args.workers:
            result = measure(args.corral, workers, args, Path(workdir))
            rows.append((workers, result))
    print("| binary | workers | start to all ready (s) | `corral reload` (s) | SIGTERM to exit (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for workers, result in rows:
        if args.no_reload:
            reload = "not run"
        elif result["reload"] is None:
            reload = f"> {args.reload_timeout:.0f} (unfinished)"
        else:
            reload = f"{result['reload']:.2f}"
        print(f"| {label} | {workers} | {result['ready']:.2f} | {reload} | {result['stop']:.2f} |")


if __name__ == "__main__":
    main()
