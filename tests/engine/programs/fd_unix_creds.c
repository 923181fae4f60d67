/* fd_unix_creds: messages queued with their senders' credentials (SCM_CREDENTIALS) for AF_UNIX
 * receivers with SO_PASSCRED, on socketpairs of the three types: the receiving ends 31
 * (SOCK_STREAM), 33 (SOCK_DGRAM) and 35 (SOCK_SEQPACKET) in the root, the sending ends 30, 32,
 * 34 shared with a child. Queued on each, in this order:
 *   "n1"         by the root before the receiver set SO_PASSCRED: no credentials (read as
 *                pid 0 with the overflow uid and gid)
 *   "p1", "p2"   by the root (its pid, uid, gid)
 *   "c1", "c2"   by the child, alive, as uid 1234 gid 4321 (setresuid; run as root) or as the
 *                root's ids otherwise
 *   "p3"         by the root
 * A stream's read stops where the credentials change (the kernel never joins bytes of
 * different senders): a read of 100 bytes gets "n1", "p1p2", "c1c2", "p3" in turn; a datagram
 * or seqpacket read each message. Checked after restore: every read's bytes, pid (the child's
 * as fork gave it, the root's getpid), uid and gid; SO_PASSCRED on 31, 33, 35 and on 37, the
 * receiving end of a stream pair 36 <-> 37 with nothing queued. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"

struct expected {
    const char* data;
    pid_t pid;  /* 0: none */
    uid_t uid;
    gid_t gid;
};

static void send_all(const char* m) {
    for (int fd = 30; fd <= 34; fd += 2)
        if (send(fd, m, strlen(m), 0) != (ssize_t)strlen(m)) test_fail("send on fd %d: %s", fd, strerror(errno));
}

static void passcred(int fd, int on) {
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) test_fail("SO_PASSCRED on %d: %s", fd, strerror(errno));
}

static int has_passcred(int fd) {
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, &len) == 0 && on;
}

static unsigned overflow_id(const char* name) {
    char path[64], text[32];
    snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
    if (test_read_text(path, text, sizeof text) <= 0) test_fail("%s: %s", path, strerror(errno));
    return (unsigned)atoi(text);
}

/* Reads the next message (up to 100 bytes, waiting up to 3 s) from fd and checks it. */
static void expect_next(int fd, const struct expected* e) {
    char buf[100];
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } control;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 3000) != 1) {
        test_fail("fd %d: nothing to read where '%s' was queued", fd, e->data);
        return;
    }
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
    struct cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS) {
        test_fail("fd %d: a read of %zd bytes without credentials where '%s' was queued", fd, n, e->data);
        return;
    }
    struct ucred u;
    memcpy(&u, CMSG_DATA(c), sizeof u);
    size_t want = strlen(e->data);
    CHECK((size_t)n == want && memcmp(buf, e->data, want) == 0, "fd %d: read '%.*s', expected '%s'", fd, (int)(n > 0 ? n : 0),
          buf, e->data);
    CHECK(u.pid == e->pid && u.uid == e->uid && u.gid == e->gid,
          "fd %d: '%s' with pid %d uid %u gid %u, expected pid %d uid %u gid %u", fd, e->data, (int)u.pid, (unsigned)u.uid,
          (unsigned)u.gid, (int)e->pid, (unsigned)e->uid, (unsigned)e->gid);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    signal(SIGPIPE, SIG_IGN);
    test_socketpair_at(SOCK_STREAM, 30, 31);
    test_socketpair_at(SOCK_DGRAM, 32, 33);
    test_socketpair_at(SOCK_SEQPACKET, 34, 35);
    test_socketpair_at(SOCK_STREAM, 36, 37);
    passcred(37, 1);

    send_all("n1");
    for (int fd = 31; fd <= 35; fd += 2) passcred(fd, 1);
    send_all("p1");
    send_all("p2");

    uid_t cuid = getuid();
    gid_t cgid = getgid();
    if (geteuid() == 0) {
        cuid = 1234;
        cgid = 4321;
    }
    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 31; fd <= 37; fd += 2) close(fd);
        close(36);
        if (geteuid() == 0 && (setresgid(cgid, cgid, cgid) != 0 || setresuid(cuid, cuid, cuid) != 0))
            test_fail("setresuid: %s", strerror(errno));
        send_all("c1");
        send_all("c2");
        test_sync_signal(&started);
        test_wait_check();
        test_child_exit();
    }
    test_sync_wait(&started);
    send_all("p3");

    test_ready();
    test_wait_check();

    pid_t me = getpid();
    uid_t ouid = overflow_id("overflowuid");
    gid_t ogid = overflow_id("overflowgid");
    char buf[100];
    if (test_corrupt(1)) recv(31, buf, 2, 0);
    if (test_corrupt(2)) recv(33, buf, sizeof buf, 0);
    if (test_corrupt(3)) recv(35, buf, sizeof buf, 0);
    if (test_corrupt(4)) {
        /* The same bytes again, all the root's now. */
        for (int i = 0; i < 6; ++i) {
            ssize_t n = recv(35, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) send(34, buf, (size_t)n, 0);
        }
    }
    if (test_corrupt(5)) passcred(37, 0);

    struct expected stream[] = {{"n1", 0, ouid, ogid},
                                {"p1p2", me, getuid(), getgid()},
                                {"c1c2", child, cuid, cgid},
                                {"p3", me, getuid(), getgid()}};
    struct expected messages[] = {{"n1", 0, ouid, ogid},         {"p1", me, getuid(), getgid()},
                                  {"p2", me, getuid(), getgid()}, {"c1", child, cuid, cgid},
                                  {"c2", child, cuid, cgid},      {"p3", me, getuid(), getgid()}};
    for (size_t i = 0; i < sizeof stream / sizeof *stream; ++i) expect_next(31, &stream[i]);
    for (int fd = 33; fd <= 35; fd += 2)
        for (size_t i = 0; i < sizeof messages / sizeof *messages; ++i) expect_next(fd, &messages[i]);
    for (int fd = 31; fd <= 37; fd += 2) {
        CHECK(has_passcred(fd), "fd %d: SO_PASSCRED lost", fd);
        CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd %d: more queued than was sent", fd);
    }

    kill(child, SIGTERM); /* the child's check */
    test_expect_child_ok(child, "child");
    return test_finish();
}
