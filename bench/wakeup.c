/*
 * bench/wakeup.c: what a wake-up costs on this machine
 *
 * Two threads hand a token back and forth through eventfds, each sleeping
 * in poll() until it is its turn, as a backend's IOThread and a frontend
 * do when neither polls.  Printed: the round trip (two wake-ups) in wall
 * time and in CPU time of both threads, with the threads on different
 * CPUs (as the scheduler places them) and on one CPU.  On a VM whose idle
 * vCPUs halt, the first is many times the second: a wake-up from another
 * CPU takes an IPI and the halted vCPU's return.
 *
 *   cc -O2 -pthread -o /tmp/wakeup bench/wakeup.c && /tmp/wakeup
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 50000

static int ping_fd, pong_fd;

static void wait_for(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    uint64_t v;

    if (poll(&p, 1, -1) != 1 || read(fd, &v, sizeof(v)) != sizeof(v)) {
        perror("wakeup: wait");
    }
}

static void wake(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        perror("wakeup: write");
    }
}

static void *peer(void *opaque)
{
    for (int i = 0; i < ROUNDS; i++) {
        wait_for(ping_fd);
        wake(pong_fd);
    }
    return NULL;
}

static double seconds(struct timeval tv)
{
    return tv.tv_sec + tv.tv_usec / 1e6;
}

static void measure(const char *what, int cpu)
{
    struct timespec t0, t1;
    struct rusage r0, r1;
    pthread_t t;
    double wall, cpu_s;

    if (cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);   /* inherited by peer */
    }
    pthread_create(&t, NULL, peer, NULL);
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < ROUNDS; i++) {
        wake(ping_fd);
        wait_for(pong_fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &r1);
    pthread_join(t, NULL);
    wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cpu_s = seconds(r1.ru_utime) - seconds(r0.ru_utime) +
            seconds(r1.ru_stime) - seconds(r0.ru_stime);
    printf("%-24s round trip %7.2f us wall, %7.2f us CPU (both threads)\n",
           what, wall / ROUNDS * 1e6, cpu_s / ROUNDS * 1e6);
}

int main(void)
{
    ping_fd = eventfd(0, 0);
    pong_fd = eventfd(0, 0);
    if (ping_fd < 0 || pong_fd < 0) {
        perror("wakeup: eventfd");
        return 1;
    }
    measure("as scheduled", -1);
    measure("both on CPU 0", 0);
    return 0;
}
