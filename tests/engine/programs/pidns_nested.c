/* pidns_nested: a tree with a process in a pid namespace below the root's; only for the
 * negative test nested-pidns (the dump must refuse it, naming that process, and leave the
 * tree running). Runs as root (CLONE_NEWPID needs CAP_SYS_ADMIN).
 *
 *   root
 *   `- child    pid 1 of a new pid namespace (clone(CLONE_NEWPID))
 *
 * Built with UNSHARED, the child instead stays in the root's namespace but has called
 * unshare(CLONE_NEWPID) (its children would go to a namespace of their own): refused too.
 *
 * State checked, by each process itself: the child is pid 1 of its namespace (or, UNSHARED,
 * its /proc/self/ns/pid_for_children differs from /proc/self/ns/pid), and it exits cleanly
 * when the root forwards the check. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

/* The child's own view of its pid namespace; 1 when it is as it should be. */
static int child_state_ok(void) {
#ifdef UNSHARED
    struct stat own, children;
    /* The link of pid_for_children exists once the namespace has its init: it has none yet. */
    if (stat("/proc/self/ns/pid", &own) != 0) return 0;
    return stat("/proc/self/ns/pid_for_children", &children) != 0 || children.st_ino != own.st_ino;
#else
    return getpid() == 1;
#endif
}

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    test_sync_t sync;
    test_sync_init(&sync);
#ifdef UNSHARED
    pid_t child = fork();
#else
    /* Like fork, in a new pid namespace. */
    pid_t child = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
#endif
    if (child < 0) {
        test_fail("cannot create the child: %s", strerror(errno));
        return test_finish();
    }
    if (child == 0) {
#ifdef UNSHARED
        if (unshare(CLONE_NEWPID) != 0) test_fail("unshare(CLONE_NEWPID): %s", strerror(errno));
#endif
        CHECK(child_state_ok(), "child: not in the pid namespace state it was set up in");
        test_sync_signal(&sync);
        test_wait_check();
        CHECK(child_state_ok(), "child: its pid namespace state changed");
        test_child_exit();
    }
    test_sync_wait(&sync);
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) kill(child, SIGKILL);
    kill(child, SIGTERM);
    test_expect_child_ok(child, "child");
    return test_finish();
}
