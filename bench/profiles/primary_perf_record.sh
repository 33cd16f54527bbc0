#!/bin/sh
# Where the primary's CPU goes while it hands out connections: perf record
# on the primary (call graphs) under wrk -t1 -c50 with Connection: close.
#   bench/profiles/primary_perf_record.sh POLICY [SECONDS] > report.txt
# Symbols need the profiling build (release is stripped):
#   cargo build --profile profiling -p corral-cli
set -eu
policy=${1:?policy}; seconds=${2:-3}
corral=${CORRAL:-target/profiling/corral}
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$corral run -w 2 --policy "$policy" -l 127.0.0.1:$port >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.1; done
sleep 0.5
perf record -q -g -o /tmp/corral-rec.$$.data -p $pid 2>/dev/null &
rec=$!
sleep 0.3
wrk -t1 -c50 -d"${seconds}s" -H 'Connection: close' http://127.0.0.1:$port/ >&2
kill -INT $rec; wait $rec || true
perf report -i /tmp/corral-rec.$$.data --stdio --no-children --percent-limit 0.7 -g none --sort dso,sym 2>/dev/null | grep -v '^$'
