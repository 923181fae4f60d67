/* fd_unix_peercred: the peer credentials (SO_PEERCRED, SO_PEERPIDFD) of socketpairs, which the
 * kernel stamps on both ends from the process that called socketpair(): its pid, uid and gid.
 *   30 <-> 31  SOCK_STREAM     made by the root, which keeps both (the children send on 30)
 *   32 <-> 33  SOCK_DGRAM      made by the root, both ends stay in it
 *   34 <-> 35  SOCK_SEQPACKET  made by the root; 34 shared with child A
 *   36 <-> 37  SOCK_STREAM     made by child A, which keeps 36 and passes 37 to the root
 *                              (SCM_RIGHTS over 30 -> 31)
 *   38 <-> 39  SOCK_SEQPACKET  made by child B as user nobody (65534), which keeps 38 and
 *                              passes 39 to the root
 * Built with NAMED (program fd_unix_peercred_named), also connections between named sockets
 * (abstract names, so not in the modes that restore a copy beside the running original), whose
 * ends the kernel stamps with the
 * listen() caller (the listener and its clients) and the connect() caller (the accepted end):
 *   40         listening, made by the root; clients 41 (child A's) and 43 (child B's, as
 *              nobody) connected, accepted by the root as 42 and 44
 *   45         listening, made by child A, passed to the root; the root's client 46 connected,
 *              not accepted
 * Checked after restore, in the root and in each child, for every end it holds: SO_PEERCRED
 * gives the maker's pid (as this pid namespace sees it), uid and gid as before the dump,
 * SO_PEERGROUPS the maker's supplementary groups (child B has two of its own), and
 * SO_PEERPIDFD (Linux 6.5) a pidfd of that same living process. Runs as root (child B changes
 * user and groups). */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define NOBODY 65534

/* What the ends said before the dump, by fd (pid 0: not recorded). */
static struct ucred before[50];
#define MAX_GROUPS 64
static gid_t before_groups[50][MAX_GROUPS];
static int before_ngroups[50];
static const gid_t child_b_groups[] = {4242, 4343};

static struct ucred peercred(int fd) {
    struct ucred c = {0, (uid_t)-1, (gid_t)-1};
    socklen_t len = sizeof c;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) test_fail("fd %d: SO_PEERCRED: %s", fd, strerror(errno));
    return c;
}

/* SO_PEERGROUPS of fd into groups; their number. */
static int peergroups(int fd, gid_t* groups) {
    socklen_t len = MAX_GROUPS * sizeof(gid_t);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) test_fail("fd %d: SO_PEERGROUPS: %s", fd, strerror(errno));
    return (int)(len / sizeof(gid_t));
}

/* Remembers what fd says before the dump. */
static void remember(int fd) {
    before[fd] = peercred(fd);
    before_ngroups[fd] = peergroups(fd, before_groups[fd]);
}

/* Records what fd says, which must be its maker and the maker's ids. */
static void record(int fd, pid_t maker) {
    remember(fd);
    if (before[fd].pid != maker || before[fd].uid != geteuid() || before[fd].gid != getegid())
        test_fail("fd %d before the dump: SO_PEERCRED pid %d uid %d gid %d, expected %d, %d, %d", fd, (int)before[fd].pid,
                  (int)before[fd].uid, (int)before[fd].gid, (int)maker, (int)geteuid(), (int)getegid());
}

/* The pid SO_PEERPIDFD's pidfd names (0: the kernel has no SO_PEERPIDFD or PIDFD_GET_INFO). */
static long peer_pidfd_pid(int fd) {
    int pidfd = -1;
    socklen_t len = sizeof pidfd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
        if (errno == ENOPROTOOPT) return 0;
        return -errno;
    }
    long pid = test_pidfd_pid(pidfd);
    if (pid == -ENOTTY || pid == -EINVAL) pid = 0; /* no PIDFD_GET_INFO */
    if (pid > 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0 && errno != EPERM) pid = -errno;
    close(pidfd);
    return pid;
}

static void check(int fd, pid_t expect_pid) {
    struct ucred now = peercred(fd);
    CHECK(now.pid == before[fd].pid && now.uid == before[fd].uid && now.gid == before[fd].gid,
          "fd %d: SO_PEERCRED pid %d uid %d gid %d, before the dump pid %d uid %d gid %d", fd, (int)now.pid, (int)now.uid,
          (int)now.gid, (int)before[fd].pid, (int)before[fd].uid, (int)before[fd].gid);
    gid_t groups[MAX_GROUPS];
    int n = peergroups(fd, groups);
    CHECK(n == before_ngroups[fd] && memcmp(groups, before_groups[fd], (size_t)n * sizeof(gid_t)) == 0,
          "fd %d: SO_PEERGROUPS gives %d groups (first %d), before the dump %d (first %d)", fd, n, n ? (int)groups[0] : -1,
          before_ngroups[fd], before_ngroups[fd] ? (int)before_groups[fd][0] : -1);
    long p = peer_pidfd_pid(fd);
    CHECK(p == 0 || p == expect_pid, "fd %d: SO_PEERPIDFD names pid %ld, expected %d", fd, p, (int)expect_pid);
}

#ifdef NAMED
static socklen_t abstract_name(struct sockaddr_un* a, pid_t root, int n) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int len = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "ckpt-peercred-%d-%d", (int)root, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
}

/* A stream socket at fd at, bound to the root's abstract name n and listening. */
static void listen_at(int at, pid_t root, int n) {
    struct sockaddr_un a;
    socklen_t len = abstract_name(&a, root, n);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0 || dup2(s, at) != at || bind(at, (struct sockaddr*)&a, len) != 0 || listen(at, 8) != 0)
        test_fail("listening at %d: %s", at, strerror(errno));
    if (s != at) close(s);
}

/* A stream socket at fd at, connected to the root's abstract name n. */
static void connect_at(int at, pid_t root, int n) {
    struct sockaddr_un a;
    socklen_t len = abstract_name(&a, root, n);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0 || dup2(s, at) != at || connect(at, (struct sockaddr*)&a, len) != 0)
        test_fail("connecting %d: %s", at, strerror(errno));
    if (s != at) close(s);
}

static void accept_at(int listener, int at) {
    int s = accept(listener, NULL, NULL);
    if (s < 0 || dup2(s, at) != at) test_fail("accept on %d: %s", listener, strerror(errno));
    if (s != at) close(s);
}

#endif

static void recv_fd_at(int sock, int at) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
    if (recvmsg(sock, &mh, 0) != 1) test_fail("recvmsg(SCM_RIGHTS): %s", strerror(errno));
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    int fd = -1;
    if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    if (fd < 0 || dup2(fd, at) != at) test_fail("no fd received for %d", at);
    close(fd);
}

/* Child A: makes 36 <-> 37, keeps 36, passes 37 to the root. */
static void child_a(pid_t root) {
    for (int fd = 31; fd <= 33; ++fd) close(fd);
    close(35);
    test_socketpair_at(SOCK_STREAM, 36, 37);
    record(36, getpid());
    test_send_fd(30, 37);
    close(37);
#ifdef NAMED
    close(40);
    connect_at(41, root, 1);
    record(41, root);
    listen_at(45, root, 2);
    record(45, getpid());
    test_send_fd(30, 45);
    close(45);
#endif
    close(30);
    test_wait_check();
    check(34, root);
    check(36, getpid());
#ifdef NAMED
    check(41, root);
#endif
    test_child_exit();
}

/* Child B: becomes nobody, makes 38 <-> 39, keeps 38, passes 39 to the root. */
static void child_b(pid_t root) {
    for (int fd = 31; fd <= 35; ++fd) close(fd);
    if (setgroups(2, child_b_groups) != 0 || setresgid(NOBODY, NOBODY, NOBODY) != 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) != 0)
        test_fail("becoming nobody: %s", strerror(errno));
    test_socketpair_at(SOCK_SEQPACKET, 38, 39);
    record(38, getpid());
    test_send_fd(30, 39);
    close(39);
#ifdef NAMED
    close(40);
    close(45);
    connect_at(43, root, 1);
    remember(43);
    CHECK(before[43].pid == root && before[43].uid == 0, "fd 43 before the dump: SO_PEERCRED pid %d uid %d, expected the root %d",
          (int)before[43].pid, (int)before[43].uid, (int)root);
#else
    (void)root;
#endif
    close(30);
    test_wait_check();
    check(38, getpid());
#ifdef NAMED
    check(43, root);
#endif
    test_child_exit();
}

int main(int argc, char** argv) {
#ifdef NAMED
#define GROUPS_CORRUPT 5
#else
#define GROUPS_CORRUPT 4
#endif
    test_init(argc, argv, GROUPS_CORRUPT);
    signal(SIGPIPE, SIG_IGN);
    pid_t me = getpid();
    test_socketpair_at(SOCK_STREAM, 30, 31);
    test_socketpair_at(SOCK_DGRAM, 32, 33);
    test_socketpair_at(SOCK_SEQPACKET, 34, 35);
    for (int fd = 30; fd <= 35; ++fd) record(fd, me);
#ifdef NAMED
    listen_at(40, me, 1);
    record(40, me);
#endif

    pid_t a = fork();
    if (a == 0) child_a(me);
    recv_fd_at(31, 37);
#ifdef NAMED
    recv_fd_at(31, 45);
    remember(45);
    accept_at(40, 42);
    remember(42);
    CHECK(before[42].pid == a && before[45].pid == a, "fds 42, 45 before the dump: SO_PEERCRED pids %d, %d, expected child A %d",
          (int)before[42].pid, (int)before[45].pid, (int)a);
    connect_at(46, me, 2);
    remember(46);
    CHECK(before[46].pid == a, "fd 46 before the dump: SO_PEERCRED pid %d, expected child A %d", (int)before[46].pid, (int)a);
#endif
    remember(37);
    CHECK(before[37].pid == a, "fd 37 before the dump: SO_PEERCRED pid %d, expected child A %d", (int)before[37].pid, (int)a);
    pid_t b = fork();
    if (b == 0) child_b(me);
    recv_fd_at(31, 39);
#ifdef NAMED
    accept_at(40, 44);
    remember(44);
    CHECK(before[44].pid == b && before[44].uid == NOBODY, "fd 44 before the dump: SO_PEERCRED pid %d uid %d, expected child B %d as nobody",
          (int)before[44].pid, (int)before[44].uid, (int)b);
#endif
    remember(39);
    CHECK(before_ngroups[39] == 2 && before_groups[39][0] == child_b_groups[0] && before_groups[39][1] == child_b_groups[1],
          "fd 39 before the dump: SO_PEERGROUPS gives %d groups, expected child B's 2", before_ngroups[39]);
    CHECK(before[39].pid == b && before[39].uid == NOBODY && before[39].gid == NOBODY,
          "fd 39 before the dump: SO_PEERCRED pid %d uid %d gid %d, expected child B %d as nobody", (int)before[39].pid,
          (int)before[39].uid, (int)before[39].gid, (int)b);
    close(34);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) {
        /* 37 replaced by an end the root made. */
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
            dup2(sv[0], 37);
            close(sv[0]);
            close(sv[1]);
        }
    }
    if (test_corrupt(2)) before[39].uid = 0;
    if (test_corrupt(GROUPS_CORRUPT)) before_groups[39][1] = 4444;
#ifdef NAMED
    if (test_corrupt(4)) before[42].pid = me;
#endif
    pid_t expect_33 = test_corrupt(3) ? a : me;
    check(30, me);
    check(31, me);
    check(32, me);
    check(33, expect_33);
    check(35, me);
    check(37, a);
    check(39, b);
#ifdef NAMED
    check(40, me);
    check(42, a);
    check(44, b);
    check(45, a);
    check(46, a);
#endif

    kill(a, SIGTERM);
    kill(b, SIGTERM);
    test_expect_child_ok(a, "child A");
    test_expect_child_ok(b, "child B");
    return test_finish();
}
