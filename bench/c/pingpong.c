/*
 * The ceiling for ping-pong messages between two processes: a bare
 * socketpair(AF_UNIX, SOCK_STREAM), one byte each way, no framing, no JSON,
 * no event loop. The parent runs on core 0 and the child on core 1
 * (sched_setaffinity), so every round trip crosses cores, as a primary and a
 * worker left to the scheduler on a 2-core machine mostly do.
 *
 *   cc -O2 -o pingpong pingpong.c && ./pingpong [SECONDS]
 *
 * Prints {"ping_pong_round_trips_per_s": N} on stdout. bench/messages.py
 * compiles and runs it beside corral's ipc_bench and Node's IPC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int core, const char *who) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        fprintf(stderr, "pingpong: cannot pin the %s to core %d: %s (running unpinned)\n", who, core,
                strerror(errno));
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One byte each way; 1 when it went and came back, 0 on end of file. */
static int exchange(int fd, int write_first) {
    char byte = 'x';
    ssize_t n;
    if (write_first) {
        do n = write(fd, &byte, 1); while (n < 0 && errno == EINTR);
        if (n != 1) return 0;
    }
    do n = read(fd, &byte, 1); while (n < 0 && errno == EINTR);
    if (n != 1) return 0;
    if (!write_first) {
        do n = write(fd, &byte, 1); while (n < 0 && errno == EINTR);
        if (n != 1) return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    if (!(seconds > 0)) {
        fprintf(stderr, "usage: pingpong [SECONDS > 0]\n");
        return 2;
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
        perror("pingpong: socketpair");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("pingpong: fork");
        return 1;
    }
    if (pid == 0) {
        /* The child: echo each byte until the parent closes its end (or dies). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        pin(1, "child");
        while (exchange(fds[1], 0)) {
        }
        _exit(0);
    }
    close(fds[1]);
    pin(0, "parent");

    unsigned long long round_trips = 0;
    double started = now(), elapsed = 0;
    for (;;) {
        if (!exchange(fds[0], 1)) {
            fprintf(stderr, "pingpong: the child stopped answering\n");
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return 1;
        }
        round_trips++;
        /* Reading the clock (vDSO) costs far less than a round trip, but check every 64 anyway. */
        if ((round_trips & 63) == 0 && (elapsed = now() - started) >= seconds) break;
    }
    close(fds[0]);
    waitpid(pid, NULL, 0);
    printf("{\"ping_pong_round_trips_per_s\": %.1f}\n", round_trips / elapsed);
    return 0;
}
