/* Established TCP connections across a dump and restore (dump and restore --tcp-established,
 * run_engine_test.py --peer tcp_peer): every byte of every stream checked in both directions
 * (tcp_stream.h).
 *   fd 20  AF_INET to the peer outside the tree (CKPT_TEST_PEER_PORT), TCP_NODELAY and
 *          keepalive with its own idle time
 *   fd 21  AF_INET6 to the same peer through a v4-mapped address (::ffff:127.0.0.1), with a
 *          socket filter of its own taking every segment whole (the dump's holds them meanwhile)
 *   fd 22  AF_INET loopback connection, both ends in the tree: the other end is the child's
 *   fd 23  AF_INET6 [::1] connection to the child, O_NONBLOCK
 * The child echoes fds 22 and 23 (as the peer does 20 and 21). Before ready, each echoed
 * connection has carried S1 bytes each way, then S2 more were sent and their whole answer
 * is left unread in the receive queue; nothing is in flight on any connection (both ends'
 * send queues acknowledged, /proc/net/tcp*), so the peer has nothing to send while the tree
 * is away. After restore: the same addresses and options, exactly S2 bytes queued and right,
 * S3 more each way, a clean end of stream; fd 21's filter as it was. The peer itself fails the test on a reset or any
 * wrong byte. (A send queue holding bytes never sent, behind a closed window, is refused by
 * the dump: not tested here.) */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#include "tcp_stream.h"
#include "testlib.h"

#define S1 200000
#define S2 30000
#define S3 100000
#define KEEPIDLE 3333

static int ioctl_int(int fd, unsigned long req) {
    int v = -1;
    if (ioctl(fd, req, &v) != 0) return -1;
    return v;
}

static int connect_to(int family, const char* addr, int port) {
    int s = stream_connect(family, addr, port);
    if (s < 0) {
        test_fail("connect to %s port %d: %s", addr, port, strerror(errno));
        exit(test_finish());
    }
    return s;
}

/* A connection over loopback: *mine connected to *other, accepted from a listener closed at once. */
static void loopback_pair(int family, const char* addr, int* mine, int* other) {
    int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss = {0};
    socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    ss.ss_family = (sa_family_t)family;
    if (family == AF_INET) inet_pton(AF_INET, addr, &((struct sockaddr_in*)&ss)->sin_addr);
    else inet_pton(AF_INET6, addr, &((struct sockaddr_in6*)&ss)->sin6_addr);
    if (l < 0 || bind(l, (struct sockaddr*)&ss, len) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr*)&ss, &len) != 0) {
        test_fail("listen on %s: %s", addr, strerror(errno));
        exit(test_finish());
    }
    int port = ntohs(family == AF_INET ? ((struct sockaddr_in*)&ss)->sin_port : ((struct sockaddr_in6*)&ss)->sin6_port);
    *mine = connect_to(family, addr, port);
    *other = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (*other < 0) test_fail("accept: %s", strerror(errno));
    close(l);
}

static void place(int fd, int at) {
    if (dup3(fd, at, O_CLOEXEC) != at) test_fail("dup3 to %d: %s", at, strerror(errno));
    close(fd);
}

static void stream_failed(stream_t* s, const char* what) { test_fail("%s: %s", what, s->error[0] ? s->error : "?"); }

/* Sends n more bytes and receives every answer not received yet, all checked. */
static void exchange(stream_t* s, uint64_t n, const char* what) {
    uint64_t to_send = s->sent + n, to_recv = to_send;
    while (s->sent < to_send || s->recvd < to_recv) {
        struct pollfd p = {s->fd, (short)(POLLIN | (s->sent < to_send ? POLLOUT : 0)), 0};
        if (poll(&p, 1, 30000) != 1) {
            test_fail("%s: no progress for 30 s (%llu sent, %llu received)", what, (unsigned long long)s->sent,
                      (unsigned long long)s->recvd);
            return;
        }
        if (s->sent < to_send && stream_send(s, to_send - s->sent, MSG_DONTWAIT) < 0) return stream_failed(s, what);
        ssize_t r = stream_recv(s, to_recv - s->recvd, MSG_DONTWAIT);
        if (r == 0) return test_fail("%s: end of stream after %llu bytes", what, (unsigned long long)s->recvd);
        if (r == -1) return stream_failed(s, what);
    }
}

/* The tx_queue /proc/net/tcp* shows for the established socket from port `from` to port `to`
 * (-1 when there is none). */
static long other_tx_queue(int from, int to) {
    static char text[1 << 20];
    const char* files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (int f = 0; f < 2; ++f) {
        if (test_read_text(files[f], text, sizeof text) < 0) continue;
        for (char* line = strchr(text, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
            char local[64], remote[64];
            unsigned st;
            unsigned long tx;
            if (sscanf(line + 1, "%*d: %63s %63s %x %lx", local, remote, &st, &tx) != 4) continue;
            char* lp = strrchr(local, ':');
            char* rp = strrchr(remote, ':');
            if (st == 1 && lp && rp && strtol(lp + 1, NULL, 16) == from && strtol(rp + 1, NULL, 16) == to) return (long)tx;
        }
    }
    return -1;
}

/* Until exactly `inq` bytes wait to be read and nothing is in flight either way. */
static void wait_quiet(stream_t* s, int inq, const char* what) {
    int local = stream_port(s->fd, 0), peer = stream_port(s->fd, 1);
    for (int i = 0; i < 30000; ++i) {
        if (ioctl_int(s->fd, FIONREAD) == inq && ioctl_int(s->fd, SIOCOUTQ) == 0 && other_tx_queue(peer, local) == 0) return;
        usleep(1000);
    }
    test_fail("%s: not quiet after 30 s (%d queued, %d unacknowledged, peer's %ld)", what, ioctl_int(s->fd, FIONREAD),
              ioctl_int(s->fd, SIOCOUTQ), other_tx_queue(peer, local));
}

/* The child: echoes fds 22 and 23 until both end. */
static void child(void) {
    stream_t s[2];
    uint64_t pending[2] = {0, 0};
    int open[2] = {1, 1};
    for (int i = 0; i < 2; ++i)
        if (stream_init(&s[i], 22 + i) != 0) stream_failed(&s[i], "child");
    while (open[0] || open[1]) {
        struct pollfd p[2];
        for (int i = 0; i < 2; ++i) p[i] = (struct pollfd){open[i] ? s[i].fd : -1, (short)(POLLIN | (pending[i] ? POLLOUT : 0)), 0};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            test_fail("child: poll: %s", strerror(errno));
            test_child_exit();
        }
        for (int i = 0; i < 2; ++i) {
            if (!open[i] || !p[i].revents) continue;
            ssize_t r = stream_recv(&s[i], 16384, MSG_DONTWAIT);
            if (r > 0) pending[i] += (uint64_t)r;
            if (r == 0) {
                if (pending[i]) test_fail("child: fd %d ended with %llu bytes unanswered", s[i].fd, (unsigned long long)pending[i]);
                open[i] = 0;
                close(s[i].fd); /* the end of the parent's stream */
            }
            if (r == -1) {
                stream_failed(&s[i], "child");
                open[i] = 0;
                close(s[i].fd);
            }
            while (open[i] && pending[i]) {
                ssize_t w = stream_send(&s[i], pending[i], MSG_DONTWAIT);
                if (w < 0) {
                    stream_failed(&s[i], "child");
                    open[i] = 0;
                    close(s[i].fd);
                }
                if (w <= 0) break;
                pending[i] -= (uint64_t)w;
            }
        }
    }
    test_child_exit();
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    const char* port_text = getenv("CKPT_TEST_PEER_PORT");
    if (!port_text) {
        test_fail("CKPT_TEST_PEER_PORT is not set (run with run_engine_test.py --peer)");
        return test_finish();
    }
    int port = atoi(port_text);
    signal(SIGPIPE, SIG_IGN);

    place(connect_to(AF_INET, "127.0.0.1", port), 20);
    place(connect_to(AF_INET6, "::ffff:127.0.0.1", port), 21);
    int one = 1, idle = KEEPIDLE;
    if (setsockopt(20, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(20, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 ||
        setsockopt(20, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0)
        test_fail("setsockopt: %s", strerror(errno));
    struct sock_filter whole[2] = {BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_RET | BPF_A, 0)};
    test_attach_filter(21, whole, 2);
    int theirs[2], mine;
    loopback_pair(AF_INET, "127.0.0.1", &mine, &theirs[0]);
    place(mine, 22);
    loopback_pair(AF_INET6, "::1", &mine, &theirs[1]);
    place(mine, 23);
    if (fcntl(23, F_SETFL, O_NONBLOCK) != 0) test_fail("fcntl: %s", strerror(errno));

    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 20; i <= 23; ++i) close(i);
        for (int i = 0; i < 2; ++i) place(theirs[i], 22 + i);
        child();
    }
    for (int i = 0; i < 2; ++i) close(theirs[i]);

    stream_t s[4];
    const char* names[4] = {"fd 20 (to the peer)", "fd 21 (to the peer, v4-mapped)", "fd 22 (to the child)",
                            "fd 23 (to the child, IPv6)"};
    uint32_t seeds[4][2];
    for (int i = 0; i < 4; ++i) {
        if (stream_init(&s[i], 20 + i) != 0) stream_failed(&s[i], names[i]);
        seeds[i][0] = s[i].out_seed;
        seeds[i][1] = s[i].in_seed;
        exchange(&s[i], S1, names[i]);
    }
    for (int i = 0; i < 4; ++i) {
        uint64_t to = s[i].sent + S2;
        while (s[i].sent < to)
            if (stream_send(&s[i], to - s[i].sent, 0) < 0) {
                stream_failed(&s[i], names[i]);
                break;
            }
    }
    for (int i = 0; i < 4; ++i) wait_quiet(&s[i], S2, names[i]);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) {
        char c;
        recv(20, &c, 1, MSG_DONTWAIT); /* a byte lost */
    }
    if (test_corrupt(2)) {
        int zero = 0;
        setsockopt(20, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero);
    }
    if (test_corrupt(3)) s[1].in_seed ^= 1; /* expects another stream */
    if (test_corrupt(4)) fcntl(23, F_SETFL, 0);
    if (test_corrupt(5)) test_detach_filter(21);
    CHECK(test_filter_is(21, whole, 2), "fd 21: not its socket filter");

    int v = 0;
    socklen_t l = sizeof v;
    CHECK(getsockopt(20, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v == 1, "fd 20: TCP_NODELAY %d", v);
    CHECK(getsockopt(20, SOL_SOCKET, SO_KEEPALIVE, &v, &l) == 0 && v == 1, "fd 20: SO_KEEPALIVE %d", v);
    CHECK(getsockopt(20, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l) == 0 && v == KEEPIDLE, "fd 20: TCP_KEEPIDLE %d", v);
    CHECK(fcntl(23, F_GETFL) & O_NONBLOCK, "fd 23: O_NONBLOCK lost");
    for (int i = 0; i < 4; ++i) {
        stream_t now;
        if (stream_init(&now, 20 + i) != 0) stream_failed(&now, names[i]);
        CHECK(now.out_seed == seeds[i][0] && now.in_seed == seeds[i][1], "%s: addresses changed (ports %u, %u)", names[i],
              now.out_seed >> 16, now.out_seed & 0xffff);
        int queued = ioctl_int(s[i].fd, FIONREAD);
        CHECK(queued == (int)(s[i].sent - s[i].recvd), "%s: %d bytes queued, %llu expected",
              names[i], queued, (unsigned long long)(s[i].sent - s[i].recvd));
        exchange(&s[i], S3, names[i]);
        if (shutdown(s[i].fd, SHUT_WR) != 0) test_fail("%s: shutdown: %s", names[i], strerror(errno));
        char c;
        struct pollfd p = {s[i].fd, POLLIN, 0};
        poll(&p, 1, 30000); /* fd 23 does not block */
        ssize_t r = recv(s[i].fd, &c, 1, MSG_DONTWAIT);
        CHECK(r == 0, "%s: no end of stream after the last answer (%zd: %s)", names[i], r, r < 0 ? strerror(errno) : "data");
        close(s[i].fd);
    }
    test_expect_child_ok(pid, "child");
    return test_finish();
}
