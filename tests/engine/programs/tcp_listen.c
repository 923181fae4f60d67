/* Listening TCP sockets across a dump and restore:
 *   fd 20  AF_INET on 127.0.0.1, backlog 7, O_NONBLOCK, SO_REUSEADDR, TCP_NODELAY, SO_KEEPALIVE
 *          with keepalive idle 77, interval 13, count 5, SO_RCVBUF; fd 25 a dup of it
 *   fd 21  AF_INET6 on [::1], IPV6_V6ONLY, SO_REUSEPORT, SO_LINGER 9 s, SO_SNDBUF, backlog 3, a
 *          socket filter taking every segment whole, locked (SO_LOCK_FILTER)
 *   fd 22  AF_INET6 on [::] taking IPv4 too (IPV6_V6ONLY off), IP_FREEBIND, backlog 5; a
 *          connection it accepted and closed first left one in TIME_WAIT on its port (which a
 *          listener without SO_REUSEADDR cannot be bound beside: the restore ends it)
 *   fd 23  AF_INET, never bound nor connected, with TCP_CORK, SO_PRIORITY 3, SO_RCVLOWAT 9,
 *          IP_TOS 0x20, the "reno" congestion control
 *   fd 24  AF_INET6 bound to [::1] (a port of the kernel's choosing), not listening, SO_REUSEADDR,
 *          SO_BINDTODEVICE lo
 * and on the listeners SO_PRIORITY, IP_TOS, TCP_DEFER_ACCEPT, TCP_USER_TIMEOUT (fd 20),
 * SO_OOBINLINE (fd 21).
 * After restore: the same addresses, options, filter, backlog (TCP_INFO), flags, one description for
 * fds 20 and 25 (kcmp); each accepts a new connection (fd 22 one from 127.0.0.1, v4-mapped),
 * whose byte arrives and whose peer address is the connecting socket's; fd 23 connects to fd 20,
 * fd 24 listens. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

typedef struct {
    int fd;
    int family;
    int backlog;
    struct sockaddr_storage name;
    socklen_t name_len;
    int opts[24]; /* as read before the dump */
} listener_t;

static const struct {
    int level, opt;
    const char* name;
} kOpts[] = {
    {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"}, {SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"},
    {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"}, {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
    {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},       {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},
    {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"}, {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"},
    {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"},   {IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND"},
    {IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"},
    {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"},   {SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT"},
    {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE"}, {IPPROTO_IP, IP_TOS, "IP_TOS"},
    {IPPROTO_TCP, TCP_CORK, "TCP_CORK"},         {IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
};
#define NOPTS (sizeof kOpts / sizeof kOpts[0])

static void setopt(int fd, int level, int opt, int v) {
    if (setsockopt(fd, level, opt, &v, sizeof v) != 0) test_fail("fd %d: setsockopt(%d): %s", fd, opt, strerror(errno));
}

static int getopt_int(int fd, int level, int opt) {
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, opt, &v, &l) != 0) return -1;
    return v;
}

static int backlog_of(int fd) {
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0) return -1;
    return ti.tcpi_state == TCP_LISTEN ? (int)ti.tcpi_sacked : -1;
}

static void record(listener_t* L) {
    L->name_len = sizeof L->name;
    if (getsockname(L->fd, (struct sockaddr*)&L->name, &L->name_len) != 0) test_fail("getsockname: %s", strerror(errno));
    for (size_t i = 0; i < NOPTS; ++i)
        L->opts[i] = kOpts[i].level == IPPROTO_IPV6 && L->family != AF_INET6 ? 0 : getopt_int(L->fd, kOpts[i].level, kOpts[i].opt);
    L->backlog = backlog_of(L->fd);
}

static int make_listener(int family, int at) {
    int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) test_fail("socket: %s", strerror(errno));
    if (dup3(s, at, O_CLOEXEC) != at) test_fail("dup3: %s", strerror(errno));
    close(s);
    return at;
}

static void bind_listen(int fd, int family, const char* addr, int backlog) {
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in* a = (struct sockaddr_in*)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, addr, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6* a = (struct sockaddr_in6*)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr*)&ss, len) != 0 || (backlog >= 0 && listen(fd, backlog) != 0))
        test_fail("fd %d: bind/listen on %s: %s", fd, addr, strerror(errno));
}

/* Connects to L from `from` (an address of family `family`), sends a byte, accepts it. */
static void accept_one(listener_t* L, int family, const char* from) {
    struct sockaddr_storage to = L->name;
    socklen_t to_len = L->name_len;
    if (family == AF_INET && L->family == AF_INET6) {
        /* to the dual-stack listener's port on 127.0.0.1 */
        struct sockaddr_in* a = (struct sockaddr_in*)&to;
        uint16_t port = ((struct sockaddr_in6*)&L->name)->sin6_port;
        memset(&to, 0, sizeof to);
        a->sin_family = AF_INET;
        a->sin_port = port;
        inet_pton(AF_INET, from, &a->sin_addr);
        to_len = sizeof *a;
    }
    int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&to, to_len) != 0) {
        test_fail("fd %d: connect: %s", L->fd, strerror(errno));
        if (c >= 0) close(c);
        return;
    }
    if (send(c, "x", 1, 0) != 1) test_fail("fd %d: send: %s", L->fd, strerror(errno));
    struct pollfd p = {L->fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) test_fail("fd %d: no connection to accept", L->fd);
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    int a = accept4(L->fd, (struct sockaddr*)&peer, &peer_len, SOCK_CLOEXEC);
    if (a < 0) {
        test_fail("fd %d: accept: %s", L->fd, strerror(errno));
        close(c);
        return;
    }
    struct sockaddr_storage mine;
    socklen_t mine_len = sizeof mine;
    getsockname(c, (struct sockaddr*)&mine, &mine_len);
    uint16_t mine_port = family == AF_INET ? ((struct sockaddr_in*)&mine)->sin_port : ((struct sockaddr_in6*)&mine)->sin6_port;
    uint16_t peer_port = peer.ss_family == AF_INET ? ((struct sockaddr_in*)&peer)->sin_port : ((struct sockaddr_in6*)&peer)->sin6_port;
    CHECK(peer.ss_family == L->family && peer_port == mine_port, "fd %d: accepted a peer of family %d port %u, not port %u",
          L->fd, peer.ss_family, ntohs(peer_port), ntohs(mine_port));
    char b = 0;
    CHECK(test_read_all(a, &b, 1) == 1 && b == 'x', "fd %d: the byte sent did not arrive", L->fd);
    close(c); /* the connecting side closes first: no TIME_WAIT on the listener's port */
    CHECK(test_read_all(a, &b, 1) == 0, "fd %d: no end of stream", L->fd);
    close(a);
}

/* A connection to L's port on 127.0.0.1, accepted and closed by the accepting side first:
 * that side stays in TIME_WAIT on the listener's port. */
static void leave_time_wait(int fd) {
    struct sockaddr_in6 name;
    socklen_t len = sizeof name;
    if (getsockname(fd, (struct sockaddr*)&name, &len) != 0) test_fail("getsockname: %s", strerror(errno));
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = name.sin6_port};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr*)&to, sizeof to) != 0) test_fail("connect for TIME_WAIT: %s", strerror(errno));
    int a = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0) test_fail("accept for TIME_WAIT: %s", strerror(errno));
    close(a);
    char b;
    if (test_read_all(c, &b, 1) != 0) test_fail("no end of stream for TIME_WAIT");
    close(c);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 6);
    listener_t L[5] = {{.fd = 20, .family = AF_INET},
                       {.fd = 21, .family = AF_INET6},
                       {.fd = 22, .family = AF_INET6},
                       {.fd = 23, .family = AF_INET},
                       {.fd = 24, .family = AF_INET6}};

    make_listener(AF_INET, 20);
    setopt(20, SOL_SOCKET, SO_REUSEADDR, 1);
    setopt(20, IPPROTO_TCP, TCP_NODELAY, 1);
    setopt(20, SOL_SOCKET, SO_KEEPALIVE, 1);
    setopt(20, IPPROTO_TCP, TCP_KEEPIDLE, 77);
    setopt(20, IPPROTO_TCP, TCP_KEEPINTVL, 13);
    setopt(20, IPPROTO_TCP, TCP_KEEPCNT, 5);
    setopt(20, SOL_SOCKET, SO_RCVBUF, 65536);
    setopt(20, SOL_SOCKET, SO_PRIORITY, 5);
    setopt(20, IPPROTO_IP, IP_TOS, 0x10);
    setopt(20, IPPROTO_TCP, TCP_DEFER_ACCEPT, 3);
    setopt(20, IPPROTO_TCP, TCP_USER_TIMEOUT, 4321);
    bind_listen(20, AF_INET, "127.0.0.1", 7);
    if (fcntl(20, F_SETFL, O_NONBLOCK) != 0) test_fail("fcntl: %s", strerror(errno));
    if (dup3(20, 25, 0) != 25) test_fail("dup3: %s", strerror(errno));

    make_listener(AF_INET6, 21);
    setopt(21, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    setopt(21, SOL_SOCKET, SO_REUSEPORT, 1);
    struct linger lg = {1, 9};
    if (setsockopt(21, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0) test_fail("SO_LINGER: %s", strerror(errno));
    setopt(21, SOL_SOCKET, SO_SNDBUF, 100000);
    setopt(21, SOL_SOCKET, SO_OOBINLINE, 1);
    bind_listen(21, AF_INET6, "::1", 3);

    make_listener(AF_INET6, 22);
    setopt(22, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    setopt(22, IPPROTO_IP, IP_FREEBIND, 1);
    bind_listen(22, AF_INET6, "::", 5);
    leave_time_wait(22);

    make_listener(AF_INET, 23);
    setopt(23, IPPROTO_TCP, TCP_CORK, 1);
    setopt(23, SOL_SOCKET, SO_PRIORITY, 3);
    setopt(23, SOL_SOCKET, SO_RCVLOWAT, 9);
    setopt(23, IPPROTO_IP, IP_TOS, 0x20);
    if (setsockopt(23, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) != 0) test_fail("TCP_CONGESTION: %s", strerror(errno));
    make_listener(AF_INET6, 24);
    setopt(24, SOL_SOCKET, SO_REUSEADDR, 1);
    if (setsockopt(24, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) != 0) test_fail("SO_BINDTODEVICE: %s", strerror(errno));
    bind_listen(24, AF_INET6, "::1", -1);

    struct sock_filter whole[2] = {BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_RET | BPF_A, 0)};
    test_attach_filter(21, whole, 2);
    setopt(21, SOL_SOCKET, SO_LOCK_FILTER, 1);

    for (int i = 0; i < 5; ++i) record(&L[i]);
    int flags[5];
    for (int i = 0; i < 5; ++i) flags[i] = fcntl(L[i].fd, F_GETFL);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) setopt(20, IPPROTO_TCP, TCP_NODELAY, 0);
    if (test_corrupt(2)) listen(22, 1);
    if (test_corrupt(3)) close(21);
    if (test_corrupt(4)) setopt(23, SOL_SOCKET, SO_PRIORITY, 4);
    if (test_corrupt(5)) setopt(20, IPPROTO_TCP, TCP_USER_TIMEOUT, 1);
    if (test_corrupt(6)) setsockopt(24, SOL_SOCKET, SO_BINDTODEVICE, "", 0);
    char dev[16] = "";
    socklen_t dev_len = sizeof dev;
    CHECK(getsockopt(24, SOL_SOCKET, SO_BINDTODEVICE, dev, &dev_len) == 0 && strcmp(dev, "lo") == 0,
          "fd 24: bound to device '%s', expected lo", dev);
    char cc[16] = "";
    socklen_t cc_len = sizeof cc;
    CHECK(getsockopt(23, IPPROTO_TCP, TCP_CONGESTION, cc, &cc_len) == 0 && strcmp(cc, "reno") == 0,
          "fd 23: congestion control '%s', expected reno", cc);
    CHECK(test_filter_is(21, whole, 2) && getopt_int(21, SOL_SOCKET, SO_LOCK_FILTER) == 1,
          "fd 21: not its socket filter, locked");

    for (int i = 0; i < 5; ++i) {
        struct sockaddr_storage now;
        socklen_t len = sizeof now;
        if (getsockname(L[i].fd, (struct sockaddr*)&now, &len) != 0) {
            test_fail("fd %d: getsockname: %s", L[i].fd, strerror(errno));
            continue;
        }
        CHECK(len == L[i].name_len && memcmp(&now, &L[i].name, len) == 0, "fd %d: bound to another address", L[i].fd);
        for (size_t k = 0; k < NOPTS; ++k) {
            int v = kOpts[k].level == IPPROTO_IPV6 && L[i].family != AF_INET6 ? 0 : getopt_int(L[i].fd, kOpts[k].level, kOpts[k].opt);
            CHECK(v == L[i].opts[k], "fd %d: %s %d, %d at dump", L[i].fd, kOpts[k].name, v, L[i].opts[k]);
        }
        struct linger now_lg = {0, 0};
        socklen_t ll = sizeof now_lg;
        getsockopt(L[i].fd, SOL_SOCKET, SO_LINGER, &now_lg, &ll);
        CHECK(i != 1 || (now_lg.l_onoff && now_lg.l_linger == 9), "fd 21: SO_LINGER %d %d", now_lg.l_onoff, now_lg.l_linger);
        CHECK(backlog_of(L[i].fd) == L[i].backlog, "fd %d: backlog %d, %d at dump", L[i].fd, backlog_of(L[i].fd), L[i].backlog);
        CHECK(fcntl(L[i].fd, F_GETFL) == flags[i], "fd %d: flags 0%o, 0%o at dump", L[i].fd, fcntl(L[i].fd, F_GETFL), flags[i]);
    }
    CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 20, 25) == 0, "fds 20 and 25 are not one description");
    if (!test_failed()) {
        accept_one(&L[0], AF_INET, "127.0.0.1");
        accept_one(&L[1], AF_INET6, "::1");
        accept_one(&L[2], AF_INET, "127.0.0.1");
        accept_one(&L[2], AF_INET6, "::1");
        /* the socket never connected connects now; the one bound listens */
        int nb = fcntl(23, F_GETFL);
        CHECK(connect(23, (struct sockaddr*)&L[0].name, L[0].name_len) == 0, "fd 23: connect: %s", strerror(errno));
        fcntl(23, F_SETFL, nb);
        CHECK(write(23, "x", 1) == 1, "fd 23: write: %s", strerror(errno)); /* fd 20 defers accept until data */
        struct pollfd p = {20, POLLIN, 0};
        int c = poll(&p, 1, 10000) == 1 ? accept(20, NULL, NULL) : -1;
        CHECK(c >= 0, "fd 20 accepted nothing from fd 23: %s", strerror(errno));
        if (c >= 0) close(c);
        CHECK(listen(24, 1) == 0, "fd 24: listen: %s", strerror(errno));
    }
    return test_finish();
}
