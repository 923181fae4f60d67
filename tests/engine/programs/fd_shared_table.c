/* fd_shared_table: a child made by clone(CLONE_FILES) without CLONE_THREAD shares the root's
 * fd table: an fd one opens is the other's, a close by one closes it for both.
 *
 * Set up: the root opens fd 10 and clones the child, which closes fd 10 and opens fd 9 (both
 * for the root too), then grandchild made the same way by the child (the table of three).
 * Checked after the restore: fd 9 open and fd 10 closed in the root and the child; then,
 * live, that the table is still one for all three: the child opens fd 20 (dup of 9) and the
 * root sees it; the root closes fd 9 and the child and the grandchild see it closed.
 *
 * Built with ORPHANS (program fd_shared_orphans): a middle process clones two children with
 * CLONE_FILES and exits, so they are reparented to the root (a subreaper) sharing a table
 * that neither has from the other nor from the root: for the negative test
 * `shared-fd-table`, the dump must refuse it naming both pids and leave the tree running. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

/* Flags in shared memory (the pipes of test_sync_t would be closed for all by the first
 * close, the table being one). */
struct flags {
    int child_ready, grandchild_ready, opened_20, closed_9, grandchild_checked;
};
static volatile struct flags* flags;

static inline int fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static inline void await(volatile int* flag, const char* who, const char* what) {
    for (int i = 0; i < 20000 && !__atomic_load_n(flag, __ATOMIC_SEQ_CST); i++) usleep(1000);
    CHECK(__atomic_load_n(flag, __ATOMIC_SEQ_CST), "%s: timed out waiting for %s", who, what);
}

static inline void set(volatile int* flag) { __atomic_store_n(flag, 1, __ATOMIC_SEQ_CST); }

static pid_t clone_files(int (*fn)(void*)) {
    size_t stack_size = 1 << 20;
    char* stack = test_mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t pid = clone(fn, stack + stack_size, CLONE_FILES | SIGCHLD, NULL);
    if (pid < 0) test_fail("clone(CLONE_FILES): %s", strerror(errno));
    return pid;
}

static inline void check_static(const char* who) {
    CHECK(fd_open(9), "%s: fd 9, opened by the child, is not open", who);
    CHECK(!fd_open(10), "%s: fd 10, closed by the child, is open", who);
}

#ifndef ORPHANS
static int grandchild_main(void* arg) {
    (void)arg;
    set(&flags->grandchild_ready);
    test_wait_check(); /* woken by the child once the root and the child are done */
    await(&flags->closed_9, "grandchild", "the root's close of fd 9");
    CHECK(!fd_open(9), "grandchild: fd 9, closed by the root, is still open");
    CHECK(fd_open(20), "grandchild: fd 20, opened by the child, is not open");
    CHECK(!fd_open(10), "grandchild: fd 10, closed by the child, is open");
    set(&flags->grandchild_checked);
    test_child_exit();
    return 0;
}

static int child_main(void* arg) {
    (void)arg;
    /* The root opened fd 10 before the clone: closed here, it is closed for the root too. */
    close(10);
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0 && fd != 9) {
        dup2(fd, 9);
        close(fd);
    }
    pid_t grandchild = clone_files(grandchild_main);
    await(&flags->grandchild_ready, "child", "the grandchild");
    set(&flags->child_ready);
    test_wait_check();
    check_static("child");
    if (dup2(9, 20) != 20) test_fail("child: dup2(9, 20): %s", strerror(errno));
    set(&flags->opened_20);
    await(&flags->closed_9, "child", "the root's close of fd 9");
    CHECK(!fd_open(9), "child: fd 9, closed by the root, is still open");
    if (grandchild > 0) {
        kill(grandchild, SIGTERM);
        test_expect_child_ok(grandchild, "grandchild");
    }
    test_child_exit();
    return 0;
}
#else
static int orphan_main(void* arg) {
    (void)arg;
    test_wait_check();
    test_child_exit();
    return 0;
}
#endif

int main(int argc, char** argv) {
    test_init(argc, argv, 2);
    flags = test_mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
#ifndef ORPHANS
    int fd = open("/dev/null", O_RDONLY);
    if (fd != 10) {
        dup2(fd, 10);
        close(fd);
    }
    close(9);
    pid_t child = clone_files(child_main);
    await(&flags->child_ready, "root", "the child");

    test_ready();
    test_wait_check();
    if (test_corrupt(1)) close(9);
    check_static("root");
    if (child > 0) kill(child, SIGTERM);
    await(&flags->opened_20, "root", "the child's fd 20");
    if (test_corrupt(2)) close(20);
    CHECK(fd_open(20), "root: fd 20, opened by the child after the restore, is not open");
    close(9);
    set(&flags->closed_9);
    if (child > 0) test_expect_child_ok(child, "child");
    CHECK(flags->grandchild_checked, "root: the grandchild did not check");
#else
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t kids[2] = {0, 0};
    pid_t middle = fork();
    if (middle == 0) {
        clone_files(orphan_main);
        clone_files(orphan_main);
        _exit(0);
    }
    waitpid(middle, NULL, 0);
    for (int tries = 0; tries < 2000 && !kids[1]; tries++) {
        char path[64], text[256] = "";
        snprintf(path, sizeof path, "/proc/self/task/%d/children", getpid());
        test_read_text(path, text, sizeof text);
        int n = sscanf(text, "%d %d", &kids[0], &kids[1]);
        if (n < 2) {
            kids[1] = 0;
            usleep(1000);
        }
    }
    CHECK(kids[1] > 0, "the two orphans were not reparented to the root");
    test_ready();
    test_wait_check();
    if (test_corrupt(1) || test_corrupt(2)) kids[1] = 0;
    for (int i = 0; i < 2; i++) {
        if (kids[i] <= 0) {
            test_fail("orphan %d: no such child", i);
            continue;
        }
        kill(kids[i], SIGTERM);
        test_expect_child_ok(kids[i], "orphan");
    }
#endif
    return test_finish();
}
