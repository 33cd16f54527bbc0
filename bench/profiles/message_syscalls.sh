#!/bin/sh
# Syscalls and context switches per message round trip of ipc_bench (primary
# and worker together), counted by perf stat: robust on a busy machine.
# The run does ping-pong then pipelined for SECONDS each, then LARGE round
# trips of 1 MiB and 16 MiB; counts are divided by the small round trips.
#   bench/profiles/message_syscalls.sh [SECONDS] [LARGE] [extra ipc_bench args]
set -eu
seconds=${1:-1}; large=${2:-1}; shift 2 || true
bin=${IPC_BENCH:-target/release/examples/ipc_bench}
events=context-switches,cpu-migrations,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_mmap,syscalls:sys_enter_munmap,syscalls:sys_enter_brk,syscalls:sys_enter_madvise,syscalls:sys_enter_sched_yield
out=$(perf stat -x, -e "$events" -o /tmp/ipc-prof.$$.stat "$bin" --seconds "$seconds" --large-rounds "$large" "$@")
echo "$out"
python3 - "$out" /tmp/ipc-prof.$$.stat "$seconds" <<'PY'
import json, sys
result = json.loads(sys.argv[1]); seconds = float(sys.argv[3])
trips = (result["ping_pong_round_trips_per_s"] + result["pipelined_round_trips_per_s"]) * seconds
print(f"~{trips:.0f} small round trips; per round trip:")
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit() and float(parts[0]):
        print(f"  {parts[2].split(':')[-1]:28} {float(parts[0])/trips:8.3f}   ({parts[0]})")
PY
