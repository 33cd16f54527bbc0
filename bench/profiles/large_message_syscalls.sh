#!/bin/sh
# System calls of the large-message round trips of ipc_bench (5 × 1 MiB and
# 5 × 16 MiB, there and back; the small-message phases shortened to 1 ms),
# primary and worker together, counted by perf stat.
#   bench/profiles/large_message_syscalls.sh [IPC_BENCH]
set -eu
bin=${1:-target/release/examples/ipc_bench}
events=context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_fcntl,syscalls:sys_enter_close,syscalls:sys_enter_futex
perf stat -x, -e "$events" -o /tmp/large.$$.stat "$bin" --seconds 0.001 --large-rounds 5 2>/dev/null | tr -d '\n'; echo
grep -v '^#' /tmp/large.$$.stat | grep -v '^$' | awk -F, '{printf "  %s %s", $3, $1} END {print ""}' | sed 's/syscalls:sys_enter_//g; s/raw_syscalls:sys_enter/syscalls/'
