/* fd_pipes: pipes inside the tree, with data queued in them at dump time.
 *
 *   parent reads fd 30 <- pipe "down" <- child writes fd 31    (32 KiB queued)
 *   parent writes fd 41 -> pipe "up" -> child reads fd 40      (5000 bytes queued,
 *                                                               capacity set to 256 KiB)
 *   parent: a pipe to itself, fds 50/51, 100 bytes queued, O_NONBLOCK on the read end;
 *           fd 52 another description of that read end (opened through /proc/self/fd/50),
 *           blocking
 *   parent: fd 60, the read end of a pipe whose every writer closed, 200 bytes queued
 *   parent: fd 71, the write end of a pipe whose every reader closed
 *
 * State checked after restore: the queued bytes come out in order, the ends are still
 * connected (data written after restore reaches the other process), F_GETPIPE_SZ and
 * O_NONBLOCK are kept, and when the writer closes its end the reader sees end of file
 * (no stray copy of a write end survived in the tree); a pipe whose other end nobody holds
 * is still the tree's (not an outside resource): its data, then end of file; EPIPE. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define DOWN_BYTES (32 * 1024)
#define UP_BYTES 5000
#define SELF_BYTES 100
#define UP_PIPE_SIZE (256 * 1024)
#define WIDOWED_BYTES 200

static void make_pipe(int rd, int wr) {
    int p[2];
    if (pipe(p) != 0) test_fail("pipe: %s", strerror(errno));
    dup2(p[0], rd);
    dup2(p[1], wr);
    close(p[0]);
    close(p[1]);
}

/* True when the pipe says end of file within 3 s. */
static int at_eof(int fd) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char c;
    return poll(&pfd, 1, 3000) == 1 && read(fd, &c, 1) == 0;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 10);
    signal(SIGPIPE, SIG_IGN);
    static unsigned char buf[DOWN_BYTES];
    make_pipe(30, 31);
    make_pipe(40, 41);
    make_pipe(50, 51);
    make_pipe(60, 61);
    make_pipe(70, 71);
    static unsigned char widowed[WIDOWED_BYTES];
    test_fill(widowed, sizeof widowed, 4);
    if (write(61, widowed, sizeof widowed) != (ssize_t)sizeof widowed) test_fail("write: %s", strerror(errno));
    close(61);
    close(70);
    fcntl(41, F_SETPIPE_SZ, UP_PIPE_SIZE);
    int up_size = fcntl(41, F_GETPIPE_SZ);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        close(30);
        close(41);
        close(50);
        close(51);
        close(60);
        close(71);
        static unsigned char down[DOWN_BYTES];
        test_fill(down, sizeof down, 1);
        if (write(31, down, sizeof down) != (ssize_t)sizeof down) test_fail("child: write");
        test_sync_signal(&started);
        test_wait_check();
        if (test_corrupt(4)) read(40, buf, 1);
        static unsigned char up[UP_BYTES];
        CHECK(test_read_all(40, up, UP_BYTES) && test_verify(up, UP_BYTES, 2) < 0,
              "child: the data queued in the up pipe changed");
        unsigned char token[8];
        CHECK(test_read_all(40, token, 8) && memcmp(token, "after-rs", 8) == 0,
              "child: nothing written after restore arrived through the up pipe");
        CHECK(at_eof(40), "child: no end of file on the up pipe");
        CHECK(write(31, "reply", 5) == 5, "child: cannot write the down pipe");
        test_child_exit();
    }
    close(31);
    close(40);
    static unsigned char upbuf[UP_BYTES], self[SELF_BYTES];
    test_fill(upbuf, sizeof upbuf, 2);
    test_fill(self, sizeof self, 3);
    if (write(41, upbuf, sizeof upbuf) != (ssize_t)sizeof upbuf ||
        write(51, self, sizeof self) != (ssize_t)sizeof self)
        test_fail("write: %s", strerror(errno));
    fcntl(50, F_SETFL, O_NONBLOCK);
    int again = open("/proc/self/fd/50", O_RDONLY | O_CLOEXEC);
    if (again < 0 || dup2(again, 52) != 52) test_fail("reopen fd 50: %s", strerror(errno));
    close(again);
    test_sync_wait(&started);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) read(30, buf, 1);
    if (test_corrupt(2)) fcntl(41, F_SETPIPE_SZ, 65536);
    if (test_corrupt(3)) fcntl(50, F_SETFL, 0);
    if (test_corrupt(5)) write(51, "z", 1);
    if (test_corrupt(6)) dup2(41, 42); /* a stray write end: the child never sees EOF */
    if (test_corrupt(7)) read(60, buf, 1);
    if (test_corrupt(8)) make_pipe(72, 71); /* a reader again: no EPIPE */
    if (test_corrupt(9)) fcntl(52, F_SETFL, O_NONBLOCK);
    if (test_corrupt(10)) dup2(50, 52);

    CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 50, 52) != 0,
          "fds 50 and 52 are one description, not two");
    CHECK(!(fcntl(52, F_GETFL) & O_NONBLOCK), "fd 52 took fd 50's O_NONBLOCK: not a description of its own");

    CHECK(fcntl(41, F_GETPIPE_SZ) == up_size, "up pipe capacity %d, expected %d",
          fcntl(41, F_GETPIPE_SZ), up_size);
    int nonblock = fcntl(50, F_GETFL) & O_NONBLOCK;
    CHECK(nonblock, "O_NONBLOCK of fd 50 lost");
    CHECK(test_read_all(30, buf, DOWN_BYTES) && test_verify(buf, DOWN_BYTES, 1) < 0,
          "the data queued in the down pipe changed");
    unsigned char got[SELF_BYTES + 1];
    ssize_t n = read(50, got, sizeof got);
    CHECK(n == SELF_BYTES && memcmp(got, self, SELF_BYTES) == 0,
          "the pipe to itself held %zd bytes, expected its %d", n, SELF_BYTES);
    CHECK(!nonblock || (read(50, got, 1) < 0 && errno == EAGAIN), "the empty non-blocking pipe did not say EAGAIN");
    unsigned char left[WIDOWED_BYTES];
    CHECK(test_read_all(60, left, WIDOWED_BYTES) && memcmp(left, widowed, WIDOWED_BYTES) == 0 && at_eof(60),
          "the pipe without writers: not its %d bytes, then end of file", WIDOWED_BYTES);
    CHECK(write(71, "x", 1) < 0 && errno == EPIPE, "the pipe without readers took a write (no EPIPE)");

    kill(child, SIGTERM);
    CHECK(write(41, "after-rs", 8) == 8, "cannot write the up pipe after restore");
    close(41);
    unsigned char reply[5];
    CHECK(test_read_all(30, reply, 5) && memcmp(reply, "reply", 5) == 0,
          "the child's reply written after restore did not arrive");
    test_expect_child_ok(child, "child");
    CHECK(at_eof(30), "no end of file on the down pipe after the child exited");
    return test_finish();
}
