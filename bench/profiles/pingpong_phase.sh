#!/bin/sh
# Context switches, futex calls and syscalls per ping-pong round trip of
# ipc_bench (primary and worker together): perf stat in 500 ms intervals;
# the intervals inside the ping-pong phase (the first SECONDS) are summed
# and divided by the round trips ipc_bench reports for that phase.
#   bench/profiles/pingpong_phase.sh [IPC_BENCH] [extra ipc_bench args]
set -eu
bin=${1:-target/release/examples/ipc_bench}; shift || true
events=context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom
out=$(perf stat -I 500 -x, -e "$events" -o /tmp/pp.$$.stat "$bin" --seconds 3 --large-rounds 1 "$@" 2>/dev/null)
python3 - "$out" /tmp/pp.$$.stat <<'PY'
import json, sys, collections
result = json.loads(sys.argv[1]); rate = result["ping_pong_round_trips_per_s"]
sums = collections.Counter(); span = 0.0
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) < 4 or line.startswith("#"): continue
    t = float(parts[0])
    # skip the first interval (start-up) and stop before the phase ends at ~3 s + start-up
    if 0.6 < t <= 2.6 and parts[1].replace(".", "").isdigit():
        sums[parts[3].split(":")[-1]] += float(parts[1])
trips = rate * 2.0
print(f"ping-pong {rate:.0f}/s; per round trip:", "  ".join(f"{k} {v/trips:.2f}" for k, v in sums.items()))
PY
