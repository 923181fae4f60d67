/* fd_external: fds whose other end is outside the tree (the runner's pipes).
 *
 * The runner starts the program with fd 1 and fd 3 being write ends of pipes it reads. At
 * restore it gives ckpt-engine new pipes: its own stdout (bound to fd 1 by default) and
 * `--inherit-fd fd[N]:pipe:[INODE]` for fd 3 (the key is what /proc/PID/fd/3 said at dump).
 * State checked after restore: fds 1 and 3 are pipes, write-only, and what the program writes
 * to them reaches the runner ("marker fd 1", "marker fd 3"; the runner checks it). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

static void check_pipe_end(int fd) {
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode), "fd %d is not a pipe any more", fd);
    CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY, "fd %d is not write-only", fd);
    char marker[32];
    int len = snprintf(marker, sizeof marker, "marker fd %d\n", fd);
    CHECK(write(fd, marker, (size_t)len) == len, "fd %d: cannot write", fd);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 2);
    struct stat st;
    CHECK(fstat(3, &st) == 0 && S_ISFIFO(st.st_mode), "fd 3 should be the runner's pipe");
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) dup2(open("/dev/null", O_WRONLY), 1);
    if (test_corrupt(2)) close(3);
    check_pipe_end(1);
    check_pipe_end(3);
    return test_finish();
}
