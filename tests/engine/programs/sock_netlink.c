/* Netlink sockets across a dump and restore:
 *   fd 20  NETLINK_ROUTE bound (port id chosen by the kernel), in group 23 (RTNLGRP_DCB, by
 *          bind's mask) and group 34 (RTNLGRP_MCTP_IFADDR, NETLINK_ADD_MEMBERSHIP: beyond the
 *          mask), NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK, SO_RCVBUF; fd 23 a dup of it
 *   fd 21  NETLINK_ROUTE never bound (port id 0)
 *   fd 22  NETLINK_SOCK_DIAG bound to a port id of its own choosing, O_NONBLOCK, a socket
 *          filter taking every message whole; fd 21 has SO_LOCK_FILTER (and no filter)
 * (groups no event of a usual host is sent to: nothing is queued at the dump). After restore:
 * the same port ids, groups, options, filters, flags, one description for fds 20 and 23; fd 20 lists the
 * links (RTM_GETLINK dump) and finds lo in replies to its port id; fd 21, bound by its first
 * send, does too. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

static const struct {
    int level, opt;
    const char* name;
} kOpts[] = {
    {SOL_NETLINK, NETLINK_EXT_ACK, "NETLINK_EXT_ACK"}, {SOL_NETLINK, NETLINK_GET_STRICT_CHK, "NETLINK_GET_STRICT_CHK"},
    {SOL_NETLINK, NETLINK_PKTINFO, "NETLINK_PKTINFO"}, {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
    {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},             {SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL"},
    {SOL_SOCKET, SO_TYPE, "SO_TYPE"},
};
#define NOPTS (sizeof kOpts / sizeof kOpts[0])

typedef struct {
    int fd;
    struct sockaddr_nl name;
    uint32_t groups[4];
    int opts[NOPTS];
    int flags;
} nl_t;

static nl_t N[4] = {{.fd = 20}, {.fd = 21}, {.fd = 22}, {.fd = 23}};

static void setopt(int fd, int level, int opt, int v) {
    if (setsockopt(fd, level, opt, &v, sizeof v) != 0) test_fail("fd %d: setsockopt(%d): %s", fd, opt, strerror(errno));
}

static void make(int proto, int at) {
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);
    if (s < 0) test_fail("socket(AF_NETLINK, %d): %s", proto, strerror(errno));
    if (dup3(s, at, O_CLOEXEC) != at) test_fail("dup3: %s", strerror(errno));
    close(s);
}

static void record(nl_t* n) {
    socklen_t l = sizeof n->name;
    memset(&n->name, 0, sizeof n->name);
    getsockname(n->fd, (struct sockaddr*)&n->name, &l);
    memset(n->groups, 0, sizeof n->groups);
    l = sizeof n->groups;
    getsockopt(n->fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, n->groups, &l);
    for (size_t i = 0; i < NOPTS; ++i) {
        int v = -1;
        socklen_t vl = sizeof v;
        n->opts[i] = getsockopt(n->fd, kOpts[i].level, kOpts[i].opt, &v, &vl) == 0 ? v : -1000 - errno;
    }
    n->flags = fcntl(n->fd, F_GETFL);
}

/* Lists the links through fd: every reply is to its port id; lo is among them. */
static void list_links(int fd, uint32_t want_portid) {
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
    } req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                   .nlmsg_seq = 4242},
             .i = {.ifi_family = AF_UNSPEC}};
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr*)&kernel, sizeof kernel) != sizeof req) {
        test_fail("fd %d: send RTM_GETLINK: %s", fd, strerror(errno));
        return;
    }
    if (want_portid == 0) { /* bound by the send: to a port id of its own */
        struct sockaddr_nl now = {0};
        socklen_t l = sizeof now;
        getsockname(fd, (struct sockaddr*)&now, &l);
        want_portid = now.nl_pid;
        CHECK(want_portid != 0, "fd %d: not bound by its first send", fd);
    }
    int lo = if_nametoindex("lo"), found = 0, done = 0;
    static char buf[1 << 16];
    while (!done) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1) {
            test_fail("fd %d: the RTM_GETLINK dump stopped", fd);
            return;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            test_fail("fd %d: recv: %s", fd, strerror(errno));
            return;
        }
        for (struct nlmsghdr* h = (struct nlmsghdr*)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            CHECK(h->nlmsg_seq == 4242 && h->nlmsg_pid == want_portid, "fd %d: a reply of seq %u to port id %u, not %u",
                  fd, h->nlmsg_seq, h->nlmsg_pid, want_portid);
            if (h->nlmsg_type == NLMSG_DONE) done = 1;
            else if (h->nlmsg_type == NLMSG_ERROR) {
                test_fail("fd %d: RTM_GETLINK: error %d", fd, ((struct nlmsgerr*)NLMSG_DATA(h))->error);
                return;
            } else if (h->nlmsg_type == RTM_NEWLINK && ((struct ifinfomsg*)NLMSG_DATA(h))->ifi_index == lo)
                found = 1;
        }
    }
    CHECK(found, "fd %d: lo (index %d) not among the links", fd, lo);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);

    make(NETLINK_ROUTE, 20);
    setopt(20, SOL_NETLINK, NETLINK_EXT_ACK, 1);
    setopt(20, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
    setopt(20, SOL_SOCKET, SO_RCVBUF, 300000);
    struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_groups = 1u << (23 - 1)};
    if (bind(20, (struct sockaddr*)&a, sizeof a) != 0) test_fail("fd 20: bind: %s", strerror(errno));
    setopt(20, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, 34);
    if (dup3(20, 23, 0) != 23) test_fail("dup3: %s", strerror(errno));

    make(NETLINK_ROUTE, 21);

    make(NETLINK_SOCK_DIAG, 22);
    struct sockaddr_nl g = {.nl_family = AF_NETLINK, .nl_pid = 0x70000000u + (uint32_t)getpid()};
    if (bind(22, (struct sockaddr*)&g, sizeof g) != 0) test_fail("fd 22: bind: %s", strerror(errno));
    if (fcntl(22, F_SETFL, O_NONBLOCK) != 0) test_fail("fcntl: %s", strerror(errno));

    struct sock_filter whole[2] = {BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0), BPF_STMT(BPF_RET | BPF_A, 0)};
    test_attach_filter(22, whole, 2);
    setopt(21, SOL_SOCKET, SO_LOCK_FILTER, 1);

    for (int i = 0; i < 4; ++i) record(&N[i]);
    CHECK(N[0].name.nl_pid != 0 && N[1].name.nl_pid == 0 && N[2].name.nl_pid == g.nl_pid, "port ids %u %u %u before the dump",
          N[0].name.nl_pid, N[1].name.nl_pid, N[2].name.nl_pid);
    CHECK(N[0].groups[0] == 1u << 22 && N[0].groups[1] == 1u << 1, "fd 20: groups %#x %#x before the dump", N[0].groups[0],
          N[0].groups[1]);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) setopt(20, SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, 34);
    if (test_corrupt(2)) {
        struct sockaddr_nl k = {.nl_family = AF_NETLINK};
        bind(21, (struct sockaddr*)&k, sizeof k); /* to a port id the kernel chooses */
    }
    if (test_corrupt(3)) setopt(20, SOL_NETLINK, NETLINK_EXT_ACK, 0);
    if (test_corrupt(4)) test_detach_filter(22);
    CHECK(test_filter_is(22, whole, 2), "fd 22: not its socket filter");
    int locked = 0;
    socklen_t ll = sizeof locked;
    CHECK(getsockopt(21, SOL_SOCKET, SO_LOCK_FILTER, &locked, &ll) == 0 && locked == 1, "fd 21: SO_LOCK_FILTER %d, not 1",
          locked);

    for (int i = 0; i < 4; ++i) {
        nl_t now = {.fd = N[i].fd};
        record(&now);
        CHECK(memcmp(&now.name, &N[i].name, sizeof now.name) == 0, "fd %d: port id %u groups %#x, %u %#x at dump", now.fd,
              now.name.nl_pid, now.name.nl_groups, N[i].name.nl_pid, N[i].name.nl_groups);
        CHECK(memcmp(now.groups, N[i].groups, sizeof now.groups) == 0, "fd %d: in groups %#x %#x, %#x %#x at dump", now.fd,
              now.groups[0], now.groups[1], N[i].groups[0], N[i].groups[1]);
        for (size_t k = 0; k < NOPTS; ++k)
            CHECK(now.opts[k] == N[i].opts[k], "fd %d: %s %d, %d at dump", now.fd, kOpts[k].name, now.opts[k], N[i].opts[k]);
        CHECK(now.flags == N[i].flags, "fd %d: flags 0%o, 0%o at dump", now.fd, now.flags, N[i].flags);
    }
    CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, 20, 23) == 0, "fds 20 and 23 are not one description");
    if (!test_failed()) {
        list_links(20, N[0].name.nl_pid);
        list_links(21, 0);
    }
    return test_finish();
}
