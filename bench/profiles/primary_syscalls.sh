#!/bin/sh
# Syscalls, wake-ups and context switches of corral's primary per handed-off
# connection: robust on a busy machine (counts, not times). Usage:
#   bench/profiles/primary_syscalls.sh POLICY [SECONDS] [CONNECTIONS]
# wrk -t1 -c CONNECTIONS with Connection: close for SECONDS against
# `corral run -w 2 --policy POLICY` (demo workers); perf stat counts the
# primary's syscalls by tracepoint; connections = its successful accept4s
# (accept4 calls minus those that returned EAGAIN, from the exit tracepoint).
set -eu
policy=${1:?policy}; seconds=${2:-3}; conns=${3:-50}
corral=${CORRAL:-target/release/corral}
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$corral run -w 2 --policy "$policy" -l 127.0.0.1:$port >/tmp/corral-prof.$$.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.1; done
sleep 0.5
events=context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_pwait2,syscalls:sys_enter_accept4,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_close,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_nanosleep,syscalls:sys_enter_clock_nanosleep
perf stat -x, -e "$events" -p $pid -o /tmp/corral-prof.$$.stat &
perfpid=$!
sleep 0.3
wrk -t1 -c"$conns" -d"${seconds}s" -H 'Connection: close' http://127.0.0.1:$port/ > /tmp/corral-prof.$$.wrk
kill -INT $perfpid; wait $perfpid || true
requests=$(awk '/requests in/ {print $1}' /tmp/corral-prof.$$.wrk)
python3 - "$requests" /tmp/corral-prof.$$.stat "$policy" <<'PY'
import sys
requests = int(sys.argv[1]); rows = {}
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        rows[parts[2].split(":")[-1]] = float(parts[0])
print(f"policy {sys.argv[3]}: {requests} requests (wrk), per request:")
for name, count in rows.items():
    if count:
        print(f"  {name:28} {count/requests:8.3f}   ({int(count)})")
PY
