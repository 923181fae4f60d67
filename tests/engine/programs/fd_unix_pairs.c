/* fd_unix_pairs: connected pairs of unnamed AF_UNIX sockets (socketpair) inside the tree, with
 * data queued at dump time.
 *
 *   stream 30 (parent) <-> 31 (child): 20000 bytes queued for the parent, 3000 for the child;
 *                                      the child shut its end down for writing
 *   SOCK_DGRAM 40 <-> 41 (parent):     4 messages queued for 40, 2 for 41, different sizes;
 *                                      then 40 gets a socket filter keeping 60 bytes of each
 *   SOCK_SEQPACKET 50 <-> 51 (parent): 3 messages queued for 50, 1 for 51; 51 shut down for
 *                                      writing
 *   stream 60 <-> 61 (parent):         60 O_NONBLOCK, 10 bytes queued for it
 *   stream 70 (parent and child, one description) <-> 71 (parent)
 *
 * State checked after restore: every queued byte in order, every message with its boundaries,
 * end of file after the data on the end whose peer shut down for writing, the pairs still
 * connected (data sent after restore arrives), fd 40's filter (what was queued whole, a
 * message sent after restore cut to 60 bytes), O_NONBLOCK kept, fd 70 of the parent and of the
 * child still one open file description (kcmp). */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define DOWN_BYTES 20000
#define UP_BYTES 3000
#define NB_BYTES 10

static const size_t dgram_to_40[] = {1, 100, 1000, 5000};
static const size_t dgram_to_41[] = {700, 3};
static const size_t seq_to_50[] = {7, 3000, 60};
static const size_t seq_to_51[] = {333};

/* Reads len bytes, giving up when nothing comes for 3 s. */
static int read_all(int fd, unsigned char* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 3000) != 1) return 0;
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        got += (size_t)n;
    }
    return 1;
}

static int at_eof(int fd) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char c;
    return poll(&pfd, 1, 3000) == 1 && read(fd, &c, 1) == 0;
}

static void send_messages(int fd, const size_t* sizes, size_t count, uint64_t seed) {
    static unsigned char m[8192];
    for (size_t i = 0; i < count; ++i) {
        test_fill(m, sizes[i], seed + i);
        if (send(fd, m, sizes[i], 0) != (ssize_t)sizes[i]) test_fail("send: %s", strerror(errno));
    }
}

/* Receives count messages with their exact sizes and contents. */
static int expect_messages(int fd, const size_t* sizes, size_t count, uint64_t seed) {
    static unsigned char m[8192];
    for (size_t i = 0; i < count; ++i) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 3000) != 1) return 0;
        ssize_t n = recv(fd, m, sizeof m, MSG_DONTWAIT);
        if (n != (ssize_t)sizes[i] || test_verify(m, sizes[i], seed + i) >= 0) {
            test_fail("fd %d: message %zu: %zd bytes (expected %zu) or other data", fd, i, n, sizes[i]);
            return 0;
        }
    }
    return 1;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int main(int argc, char** argv) {
    test_init(argc, argv, 7);
    signal(SIGPIPE, SIG_IGN);
    test_socketpair_at(SOCK_STREAM, 30, 31);
    test_socketpair_at(SOCK_DGRAM, 40, 41);
    test_socketpair_at(SOCK_SEQPACKET, 50, 51);
    test_socketpair_at(SOCK_STREAM, 60, 61);
    test_socketpair_at(SOCK_STREAM, 70, 71);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        close(30);
        for (int fd = 40; fd <= 61; ++fd)
            if (fd != 31) close(fd);
        close(71);
        static unsigned char down[DOWN_BYTES];
        test_fill(down, sizeof down, 1);
        if (write(31, down, sizeof down) != (ssize_t)sizeof down) test_fail("child: write");
        shutdown(31, SHUT_WR);
        test_sync_signal(&started);
        test_wait_check();
        static unsigned char up[UP_BYTES];
        CHECK(read_all(31, up, UP_BYTES) && test_verify(up, UP_BYTES, 2) < 0,
              "child: the data queued for fd 31 changed");
        unsigned char token[8];
        CHECK(read_all(31, token, 8) && memcmp(token, "after-rs", 8) == 0,
              "child: nothing sent after restore arrived on fd 31");
        CHECK(write(70, "from-child", 10) == 10, "child: cannot write fd 70");
        test_child_exit();
    }
    close(31);
    static unsigned char upbuf[UP_BYTES];
    test_fill(upbuf, sizeof upbuf, 2);
    if (write(30, upbuf, sizeof upbuf) != (ssize_t)sizeof upbuf) test_fail("write: %s", strerror(errno));
    send_messages(41, dgram_to_40, COUNT(dgram_to_40), 10);
    send_messages(40, dgram_to_41, COUNT(dgram_to_41), 20);
    send_messages(51, seq_to_50, COUNT(seq_to_50), 30);
    send_messages(50, seq_to_51, COUNT(seq_to_51), 40);
    shutdown(51, SHUT_WR);
    struct sock_filter keep60 = BPF_STMT(BPF_RET | BPF_K, 60);
    test_attach_filter(40, &keep60, 1);
    unsigned char nb[NB_BYTES];
    test_fill(nb, sizeof nb, 5);
    if (write(61, nb, sizeof nb) != (ssize_t)sizeof nb) test_fail("write: %s", strerror(errno));
    fcntl(60, F_SETFL, O_NONBLOCK);
    test_sync_wait(&started);

    test_ready();
    test_wait_check();

    static unsigned char buf[DOWN_BYTES];
    if (test_corrupt(1)) read(30, buf, 1);
    if (test_corrupt(2)) recv(40, buf, sizeof buf, MSG_DONTWAIT);
    if (test_corrupt(3)) recv(50, buf, sizeof buf, MSG_DONTWAIT);
    if (test_corrupt(4)) fcntl(60, F_SETFL, 0);
    if (test_corrupt(5)) {
        dup2(70, 72);
        close(70);
        test_socketpair_at(SOCK_STREAM, 70, 73);
    }
    if (test_corrupt(6)) send(40, "y", 1, 0);
    if (test_corrupt(7)) test_detach_filter(40);

    CHECK(read_all(30, buf, DOWN_BYTES) && test_verify(buf, DOWN_BYTES, 1) < 0,
          "the data queued for fd 30 changed");
    CHECK(at_eof(30), "fd 30: no end of file after the data (its peer shut down for writing)");
    CHECK(expect_messages(40, dgram_to_40, COUNT(dgram_to_40), 10), "fd 40: the queued datagrams changed");
    CHECK(expect_messages(41, dgram_to_41, COUNT(dgram_to_41), 20), "fd 41: the queued datagrams changed");
    CHECK(recv(40, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd 40: more datagrams than queued");
    CHECK(recv(41, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd 41: more datagrams than queued");
    CHECK(expect_messages(50, seq_to_50, COUNT(seq_to_50), 30), "fd 50: the queued packets changed");
    CHECK(at_eof(50), "fd 50: no end of file after the packets (its peer shut down for writing)");
    CHECK(expect_messages(51, seq_to_51, COUNT(seq_to_51), 40), "fd 51: the queued packets changed");
    CHECK(recv(51, buf, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd 51: more packets than queued");
    int nonblock = fcntl(60, F_GETFL) & O_NONBLOCK;
    CHECK(nonblock, "O_NONBLOCK of fd 60 lost");
    unsigned char got[NB_BYTES + 1];
    CHECK(nonblock && read(60, got, sizeof got) == NB_BYTES && memcmp(got, nb, NB_BYTES) == 0,
          "fd 60: not its %d queued bytes", NB_BYTES);
    CHECK(nonblock && read(60, got, 1) < 0 && errno == EAGAIN, "fd 60: the empty non-blocking socket did not say EAGAIN");
    CHECK(syscall(SYS_kcmp, getpid(), child, KCMP_FILE, 70, 70) == 0,
          "fd 70 of the parent and of the child are no longer one open file description");

    /* Still connected: data sent after restore arrives, both ways. */
    static const size_t one[] = {50};
    send_messages(41, one, 1, 70);
    CHECK(expect_messages(40, one, 1, 70), "fd 40: a datagram sent after restore did not arrive");
    send_messages(40, one, 1, 50);
    CHECK(expect_messages(41, one, 1, 50), "fd 41: a datagram sent after restore did not arrive");
    static const size_t cut[] = {100};
    send_messages(41, cut, 1, 80);
    CHECK(recv(40, buf, sizeof buf, MSG_DONTWAIT) == 60, "fd 40: its filter did not cut a message to 60 bytes");
    send_messages(50, one, 1, 60);
    CHECK(expect_messages(51, one, 1, 60), "fd 51: a packet sent after restore did not arrive");
    CHECK(write(61, "z", 1) == 1 && read(60, got, 1) == 1 && got[0] == 'z', "fd 60: a byte sent after restore");
    kill(child, SIGTERM); /* the child's check */
    CHECK(write(30, "after-rs", 8) == 8, "cannot write fd 30 after restore");
    unsigned char from[10];
    CHECK(read_all(71, from, 10) && memcmp(from, "from-child", 10) == 0,
          "fd 71: what the child wrote on fd 70 after restore did not arrive");
    test_expect_child_ok(child, "child");
    CHECK(write(70, "p", 1) == 1 && read_all(71, got, 1) && got[0] == 'p', "fd 70 -> 71 after restore");
    return test_finish();
}
