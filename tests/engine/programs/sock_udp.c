/* Datagram and raw sockets of AF_INET and AF_INET6 across a dump and restore:
 *   fd 20  UDP A on 127.0.0.1 (port chosen by bind), SO_REUSEADDR, SO_RCVBUF, IP_TOS, IP_TTL,
 *          IP_RECVERR, IP_PKTINFO, SO_PRIORITY, SO_RCVTIMEO, SO_BINDTODEVICE lo, O_NONBLOCK;
 *          fd 25 a dup of it
 *   fd 21  UDP B on 127.0.0.1 connected to A, SO_BROADCAST, IP_MULTICAST_TTL/LOOP, O_ASYNC owned
 *          by the process (SIGIO ignored)
 *   fd 22  UDP never bound (port 0)
 *   fd 23  UDP C on [::1], IPV6_V6ONLY, IPV6_UNICAST_HOPS, IPV6_TCLASS, IPV6_RECVPKTINFO, SO_SNDBUF
 *   fd 24  UDP D on [::] (IPV6_V6ONLY off) connected to C
 *   fd 26  UDP on 127.0.0.1 connected to A, shut down for reading
 *   fd 27  raw IPPROTO_ICMP socket bound to 127.0.0.1, ICMP_FILTER taking no type, IP_HDRINCL off
 *   fd 28  an ICMP ping socket connected to 127.0.0.1, when net.ipv4.ping_group_range lets the
 *          process make one (else not made: a note says so)
 *   fd 29  UDP E on [::] (IPV6_V6ONLY off, no IPV6_RECVPKTINFO), not connected
 *   fd 30  UDP F on 127.0.0.1, fd 31 UDP G on [::1]: senders only
 *   fd 32  UDP on 127.0.0.1 connected to A, shut down for writing (only sock_diag shows it)
 *   fd 33  raw AF_INET socket of protocol 136 (UDP-Lite's number: no UDP-Lite options),
 *   fd 34  raw AF_INET6 socket of protocol 256 (above 255: allowed for raw sockets)
 * Datagrams queued at dump, each sent once the one before arrived: for A from B "q1", one of 0
 * bytes, 1000 patterned bytes, from F "q-f2a"; for C from D "q-d2c", from G "q-g2c"; for E from
 * F to 127.0.0.2 (v4-mapped on E), from G to ::1, 60000 patterned bytes from F to 127.0.0.1.
 * Then C gets a socket filter keeping 4 bytes of each datagram, E SO_LOCK_FILTER alone.
 * After restore: the same family, type, protocol, addresses, options, filters, flags, owner, one
 * description for 20 and 25, fd 22 still unbound; every queued datagram read in its order with
 * its bytes, its sender's port and the address it was sent to (IP_PKTINFO, IPV6_PKTINFO), then
 * nothing more queued; then datagrams go both ways (B <-> A, D <-> C), from the unbound one to A
 * (bound by that send), C keeps 4 bytes of a new one, the ping socket gets an echo reply. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

typedef struct {
    int level, opt;
    const char* name;
    int v6; /* IPv6 sockets only */
} opt_t;

static const opt_t kOpts[] = {
    {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", 0},   {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", 0},
    {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", 0},         {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY", 0},
    {SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST", 0},   {IPPROTO_IP, IP_TOS, "IP_TOS", 0},
    {IPPROTO_IP, IP_TTL, "IP_TTL", 0},               {IPPROTO_IP, IP_RECVERR, "IP_RECVERR", 0},
    {IPPROTO_IP, IP_PKTINFO, "IP_PKTINFO", 0},       {IPPROTO_IP, IP_MULTICAST_TTL, "IP_MULTICAST_TTL", 0},
    {IPPROTO_IP, IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", 0},
    {IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY", 1},   {IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", 1},
    {IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS", 1},   {IPPROTO_IPV6, IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 1},
    {SOL_SOCKET, SO_TYPE, "SO_TYPE", 0},             {SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL", 0},
    {SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN", 0},         {SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF", 0},
};
#define NOPTS (sizeof kOpts / sizeof kOpts[0])
#define NFDS 15

typedef struct {
    int fd;
    int family;
    struct sockaddr_storage name, peer;
    socklen_t name_len, peer_len;
    int opts[NOPTS];
    int flags;
    struct timeval rcvtimeo;
    char device[16];
    struct sock_filter filter[8];
    socklen_t filter_len; /* instructions */
    int filter_locked;
} sock_t;

static sock_t S[NFDS] = {{.fd = 20}, {.fd = 21}, {.fd = 22}, {.fd = 23}, {.fd = 24},
                         {.fd = 25}, {.fd = 26}, {.fd = 27}, {.fd = 28}, {.fd = 29},
                         {.fd = 30}, {.fd = 31}, {.fd = 32},
                         {.fd = 33}, {.fd = 34}};
static int have_ping;

static void setopt(int fd, int level, int opt, int v) {
    if (setsockopt(fd, level, opt, &v, sizeof v) != 0) test_fail("fd %d: setsockopt(%d, %d): %s", fd, level, opt, strerror(errno));
}

static int getopt_int(int fd, int level, int opt) {
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, opt, &v, &l) != 0) return -1000 - errno;
    return v;
}

static void make(int family, int type, int proto, int at) {
    int s = socket(family, type | SOCK_CLOEXEC, proto);
    if (s < 0) test_fail("socket(%d, %d, %d): %s", family, type, proto, strerror(errno));
    if (dup3(s, at, O_CLOEXEC) != at) test_fail("dup3: %s", strerror(errno));
    close(s);
}

static socklen_t addr_of(int family, const char* text, struct sockaddr_storage* ss) {
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in* a = (struct sockaddr_in*)ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, text, &a->sin_addr);
        return sizeof *a;
    }
    struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
    a->sin6_family = AF_INET6;
    inet_pton(AF_INET6, text, &a->sin6_addr);
    return sizeof *a;
}

static void bind_to(int fd, int family, const char* text) {
    struct sockaddr_storage ss;
    socklen_t len = addr_of(family, text, &ss);
    if (bind(fd, (struct sockaddr*)&ss, len) != 0) test_fail("fd %d: bind %s: %s", fd, text, strerror(errno));
}

static void connect_to(int fd, int to) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(to, (struct sockaddr*)&ss, &len) != 0 || connect(fd, (struct sockaddr*)&ss, len) != 0)
        test_fail("fd %d: connect to fd %d: %s", fd, to, strerror(errno));
}

static void record(sock_t* s) {
    s->family = getopt_int(s->fd, SOL_SOCKET, SO_DOMAIN);
    s->name_len = sizeof s->name;
    getsockname(s->fd, (struct sockaddr*)&s->name, &s->name_len);
    s->peer_len = sizeof s->peer;
    if (getpeername(s->fd, (struct sockaddr*)&s->peer, &s->peer_len) != 0) s->peer_len = 0;
    for (size_t i = 0; i < NOPTS; ++i)
        s->opts[i] = kOpts[i].v6 && s->family != AF_INET6 ? 0 : getopt_int(s->fd, kOpts[i].level, kOpts[i].opt);
    s->flags = fcntl(s->fd, F_GETFL);
    socklen_t l = sizeof s->rcvtimeo;
    getsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcvtimeo, &l);
    l = sizeof s->device;
    memset(s->device, 0, sizeof s->device);
    getsockopt(s->fd, SOL_SOCKET, SO_BINDTODEVICE, s->device, &l);
    memset(s->filter, 0, sizeof s->filter);
    s->filter_len = 8;
    if (getsockopt(s->fd, SOL_SOCKET, SO_GET_FILTER, s->filter, &s->filter_len) != 0) s->filter_len = 1000 + errno;
    s->filter_locked = getopt_int(s->fd, SOL_SOCKET, SO_LOCK_FILTER);
}

static void check(const sock_t* s) {
    sock_t now = {.fd = s->fd};
    record(&now);
    CHECK(now.name_len == s->name_len && memcmp(&now.name, &s->name, s->name_len) == 0, "fd %d: bound to another address",
          s->fd);
    CHECK(now.peer_len == s->peer_len && memcmp(&now.peer, &s->peer, s->peer_len) == 0,
          "fd %d: connected elsewhere (%u bytes of peer address, %u at dump)", s->fd, now.peer_len, s->peer_len);
    for (size_t i = 0; i < NOPTS; ++i)
        CHECK(now.opts[i] == s->opts[i], "fd %d: %s %d, %d at dump", s->fd, kOpts[i].name, now.opts[i], s->opts[i]);
    CHECK(now.flags == s->flags, "fd %d: flags 0%o, 0%o at dump", s->fd, now.flags, s->flags);
    CHECK(now.rcvtimeo.tv_sec == s->rcvtimeo.tv_sec && now.rcvtimeo.tv_usec == s->rcvtimeo.tv_usec,
          "fd %d: SO_RCVTIMEO %ld s, %ld s at dump", s->fd, (long)now.rcvtimeo.tv_sec, (long)s->rcvtimeo.tv_sec);
    CHECK(strcmp(now.device, s->device) == 0, "fd %d: SO_BINDTODEVICE '%s', '%s' at dump", s->fd, now.device, s->device);
    CHECK(now.filter_len == s->filter_len && memcmp(now.filter, s->filter, sizeof s->filter) == 0,
          "fd %d: a socket filter of %u instructions, %u at dump (or another)", s->fd, now.filter_len, s->filter_len);
    CHECK(now.filter_locked == s->filter_locked, "fd %d: SO_LOCK_FILTER %d, %d at dump", s->fd, now.filter_locked,
          s->filter_locked);
}

static uint16_t port_of(const struct sockaddr_storage* ss) {
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in*)ss)->sin_port
                                          : ((const struct sockaddr_in6*)ss)->sin6_port);
}

/* Receives one datagram on fd (waiting for it), checks its bytes and sender. */
static void expect(int fd, const char* text, int from) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) {
        test_fail("fd %d: nothing arrived (waiting for '%s' from fd %d)", fd, text, from);
        return;
    }
    char buf[64] = {0};
    struct sockaddr_storage src, want;
    socklen_t sl = sizeof src, wl = sizeof want;
    ssize_t n = recvfrom(fd, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr*)&src, &sl);
    getsockname(from, (struct sockaddr*)&want, &wl);
    CHECK(n == (ssize_t)strlen(text) && memcmp(buf, text, (size_t)n) == 0, "fd %d: got '%s', not '%s'", fd, buf, text);
    CHECK(port_of(&src) == port_of(&want), "fd %d: '%s' came from port %u, not fd %d's %u", fd, text, port_of(&src), from,
          port_of(&want));
}

static void send_on(int fd, const char* text) {
    if (send(fd, text, strlen(text), 0) != (ssize_t)strlen(text)) test_fail("fd %d: send: %s", fd, strerror(errno));
}

static void send_to(int fd, const char* text, int to) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(to, (struct sockaddr*)&ss, &len);
    if (sendto(fd, text, strlen(text), 0, (struct sockaddr*)&ss, len) != (ssize_t)strlen(text))
        test_fail("fd %d: sendto fd %d: %s", fd, to, strerror(errno));
}

/* The memory of fd's receive queue: every queued datagram counts (a peek would hide one of 0
 * bytes from the dump's peeks: see the engine's fds/udp.cpp). */
static unsigned queue_memory(int fd) {
    unsigned mem[SK_MEMINFO_VARS] = {0};
    socklen_t l = sizeof mem;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &l) != 0) test_fail("fd %d: SO_MEMINFO: %s", fd, strerror(errno));
    return mem[SK_MEMINFO_RMEM_ALLOC];
}

typedef struct {
    int to, from;
    const char* dst; /* the address it is sent to, as IP_PKTINFO / IPV6_PKTINFO shows it */
    size_t len;
    char fill; /* len bytes: text (fill 0) or a pattern starting at fill */
    const char* text;
} queued_t;

static const queued_t kQueued[] = {
    {20, 21, "127.0.0.1", 2, 0, "q1"},     {20, 21, "127.0.0.1", 0, 0, ""},
    {20, 21, "127.0.0.1", 1000, 'a', 0},   {20, 30, "127.0.0.1", 5, 0, "q-f2a"},
    {23, 24, "::1", 5, 0, "q-d2c"},        {23, 31, "::1", 5, 0, "q-g2c"},
    {29, 30, "::ffff:127.0.0.2", 7, 0, "q-f2e-4"}, {29, 31, "::1", 7, 0, "q-g2e-6"},
    {29, 30, "::ffff:127.0.0.1", 60000, 'A', 0},
};
#define NQUEUED (sizeof kQueued / sizeof kQueued[0])

static void queued_bytes(const queued_t* q, char* out) {
    if (q->fill)
        for (size_t i = 0; i < q->len; ++i) out[i] = (char)(q->fill + (char)(i % 23));
    else
        memcpy(out, q->text, q->len);
}

/* Sends q from its sender to its receiver's port at q->dst, and waits until it is queued. */
static void queue_one(const queued_t* q) {
    static char data[65536];
    queued_bytes(q, data);
    struct sockaddr_storage to, dst;
    socklen_t tl = sizeof to;
    getsockname(q->to, (struct sockaddr*)&to, &tl);
    const char* text = strncmp(q->dst, "::ffff:", 7) == 0 ? q->dst + 7 : q->dst;
    int from_family = getopt_int(q->from, SOL_SOCKET, SO_DOMAIN);
    socklen_t dl = addr_of(from_family, text, &dst);
    if (from_family == AF_INET) ((struct sockaddr_in*)&dst)->sin_port = htons(port_of(&to));
    else ((struct sockaddr_in6*)&dst)->sin6_port = htons(port_of(&to));
    unsigned before = queue_memory(q->to);
    int connected = q->from == 21 || q->from == 24;
    ssize_t n = connected ? send(q->from, data, q->len, 0) : sendto(q->from, data, q->len, 0, (struct sockaddr*)&dst, dl);
    if (n != (ssize_t)q->len) test_fail("fd %d: sending %zu bytes to fd %d: %s", q->from, q->len, q->to, strerror(errno));
    for (int i = 0; i < 10000 && queue_memory(q->to) == before; ++i) usleep(1000);
    if (queue_memory(q->to) == before) test_fail("fd %d: the datagram from fd %d did not arrive", q->to, q->from);
}

/* Reads every datagram queued for q's receivers, in order: bytes, sender's port, destination. */
static void drain_queued(void) {
    static char want[65536], got[65536 + 1];
    for (size_t i = 0; i < NQUEUED && !test_failed(); ++i) {
        const queued_t* q = &kQueued[i];
        queued_bytes(q, want);
        struct sockaddr_storage src, sender;
        socklen_t sl = sizeof sender;
        getsockname(q->from, (struct sockaddr*)&sender, &sl);
        char control[512];
        struct iovec io = {got, sizeof got};
        struct msghdr mh = {.msg_name = &src, .msg_namelen = sizeof src, .msg_iov = &io, .msg_iovlen = 1,
                            .msg_control = control, .msg_controllen = sizeof control};
        ssize_t n = recvmsg(q->to, &mh, MSG_DONTWAIT);
        if (n < 0) {
            test_fail("fd %d: queued datagram %zu (%zu bytes from fd %d) missing: %s", q->to, i + 1, q->len, q->from,
                      strerror(errno));
            return;
        }
        char dst[INET6_ADDRSTRLEN] = "none";
        for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
                inet_ntop(AF_INET, &((struct in_pktinfo*)CMSG_DATA(c))->ipi_addr, dst, sizeof dst);
            if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO)
                inet_ntop(AF_INET6, &((struct in6_pktinfo*)CMSG_DATA(c))->ipi6_addr, dst, sizeof dst);
        }
        CHECK(n == (ssize_t)q->len && memcmp(got, want, q->len) == 0,
              "fd %d: queued datagram %zu has %zd bytes (%.8s...), not %zu from fd %d", q->to, i + 1, n, n > 0 ? got : "",
              q->len, q->from);
        CHECK(port_of(&src) == port_of(&sender), "fd %d: queued datagram %zu came from port %u, not fd %d's %u", q->to,
              i + 1, port_of(&src), q->from, port_of(&sender));
        CHECK(strcmp(dst, q->dst) == 0, "fd %d: queued datagram %zu was sent to %s, not %s", q->to, i + 1, dst, q->dst);
    }
    char b;
    for (int fd = 20; fd <= 31; ++fd)
        if (fd != 28 && fd != 22 && fd != 27 && fd != 26)
            CHECK(recv(fd, &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "fd %d: more queued than was at dump", fd);
}

/* An echo request on the ping socket and its reply (the kernel answers on loopback). */
static void ping_once(void) {
    struct icmphdr req = {.type = ICMP_ECHO, .un.echo.sequence = htons(7)};
    if (send(28, &req, sizeof req, 0) != sizeof req) {
        test_fail("fd 28: send echo request: %s", strerror(errno));
        return;
    }
    struct pollfd p = {28, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) {
        test_fail("fd 28: no echo reply");
        return;
    }
    struct icmphdr rep;
    ssize_t n = recv(28, &rep, sizeof rep, 0);
    CHECK(n == sizeof rep && rep.type == ICMP_ECHOREPLY && ntohs(rep.un.echo.sequence) == 7,
          "fd 28: no echo reply (%zd bytes, type %d)", n, n > 0 ? rep.type : -1);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    signal(SIGIO, SIG_IGN);

    make(AF_INET, SOCK_DGRAM, 0, 20);
    setopt(20, SOL_SOCKET, SO_REUSEADDR, 1);
    setopt(20, SOL_SOCKET, SO_RCVBUF, 100000);
    setopt(20, IPPROTO_IP, IP_TOS, 0x10);
    setopt(20, IPPROTO_IP, IP_TTL, 33);
    setopt(20, IPPROTO_IP, IP_RECVERR, 1);
    setopt(20, IPPROTO_IP, IP_PKTINFO, 1);
    setopt(20, SOL_SOCKET, SO_PRIORITY, 3);
    struct timeval tv = {5, 250000};
    if (setsockopt(20, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) test_fail("SO_RCVTIMEO: %s", strerror(errno));
    if (setsockopt(20, SOL_SOCKET, SO_BINDTODEVICE, "lo", 2) != 0) test_fail("SO_BINDTODEVICE: %s", strerror(errno));
    bind_to(20, AF_INET, "127.0.0.1");
    if (fcntl(20, F_SETFL, O_NONBLOCK) != 0) test_fail("fcntl: %s", strerror(errno));
    if (dup3(20, 25, 0) != 25) test_fail("dup3: %s", strerror(errno));

    make(AF_INET, SOCK_DGRAM, IPPROTO_UDP, 21);
    setopt(21, SOL_SOCKET, SO_BROADCAST, 1);
    setopt(21, IPPROTO_IP, IP_MULTICAST_TTL, 7);
    setopt(21, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
    bind_to(21, AF_INET, "127.0.0.1");
    connect_to(21, 20);
    if (fcntl(21, F_SETOWN, getpid()) != 0 || fcntl(21, F_SETFL, O_ASYNC) != 0) test_fail("O_ASYNC: %s", strerror(errno));

    make(AF_INET, SOCK_DGRAM, 0, 22);

    make(AF_INET6, SOCK_DGRAM, 0, 23);
    setopt(23, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    setopt(23, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 9);
    setopt(23, IPPROTO_IPV6, IPV6_TCLASS, 0x20);
    setopt(23, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
    setopt(23, SOL_SOCKET, SO_SNDBUF, 70000);
    bind_to(23, AF_INET6, "::1");

    make(AF_INET6, SOCK_DGRAM, 0, 24);
    setopt(24, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    bind_to(24, AF_INET6, "::");
    connect_to(24, 23);

    make(AF_INET, SOCK_DGRAM, 0, 26);
    bind_to(26, AF_INET, "127.0.0.1");
    connect_to(26, 20);
    if (shutdown(26, SHUT_RD) != 0) test_fail("shutdown: %s", strerror(errno));

    make(AF_INET, SOCK_DGRAM, 0, 32);
    bind_to(32, AF_INET, "127.0.0.1");
    connect_to(32, 20);
    if (shutdown(32, SHUT_WR) != 0) test_fail("shutdown: %s", strerror(errno));

    make(AF_INET, SOCK_RAW, 136, 33);
    make(AF_INET6, SOCK_RAW, 256, 34);

    make(AF_INET, SOCK_RAW, IPPROTO_ICMP, 27);
    struct icmp_filter none = {~0u};
    if (setsockopt(27, SOL_RAW, ICMP_FILTER, &none, sizeof none) != 0) test_fail("ICMP_FILTER: %s", strerror(errno));
    bind_to(27, AF_INET, "127.0.0.1");
    char junk[256];
    while (recv(27, junk, sizeof junk, MSG_DONTWAIT) >= 0) /* what came before the filter */;

    int ping = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (ping >= 0) {
        have_ping = 1;
        dup3(ping, 28, O_CLOEXEC);
        close(ping);
        struct sockaddr_storage lo;
        socklen_t len = addr_of(AF_INET, "127.0.0.1", &lo);
        if (connect(28, (struct sockaddr*)&lo, len) != 0) test_fail("fd 28: connect: %s", strerror(errno));
    } else {
        printf("note: no ping socket (%s): net.ipv4.ping_group_range leaves this process out\n", strerror(errno));
    }

    make(AF_INET6, SOCK_DGRAM, 0, 29);
    setopt(29, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    bind_to(29, AF_INET6, "::");
    make(AF_INET, SOCK_DGRAM, 0, 30);
    bind_to(30, AF_INET, "127.0.0.1");
    make(AF_INET6, SOCK_DGRAM, 0, 31);
    bind_to(31, AF_INET6, "::1");
    for (size_t i = 0; i < NQUEUED; ++i) queue_one(&kQueued[i]);
    /* After the queue: C keeps 4 bytes of each datagram from now on (the queued ones are
     * whole), E has no filter but SO_LOCK_FILTER. */
    struct sock_filter keep4 = BPF_STMT(BPF_RET | BPF_K, 8 + 4); /* the UDP header, 4 bytes */
    test_attach_filter(23, &keep4, 1);
    setopt(29, SOL_SOCKET, SO_LOCK_FILTER, 1);

    for (int i = 0; i < NFDS; ++i)
        if (S[i].fd != 28 || have_ping) record(&S[i]);
    CHECK(port_of(&S[2].name) == 0, "fd 22: bound before the dump");

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) setopt(20, IPPROTO_IP, IP_TTL, 34);
    if (test_corrupt(2)) {
        struct sockaddr un = {.sa_family = AF_UNSPEC};
        connect(21, &un, sizeof un);
    }
    if (test_corrupt(3)) bind_to(22, AF_INET, "127.0.0.1");
    if (test_corrupt(4)) shutdown(26, SHUT_RDWR);
    if (test_corrupt(6)) test_detach_filter(23);
    if (test_corrupt(8)) make(AF_INET6, SOCK_RAW, 255, 34);
    if (test_corrupt(5)) {
        char b[8];
        recv(23, b, sizeof b, MSG_DONTWAIT); /* "q-d2c" taken */
    }

    for (int i = 0; i < NFDS; ++i)
        if (S[i].fd != 28 || have_ping) check(&S[i]);
    CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 20, 25) == 0, "fds 20 and 25 are not one description");
    CHECK(fcntl(21, F_GETOWN) == getpid(), "fd 21: owner %d, not %d", fcntl(21, F_GETOWN), getpid());
    struct pollfd p = {26, POLLIN | POLLRDHUP, 0};
    CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP) && !(p.revents & POLLHUP),
          "fd 26: not shut down for reading only (poll 0x%x)", p.revents);
    if (test_corrupt(7)) {
        /* the same address and peer, not shut down */
        struct sockaddr_storage me;
        socklen_t ml = sizeof me;
        getsockname(32, (struct sockaddr*)&me, &ml);
        close(32);
        make(AF_INET, SOCK_DGRAM, 0, 32);
        if (bind(32, (struct sockaddr*)&me, ml) != 0) test_fail("rebind: %s", strerror(errno));
        connect_to(32, 20);
    }
    /* Shut down for writing: a send fails with EPIPE (nothing is sent, so A's queue is kept). */
    errno = 0;
    CHECK(sendto(32, "w", 1, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr*)&S[0].name, S[0].name_len) < 0 &&
              errno == EPIPE,
          "fd 32: a send after SHUT_WR was not refused (%s)", strerror(errno));
    struct icmp_filter f = {0};
    socklen_t fl = sizeof f;
    CHECK(getsockopt(27, SOL_RAW, ICMP_FILTER, &f, &fl) == 0 && f.data == ~0u, "fd 27: ICMP_FILTER 0x%x", f.data);
    if (!test_failed()) {
        setopt(29, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
        drain_queued();
    }
    if (!test_failed()) {
        send_on(21, "b2a");
        expect(20, "b2a", 21);
        send_to(20, "a2b", 21);
        expect(21, "a2b", 20);
        send_on(24, "d2c");
        expect(23, "d2c", 24);
        send_on(24, "filtered");
        expect(23, "filt", 24); /* the filter keeps 4 bytes */
        send_to(23, "c2d", 24);
        expect(24, "c2d", 23);
        send_to(22, "u2a", 20);
        expect(20, "u2a", 22);
        if (have_ping) ping_once();
    }
    return test_finish();
}
