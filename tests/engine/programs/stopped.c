/* stopped: processes held by a group stop come back stopped, and run on after SIGCONT.
 *
 *   root (session leader)
 *   |- a        single thread, stopped by SIGSTOP; root has waited for the stop (WUNTRACED)
 *   |- b        4 threads in one group stop (SIGSTOP); root has not waited for it yet
 *   `- c        own process group, stopped by SIGTSTP (waited for), then sent SIGSTOP,
 *               which stays pending while it is stopped
 * Every thread of a, b and c counts ticks in a page shared with root while it runs.
 *
 * Checked after restore, by root: state T in /proc/PID/stat (every thread of b) and no
 * tick while stopped; what a wait reports: nothing for a and c (already told), b's stop
 * by SIGSTOP; c's pending SIGSTOP (ShdPnd). Then SIGCONT: each reports CLD_CONTINUED
 * (so it was stopped), ticks again, and on SIGTERM checks its own memory and threads. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define NTHREADS 4
#define BUF_SIZE (256 * 1024)

static volatile uint64_t* ticks; /* [child * NTHREADS + thread] */

struct ticker {
    int slot;
};

static void* tick_thread(void* arg) {
    int slot = ((struct ticker*)arg)->slot;
    for (;;) {
        ticks[slot]++;
        usleep(1000);
    }
    return NULL;
}

/* A child: fills a buffer, starts nthreads - 1 ticking threads, ticks itself until SIGTERM
 * (blocked, taken with sigtimedwait), then checks its buffer and threads. */
static void child_main(int index, int nthreads, int own_group) {
    if (own_group) setpgid(0, 0);
    unsigned char* buf = malloc(BUF_SIZE);
    test_fill(buf, BUF_SIZE, 1000 + index);
    static struct ticker tk[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 1; i < nthreads; i++) {
        tk[i].slot = index * NTHREADS + i;
        pthread_create(&th[i], NULL, tick_thread, &tk[i]);
    }
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    struct timespec ms = {0, 1000000};
    for (;;) {
        ticks[index * NTHREADS]++;
        if (sigtimedwait(&term, NULL, &ms) == SIGTERM) break;
    }
    if (test_corrupt(4) && index == 0) buf[77] ^= 1;
    ptrdiff_t bad = test_verify(buf, BUF_SIZE, 1000 + index);
    CHECK(bad < 0, "child %d: buffer differs at %td", index, bad);
    char threads[32] = "";
    test_status_field(0, "Threads", threads, sizeof threads);
    CHECK(atoi(threads) == nthreads, "child %d: %s threads, expected %d", index, threads, nthreads);
    test_child_exit();
}

static pid_t spawn(int index, int nthreads, int own_group) {
    pid_t pid = fork();
    if (pid == 0) child_main(index, nthreads, own_group);
    return pid;
}

static uint64_t tick_sum(int index) {
    uint64_t s = 0;
    for (int i = 0; i < NTHREADS; i++) s += ticks[index * NTHREADS + i];
    return s;
}

static void wait_ticking(int index) {
    uint64_t t0 = tick_sum(index);
    for (int i = 0; i < 2000 && tick_sum(index) < t0 + 20; i++) usleep(1000);
}

static char task_state(pid_t pid, pid_t tid) {
    char path[96], stat[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
    if (test_read_text(path, stat, sizeof stat) < 0) return '?';
    char* p = strrchr(stat, ')');
    return p ? p[2] : '?';
}

/* Every thread of pid in state T (when /proc is ours). */
static void check_stopped_in_proc(const char* role, pid_t pid, int nthreads) {
    if (!test_proc_is_ours()) return;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR* d = opendir(path);
    int seen = 0;
    for (struct dirent* e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        pid_t tid = atoi(e->d_name);
        char st = task_state(pid, tid);
        CHECK(st == 'T', "%s: thread %d in state %c, expected T (stopped)", role, tid, st);
        seen++;
    }
    if (d) closedir(d);
    CHECK(seen == nthreads, "%s: %d threads in /proc, expected %d", role, seen, nthreads);
}

/* What a wait for stop or continue would report now, without taking it: 0 or si_code. */
static int wait_report(pid_t pid, int* status) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, pid, &si, WSTOPPED | WCONTINUED | WNOHANG | WNOWAIT) != 0) return -1;
    *status = si.si_status;
    return si.si_pid == pid ? si.si_code : 0;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    ticks = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ticks == MAP_FAILED) return 1;

    pid_t kids[3];
    const char* roles[3] = {"a", "b", "c"};
    const int nthreads[3] = {1, NTHREADS, 2};
    for (int i = 0; i < 3; i++) {
        kids[i] = spawn(i, nthreads[i], i == 2);
        wait_ticking(i);
    }
    int st = 0;
    kill(kids[0], SIGSTOP);
    CHECK(waitpid(kids[0], &st, WUNTRACED) == kids[0] && WIFSTOPPED(st), "a did not stop");
    kill(kids[1], SIGSTOP);
    siginfo_t si;
    CHECK(waitid(P_PID, kids[1], &si, WSTOPPED | WNOWAIT) == 0, "b did not stop");
    kill(kids[2], SIGTSTP);
    CHECK(waitpid(kids[2], &st, WUNTRACED) == kids[2] && WIFSTOPPED(st) && WSTOPSIG(st) == SIGTSTP,
          "c did not stop by SIGTSTP (status %#x)", st);
    kill(kids[2], SIGSTOP); /* pending: c is already stopped */
    usleep(50000);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) kill(kids[0], SIGCONT);
    if (test_corrupt(2)) waitpid(kids[1], &st, WUNTRACED);
    if (test_corrupt(3)) kill(kids[2], SIGCONT);
    if (test_corrupt(5)) {
        kill(kids[2], SIGCONT);
        usleep(20000);
        kill(kids[2], SIGTSTP);
    }
    usleep(20000);

    /* Stopped: no tick for 100 ms, state T. */
    uint64_t before[3];
    for (int i = 0; i < 3; i++) before[i] = tick_sum(i);
    usleep(100000);
    for (int i = 0; i < 3; i++) {
        CHECK(tick_sum(i) == before[i], "%s: ticked while stopped (%llu -> %llu)", roles[i],
              (unsigned long long)before[i], (unsigned long long)tick_sum(i));
        check_stopped_in_proc(roles[i], kids[i], nthreads[i]);
    }
    /* What its parent has yet to learn. */
    int code = wait_report(kids[0], &st);
    CHECK(code == 0, "a: a wait reports si_code %d, but its stop was already waited for", code);
    code = wait_report(kids[1], &st);
    CHECK(code == CLD_STOPPED && st == SIGSTOP, "b: a wait reports si_code %d status %d, expected its stop by SIGSTOP",
          code, st);
    CHECK(waitpid(kids[1], &st, WUNTRACED | WNOHANG) == kids[1] && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP,
          "b: waitpid(WUNTRACED) did not report its stop (status %#x)", st);
    code = wait_report(kids[2], &st);
    CHECK(code == 0, "c: a wait reports si_code %d status %d, but its stop was already waited for", code, st);
    if (test_proc_is_ours()) {
        char pnd[32] = "";
        test_status_field(kids[2], "ShdPnd", pnd, sizeof pnd);
        CHECK(strtoull(pnd, NULL, 16) & (1ull << (SIGSTOP - 1)), "c: SIGSTOP no longer pending (ShdPnd %s)", pnd);
    }

    /* SIGCONT: each was stopped (CLD_CONTINUED) and runs again. */
    for (int i = 0; i < 3; i++) {
        kill(kids[i], SIGCONT);
        memset(&si, 0, sizeof si);
        int r = waitid(P_PID, kids[i], &si, WCONTINUED);
        CHECK(r == 0 && si.si_code == CLD_CONTINUED, "%s: no continue reported after SIGCONT (si_code %d)", roles[i],
              si.si_code);
        uint64_t t0 = tick_sum(i);
        wait_ticking(i);
        CHECK(tick_sum(i) >= t0 + 20, "%s: does not run after SIGCONT", roles[i]);
    }
    for (int i = 0; i < 3; i++) {
        kill(kids[i], SIGTERM);
        test_expect_child_ok(kids[i], roles[i]);
    }
    return test_finish();
}
