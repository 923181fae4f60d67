/* fd_events: eventfds, timerfds, a signalfd and epoll instances.
 *
 *   fd 20  eventfd, count 0x123456789 (more than 32 bits); fd 22 a dup of it; the child
 *          holds fd 20 too (one description in two processes)
 *   fd 21  eventfd, EFD_SEMAPHORE, count 3, O_NONBLOCK
 *   fd 30  timerfd CLOCK_MONOTONIC, every 1 ms since set-up, never read (O_NONBLOCK)
 *   fd 31  timerfd CLOCK_MONOTONIC, one-shot, expired before the dump, not read
 *   fd 32  timerfd CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, due in 1 h
 *   fd 33  timerfd CLOCK_MONOTONIC, one-shot, 2 s after set-up
 *   fd 34  timerfd CLOCK_BOOTTIME, disarmed, with an interval of 5 ms
 *   fd 35  timerfd CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, due 1 h after set-up
 *   fd 40  signalfd for SIGUSR1 and SIGUSR2 (both blocked), O_NONBLOCK; SIGUSR2 pending
 *   fd 50  epoll: 20 IN, 22 IN|ONESHOT (already reported), 30 IN, 31 IN, 32 IN, 40 IN,
 *          51 IN, 60 IN (empty pipe), 61 OUT (its write end); shared with the child
 *   fd 51  epoll holding 21 IN
 *
 * State checked after restore: the eventfd counts and semaphore reads; the periodic timer
 * reports at least the expirations due before the dump, the expired one-shot exactly one,
 * the absolute realtime timer keeps its wall-clock expiry and flags, the 2 s timer fires
 * no earlier than the time it says it has left, the disarmed one stays disarmed, the
 * absolute monotonic one keeps its flag and no more than the time it had left; the signalfd mask,
 * the signal pending at dump and one sent after restore come out of it; the epoll reports exactly
 * the ready set with the data values given at registration (the fired one-shot stays quiet); a
 * count the child adds after restore through its fd 20 is read from the parent's fd 22. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define SEC 1000000000ll
#define MS 1000000ll
#define COUNT 0x123456789ull
#define CHILD_ADDS 5
#define PERIOD_NS (1 * MS)
#define SOON_NS (2 * SEC)

static long long ts_ns(struct timespec ts) { return ts.tv_sec * SEC + ts.tv_nsec; }
static struct timespec ns_ts(long long ns) { return (struct timespec){ns / SEC, ns % SEC}; }
static long long now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts_ns(ts);
}

static void place(int fd, int at) {
    if (fd < 0) test_fail("creating fd %d: %s", at, strerror(errno));
    if (fd != at) {
        dup2(fd, at);
        close(fd);
    }
}

static void arm(int fd, int flags, long long value, long long interval) {
    struct itimerspec its = {.it_interval = ns_ts(interval), .it_value = ns_ts(value)};
    if (timerfd_settime(fd, flags, &its, NULL) != 0)
        test_fail("timerfd_settime: %s", strerror(errno));
}

static void watch(int ep, int fd, unsigned events, unsigned long long data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        test_fail("epoll_ctl(ADD %d): %s", fd, strerror(errno));
}

/* The value after "key" in /proc/self/fdinfo/FD (copied up to the end of its line). */
static void fdinfo_field(int fd, const char* key, char* out, size_t size) {
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    out[0] = 0;
    if (test_read_text(path, text, sizeof text) < 0) return;
    char* at = strstr(text, key);
    if (!at) return;
    at += strlen(key);
    while (*at == ' ' || *at == '\t') at++;
    size_t n = strcspn(at, "\n");
    if (n >= size) n = size - 1;
    memcpy(out, at, n);
    out[n] = 0;
}

static long long read_u64(int fd) {
    unsigned long long v = 0;
    return read(fd, &v, sizeof v) == (ssize_t)sizeof v ? (long long)v : -1;
}

static void check_eventfds(void) {
    if (test_corrupt(1)) eventfd_write(20, 1);
    if (test_corrupt(2)) eventfd_read(21, &(eventfd_t){0});
    if (test_corrupt(3)) fcntl(21, F_SETFL, 0);
    int nonblock = fcntl(21, F_GETFL) & O_NONBLOCK;
    CHECK(nonblock, "O_NONBLOCK of the semaphore eventfd lost");
    char sem[32];
    fdinfo_field(21, "eventfd-semaphore:", sem, sizeof sem);
    CHECK(sem[0] == 0 || strcmp(sem, "1") == 0, "fd 21 is no longer an EFD_SEMAPHORE eventfd");
    for (int i = 0; i < 3; i++) {
        long long v = read_u64(21);
        CHECK(v == 1, "semaphore read %d gave %lld, expected 1", i + 1, v);
    }
    CHECK(!nonblock || (read_u64(21) < 0 && errno == EAGAIN),
          "the semaphore eventfd held more than 3");
}

static void check_timers(long long min_ticks, long long realtime_due, long long monotonic_due,
                         long long ready_at) {
    if (test_corrupt(4)) read_u64(30);
    long long ticks = read_u64(30);
    CHECK(ticks >= min_ticks,
          "the periodic timerfd reported %lld expirations, at least %lld were due", ticks,
          min_ticks);
    struct itimerspec its;
    timerfd_gettime(30, &its);
    CHECK(ts_ns(its.it_interval) == PERIOD_NS, "the periodic timerfd's interval is %lld ns",
          ts_ns(its.it_interval));

    if (test_corrupt(5)) read_u64(31);
    int flags = fcntl(31, F_GETFL);
    fcntl(31, F_SETFL, flags | O_NONBLOCK);
    long long once = read_u64(31);
    CHECK(once == 1, "the expired one-shot timerfd reported %lld expirations, expected 1", once);
    CHECK(read_u64(31) < 0 && errno == EAGAIN, "the expired one-shot timerfd fired again");
    timerfd_gettime(31, &its);
    CHECK(ts_ns(its.it_value) == 0, "the expired one-shot timerfd is armed again");
    fcntl(31, F_SETFL, flags);

    if (test_corrupt(6)) arm(32, 0, 2 * 3600 * SEC, 0);
    char clock[32], setflags[32];
    fdinfo_field(32, "clockid:", clock, sizeof clock);
    fdinfo_field(32, "settime flags:", setflags, sizeof setflags);
    CHECK(strcmp(clock, "0") == 0, "the realtime timerfd has clock %s", clock);
    CHECK(strtol(setflags, NULL, 8) == (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET),
          "the realtime timerfd's settime flags are %s", setflags);
    timerfd_gettime(32, &its);
    long long due = now(CLOCK_REALTIME) + ts_ns(its.it_value), off = due - realtime_due;
    CHECK(off > -SEC && off < SEC,
          "the absolute realtime timerfd is due %lld ms away from its wall-clock time", off / MS);

    if (test_corrupt(7)) arm(33, 0, 0, 0);
    /* The clock read before the time left: a preemption between the two must not count as
     * the timer firing early (seen once under a loaded suite). */
    long long from = now(CLOCK_MONOTONIC);
    timerfd_gettime(33, &its);
    long long left = ts_ns(its.it_value);
    CHECK(left <= SOON_NS, "the 2 s timerfd has %lld ms left", left / MS);
    struct pollfd pfd = {.fd = 33, .events = POLLIN};
    int fired = poll(&pfd, 1, (int)(left / MS) + 3000) == 1;
    long long waited = now(CLOCK_MONOTONIC) - from;
    CHECK(fired, "the 2 s timerfd did not fire");
    CHECK(!fired || waited >= left - MS, "the 2 s timerfd fired %lld ms early",
          (left - waited) / MS);
    CHECK(!fired || read_u64(33) == 1, "the 2 s timerfd did not report one expiration");

    if (test_corrupt(15)) arm(34, 0, PERIOD_NS, PERIOD_NS);
    timerfd_gettime(34, &its);
    CHECK(ts_ns(its.it_value) == 0 && ts_ns(its.it_interval) == 5 * MS,
          "the disarmed timerfd has %lld ns left and an interval of %lld ns", ts_ns(its.it_value),
          ts_ns(its.it_interval));

    if (test_corrupt(16)) arm(35, 0, 3600 * SEC, 0);
    fdinfo_field(35, "settime flags:", setflags, sizeof setflags);
    CHECK(strtol(setflags, NULL, 8) == TFD_TIMER_ABSTIME,
          "the absolute monotonic timerfd's settime flags are %s", setflags);
    timerfd_gettime(35, &its);
    left = ts_ns(its.it_value);
    CHECK(left > 0 && left <= monotonic_due - ready_at,
          "the absolute monotonic timerfd has %lld ms left, at most %lld expected", left / MS,
          (monotonic_due - ready_at) / MS);
}

static void check_signalfd(void) {
    if (test_corrupt(8)) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, SIGUSR1);
        signalfd(40, &one, SFD_NONBLOCK);
    }
    if (test_corrupt(9))
        sigtimedwait(&(sigset_t){{1ul << (SIGUSR2 - 1)}}, NULL, &(struct timespec){0, 0});
    char mask[32];
    fdinfo_field(40, "sigmask:", mask, sizeof mask);
    unsigned long long want = (1ull << (SIGUSR1 - 1)) | (1ull << (SIGUSR2 - 1));
    CHECK(strtoull(mask, NULL, 16) == want, "the signalfd's mask is %s", mask);
    struct signalfd_siginfo si;
    ssize_t n = read(40, &si, sizeof si);
    CHECK(n == (ssize_t)sizeof si && si.ssi_signo == SIGUSR2,
          "the SIGUSR2 pending at dump did not come out of the signalfd");
    kill(getpid(), SIGUSR1);
    n = read(40, &si, sizeof si);
    CHECK(n == (ssize_t)sizeof si && si.ssi_signo == SIGUSR1 && si.ssi_code == SI_USER,
          "the SIGUSR1 sent after restore did not come out of the signalfd");
    CHECK(read(40, &si, sizeof si) < 0 && errno == EAGAIN,
          "the signalfd is not non-blocking or holds more");
}

/* The ready set: every expected data value once, with its events, and nothing else. */
static void check_epoll(void) {
    if (test_corrupt(10))
        epoll_ctl(50, EPOLL_CTL_MOD, 61,
                  &(struct epoll_event){.events = EPOLLOUT, .data.u64 = 0x99});
    if (test_corrupt(11)) epoll_ctl(50, EPOLL_CTL_DEL, 20, NULL);
    if (test_corrupt(12))
        epoll_ctl(50, EPOLL_CTL_MOD, 22,
                  &(struct epoll_event){.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0x22});
    if (test_corrupt(13)) epoll_ctl(51, EPOLL_CTL_DEL, 21, NULL);
    static const struct {
        unsigned long long data;
        unsigned events;
    } want[] = {{0xe0e0000000000020ull, EPOLLIN},
                {0x30, EPOLLIN},
                {0x31, EPOLLIN},
                {0x40, EPOLLIN},
                {0x51, EPOLLIN},
                {0x61, EPOLLOUT}};
    const int nwant = sizeof want / sizeof want[0];
    struct epoll_event got[16];
    int n = epoll_wait(50, got, 16, 0);
    CHECK(n == nwant, "the epoll reports %d ready fds, expected %d", n, nwant);
    for (int i = 0; i < nwant; i++) {
        int found = 0;
        for (int j = 0; j < n; j++)
            if (got[j].data.u64 == want[i].data)
                found = (got[j].events & (EPOLLIN | EPOLLOUT)) == want[i].events;
        CHECK(found, "the epoll does not report data %#llx with events %#x", want[i].data,
              want[i].events);
    }
    for (int j = 0; j < n; j++) {
        int known = 0;
        for (int i = 0; i < nwant; i++) known |= got[j].data.u64 == want[i].data;
        CHECK(known, "the epoll reports unexpected data %#llx",
              (unsigned long long)got[j].data.u64);
    }
    struct epoll_event inner;
    CHECK(epoll_wait(51, &inner, 1, 0) == 1 && inner.data.u64 == 0x21,
          "the inner epoll does not report fd 21");
}

int main(int argc, char** argv) {
    test_init(argc, argv, 16);
    sigset_t usr;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1);
    sigaddset(&usr, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr, NULL);

    place(eventfd(0, 0), 20);
    eventfd_write(20, COUNT);
    place(dup(20), 22);
    place(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK), 21);

    place(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), 30);
    arm(30, 0, PERIOD_NS, PERIOD_NS);
    long long periodic_from = now(CLOCK_MONOTONIC);
    place(timerfd_create(CLOCK_MONOTONIC, 0), 31);
    arm(31, 0, 1 * MS, 0);
    place(timerfd_create(CLOCK_REALTIME, 0), 32);
    long long realtime_due = now(CLOCK_REALTIME) + 3600 * SEC;
    arm(32, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, realtime_due, 0);
    place(timerfd_create(CLOCK_BOOTTIME, 0), 34);
    arm(34, 0, PERIOD_NS, PERIOD_NS);
    usleep(10000);
    arm(34, 0, 0, 5 * MS);
    place(timerfd_create(CLOCK_MONOTONIC, 0), 35);
    long long monotonic_due = now(CLOCK_MONOTONIC) + 3600 * SEC;
    arm(35, TFD_TIMER_ABSTIME, monotonic_due, 0);

    place(signalfd(-1, &usr, SFD_NONBLOCK), 40);
    kill(getpid(), SIGUSR2);

    int p[2];
    if (pipe(p) != 0) test_fail("pipe: %s", strerror(errno));
    place(p[0], 60);
    place(p[1], 61);
    place(epoll_create1(0), 51);
    watch(51, 21, EPOLLIN, 0x21);
    place(epoll_create1(0), 50);
    watch(50, 20, EPOLLIN, 0xe0e0000000000020ull);
    watch(50, 22, EPOLLIN | EPOLLONESHOT, 0x22);
    watch(50, 30, EPOLLIN, 0x30);
    watch(50, 31, EPOLLIN, 0x31);
    watch(50, 32, EPOLLIN, 0x32);
    watch(50, 40, EPOLLIN, 0x40);
    watch(50, 51, EPOLLIN, 0x51);
    watch(50, 60, EPOLLIN, 0x60);
    watch(50, 61, EPOLLOUT, 0x61);
    usleep(50000);
    struct epoll_event drain[16];
    epoll_wait(50, drain, 16, 0); /* reports (and so disarms) the one-shot fd 22 */

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 21; fd <= 61; fd++)
            if (fd != 50) close(fd);
        test_sync_signal(&started);
        test_wait_check();
        CHECK(eventfd_write(20, CHILD_ADDS) == 0, "child: cannot write the shared eventfd");
        struct epoll_event ev;
        /* The shared epoll watches the parent's fds; the child sees the same ready list. */
        CHECK(epoll_wait(50, &ev, 1, 0) == 1, "child: the shared epoll reports nothing");
        test_child_exit();
    }
    test_sync_wait(&started);
    place(timerfd_create(CLOCK_MONOTONIC, 0), 33);
    arm(33, 0, SOON_NS, 0);
    long long ready_at = now(CLOCK_MONOTONIC), min_ticks = (ready_at - periodic_from) / PERIOD_NS;

    test_ready();
    test_wait_check();

    check_epoll();
    check_eventfds();
    check_timers(min_ticks, realtime_due, monotonic_due, ready_at);
    check_signalfd();

    kill(child, SIGTERM);
    test_expect_child_ok(child, "child");
    if (test_corrupt(14)) {
        close(22);
        place(eventfd(0, 0), 22);
        eventfd_write(22, COUNT);
    }
    long long count = read_u64(22);
    CHECK(count == (long long)(COUNT + CHILD_ADDS),
          "the shared eventfd holds %#llx, expected %#llx", count, COUNT + CHILD_ADDS);
    return test_finish();
}
