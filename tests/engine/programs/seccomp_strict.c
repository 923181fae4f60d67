/* seccomp_strict: a child in seccomp's strict mode (it may only read, write, exit and
 * sigreturn: the kernel kills it for any other call); only for the negative test
 * seccomp-strict (the dump must refuse it before injecting anything, naming it, and leave it
 * running: an injected call would kill it).
 *
 *   root
 *   `- child    SECCOMP_MODE_STRICT, blocked in read() on a pipe from the root
 *
 * State checked: at the check the root writes a byte to the pipe; the child, still alive,
 * exits 0 with the raw exit call (exit_group is not allowed in strict mode). Killed by the
 * dump, it would show SIGKILL instead. */
#include <errno.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    int go[2], ready[2];
    if (pipe(go) != 0 || pipe(ready) != 0) test_fail("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0) {
        test_fail("fork: %s", strerror(errno));
        return test_finish();
    }
    if (child == 0) {
        close(go[1]);
        close(ready[0]);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) syscall(SYS_exit, 2);
        char c = 's';
        if (write(ready[1], &c, 1) != 1) syscall(SYS_exit, 3);
        if (read(go[0], &c, 1) != 1) syscall(SYS_exit, 4);
        syscall(SYS_exit, 0);
    }
    close(go[0]);
    close(ready[1]);
    char c = 0;
    if (read(ready[0], &c, 1) != 1) test_fail("the child did not enter strict mode");
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) kill(child, SIGKILL);
    if (write(go[1], "x", 1) != 1) test_fail("write: %s", strerror(errno));
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child in strict mode did not exit cleanly (status %#x)", status);
    return test_finish();
}
