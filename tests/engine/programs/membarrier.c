/* membarrier: the root registers with every membarrier(2) expedited command the kernel
 * offers (private, global, private sync-core, private rseq); its child registers with the
 * private one only.
 *
 * State checked after restore by each: MEMBARRIER_CMD_GET_REGISTRATIONS reports exactly what
 * it did at set-up, and the private expedited barrier works (EPERM when not registered).
 * On a kernel without GET_REGISTRATIONS (before 6.3) the engine cannot tell the
 * registrations; the program then checks nothing about them. */
#include <errno.h>
#include <linux/membarrier.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

#define GET_REGISTRATIONS (1 << 9)

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

static void check(const char* who, long want) {
    if (want < 0) return; /* the kernel cannot tell */
    long now = membarrier(GET_REGISTRATIONS);
    CHECK(now == want, "%s: registrations %#lx after restore, %#lx at set-up", who, now, want);
    if (want & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
        CHECK(membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0, "%s: the private expedited barrier fails: %s", who,
              strerror(errno));
}

int main(int argc, char** argv) {
    test_init(argc, argv, 2);
    long supported = membarrier(MEMBARRIER_CMD_QUERY);
    if (supported < 0) supported = 0;
    int commands[] = {MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
                      MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                      MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ};

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        if (supported & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
        long mine = membarrier(GET_REGISTRATIONS);
        test_sync_signal(&started);
        test_wait_check();
        if (test_corrupt(2) && mine >= 0) mine ^= MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
        check("child", mine);
        test_child_exit();
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if ((supported & commands[i]) && membarrier(commands[i]) != 0)
            test_fail("membarrier(%#x): %s", commands[i], strerror(errno));
    long mine = membarrier(GET_REGISTRATIONS);
    test_sync_wait(&started);

    test_ready();
    test_wait_check();
    if (test_corrupt(1) && mine >= 0) mine ^= MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
    check("root", mine);
    kill(child, SIGTERM);
    test_expect_child_ok(child, "child");
    return test_finish();
}
