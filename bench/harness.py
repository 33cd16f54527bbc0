"""The shared harness of corral's benchmark scripts (run.py, faults.py, messages.py).

What makes their numbers honest and comparable is defined here once: release
binaries built first, tools installed when missing; servers of 2 workers behind
one port on 127.0.0.1, started the same way everywhere, pinned when asked, and
always stopped with every descendant; CPU time from /proc (per process, and for
the whole machine, to detect disturbed runs); one port for every row and
pauses while TIME_WAIT is nearly full; rounds alternating the rows, medians of
per-round ratios; reports headed by the date, machine, revision and command.
See shared/BENCHMARKING.md for why, and bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_APP = BENCH / "node" / "app.js"  # a plain server: PORT, or a socket as fd 3
NODE_CLUSTER = BENCH / "node" / "cluster.js"  # Node's cluster module running app.js
NODE_CLUSTER_RELOAD = BENCH / "node" / "cluster_reload.js"  # the same, plus re-fork and reload
NODE_TUTORIAL = BENCH / "node" / "tutorial_cluster.js"  # the tutorial's cluster program, unmodified
PM2 = BENCH / "node_modules" / ".bin" / "pm2"
DEFAULT_CORRAL = REPO / "target" / "release" / "corral"
BUILD_CORRAL = ["cargo", "build", "--release", "-p", "corral-cli"]

WORKERS = 2
CLIENT_CORE = "0"  # the load generator, when pinned
SERVER_CORE = "1"  # every server process, when pinned
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
DISTURBED_PERCENT = 10  # other processes' CPU (% of a core) that makes a run suspect
PR_SET_CHILD_SUBREAPER = 36
QUICK_BANNER = "> **QUICK RUN** (`--quick`): a check that the harness works, not results to quote."


class Unavailable(Exception):
    """A row that cannot run here (not built yet, a tool missing)."""


class Failed(Exception):
    """A row that did not start or measure; the message says why and ends with its log."""


# ---------------------------------------------------------------------------
# Output


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def die(text: str) -> NoReturn:
    log(f"{Path(sys.argv[0]).name}: error: {text}")
    sys.exit(2)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "?"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def summary(err: BaseException) -> str:
    """One line for a table cell or a note: what failed, and the last line of its log."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0].rstrip(":") + (f" (log ends: `{lines[-1]}`)" if len(lines) > 1 else "")


def run_text(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def publish(text: str, output: Path | None) -> None:
    """Prints a report and, unless `output` is None, writes it there."""
    print(text)
    if output is not None:
        output.write_text(text)
        log(f"written to {output}")


# ---------------------------------------------------------------------------
# Command line


def parser(description: str, output: str, quick: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser with the options every script has: --quick, --output, --no-write."""
    p = argparse.ArgumentParser(description=description, epilog=epilog)
    p.add_argument("--quick", action="store_true", help=f"{quick}: a check, not results")
    p.add_argument(
        "--output", type=Path, default=BENCH / output, help=f"where to write the report (default bench/{output})"
    )
    p.add_argument("--no-write", action="store_true", help="print only; write no report")
    return p


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--corral, --logs and --port: the options of the scripts that start servers."""
    p.add_argument("--corral", type=Path, help="corral binary (default target/release/corral, built first with cargo)")
    p.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 for every row (default: a free one)")


def defaults(args: argparse.Namespace, quick: dict[str, Any], full: dict[str, Any]) -> None:
    """Fills the options not given, from the --quick or the full-run defaults."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def select(p: argparse.ArgumentParser, text: str | None, rows: Sequence[Any], what: str) -> list[Any]:
    """The rows whose keys a comma-separated option names (all if it is empty), in table order."""
    keys = [row if isinstance(row, str) else row.key for row in rows]
    if not text:
        return list(rows)
    wanted = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in keys]
    if unknown:
        p.error(f"unknown {what}(s) {', '.join(unknown)}; {what}s: {', '.join(keys)}")
    return [row for row, key in zip(rows, keys, strict=True) if key in wanted]


# ---------------------------------------------------------------------------
# Prerequisites


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


def ensure_corral(path: Path | None) -> Path:
    return ensure_release_binary(path, "--corral", DEFAULT_CORRAL, BUILD_CORRAL)


def apt_install(command: str, package: str) -> str | None:
    """The command's path, installing the Debian package first if it is missing; None if that fails."""
    if shutil.which(command) is None and shutil.which("apt-get") is not None:
        log(f"{command} is missing: apt-get install -y {package}")
        install = ["apt-get", "install", "-y", package]
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run(install, stdout=subprocess.DEVNULL, timeout=600).returncode != 0:
                subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL, timeout=600)
                subprocess.run(install, stdout=subprocess.DEVNULL, timeout=600)
    return shutil.which(command)


def ensure_taskset() -> None:
    if shutil.which("taskset") is None:
        die("taskset (util-linux) is required to pin processes; install it or pass --no-pin")
    if not {int(CLIENT_CORE), int(SERVER_CORE)} <= os.sched_getaffinity(0):
        die(f"pinning needs cores {CLIENT_CORE} and {SERVER_CORE}; pass --no-pin on this machine")


def node_problem() -> str | None:
    """Why the Node rows cannot run, or None when node (v18 or later) is there."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = first_line(run_text([node, "--version"]))
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < 18:
        return f"node {version} is too old (18 or later needed)"
    return None


def pm2_problem() -> str | None:
    """Installs pm2 into bench/node_modules if missing; says why it cannot run, or None."""
    if PM2.exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (needed to install pm2)"
    log("pm2 is missing: npm install (bench/package.json)")
    argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    install = subprocess.run(argv, cwd=BENCH, capture_output=True, text=True)
    if install.returncode != 0 or not PM2.exists():
        return "pm2 could not be installed: " + last_line(install.stderr or install.stdout)
    return None


def tool_problems(configs: Sequence[Config]) -> dict[str, str]:
    """For each row that cannot run because a tool is missing, the reason."""
    uses_node = [c for c in configs if c.kind in ("node", "pm2") or c.app is not None]
    node = node_problem() if uses_node else None
    problems = {c.key: node for c in uses_node if node is not None}
    pm2_rows = [c.key for c in configs if c.kind == "pm2"]
    pm2 = pm2_problem() if pm2_rows and node is None else None
    problems.update({key: pm2 for key in pm2_rows if pm2 is not None})
    for key, reason in problems.items():
        log(f"{key}: n/a ({reason})")
    return problems


def tool_versions(**extra: str) -> dict[str, str]:
    """Versions of node, pm2 and python, after the ones given."""
    versions = dict(extra)
    if shutil.which("node"):
        versions["node"] = first_line(run_text(["node", "--version"]))
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        versions["pm2"] = json.loads((BENCH / "node_modules" / "pm2" / "package.json").read_text())["version"]
    versions["python"] = sys.version.split()[0]
    return versions


# ---------------------------------------------------------------------------
# Processes and CPU time, from /proc


@dataclasses.dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    start: int  # start time in ticks since boot: tells a pid's reuse apart
    ticks: int  # utime + stime, all threads
    state: str


def read_stat(pid: int) -> ProcStat | None:
    """Fields 3, 4, 14, 15 and 22 of /proc/PID/stat, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    ticks = int(fields[11]) + int(fields[12])
    return ProcStat(pid=pid, ppid=int(fields[1]), start=int(fields[19]), ticks=ticks, state=fields[0])


def process_table() -> dict[int, ProcStat]:
    stats = (read_stat(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return {stat.pid: stat for stat in stats if stat is not None}


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


def become_subreaper() -> None:
    """Orphans of our descendants (a worker whose primary died, pm2's daemon) are re-parented to
    this script, so that every process it started, however detached, is found and stopped."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_descendants(grace: float = 0.0) -> list[int]:
    """SIGKILLs every process below this script still running after `grace` seconds, and reaps them.

    Returns the pids it had to kill. Each server runs in its own session, and
    corral puts its workers in sessions of their own, so they are found in
    /proc rather than by process group; orphans come back to us (a subreaper).
    """
    me, killed = os.getpid(), []
    now = time.monotonic()
    grace_end, deadline = now + grace, now + grace + STOP_TIMEOUT_S
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # reap whatever has exited
                pass
        left = [stat for stat in process_tree([me], process_table()) if stat.pid != me]
        if not left or time.monotonic() > deadline:
            break
        if time.monotonic() >= grace_end:
            for stat in (stat for stat in left if stat.state not in "ZX"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stat.pid, signal.SIGKILL)
                killed += [] if stat.pid in killed else [stat.pid]
        time.sleep(0.02)
    if left:
        log(f"warning: process(es) {[stat.pid for stat in left]} would not go away")
    return killed


def cpus_allowed(pid: int) -> str:
    with contextlib.suppress(FileNotFoundError):
        match = re.search(r"^Cpus_allowed_list:\s*(\S+)", Path(f"/proc/{pid}/status").read_text(), re.M)
        return match.group(1) if match else "?"
    return "?"


def ticks_us(ticks: int) -> float:
    return ticks * 1e6 / CLK_TCK


def machine_busy_us() -> float:
    """CPU time the whole machine has spent busy since boot (/proc/stat), in µs."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return ticks_us(user + nice + system + irq + softirq)


def children_cpu_us(include_self: bool = False) -> float:
    """CPU time of this script's reaped children (and of the script itself if asked), in µs."""
    usages = [resource.getrusage(resource.RUSAGE_CHILDREN)]
    if include_self:
        usages.append(resource.getrusage(resource.RUSAGE_SELF))
    return sum(u.ru_utime + u.ru_stime for u in usages) * 1e6


# ---------------------------------------------------------------------------
# Ports and the TIME_WAIT table


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port (TIME_WAIT sockets do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_port(given: int | None) -> int:
    """The port given (it must be free), else a free one below the ephemeral range.

    Every row uses this one port: new-connection runs leave at most one TIME_WAIT
    socket per client port on it, so TIME_WAIT cannot grow from row to row, and
    every row starts from the same state; below the ephemeral range, no client
    connection takes it between rows.
    """
    if given is not None:
        if not port_is_free(given):
            die(f"--port {given}: something listens there already")
        return given
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
            raise Failed(f"port {port} is in use by another process (`ss -ltnp 'sport = :{port}'`)")
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


def wait_for_time_wait_room() -> None:
    """Before a new-connection run: waits (at most 60 s) while TIME_WAIT is over 3/4 full."""

    def count() -> int:
        match = re.search(r"\btw (\d+)", Path("/proc/net/sockstat").read_text())
        return int(match.group(1)) if match else 0

    try:
        limit = int(Path("/proc/sys/net/ipv4/tcp_max_tw_buckets").read_text())
    except (FileNotFoundError, ValueError):
        return
    if count() <= limit * 3 // 4:
        return
    log(f"  TIME_WAIT holds {count()} sockets (limit {limit}): waiting for it to drain")
    deadline = time.monotonic() + 60
    while count() > limit // 2 and time.monotonic() < deadline:
        time.sleep(1)


# ---------------------------------------------------------------------------
# The servers: 2 workers behind one port, started and stopped the same way everywhere


@dataclasses.dataclass(frozen=True)
class Config:
    """One row: a way to run 2 workers behind one port."""

    key: str  # short name, for --only
    label: str  # name in the tables
    kind: str  # "bare", "corral", "node" (Node's own primary) or "pm2"
    policy: str = ""  # corral --policy, or Node's scheduling policy (rr, none)
    app: Path | None = None  # the Node program (corral: run it as COMMAND; None: corral's demo worker)
    cluster_program: bool = False  # `app` is a Node cluster program: it listens on PORT itself, announces nothing
    corral_args: tuple[str, ...] = ()  # more options for `corral run` (e.g. --node-agent off)
    wrapper: tuple[str, ...] = ()  # a command that runs the primary (it must exec it: same pid)
    command: tuple[str, ...] = ()  # corral's COMMAND when it is not Node (e.g. a Python server on fd 3)
    env: tuple[tuple[str, str], ...] = ()  # more environment for the primary (and so its workers)


TUTORIAL = "tutorial cluster program"
TUTORIAL_PRIMARIES = {"corral": "corral primary", "node": "Node's own primary", "pm2": f"pm2 -i {WORKERS}"}


def tutorial(kind: str, policy: str = "") -> Config:
    """A row running the tutorial's Node cluster program, unmodified, with `kind` as its primary."""
    shown = {"rr": "SCHED_RR", "none": "SCHED_NONE"}.get(policy, policy)
    label = ", ".join(part for part in (TUTORIAL, TUTORIAL_PRIMARIES[kind], shown) if part)
    key = "-".join(part for part in ("tutorial", kind, policy) if part)
    return Config(key, label, kind, policy, NODE_TUTORIAL, cluster_program=True)


def node_agent(setting: str) -> Config:
    """The tutorial's cluster program under corral (reuseport) with its Node agent `on` or `off`."""
    label = f"{TUTORIAL}, corral primary, reuseport, --node-agent {setting}"
    return Config(
        f"corral-node-agent-{setting}",
        label,
        "corral",
        "reuseport",
        NODE_TUTORIAL,
        cluster_program=True,
        corral_args=("--node-agent", setting),
    )


@dataclasses.dataclass(frozen=True)
class Context:
    corral: Path
    port: int  # every row listens on 127.0.0.1:port
    logs: Path
    pin: bool = False

    def pinned(self, core: str) -> list[str]:
        return ["taskset", "-c", core] if self.pin else []


STARTS = itertools.count(1)


class Server:
    """The processes of one running configuration, their output, and how to stop them all.

    Every line they print goes to a log file per process and is kept with the
    moment it arrived, so a script can wait for a line printed after a given
    instant (faults.py times replacements by them).
    """

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.port = ctx.port
        self.prefix = f"{config.key}-{next(STARTS)}"  # names this start's log files
        self.procs: list[subprocess.Popen[bytes]] = []  # started by us, each in its own session
        self.roots: list[int] = []  # whose process trees are measured
        self.primary: int | None = None  # the process that balances (None: no primary)
        self.stop_hook: Callable[[], None] | None = None  # e.g. `pm2 kill`
        self.pm2_env: dict[str, str] | None = None
        self.lines: list[tuple[float, str, str]] = []  # (arrival, source, line)
        self.changed = threading.Condition()
        self.readers: list[threading.Thread] = []
        self.stopping = threading.Event()

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Starts a process in a new session; a thread logs its output and timestamps each line."""
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        self.reader(self.read, proc.stdout, name)
        return proc

    def reader(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.readers.append(thread)

    def read(self, stream: BinaryIO, name: str) -> None:
        with stream, (self.ctx.logs / f"{self.prefix}-{name}.log").open("ab") as out:
            for raw in iter(stream.readline, b""):
                self.arrived(name, [raw.decode(errors="replace").rstrip("\n")])
                out.write(raw)
                out.flush()

    def follow(self, path: Path, name: str) -> None:
        """Adds the lines appended to a file (polled every 2 ms), timestamped on arrival."""

        def run() -> None:
            offset, partial = 0, b""
            while not self.stopping.wait(0.002):
                with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
                    file.seek(offset)
                    if data := file.read():
                        offset += len(data)
                        *complete, partial = (partial + data).split(b"\n")
                        self.arrived(name, [raw.decode(errors="replace") for raw in complete])

        self.reader(run)

    def arrived(self, source: str, lines: list[str]) -> None:
        arrival = time.monotonic()
        with self.changed:
            self.lines.extend((arrival, source, line) for line in lines)
            self.changed.notify_all()

    def wait_line(
        self,
        pattern: str,
        after: float = 0.0,
        timeout: float = START_TIMEOUT_S,
        accept: Callable[[re.Match[str]], bool] | None = None,
        source: str | None = None,
    ) -> tuple[float, re.Match[str]]:
        """The first line matching `pattern` (and `accept`, from `source`) that arrived after `after`.

        Returns its arrival (a monotonic time); fails early if a process we started exits with an error.
        """
        regex, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        with self.changed:
            while True:
                for arrival, name, line in self.lines[seen:]:
                    match = regex.search(line)
                    if match and arrival >= after and source in (None, name) and (accept is None or accept(match)):
                        return arrival, match
                seen = len(self.lines)
                for proc in self.procs:
                    if proc.poll() not in (None, 0):
                        raise start_failure(self, f"exited with code {proc.returncode} (waiting for {pattern!r})")
                if time.monotonic() > deadline:
                    raise start_failure(self, f"no line matching {pattern!r} within {timeout:.0f} s")
                self.changed.wait(0.05)

    def output(self, lines: int = 15) -> str:
        with self.changed:
            return "\n".join(line for _, _, line in self.lines[-lines:])

    def tree(self) -> list[ProcStat]:
        return process_tree(self.roots, process_table())

    def workers(self) -> list[int]:
        """The worker pids: the primary's (pm2: the God daemon's) live children."""
        return sorted(s.pid for s in process_table().values() if s.ppid == self.primary and s.state not in "ZX")

    def cpu_snapshot(self) -> dict[tuple[int, int], int]:
        """CPU ticks of every server process, by (pid, start)."""
        return {(stat.pid, stat.start): stat.ticks for stat in self.tree()}

    def stop(self) -> None:
        """Graceful stop (hook, then SIGTERM), then SIGKILL whatever is left of every process we started."""
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
        kill_descendants()
        self.stopping.set()
        for reader in self.readers:
            reader.join(timeout=2)


def start_failure(server: Server, what: str) -> Exception:
    """The exception for a server that did not come up: Unavailable if corral says the feature is not built."""
    text = server.output()
    return Unavailable("not built") if "not built" in text else Failed(f"{what}:\n{text}")


def wait_for_listening(server: Server, name: str) -> None:
    """Waits for the line `listening on 127.0.0.1:PORT` from a process."""
    _, match = server.wait_line(r"^listening on \S+:(\d+)\s*$", source=name)
    if int(match.group(1)) != server.port:
        raise Failed(f"listens on port {match.group(1)}, not {server.port}")


def check_no_nested_workers(server: Server, tree: list[ProcStat]) -> None:
    """Every process is a root or a root's child; deeper ones mean a worker ran a primary of its own."""
    nested = [stat.pid for stat in tree if stat.pid not in server.roots and stat.ppid not in server.roots]
    if nested:
        raise Failed(
            f"the manager is not the program's Node cluster primary: its workers ran the primary branch and "
            f"forked (pids {nested})\n{server.output()}"
        )


def wait_until_serving(server: Server) -> None:
    """Waits until all expected processes exist, none nested, and the port answers 200."""
    expected = WORKERS + (1 if server.primary is not None else 0)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in server.procs:
            if proc.poll() is not None and proc.returncode != 0 and server.config.kind != "pm2":
                raise start_failure(server, f"exited with code {proc.returncode}")
        tree = server.tree()
        check_no_nested_workers(server, tree)
        if len(tree) >= expected and http_get(server.port) is not None:
            return
        time.sleep(0.05)
    raise start_failure(server, f"not serving with {expected} processes after {START_TIMEOUT_S:.0f} s")


def start_bare(server: Server) -> None:
    """Two `corral demo-worker`s on one SO_REUSEPORT port: no primary at all."""
    for worker_id in range(1, WORKERS + 1):
        argv = [str(server.ctx.corral), "demo-worker", "-l", f"127.0.0.1:{server.port}", "--id", str(worker_id)]
        proc = server.spawn([*server.ctx.pinned(SERVER_CORE), *argv], f"worker{worker_id}")
        wait_for_listening(server, f"worker{worker_id}")
        server.roots.append(proc.pid)


def node_env(server: Server, **extra: str) -> dict[str, str]:
    """The environment of a Node program: PORT, and WORKERS for the tutorial's own primary (and the row's own)."""
    return {**os.environ, "PORT": str(server.port), "WORKERS": str(WORKERS), **dict(server.config.env), **extra}


def start_corral(server: Server) -> None:
    """`corral run` with its demo worker, or with a Node program (or another command) as the COMMAND.

    A plain program (app.js) gets the socket bound up front (`-l`, fd 3); a
    Node cluster program listens on PORT itself, as its user runs it:
    `corral run -w 2 -- node program.js`.
    """
    config = server.config
    argv = [str(server.ctx.corral), "run", "-w", str(WORKERS), "--policy", config.policy, "--grace", "2"]
    argv += [] if config.cluster_program else ["-l", f"127.0.0.1:{server.port}"]
    argv += list(config.corral_args)
    if config.command:
        argv += ["--", *config.command]
    elif config.app is not None:
        argv += ["--", "node", str(config.app)]
    start_primary(server, [*config.wrapper, *argv], "corral", node_env(server))


def start_node(server: Server) -> None:
    """A Node program as its own primary: cluster.js (or cluster_reload.js) running app.js, or the tutorial."""
    config = server.config
    argv = ["node", str(config.app)]
    argv += [] if config.cluster_program else ["--workers", str(WORKERS), "--policy", config.policy]
    start_primary(server, argv, "node", node_env(server, NODE_CLUSTER_SCHED_POLICY=config.policy))


def without_cgroup2() -> tuple[str, ...]:
    """A wrapper that runs the primary in a mount namespace without the cgroup2 file system (it execs: same pid).

    Kernel steering still loads there, but least-connections' connection counter has no cgroup to attach to:
    the workers report their closes instead, as in a container that does not mount cgroup2.
    """
    with open("/proc/self/mountinfo") as mountinfo:
        points = [
            line.split(" ")[4] for line in mountinfo if line.split(" - ", 1)[-1].startswith("cgroup2 ")
        ]
    script = f'umount -l {" ".join(points)} && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh")


def start_primary(server: Server, argv: list[str], name: str, env: dict[str, str]) -> None:
    """Starts the primary (pinned), and waits for its `listening on` line unless the program listens itself."""
    server.primary = server.spawn([*server.ctx.pinned(SERVER_CORE), *argv], name, env).pid
    server.roots = [server.primary]
    if not server.config.cluster_program:
        wait_for_listening(server, name)


def start_pm2(server: Server, name: str = "app") -> None:
    """`pm2 start APP -i 2` with a private PM2_HOME; the God daemon is the primary."""
    home = Path(tempfile.mkdtemp(prefix="pm2-home-", dir=server.ctx.logs))
    env = node_env(server, PM2_HOME=str(home))
    server.pm2_env = env

    def pm2_kill() -> None:
        quiet = subprocess.DEVNULL
        subprocess.run([str(PM2), "kill"], env=env, stdout=quiet, stderr=quiet, timeout=30)

    server.stop_hook = pm2_kill
    app = server.config.app or NODE_APP
    argv = [*server.ctx.pinned(SERVER_CORE), str(PM2), "start", str(app), "-i", str(WORKERS), "--name", name]
    cli = server.spawn(argv, "pm2-start", env)
    try:
        code = cli.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Failed(f"pm2 start did not return:\n{server.output()}") from None
    with contextlib.suppress(FileNotFoundError, ValueError):
        server.primary = int((home / "pm2.pid").read_text().strip())
        server.roots = [server.primary]
    if code != 0 or server.primary is None:
        raise Failed(f"pm2 start failed (code {code}):\n{server.output()}")


STARTERS: dict[str, Callable[[Server], None]] = {
    "bare": start_bare,
    "corral": start_corral,
    "node": start_node,
    "pm2": start_pm2,
}


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Starts a configuration, waits until it serves, and always stops it."""
    wait_for_port_free(server.port)
    try:
        STARTERS[server.config.kind](server)
        wait_until_serving(server)
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Results, rounds and reports


@dataclasses.dataclass
class Timed:
    """A measurement's wall time and the CPU every other process used meanwhile."""

    seconds: float  # wall time of the run
    others_us: float  # CPU time of every process on the machine but the measured ones (and the load)

    @property
    def others_percent(self) -> float:
        """CPU used by other processes during the run, in % of one core."""
        return 100.0 * self.others_us / (self.seconds * 1e6) if self.seconds else 0.0

    @property
    def disturbed(self) -> bool:
        return self.others_percent > DISTURBED_PERCENT


def disturbance_note(what: str, rounds: Sequence[Timed | None], unit: str = "round") -> list[str]:
    """A note naming the rounds in which other processes disturbed `what`, if any."""
    bad = [f"{i + 1} ({m.others_percent:.0f}%)" for i, m in enumerate(rounds) if m is not None and m.disturbed]
    if not bad:
        return []
    return [
        f"{what}: other processes used more than {DISTURBED_PERCENT}% of a core in {unit} {', '.join(bad)}; "
        "rerun on an idle machine"
    ]


@dataclasses.dataclass
class Results:
    """What each row measured, one slot per round (None: not measured), and why a row has none."""

    runs: int
    data: dict[Any, list[Any]] = dataclasses.field(default_factory=dict)
    unavailable: dict[Any, str] = dataclasses.field(default_factory=dict)  # key -> reason
    failures: dict[Any, list[str]] = dataclasses.field(default_factory=dict)  # key -> errors
    notes: list[str] = dataclasses.field(default_factory=list)

    def series(self, key: Any) -> list[Any]:
        return self.data.setdefault(key, [None] * self.runs)

    def note(self, text: str | None) -> None:
        if text and text not in self.notes:
            self.notes.append(text)
            log("  note: " + text)

    def fail(self, key: Any, what: str, err: BaseException) -> None:
        self.failures.setdefault(key, []).append(str(err))
        self.note(f"{what}: {summary(err)}")
        log(f"  FAILED: {err}")

    def status(self, key: Any) -> str | None:
        """What a row's cell says when it has no numbers (n/a, failed and why, not run), or None."""
        if key in self.unavailable:
            return f"n/a ({self.unavailable[key]})"
        if any(m is not None for m in self.data.get(key, [])):
            return None
        if key in self.failures:
            reason = summary(Failed(self.failures[key][-1])).replace("|", "\\|")
            return "failed: " + (reason if len(reason) <= 160 else reason[:157] + "…")
        return "not run"


def alternate(
    runs: int, rows: Sequence[Any], results: Results, measure: Callable[[Any, int], Any], between: float = 0.0
) -> None:
    """Rounds A B C … A B C …: every row once per round; a failing row is noted, never fatal."""
    for round_index in range(runs):
        for row in rows:
            if row.key in results.unavailable:
                continue
            log(f"[round {round_index + 1}/{runs}] {row.label}" if runs > 1 else f"[{row.label}]")
            try:
                results.series(row.key)[round_index] = measure(row, round_index)
            except Unavailable as why:
                results.unavailable[row.key] = str(why)
                log(f"  n/a ({why})")
            except (Failed, subprocess.TimeoutExpired, OSError, ValueError) as err:
                results.fail(row.key, f"{row.label} failed" + (f" in round {round_index + 1}" if runs > 1 else ""), err)
            time.sleep(between)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None, or None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def median_ratio(tops: Sequence[float | None], bottoms: Sequence[float | None]) -> float | None:
    """Median over rounds of top ÷ bottom, both from the same round."""
    return median(a / b for a, b in zip(tops, bottoms, strict=True) if a is not None and b)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], text: Sequence[str] | None = None) -> str:
    """A Markdown table: the `text` columns (default: the first) left-aligned, the numbers right-aligned."""
    align = ["---" if name in (text or head[:1]) else "---:" for name in head]
    lines = [head, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def goal_table(head: str, goals: Iterable[tuple[str, float | None, str, Callable[[float], bool]]]) -> str:
    """Targets as a table: (text, measured value or None, its format, whether it is met)."""
    rows = [
        [text, "n/a", "not measured"] if v is None else [text, shown.format(v), "**met**" if met(v) else "**missed**"]
        for text, v, shown, met in goals
    ]
    return table([head, "measured (median)", ""], rows, text=[head, ""])


def header(title: str, args: argparse.Namespace, versions: dict[str, str], lines: Sequence[str]) -> str:
    """The start of every report: title, the --quick banner, date, machine, command, revision, tools."""
    command = shlex.join(["python3", f"bench/{Path(sys.argv[0]).name}", *args.argv])
    out = [f"# {title}", ""] + ([QUICK_BANNER, ""] if args.quick else [])
    out += [
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: nproc {os.cpu_count()}, kernel {os.uname().release} (`uname -r`), {cpu_model()}",
        f"* Command: `{command}` (from the repository root); repository at {git_revision()}",
        "* Tools: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        *lines,
    ]
    return "\n".join(out)


def report(parts: Sequence[str], notes: Sequence[str], how: str = "How to read this: bench/README.md.") -> str:
    notes_part = ["## Notes\n\n" + "\n".join(f"* {note}" for note in notes)] if notes else []
    return "\n\n".join([*parts, *notes_part, how]) + "\n"


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


def binary_time(path: Path) -> str:
    return datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# Running a script


@contextlib.contextmanager
def log_directory(keep: Path | None) -> Iterator[Path]:
    """The directory given (kept), or a temporary one (removed)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as path:
        yield Path(path)


def warn_if_busy() -> float:
    """The 1-minute load average, with a warning when other work will make the numbers noisy."""
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: load average {load:.2f}: other work on this machine will make the numbers noisy")
    return load


def measure_all(work: Callable[[], None]) -> bool:
    """Runs the measurements; SIGTERM and SIGHUP unwind like Ctrl-C, so every server is stopped.

    False if interrupted (then no report is written)."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    become_subreaper()
    started = time.monotonic()
    try:
        work()
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped; no report written")
        return False
    log(f"done in {time.monotonic() - started:.0f} s")
    return True
