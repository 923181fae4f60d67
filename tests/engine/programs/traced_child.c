/* traced_child: a root tracing its child (PTRACE_TRACEME, as a debugger or strace in a job
 * would); only for the negative test traced: the dump must refuse the child by name, naming
 * its tracer, and leave the tree running (a thread has one tracer: the engine cannot seize it).
 *
 * State checked: the child, still traced by the root, takes SIGUSR1 through its tracer (the
 * root sees the signal stop and passes the signal on) and exits cleanly. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    pid_t child = fork();
    if (child < 0) {
        test_fail("fork: %s", strerror(errno));
        return test_finish();
    }
    if (child == 0) {
        signal(SIGUSR1, on_usr1);
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) _exit(10);
        raise(SIGSTOP); /* the root sees it traced, then lets it run */
        while (!usr1) pause();
        _exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP) {
        test_fail("the child did not stop traced (status %#x)", status);
        return test_finish();
    }
    if (ptrace(PTRACE_CONT, child, 0, 0) != 0) test_fail("ptrace(CONT): %s", strerror(errno));
    test_ready();
    test_wait_check();
    /* Still traced by the root: SIGUSR1 stops it first, and reaches it when passed on. */
    kill(child, SIGUSR1);
    pid_t got;
    do got = waitpid(child, &status, 0);
    while (got < 0 && errno == EINTR);
    CHECK(got == child && WIFSTOPPED(status) && WSTOPSIG(status) == SIGUSR1,
          "the child is no longer traced by the root (status %#x)", status);
    if (ptrace(PTRACE_CONT, child, 0, test_corrupt(1) ? SIGKILL : SIGUSR1) != 0)
        test_fail("ptrace(CONT, SIGUSR1): %s", strerror(errno));
    test_expect_child_ok(child, "child");
    return test_finish();
}
