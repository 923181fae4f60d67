/* timers: interval timers, POSIX timers and the timer slack are still armed after restore.
 *
 * State checked after restore:
 *  - ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF: same interval, remaining time plausible
 *    (not more than at dump time, not less than that minus the time or CPU time elapsed);
 *  - POSIX timers keep their ids (timers 1 and 3 were deleted, so the ids have gaps, and the
 *    deleted ids stay invalid): a periodic CLOCK_MONOTONIC timer whose blocked signal has
 *    been pending long enough to have overruns still delivers SI_TIMER signals with its
 *    sival and si_timerid and keeps firing; a one-shot CLOCK_REALTIME timer has plausible
 *    remaining time; a disarmed timer is still disarmed; a SIGEV_NONE CLOCK_BOOTTIME timer
 *    keeps its interval; a SIGEV_THREAD_ID timer aimed at a thread other than the leader
 *    still has its time left and, armed again, signals that thread;
 *  - the timer slack (PR_SET_TIMERSLACK). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define SLACK_NS 123457ul
#define SEC 1000000000ll

static long long tv_ns(struct timeval tv) { return tv.tv_sec * SEC + tv.tv_usec * 1000ll; }
static long long ts_ns(struct timespec ts) { return ts.tv_sec * SEC + ts.tv_nsec; }

static long long cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts_ns(ts);
}

static timer_t make_timer(clockid_t clock, int notify, int sig, int value) {
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = notify;
    sev.sigev_signo = sig;
    sev.sigev_value.sival_int = value;
    timer_t id = 0;
    if (timer_create(clock, &sev, &id) != 0) test_fail("timer_create: %s", strerror(errno));
    return id;
}

static void arm(timer_t id, long long value_ns, long long interval_ns) {
    struct itimerspec its = {{interval_ns / SEC, interval_ns % SEC}, {value_ns / SEC, value_ns % SEC}};
    if (timer_settime(id, 0, &its, NULL) != 0) test_fail("timer_settime: %s", strerror(errno));
}

static void check_itimer(int which, const char* name, struct itimerval before, long long elapsed) {
    struct itimerval now;
    getitimer(which, &now);
    CHECK(tv_ns(now.it_interval) == tv_ns(before.it_interval), "%s: interval %lld ns, expected %lld",
          name, tv_ns(now.it_interval), tv_ns(before.it_interval));
    long long left = tv_ns(now.it_value), was = tv_ns(before.it_value);
    CHECK(left > 0 && left <= was && left >= was - elapsed - SEC,
          "%s: %lld ns left, was %lld ns with %lld ns elapsed since", name, left, was, elapsed);
}

static volatile pid_t worker_tid;
static volatile int worker_got; /* sival of the thread-directed signal the worker took */

/* Takes one SIGRTMIN + 7 aimed at this thread (it is blocked here, as in every thread). */
static void* worker(void* arg) {
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    sigset_t w;
    sigemptyset(&w);
    sigaddset(&w, SIGRTMIN + 7);
    siginfo_t info;
    int got;
    while ((got = sigwaitinfo(&w, &info)) < 0 && errno == EINTR) {
    }
    worker_got = got < 0 ? -1 : info.si_value.sival_int;
    return NULL;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    prctl(PR_SET_TIMERSLACK, SLACK_NS);

    struct itimerval real = {{500, 0}, {1000, 0}}, virt = {{7, 250000}, {300, 0}},
                     prof = {{9, 0}, {400, 500}};
    setitimer(ITIMER_REAL, &real, NULL);
    setitimer(ITIMER_VIRTUAL, &virt, NULL);
    setitimer(ITIMER_PROF, &prof, NULL);

    sigset_t timer_sigs;
    sigemptyset(&timer_sigs);
    sigaddset(&timer_sigs, SIGRTMIN + 4);
    sigaddset(&timer_sigs, SIGRTMIN + 5);
    sigaddset(&timer_sigs, SIGRTMIN + 6);
    sigaddset(&timer_sigs, SIGRTMIN + 7);
    sigprocmask(SIG_BLOCK, &timer_sigs, NULL);
    pthread_t worker_thread;
    if (pthread_create(&worker_thread, NULL, worker, NULL) != 0) test_fail("pthread_create failed");
    while (!worker_tid) usleep(1000);

    timer_t ids[7];
    ids[0] = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 4, 100);
    ids[1] = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 4, 101);
    ids[2] = make_timer(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 5, 102);
    ids[3] = make_timer(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
    ids[4] = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 6, 104);
    ids[5] = make_timer(CLOCK_BOOTTIME, SIGEV_NONE, 0, 0);
    struct sigevent to_worker;
    memset(&to_worker, 0, sizeof to_worker);
    to_worker.sigev_notify = SIGEV_THREAD_ID;
    to_worker.sigev_signo = SIGRTMIN + 7;
    to_worker.sigev_value.sival_int = 106;
    to_worker._sigev_un._tid = worker_tid;
    if (timer_create(CLOCK_MONOTONIC, &to_worker, &ids[6]) != 0)
        test_fail("timer_create(SIGEV_THREAD_ID): %s", strerror(errno));
    timer_delete(ids[1]);
    timer_delete(ids[3]);
    arm(ids[0], 20000000, 20000000); /* 20 ms, periodic */
    arm(ids[2], 1000 * SEC, 0);
    arm(ids[5], 500 * SEC, 3 * SEC);
    arm(ids[6], 800 * SEC, 0);
    usleep(300000); /* let timer 0's pending signal collect overruns */

    struct itimerval real_at, virt_at, prof_at;
    getitimer(ITIMER_REAL, &real_at);
    getitimer(ITIMER_VIRTUAL, &virt_at);
    getitimer(ITIMER_PROF, &prof_at);
    struct itimerspec t2_at, t6_at;
    timer_gettime(ids[2], &t2_at);
    timer_gettime(ids[6], &t6_at);
    long long mono_at = (long long)test_now_ns(), cpu_at = cpu_ns();

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) setitimer(ITIMER_REAL, &(struct itimerval){{400, 0}, {900, 0}}, NULL);
    if (test_corrupt(2)) setitimer(ITIMER_VIRTUAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
    if (test_corrupt(3)) timer_delete(ids[2]);
    if (test_corrupt(4)) arm(ids[4], 100 * SEC, 0);
    if (test_corrupt(5)) prctl(PR_SET_TIMERSLACK, 50000ul);
    if (test_corrupt(6)) {
        arm(ids[0], 0, 0);
        sigtimedwait(&timer_sigs, NULL, &(struct timespec){0, 0});
    }
    if (test_corrupt(7)) ids[5] = ids[3];
    if (test_corrupt(8)) timer_delete(ids[6]);

    long long elapsed = (long long)test_now_ns() - mono_at, cpu = cpu_ns() - cpu_at;
    check_itimer(ITIMER_REAL, "ITIMER_REAL", real_at, elapsed);
    check_itimer(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", virt_at, cpu);
    check_itimer(ITIMER_PROF, "ITIMER_PROF", prof_at, cpu);

    struct itimerspec its;
    for (int i = 1; i <= 3; i += 2)
        CHECK(timer_gettime(ids[i], &its) != 0 && errno == EINVAL,
              "deleted POSIX timer id %ld is valid again", (long)(intptr_t)ids[i]);
    int live[] = {0, 2, 4, 5, 6};
    for (int k = 0; k < 5; k++)
        CHECK(timer_gettime(ids[live[k]], &its) == 0, "POSIX timer id %ld is gone: %s",
              (long)(intptr_t)ids[live[k]], strerror(errno));
    if (timer_gettime(ids[2], &its) == 0) {
        long long left = ts_ns(its.it_value), was = ts_ns(t2_at.it_value);
        CHECK(left > 0 && left <= was && left >= was - elapsed - SEC && ts_ns(its.it_interval) == 0,
              "one-shot POSIX timer: %lld ns left, was %lld ns", left, was);
    }
    if (timer_gettime(ids[4], &its) == 0)
        CHECK(ts_ns(its.it_value) == 0 && ts_ns(its.it_interval) == 0,
              "disarmed POSIX timer is armed now");
    if (timer_gettime(ids[5], &its) == 0)
        CHECK(ts_ns(its.it_interval) == 3 * SEC && ts_ns(its.it_value) > 0,
              "SIGEV_NONE POSIX timer: interval %lld ns, expected 3 s", ts_ns(its.it_interval));
    if (timer_gettime(ids[0], &its) == 0)
        CHECK(ts_ns(its.it_interval) == 20000000, "periodic POSIX timer: interval %lld ns",
              ts_ns(its.it_interval));

    /* The periodic timer: its pending signal, then a fresh expiry. */
    sigset_t t0sig;
    sigemptyset(&t0sig);
    sigaddset(&t0sig, SIGRTMIN + 4);
    for (int round = 0; round < 2; round++) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        int got = sigtimedwait(&t0sig, &info, &(struct timespec){2, 0});
        if (got != SIGRTMIN + 4) {
            test_fail("periodic POSIX timer: %s signal within 2 s", round ? "no new" : "no pending");
            break;
        }
        CHECK(info.si_code == SI_TIMER && info.si_value.sival_int == 100 &&
                  info.si_timerid == (int)(intptr_t)ids[0],
              "periodic POSIX timer signal: si_code %d sival %d timerid %d, expected SI_TIMER 100 %d",
              info.si_code, info.si_value.sival_int, info.si_timerid, (int)(intptr_t)ids[0]);
        if (round == 0)
            CHECK(info.si_overrun >= 5, "periodic POSIX timer: overrun %d, expected >= 5",
                  info.si_overrun);
    }

    /* The thread-directed timer: its time left, then a signal to the worker thread. */
    if (timer_gettime(ids[6], &its) == 0) {
        long long left = ts_ns(its.it_value), was = ts_ns(t6_at.it_value);
        CHECK(left > 0 && left <= was && left >= was - elapsed - SEC,
              "thread-directed POSIX timer: %lld ns left, was %lld ns", left, was);
        arm(ids[6], 10000000, 0);
        for (int i = 0; i < 2000 && !worker_got; i++) usleep(1000);
        CHECK(worker_got == 106, "thread-directed POSIX timer: the worker thread took %d, expected sival 106",
              worker_got);
    }

    unsigned long slack = (unsigned long)prctl(PR_GET_TIMERSLACK);
    CHECK(slack == SLACK_NS, "timer slack %lu ns, expected %lu", slack, SLACK_NS);
    return test_finish();
}
