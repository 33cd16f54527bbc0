#!/bin/sh
# CPU time, system calls and context switches per pipelined round trip of
# ipc_bench (primary and worker together): perf stat in 250 ms intervals;
# the intervals inside the pipelined phase (it follows 3 s of ping-pong)
# are summed and divided by the round trips ipc_bench reports for it.
# With MALLOC=1, also malloc/realloc/free calls per round trip (uprobes on
# libc, removed at exit; they slow every process on the machine while set,
# and ipc_bench to a few thousand round trips a second, so the counts are
# exact but the times are not).
#   bench/profiles/pipelined_phase.sh [IPC_BENCH] [extra ipc_bench args]
set -eu
bin=${1:-target/release/examples/ipc_bench}; shift || true
events=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex
if [ "${MALLOC:-0}" = 1 ]; then
    libc=$(ldd "$bin" | awk '/libc.so/ {print $3}')
    for fn in malloc realloc free; do perf probe -q -x "$libc" --add "$fn"; done
    trap 'perf probe -q -d "probe_libc:*"' EXIT
    events=$events,probe_libc:malloc,probe_libc:realloc,probe_libc:free
fi
out=$(perf stat -I 250 -x, -e "$events" -o /tmp/pl.$$.stat "$bin" --seconds 3 --large-rounds 0 "$@" 2>/dev/null)
python3 - "$out" /tmp/pl.$$.stat <<'PY'
import json, sys, collections
result = json.loads(sys.argv[1]); rate = result["pipelined_round_trips_per_s"]
sums = collections.Counter()
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) < 4 or line.startswith("#"): continue
    # the middle 2 s of the pipelined phase (start-up + 3 s of ping-pong before it)
    if 4.0 < float(parts[0]) <= 6.0 and parts[1].replace(".", "").isdigit():
        sums[parts[3].split(":")[-1]] += float(parts[1])
trips = rate * 2.0
shown = {k: v / trips * (1000 if k == "task-clock" else 1) for k, v in sums.items()}  # task-clock: µs
print(f"pipelined {rate:.0f}/s; per round trip:", "  ".join(f"{k} {v:.3f}" for k, v in shown.items()))
PY
rm -f /tmp/pl.$$.stat
