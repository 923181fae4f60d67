/* fd_unix_inflight: fds in flight (SCM_RIGHTS) in messages queued on AF_UNIX sockets, whose
 * open file descriptions the tree also holds.
 *
 *   SOCK_SEQPACKET 30 (parent) -> 31 (child): messages of 1000 bytes, 10 bytes with fds [40 a
 *                     file at offset 123, 41 the read end of a pipe holding "pipe-data"], 500
 *                     bytes, 5 bytes with [43 an eventfd], 100 bytes
 *   SOCK_SEQPACKET 50 -> 51 (parent): "m1", "m2" with [52 an end of the stream pair 52 <-> 53],
 *                     "m3"
 *   SOCK_DGRAM 60 -> 61 (parent): a message carrying 60 itself
 *   a SOCK_SEQPACKET connection accepted from an abstract name, 70 (client) -> 71 (accepted
 *   end), in the parent: "hello" with [40]
 *
 * State checked after restore: every message with exactly its fds, in order; each fd received
 * is the very open file description the parent holds (kcmp), and works: the file's offset,
 * the pipe's data, the eventfd's count, the socket end connected to 53. (On a stream, fds in
 * flight are refused: engine.negative.fd_unix_rights.) */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static void move_fd(int from, int to) {
    if (from < 0 || dup2(from, to) != to) test_fail("dup2 to %d: %s", to, strerror(errno));
    close(from);
}

/* Sends len bytes of seed's pattern (or text) with the given fds (count may be 0). */
static void send_with(int sock, const void* data, size_t len, const int* fds, size_t count) {
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void*)data, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (count) {
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    }
    if (sendmsg(sock, &mh, 0) != (ssize_t)len) test_fail("sendmsg on fd %d: %s", sock, strerror(errno));
}

/* One recvmsg of up to len bytes (waiting up to 3 s for something): the bytes read (-1 on
 * error), the fds received into fds (up to 4), their count into count. */
static ssize_t recv_with(int sock, void* buf, size_t len, int* fds, size_t* count) {
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    *count = 0;
    if (poll(&pfd, 1, 3000) != 1) return -1;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return -1;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k && *count < 4; ++i) memcpy(&fds[(*count)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    return n;
}

/* Whether fd of this process and theirs of pid are one open file description. */
static int same_description(int mine, pid_t pid, int theirs) {
    return syscall(SYS_kcmp, getpid(), pid, KCMP_FILE, mine, theirs) == 0;
}

/* Receives the next message: want bytes (of the pattern at offset *at), expecting nfds fds
 * with them. */
static int next_message(int sock, size_t ask, size_t want, size_t nfds, int* fds, unsigned char* pattern, size_t* at) {
    static unsigned char buf[4096];
    size_t count;
    ssize_t n = recv_with(sock, buf, ask, fds, &count);
    if (n != (ssize_t)want || count != nfds || memcmp(buf, pattern + *at, want) != 0) {
        test_fail("fd 31: a message of %zd bytes with %zu fds (expected %zu and %zu)", n, count, want, nfds);
        return 0;
    }
    *at += want;
    return 1;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    signal(SIGPIPE, SIG_IGN);

    char path[4096];
    test_data_path(path, sizeof path, "file");
    move_fd(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600), 40);
    static unsigned char filler[200];
    if (write(40, filler, sizeof filler) != (ssize_t)sizeof filler || lseek(40, 123, SEEK_SET) != 123)
        test_fail("file: %s", strerror(errno));
    int p[2];
    if (pipe(p) != 0) test_fail("pipe: %s", strerror(errno));
    move_fd(p[0], 41);
    move_fd(p[1], 42);
    if (write(42, "pipe-data", 9) != 9) test_fail("pipe write");
    move_fd(eventfd(77, 0), 43);
    test_socketpair_at(SOCK_SEQPACKET, 30, 31);
    test_socketpair_at(SOCK_SEQPACKET, 50, 51);
    test_socketpair_at(SOCK_STREAM, 52, 53);
    test_socketpair_at(SOCK_DGRAM, 60, 61);

    /* A connection accepted from an abstract name: 70 the client, 71 the accepted end. */
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int alen = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ckpt-inflight-%d", (int)getpid()) + 1 +
               (int)offsetof(struct sockaddr_un, sun_path);
    if (l < 0 || bind(l, (struct sockaddr*)&a, (socklen_t)alen) != 0 || listen(l, 4) != 0)
        test_fail("listen: %s", strerror(errno));
    move_fd(l, 72);
    move_fd(socket(AF_UNIX, SOCK_SEQPACKET, 0), 70);
    if (connect(70, (struct sockaddr*)&a, (socklen_t)alen) != 0) test_fail("connect: %s", strerror(errno));
    move_fd(accept(72, NULL, NULL), 71);

    static unsigned char pattern[1615];
    test_fill(pattern, sizeof pattern, 9);
    int file_and_pipe[2] = {40, 41}, ev[1] = {43}, sock52[1] = {52}, self60[1] = {60}, file[1] = {40};
    send_with(30, pattern, 1000, NULL, 0);
    send_with(30, pattern + 1000, 10, file_and_pipe, 2);
    send_with(30, pattern + 1010, 500, NULL, 0);
    send_with(30, pattern + 1510, 5, ev, 1);
    send_with(30, pattern + 1515, 100, NULL, 0);
    send_with(50, "m1", 2, NULL, 0);
    send_with(50, "m2", 2, sock52, 1);
    send_with(50, "m3", 2, NULL, 0);
    send_with(60, "self", 4, self60, 1);
    send_with(70, "hello", 5, file, 1);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 50; fd <= 72; ++fd) close(fd);
        close(30);
        test_sync_signal(&started);
        test_wait_check();
        pid_t parent = getppid();
        size_t at = 0;
        int fds[4];
        uint64_t count = 0;
        char got[16];
        if (test_corrupt(1)) read(31, got, 1);
        int want_pipe = test_corrupt(2) ? 42 : 41;
        if (next_message(31, 2000, 1000, 0, fds, pattern, &at) && next_message(31, 2000, 10, 2, fds, pattern, &at)) {
            CHECK(same_description(fds[0], parent, 40), "fd 31: the first fd received is not the parent's file");
            CHECK(same_description(fds[1], parent, want_pipe), "fd 31: the second fd received is not the parent's pipe");
            CHECK(lseek(fds[0], 0, SEEK_CUR) == 123, "fd 31: the file received is not at offset 123");
            CHECK(read(fds[1], got, sizeof got) == 9 && memcmp(got, "pipe-data", 9) == 0,
                  "fd 31: the pipe received does not hold what was written to it");
        }
        if (next_message(31, 2000, 500, 0, fds, pattern, &at) && next_message(31, 2000, 5, 1, fds, pattern, &at)) {
            CHECK(same_description(fds[0], parent, 43), "fd 31: the fd received is not the parent's eventfd");
            CHECK(read(fds[0], &count, sizeof count) == 8 && count == 77, "fd 31: the eventfd received does not count 77");
        }
        next_message(31, 2000, 100, 0, fds, pattern, &at);
        test_child_exit();
    }
    close(31);
    test_sync_wait(&started);

    test_ready();
    test_wait_check();

    char buf[64];
    int fds[4];
    size_t count;
    if (test_corrupt(3)) recv(51, buf, sizeof buf, 0);
    if (test_corrupt(4)) recv(71, buf, 2, 0);
    if (test_corrupt(5)) recv(61, buf, sizeof buf, 0);
    ssize_t n = recv_with(51, buf, sizeof buf, fds, &count);
    CHECK(n == 2 && memcmp(buf, "m1", 2) == 0 && count == 0, "seqpacket: not m1 without fds first");
    n = recv_with(51, buf, sizeof buf, fds, &count);
    if (n == 2 && memcmp(buf, "m2", 2) == 0 && count == 1) {
        CHECK(same_description(fds[0], getpid(), 52), "seqpacket: the fd received is not fd 52");
        CHECK(write(fds[0], "x", 1) == 1 && read(53, buf, 1) == 1 && buf[0] == 'x',
              "seqpacket: the socket received is not connected to fd 53");
    } else {
        test_fail("seqpacket: not m2 with one fd second (%zd bytes, %zu fds)", n, count);
    }
    n = recv_with(51, buf, sizeof buf, fds, &count);
    CHECK(n == 2 && memcmp(buf, "m3", 2) == 0 && count == 0, "seqpacket: not m3 without fds third");

    n = recv_with(61, buf, sizeof buf, fds, &count);
    CHECK(n == 4 && memcmp(buf, "self", 4) == 0 && count == 1 && same_description(fds[0], getpid(), 60),
          "datagram: not the message carrying fd 60 itself");

    n = recv_with(71, buf, sizeof buf, fds, &count);
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0 && count == 1 && same_description(fds[0], getpid(), 40),
          "accepted connection: not hello with the file");

    kill(child, SIGTERM); /* the child's check */
    test_expect_child_ok(child, "child");
    return test_finish();
}
