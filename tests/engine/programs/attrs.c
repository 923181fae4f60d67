/* attrs: process and thread attributes that restore used to lose (issue 11). Run as root.
 *
 * State checked after restore, each by the thread or process it belongs to:
 *  - the leader: SCHED_OTHER, nice 3;
 *  - thread fifo: SCHED_FIFO, rt priority 10;
 *  - thread rr: SCHED_RR | SCHED_RESET_ON_FORK, rt priority 5, nice -4 (an RT thread keeps a
 *    nice value of its own);
 *  - thread idle: SCHED_IDLE, nice 7;
 *  - thread plain: SCHED_OTHER, nice 0 while its leader is at nice 3 (made again from the
 *    leader, it must not keep the leader's), I/O priority best-effort 6, pinned to one CPU
 *    (restored with --with-cpu-affinity);
 *  - thread fifo has the idle I/O class, the leader best-effort 1; every other thread's I/O
 *    priority is never set (it follows policy and nice) and reads the same after restore;
 *  - thread creds: SCHED_BATCH, and uids 1000/1001/1002, gids 2000/2001/2002 set with the raw
 *    setresuid/setresgid syscalls, for that thread only (the others stay root);
 *  - /proc/self/oom_score_adj 345 for the root process, 100 for its child (below its parent's, where it was made);
 *  - /proc/self/loginuid 4242 (root may set it; skipped where the kernel has no audit). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

/* struct sched_attr (linux/sched/types.h clashes with glibc's sched.h). */
struct sched_attr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};
#define SCHED_FLAG_RESET_ON_FORK 0x01

#define CORRUPTIONS 9

static volatile int check_now;

struct want {
    const char* name;
    int policy;    /* without SCHED_RESET_ON_FORK */
    int prio;
    int nice;
    int reset_on_fork;
    int creds;     /* the thread's own uids and gids */
    int corrupt;   /* its corruption point */
    volatile int ready, failed;
    int ioprio;    /* set when not 0 */
    int pin;       /* pinned to one CPU (the first it may run on) */
    int ioprio_at_dump;
    cpu_set_t cpus_at_dump;
};

#define IOPRIO_WHO_PROCESS 1
#define IOPRIO(cls, level) (((cls) << 13) | (level))

static struct want threads_want[] = {
    {.name = "fifo", .policy = SCHED_FIFO, .prio = 10, .corrupt = 1, .ioprio = IOPRIO(3, 0)},
    {.name = "rr", .policy = SCHED_RR, .prio = 5, .nice = -4, .reset_on_fork = 1, .corrupt = 2},
    {.name = "idle", .policy = SCHED_IDLE, .nice = 7, .corrupt = 3},
    {.name = "plain", .policy = SCHED_OTHER, .corrupt = 4, .ioprio = IOPRIO(2, 6), .pin = 1},
    {.name = "creds", .policy = SCHED_BATCH, .creds = 1, .corrupt = 5},
};
#define NTHREADS (int)(sizeof threads_want / sizeof threads_want[0])

static int get_attr(pid_t tid, struct sched_attr* a) {
    memset(a, 0, sizeof *a);
    return (int)syscall(SYS_sched_getattr, tid, a, sizeof *a, 0);
}

static int set_sched(struct want* w) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, (id_t)tid, w->nice) != 0) return -1;
    struct sched_attr a = {.size = sizeof a, .sched_policy = (uint32_t)w->policy, .sched_nice = w->nice,
                           .sched_priority = (uint32_t)w->prio};
    if (w->reset_on_fork) a.sched_flags = SCHED_FLAG_RESET_ON_FORK;
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0) return -1;
    if (w->ioprio && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, w->ioprio) != 0) return -1;
    if (w->pin) {
        cpu_set_t cpus;
        if (sched_getaffinity(0, sizeof cpus, &cpus) != 0) return -1;
        int first = 0;
        while (!CPU_ISSET(first, &cpus)) ++first;
        CPU_ZERO(&cpus);
        CPU_SET(first, &cpus);
        if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) return -1;
    }
    w->ioprio_at_dump = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
    return sched_getaffinity(0, sizeof w->cpus_at_dump, &w->cpus_at_dump);
}

/* Checks the calling thread against w; reports on stderr, returns 0 when right. */
static int check_sched(const char* who, const struct want* w, int corrupt) {
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (corrupt) {
        struct sched_param p = {0};
        sched_setscheduler(0, SCHED_OTHER, &p);
        setpriority(PRIO_PROCESS, (id_t)tid, 11);
    }
    if (corrupt && w->pin) { /* the plain thread: its I/O priority and CPUs lost too */
        syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, 0);
        cpu_set_t all;
        CPU_ZERO(&all);
        for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &all);
        sched_setaffinity(0, sizeof all, &all);
    }
    struct sched_attr a;
    if (get_attr(0, &a) != 0) {
        fprintf(stderr, "%s: sched_getattr: %s\n", who, strerror(errno));
        return -1;
    }
    int nice = getpriority(PRIO_PROCESS, (id_t)tid);
    int rof = (a.sched_flags & SCHED_FLAG_RESET_ON_FORK) != 0;
    if ((int)a.sched_policy != w->policy || (int)a.sched_priority != w->prio || nice != w->nice ||
        rof != w->reset_on_fork) {
        fprintf(stderr, "%s: policy %u prio %u nice %d reset_on_fork %d, expected %d %d %d %d\n", who, a.sched_policy,
                a.sched_priority, nice, rof, w->policy, w->prio, w->nice, w->reset_on_fork);
        return -1;
    }
    int ioprio = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
    if (ioprio != w->ioprio_at_dump || (w->ioprio && ioprio != w->ioprio)) {
        fprintf(stderr, "%s: I/O priority %#x, %#x at dump (set %#x)\n", who, ioprio, w->ioprio_at_dump, w->ioprio);
        return -1;
    }
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || !CPU_EQUAL(&cpus, &w->cpus_at_dump)) {
        fprintf(stderr, "%s: CPU affinity of %d CPUs, %d at dump (or others)\n", who, CPU_COUNT(&cpus),
                CPU_COUNT(&w->cpus_at_dump));
        return -1;
    }
    return 0;
}

static void* thread_main(void* arg) {
    struct want* w = arg;
    if (set_sched(w) != 0) {
        fprintf(stderr, "%s: setting the scheduler: %s\n", w->name, strerror(errno));
        w->failed = 1;
    }
    /* Raw syscalls: glibc's setresuid would change every thread. */
    if (w->creds && (syscall(SYS_setresgid, 2000, 2001, 2002) != 0 || syscall(SYS_setresuid, 1000, 1001, 1002) != 0)) {
        fprintf(stderr, "%s: setresuid: %s\n", w->name, strerror(errno));
        w->failed = 1;
    }
    w->ready = 1;
    while (!check_now) usleep(20000);
    if (check_sched(w->name, w, test_corrupt(w->corrupt) && !w->creds) != 0) w->failed = 1;
    if (w->creds) {
        if (test_corrupt(w->corrupt)) syscall(SYS_setresuid, 1000, 1001, 1000);
        uid_t r, e, s;
        gid_t gr, ge, gs;
        syscall(SYS_getresuid, &r, &e, &s);
        syscall(SYS_getresgid, &gr, &ge, &gs);
        if (r != 1000 || e != 1001 || s != 1002 || gr != 2000 || ge != 2001 || gs != 2002) {
            fprintf(stderr, "%s: uids %u %u %u gids %u %u %u, expected 1000 1001 1002, 2000 2001 2002\n", w->name, r, e,
                    s, gr, ge, gs);
            w->failed = 1;
        }
    }
    return NULL;
}

static int write_text(const char* path, const char* text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static long read_long(const char* path) {
    char buf[64];
    if (test_read_text(path, buf, sizeof buf) <= 0) return -999999;
    return strtol(buf, NULL, 10);
}

int main(int argc, char** argv) {
    test_init(argc, argv, CORRUPTIONS);
    CHECK(geteuid() == 0, "attrs must run as root");
    int have_loginuid = access("/proc/self/loginuid", F_OK) == 0;
    if (have_loginuid && write_text("/proc/self/loginuid", "4242") != 0) {
        fprintf(stderr, "loginuid cannot be set here (%s): not checked\n", strerror(errno));
        have_loginuid = 0;
    }
    CHECK(write_text("/proc/self/oom_score_adj", "345") == 0, "oom_score_adj 345: %s", strerror(errno));

    test_sync_t sync;
    test_sync_init(&sync);
    pid_t child = fork();
    if (child == 0) {
        if (write_text("/proc/self/oom_score_adj", "100") != 0) {
            fprintf(stderr, "child: oom_score_adj 100: %s\n", strerror(errno));
            test_child_exit();
        }
        /* The root sends SIGUSR1 once it checks (blocked until then, kept pending). */
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        test_sync_signal(&sync);
        int sig = 0;
        sigwait(&usr1, &sig);
        if (test_corrupt(9)) write_text("/proc/self/oom_score_adj", "0");
        long adj = read_long("/proc/self/oom_score_adj");
        if (adj != 100) test_fail("child: oom_score_adj %ld, expected 100", adj);
        test_child_exit();
    }
    test_sync_wait(&sync);

    if (setpriority(PRIO_PROCESS, 0, 3) != 0) test_fail("nice 3: %s", strerror(errno));
    struct want leader = {.name = "leader", .policy = SCHED_OTHER, .nice = 3, .corrupt = 6, .ioprio = IOPRIO(2, 1)};
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, leader.ioprio) != 0) test_fail("ioprio_set: %s", strerror(errno));
    leader.ioprio_at_dump = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
    sched_getaffinity(0, sizeof leader.cpus_at_dump, &leader.cpus_at_dump);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; ++i) pthread_create(&th[i], NULL, thread_main, &threads_want[i]);
    for (int i = 0; i < NTHREADS; ++i)
        while (!threads_want[i].ready) usleep(1000);

    test_ready();
    test_wait_check();

    check_now = 1;
    for (int i = 0; i < NTHREADS; ++i) {
        pthread_join(th[i], NULL);
        CHECK(!threads_want[i].failed, "thread %s: wrong state (see the log)", threads_want[i].name);
    }
    CHECK(check_sched("leader", &leader, test_corrupt(6)) == 0, "leader: wrong scheduling (see the log)");
    if (test_corrupt(7)) write_text("/proc/self/oom_score_adj", "0");
    long adj = read_long("/proc/self/oom_score_adj");
    CHECK(adj == 345, "oom_score_adj %ld, expected 345", adj);
    if (have_loginuid) {
        long want = test_corrupt(8) ? 4243 : 4242;
        long have = read_long("/proc/self/loginuid");
        CHECK(have == want, "loginuid %ld, expected %ld", have, want);
    } else if (test_corrupt(8)) {
        test_fail("corruption point 8: no loginuid here");
    }
    kill(child, SIGUSR1);
    test_expect_child_ok(child, "child");
    return test_finish();
}
