#!/bin/bash
# The primary's scheduling policy, A/B: the same corral binary with the
# primary on SCHED_OTHER (CORRAL_PRIMARY_BATCH=0) and on SCHED_BATCH (the
# default), alternated, pinned as bench/run.py pins (every server process on
# core 1, wrk on core 0), wrk -t1 -c50 with Connection: close. Prints the
# primary's and the workers' CPU per request (from /proc/PID/stat) and p99.
#   bench/profiles/primary_batch_ab.sh [POLICY] [ROUNDS] [SECONDS]
set -eu
policy=${1:-round-robin}; rounds=${2:-3}; seconds=${3:-5}
corral=${CORRAL:-target/release/corral}
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() {
    local batch=$1 port pid workers p0 p1 w0 w1 out
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    CORRAL_PRIMARY_BATCH=$batch taskset -c 1 "$corral" run -w 2 --policy "$policy" \
        --name "batch-ab-$$" -l "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    workers=$(pgrep -P "$pid" | tr '\n' ' ')
    taskset -c 0 wrk -t1 -c50 -d1s -H 'Connection: close' "http://127.0.0.1:$port/" >/dev/null
    p0=$(cpu "$pid"); w0=0; for w in $workers; do w0=$((w0 + $(cpu "$w"))); done
    out=$(taskset -c 0 wrk -t1 -c50 -d"${seconds}s" --latency -H 'Connection: close' "http://127.0.0.1:$port/")
    p1=$(cpu "$pid"); w1=0; for w in $workers; do w1=$((w1 + $(cpu "$w"))); done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$batch" "$(echo "$out" | awk '/requests in/ {print $1}')" "$((p1 - p0))" "$((w1 - w0))" \
        "$ticks" "$(echo "$out" | awk '/ 99%/ {print $2}')" <<'PY'
import sys
batch, requests, primary, workers, ticks, p99 = sys.argv[1:]
requests = int(requests); us = 1e6 / int(ticks) / requests
name = "SCHED_BATCH" if batch == "1" else "SCHED_OTHER"
print(f"| {name} | {requests:,} | {int(primary) * us:.1f} | {int(workers) * us:.1f} | "
      f"{(int(primary) + int(workers)) * us:.1f} | {p99} |")
PY
}
echo "policy $policy, $rounds rounds of ${seconds} s, alternating"
echo "| primary | requests | primary µs/conn | workers µs/req | server µs/req | p99 |"
echo "|---|---:|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do measure 0; measure 1; done
