/* shared_mm: a root and a child sharing one address space without being threads of one
 * process (clone with CLONE_VM, not CLONE_THREAD); only for the negative test shared-mm: the
 * dump must refuse it, naming both pids, and leave the tree running (a restore would give each
 * a copy of its own: silently wrong).
 *
 * Built with VFORK (program shared_mm_vfork), the child is made as vfork makes it
 * (CLONE_VM | CLONE_VFORK, as posix_spawn does): the root waits in the kernel until the child
 * exits, where no ptrace interrupt stops it; the dump (--timeout 1) must fail naming the
 * root's thread and the vfork wait, within its timeout, and leave the tree running.
 *
 * Built with SHARED_FS (program shared_fs), the child has its own memory but shares the root's
 * cwd, root and umask (clone with CLONE_FS): refused the same way, naming both pids.
 *
 * State checked, by the root: the child still writes where the root reads (the memory is
 * still one), and it exits cleanly (CLONE_VM: when the root tells it through that memory;
 * VFORK: when the check signal is pending for the root, which the child sees in /proc);
 * SHARED_FS: the child, told by SIGUSR1, changes the cwd and the root sees it changed. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static volatile int stop_child, child_seen;

/* The child shares the root's memory (and its thread pointer: no errno, no stdio, no malloc
 * here; raw system calls only). */
static __attribute__((unused)) void nap(void) {
    struct timespec ts = {0, 1000000};
    syscall(SYS_nanosleep, &ts, NULL);
}

#ifdef VFORK
/* Whether SIGTERM (the runner's check signal) is pending for pid: its ShdPnd or SigPnd. */
static int term_pending(pid_t pid) {
    char path[64], buf[4096];
    /* "/proc/PID/status" without snprintf. */
    char num[16];
    int n, len = 0;
    for (pid_t p = pid; p > 0; p /= 10) num[len++] = (char)('0' + p % 10);
    memcpy(path, "/proc/", 6);
    n = 6;
    while (len > 0) path[n++] = num[--len];
    memcpy(path + n, "/status", 8);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    long got = syscall(SYS_read, fd, buf, sizeof buf - 1);
    syscall(SYS_close, fd);
    if (got <= 0) return 0;
    buf[got] = '\0';
    for (const char* key = "ShdPnd:"; key; key = key[0] == 'S' && key[1] == 'h' ? "SigPnd:" : NULL) {
        const char* at = strstr(buf, key);
        if (!at) continue;
        unsigned long long mask = strtoull(at + 7, NULL, 16);
        if (mask & (1ull << (SIGTERM - 1))) return 1;
    }
    return 0;
}
#endif

#ifdef SHARED_FS
static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
    (void)sig;
    usr1 = 1;
}
#endif

static int child_main(void* arg) {
    (void)arg;
#if defined(SHARED_FS)
    while (!usr1) pause();
    return chdir("/") == 0 ? 0 : 1;
#elif defined(VFORK)
    test_ready(); /* the root waits in the kernel until this child exits */
    pid_t root = (pid_t)syscall(SYS_getppid);
    while (!term_pending(root)) {
        child_seen = 1;
        nap();
    }
#else
    while (!stop_child) {
        child_seen = 1;
        nap();
    }
#endif
    return 0;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    size_t stack_size = 1 << 20;
    char* stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED) {
        test_fail("mmap of the child's stack: %s", strerror(errno));
        return test_finish();
    }
#if defined(SHARED_FS)
    signal(SIGUSR1, on_usr1);
    char dir[4096];
    test_data_path(dir, sizeof dir, "cwd");
    mkdir(dir, 0755);
    CHECK(chdir(dir) == 0, "chdir %s: %s", dir, strerror(errno));
    pid_t child = clone(child_main, stack + stack_size, CLONE_FS | SIGCHLD, NULL);
    if (child < 0) {
        test_fail("clone(CLONE_FS): %s", strerror(errno));
        return test_finish();
    }
    test_ready();
    test_wait_check();
    kill(child, test_corrupt(1) ? SIGKILL : SIGUSR1);
    test_expect_child_ok(child, "child");
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, "/") == 0, "the child's chdir(\"/\") did not change the root's cwd");
    return test_finish();
#elif defined(VFORK)
    /* Returns once the child has exited: after the runner's check signal. */
    pid_t child = clone(child_main, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    if (child < 0) {
        test_fail("clone(CLONE_VM | CLONE_VFORK): %s", strerror(errno));
        return test_finish();
    }
    if (test_corrupt(1)) child_seen = 0;
    CHECK(child_seen, "the vfork child never wrote to the memory it shares with the root");
    test_wait_check(); /* the signal that ended the child's loop is pending: returns at once */
#else
    pid_t child = clone(child_main, stack + stack_size, CLONE_VM | SIGCHLD, NULL);
    if (child < 0) {
        test_fail("clone(CLONE_VM): %s", strerror(errno));
        return test_finish();
    }
    while (!child_seen) nap();
    test_ready();
    test_wait_check();
    /* The child still writes into the root's memory. */
    child_seen = 0;
    for (int i = 0; i < 5000 && !child_seen; ++i) nap();
    CHECK(child_seen, "the child no longer writes to the memory it shared with the root");
    stop_child = 1;
    if (test_corrupt(1)) kill(child, SIGKILL);
#endif
    test_expect_child_ok(child, "child");
    return test_finish();
}
