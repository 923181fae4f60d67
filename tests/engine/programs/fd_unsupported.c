/* fd_unsupported: holds an fd of a kind the engine does not dump (an io_uring instance),
 * for the negative test `unsupported-fd`: the dump must fail with a clear "unsupported"
 * error naming the fd, and leave the process running. Its own check: fd 9 is still the
 * io_uring instance it created. */
#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

#define RING_FD 9

static void fd_target(char* out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", RING_FD);
    ssize_t n = readlink(link, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

int main(int argc, char** argv) {
    test_init(argc, argv, 1);
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    int ring = (int)syscall(SYS_io_uring_setup, 4, &params);
    if (ring < 0) test_fail("io_uring_setup: %s", strerror(errno));
    dup2(ring, RING_FD);
    close(ring);
    char before[256], after[256];
    fd_target(before, sizeof before);
    CHECK(strstr(before, "io_uring") != NULL, "fd %d is %s, not an io_uring", RING_FD, before);
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) close(RING_FD);
    fd_target(after, sizeof after);
    CHECK(strcmp(before, after) == 0, "fd %d is now '%s', was '%s'", RING_FD, after, before);
    return test_finish();
}
