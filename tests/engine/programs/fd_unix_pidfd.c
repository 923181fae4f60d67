/* fd_unix_pidfd: AF_UNIX receivers with SO_PASSPIDFD (Linux 6.5) and messages queued for them,
 * on socketpairs of the three types: the receiving ends 31 (SOCK_STREAM), 33 (SOCK_DGRAM) and
 * 35 (SOCK_SEQPACKET) in the root, the sending ends 30, 32, 34 shared with a child. Queued on
 * each, in this order:
 *   "n1"   by the root before the receiver set SO_PASSPIDFD: read with no pidfd
 *   "p1"   by the root: read with a pidfd of the root
 *   "c1"   by the child (alive): read with a pidfd of the child
 *   "p2"   by the root
 * (a stream's read stops where the sender changes: 100 bytes read each of them in turn). Checked
 * after restore: every read's bytes and pidfd (PIDFD_GET_INFO's pid, as this process's pid
 * namespace sees it: getpid() of the root, the child's pid as fork gave it; a signal 0 through
 * it reaches a live process); SO_PASSPIDFD still on 31, 33, 35 and on 37 (a stream pair 36 <->
 * 37 with nothing queued), still off on 30; SO_PASSSEC still on 36; SO_PASSCRED still off on 31
 * (the dump's peek turns it on for a while).
 * Built with NAMED_DGRAM (program fd_unix_pidfd_named), also a datagram socket 38 bound to an
 * abstract name with SO_PASSPIDFD, and queued for it "n1" from the root's unnamed socket 39
 * before the option was set, then "p1" from 39 and "c1" from the child's copy of 39. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

static void set_opt(int fd, int name, int on) {
    if (setsockopt(fd, SOL_SOCKET, name, &on, sizeof on) != 0) test_fail("setsockopt(%d) on %d: %s", name, fd, strerror(errno));
}

static int get_opt(int fd, int name) {
    int on = -1;
    socklen_t len = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, name, &on, &len) != 0) return -1;
    return on;
}

static void send_all(const char* m) {
    for (int fd = 30; fd <= 34; fd += 2)
        if (send(fd, m, strlen(m), 0) != (ssize_t)strlen(m)) test_fail("send on fd %d: %s", fd, strerror(errno));
}

/* Reads the next message (up to 100 bytes, waiting up to 3 s) from fd: its bytes are data, its
 * pidfd names pid (0: no pidfd). */
static void expect_next(int fd, const char* data, pid_t pid) {
    char buf[100];
    union {
        char buf[CMSG_SPACE(sizeof(int)) + 64];
        struct cmsghdr align;
    } control;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 3000) != 1) {
        test_fail("fd %d: nothing to read where '%s' was queued", fd, data);
        return;
    }
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    size_t want = strlen(data);
    CHECK(n > 0 && (size_t)n == want && memcmp(buf, data, want) == 0, "fd %d: read '%.*s', expected '%s'", fd,
          (int)(n > 0 ? n : 0), buf, data);
    int pidfd = -1, others = 0;
    for (struct cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_PIDFD && pidfd < 0)
            memcpy(&pidfd, CMSG_DATA(c), sizeof pidfd);
        else
            ++others;
    }
    CHECK(others == 0 && !(mh.msg_flags & MSG_CTRUNC), "fd %d: '%s' with other ancillary data", fd, data);
    if (pid == 0) {
        CHECK(pidfd < 0, "fd %d: '%s' with a pidfd (of pid %ld), expected none", fd, data, pidfd >= 0 ? test_pidfd_pid(pidfd) : 0L);
    } else if (pidfd < 0) {
        test_fail("fd %d: '%s' without a pidfd, expected one of pid %d", fd, data, (int)pid);
    } else {
        long got = test_pidfd_pid(pidfd);
        CHECK(got == pid, "fd %d: '%s' with a pidfd of pid %ld, expected %d", fd, data, got, (int)pid);
        CHECK(syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0, "fd %d: '%s': its pidfd reaches no process: %s", fd,
              data, strerror(errno));
    }
    if (pidfd >= 0) close(pidfd);
}

#ifdef NAMED_DGRAM
static socklen_t abstract_name(struct sockaddr_un* a, pid_t pid) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "ckpt-pidfd-%d", (int)pid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}
#endif

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
    set_opt(37, SO_PASSPIDFD, 1);
    set_opt(36, SO_PASSSEC, 1);

    send_all("n1");
    for (int fd = 31; fd <= 35; fd += 2) set_opt(fd, SO_PASSPIDFD, 1);
    send_all("p1");
#ifdef NAMED_DGRAM
    struct sockaddr_un rname;
    socklen_t rlen = abstract_name(&rname, getpid());
    for (int fd = 38; fd <= 39; ++fd) {
        int s = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (s < 0 || dup2(s, fd) != fd) test_fail("socket: %s", strerror(errno));
        close(s);
    }
    if (bind(38, (struct sockaddr*)&rname, rlen) != 0) test_fail("bind: %s", strerror(errno));
    if (sendto(39, "n1", 2, 0, (struct sockaddr*)&rname, rlen) != 2) test_fail("sendto: %s", strerror(errno));
    set_opt(38, SO_PASSPIDFD, 1);
    if (sendto(39, "p1", 2, 0, (struct sockaddr*)&rname, rlen) != 2) test_fail("sendto: %s", strerror(errno));
#endif

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        for (int fd = 31; fd <= 37; fd += 2) close(fd);
        close(36);
        send_all("c1");
#ifdef NAMED_DGRAM
        close(38);
        if (sendto(39, "c1", 2, 0, (struct sockaddr*)&rname, rlen) != 2) test_fail("sendto: %s", strerror(errno));
#endif
        test_sync_signal(&started);
        test_wait_check();
        test_child_exit();
    }
    test_sync_wait(&started);
    send_all("p2");

    test_ready();
    test_wait_check();

    pid_t me = getpid();
    char buf[100];
    if (test_corrupt(1)) recv(31, buf, 2, 0);
    if (test_corrupt(2)) set_opt(33, SO_PASSPIDFD, 0);
    if (test_corrupt(3)) {
        /* The same bytes again, all the root's now. */
        for (int i = 0; i < 4; ++i) {
            ssize_t n = recv(35, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) send(34, buf, (size_t)n, 0);
        }
    }
    if (test_corrupt(4)) set_opt(36, SO_PASSSEC, 0);
    if (test_corrupt(5)) set_opt(31, SO_PASSCRED, 1);

    const char* data[] = {"n1", "p1", "c1", "p2"};
    pid_t from[] = {0, me, child, me};
    for (int fd = 31; fd <= 35; fd += 2)
        for (size_t i = 0; i < 4; ++i) expect_next(fd, data[i], from[i]);
    for (int fd = 31; fd <= 37; fd += 2) {
        CHECK(get_opt(fd, SO_PASSPIDFD) == 1, "fd %d: SO_PASSPIDFD lost", fd);
        CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd %d: more queued than was sent", fd);
    }
    CHECK(get_opt(30, SO_PASSPIDFD) == 0, "fd 30: SO_PASSPIDFD set");
    CHECK(get_opt(36, SO_PASSSEC) == 1, "fd 36: SO_PASSSEC lost");
    CHECK(get_opt(31, SO_PASSCRED) == 0, "fd 31: SO_PASSCRED set");
#ifdef NAMED_DGRAM
    if (test_corrupt(6)) set_opt(38, SO_PASSPIDFD, 0);
    expect_next(38, "n1", 0);
    expect_next(38, "p1", me);
    expect_next(38, "c1", child);
    CHECK(get_opt(38, SO_PASSPIDFD) == 1, "fd 38: SO_PASSPIDFD lost");
#endif

    kill(child, SIGTERM); /* the child's check */
    test_expect_child_ok(child, "child");
    return test_finish();
}
