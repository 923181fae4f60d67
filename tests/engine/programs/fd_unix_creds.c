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
 * receiving end of a stream pair 36 <-> 37 with nothing queued.
 * Built with NAMED_DGRAM (program fd_unix_creds_named), also a datagram socket 38 bound to an
 * abstract name, with SO_PASSCRED set after "n1" from the root's unnamed socket 39 and "n2" from
 * 40 (bound to an abstract name of its own) were queued (both without credentials), then "p1"
 * from 39, "c1" from the child's copy of 40 (which has SO_PASSCRED too since "n2"); then 38 is
 * connected to 40. Checked: the four with their senders' credentials and names, 38 still
 * connected to 40, SO_PASSCRED on 38 and 40. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
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

#ifdef NAMED_DGRAM
/* An abstract name of this run: its address and length. */
static socklen_t abstract_name(struct sockaddr_un* a, const char* what, pid_t pid) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "ckpt-creds-%s-%d", what, (int)pid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}
#endif

/* The sender address of the last expect_next (named datagrams). */
static struct sockaddr_un last_from;
static socklen_t last_from_len;

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
    memset(&last_from, 0, sizeof last_from);
    mh.msg_name = &last_from;
    mh.msg_namelen = sizeof last_from;
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
    last_from_len = mh.msg_namelen;
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
#ifdef NAMED_DGRAM
    test_init(argc, argv, 6);
#else
    test_init(argc, argv, 5);
#endif
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
#ifdef NAMED_DGRAM
    struct sockaddr_un rname, sname;
    socklen_t rlen = abstract_name(&rname, "r", getpid()), slen = abstract_name(&sname, "s", getpid());
    for (int fd = 38; fd <= 40; ++fd) {
        int s = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (s < 0 || dup2(s, fd) != fd) test_fail("socket: %s", strerror(errno));
        close(s);
    }
    if (bind(38, (struct sockaddr*)&rname, rlen) != 0 || bind(40, (struct sockaddr*)&sname, slen) != 0)
        test_fail("bind: %s", strerror(errno));
    if (sendto(39, "n1", 2, 0, (struct sockaddr*)&rname, rlen) != 2 || sendto(40, "n2", 2, 0, (struct sockaddr*)&rname, rlen) != 2)
        test_fail("sendto: %s", strerror(errno));
    passcred(38, 1);
    passcred(40, 1);
    if (sendto(39, "p1", 2, 0, (struct sockaddr*)&rname, rlen) != 2) test_fail("sendto: %s", strerror(errno));
#endif

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
#ifdef NAMED_DGRAM
        if (sendto(40, "c1", 2, 0, (struct sockaddr*)&rname, rlen) != 2) test_fail("sendto: %s", strerror(errno));
#endif
        test_sync_signal(&started);
        test_wait_check();
        test_child_exit();
    }
    test_sync_wait(&started);
    send_all("p3");
#ifdef NAMED_DGRAM
    if (connect(38, (struct sockaddr*)&sname, slen) != 0) test_fail("connect: %s", strerror(errno));
#endif

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
#ifdef NAMED_DGRAM
    if (test_corrupt(6)) recv(38, buf, sizeof buf, 0);
    struct expected named[] = {{"n1", 0, ouid, ogid},
                               {"n2", 0, ouid, ogid},
                               {"p1", me, getuid(), getgid()},
                               {"c1", child, cuid, cgid}};
    for (size_t i = 0; i < sizeof named / sizeof *named; ++i) {
        expect_next(38, &named[i]);
        int from40 = last_from_len == slen && memcmp(&last_from, &sname, slen) == 0;
        CHECK(from40 == (i == 1 || i == 3), "fd 38: '%s' from the wrong sender", named[i].data);
    }
    struct sockaddr_un peer;
    socklen_t plen = sizeof peer;
    CHECK(getpeername(38, (struct sockaddr*)&peer, &plen) == 0 && plen == slen && memcmp(&peer, &sname, slen) == 0,
          "fd 38: not connected to fd 40's name");
    CHECK(has_passcred(38) && has_passcred(40), "fd 38 or 40: SO_PASSCRED lost");
    CHECK(recv(38, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd 38: more queued than was sent");
#endif

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
