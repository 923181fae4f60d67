// Datagram and raw sockets of AF_INET and AF_INET6: UDP, UDP-Lite, ICMP ping sockets
// (SOCK_DGRAM, IPPROTO_ICMP or IPPROTO_ICMPV6) and raw sockets (SOCK_RAW, any protocol). Each
// is made again with its family, type and protocol; bound to its address and port (a UDP or
// ping socket whose port is 0 was never bound and stays so; a raw socket has only an
// address), connected to its peer, shut down for reading as it was, and with the options
// that differ from a new socket's (sock_opts.h; SO_BINDTODEVICE by the interface's name).
//
// Queued datagrams are refused by name, either way. Putting one back exactly means sending it
// again from its original sender's address and port (a socket of another host, or one this
// host no longer has bound), and the kernel's receive timestamp and order with what arrives
// meanwhile would differ: not done. A pending error or error queue, a socket filter, a kernel
// encapsulation (UDP_ENCAP) and data held by UDP_CORK are refused as well. What no socket
// call shows is not kept: multicast group memberships (IP_ADD_MEMBERSHIP), IPv6 sticky
// options and flow labels, an IP_MULTICAST_IF given by interface index only.
//
// The restore makes the socket in the engine (as the restorer: a raw socket needs
// CAP_NET_RAW, a ping socket a group in net.ipv4.ping_group_range) before the process's fds
// are placed; a port taken meanwhile by another socket fails the restore naming it.
#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"
#include "sock_opts.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDPLITE_SEND_CSCOV
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

namespace ckpt::engine {
namespace {

using sockopt::Spec;

constexpr Spec kInetOptions[] = {
    {IPPROTO_IP, IP_TOS, "IP_TOS", 4},
    {IPPROTO_IP, IP_TTL, "IP_TTL", 4},
    {IPPROTO_IP, IP_OPTIONS, "IP_OPTIONS", 0},
    {IPPROTO_IP, IP_RECVERR, "IP_RECVERR", 4},
    {IPPROTO_IP, IP_RECVERR_RFC4884, "IP_RECVERR_RFC4884", 4},
    {IPPROTO_IP, IP_PKTINFO, "IP_PKTINFO", 4},
    {IPPROTO_IP, IP_RECVTTL, "IP_RECVTTL", 4},
    {IPPROTO_IP, IP_RECVTOS, "IP_RECVTOS", 4},
    {IPPROTO_IP, IP_RECVOPTS, "IP_RECVOPTS", 4},
    {IPPROTO_IP, IP_RETOPTS, "IP_RETOPTS", 4},
    {IPPROTO_IP, IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR", 4},
    {IPPROTO_IP, IP_RECVFRAGSIZE, "IP_RECVFRAGSIZE", 4},
    {IPPROTO_IP, IP_PASSSEC, "IP_PASSSEC", 4},
    {IPPROTO_IP, IP_CHECKSUM, "IP_CHECKSUM", 4},
    {IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND", 4},
    {IPPROTO_IP, IP_TRANSPARENT, "IP_TRANSPARENT", 4},
    {IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", 4},
    {IPPROTO_IP, IP_MTU_DISCOVER, "IP_MTU_DISCOVER", 4},
    {IPPROTO_IP, IP_MULTICAST_TTL, "IP_MULTICAST_TTL", 4},
    {IPPROTO_IP, IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", 4},
    {IPPROTO_IP, IP_MULTICAST_ALL, "IP_MULTICAST_ALL", 4},
    {IPPROTO_IP, IP_MULTICAST_IF, "IP_MULTICAST_IF", 4},
    {IPPROTO_IP, IP_HDRINCL, "IP_HDRINCL", 4},
    {IPPROTO_IP, IP_NODEFRAG, "IP_NODEFRAG", 4},
    {IPPROTO_UDP, UDP_CORK, "UDP_CORK", 4},
    {IPPROTO_UDP, UDP_NO_CHECK6_TX, "UDP_NO_CHECK6_TX", 4},
    {IPPROTO_UDP, UDP_NO_CHECK6_RX, "UDP_NO_CHECK6_RX", 4},
    {IPPROTO_UDP, UDP_SEGMENT, "UDP_SEGMENT", 4},
    {IPPROTO_UDP, UDP_GRO, "UDP_GRO", 4},
    {SOL_RAW, ICMP_FILTER, "ICMP_FILTER", 4},
};

constexpr Spec kInet6Options[] = {
    {IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY", 4},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", 4},
    {IPPROTO_IPV6, IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", 4},
    {IPPROTO_IPV6, IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", 4},
    {IPPROTO_IPV6, IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF", 4},
    {IPPROTO_IPV6, IPV6_MULTICAST_ALL, "IPV6_MULTICAST_ALL", 4},
    {IPPROTO_IPV6, IPV6_RECVERR, "IPV6_RECVERR", 4},
    {IPPROTO_IPV6, IPV6_RECVERR_RFC4884, "IPV6_RECVERR_RFC4884", 4},
    {IPPROTO_IPV6, IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 4},
    {IPPROTO_IPV6, IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT", 4},
    {IPPROTO_IPV6, IPV6_RECVRTHDR, "IPV6_RECVRTHDR", 4},
    {IPPROTO_IPV6, IPV6_RECVHOPOPTS, "IPV6_RECVHOPOPTS", 4},
    {IPPROTO_IPV6, IPV6_RECVDSTOPTS, "IPV6_RECVDSTOPTS", 4},
    {IPPROTO_IPV6, IPV6_RECVTCLASS, "IPV6_RECVTCLASS", 4},
    {IPPROTO_IPV6, IPV6_RECVPATHMTU, "IPV6_RECVPATHMTU", 4},
    {IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR", 4},
    {IPPROTO_IPV6, IPV6_RECVFRAGSIZE, "IPV6_RECVFRAGSIZE", 4},
    {IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS", 4},
    {IPPROTO_IPV6, IPV6_FLOWINFO, "IPV6_FLOWINFO", 4},
    {IPPROTO_IPV6, IPV6_FLOWINFO_SEND, "IPV6_FLOWINFO_SEND", 4},
    {IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, "IPV6_AUTOFLOWLABEL", 4},
    {IPPROTO_IPV6, IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", 4},
    {IPPROTO_IPV6, IPV6_DONTFRAG, "IPV6_DONTFRAG", 4},
    {IPPROTO_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT", 4},
    {IPPROTO_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND", 4},
    {IPPROTO_IPV6, IPV6_ADDR_PREFERENCES, "IPV6_ADDR_PREFERENCES", 4},
    {IPPROTO_IPV6, IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT", 4},
    {IPPROTO_IPV6, IPV6_CHECKSUM, "IPV6_CHECKSUM", 4},
    {IPPROTO_ICMPV6, ICMPV6_FILTER, "ICMPV6_FILTER", 32},
};

// Every option of a socket of the family, SO_BUF_LOCK last (after the buffers).
const std::vector<Spec>& specs_of(int family) {
    auto make = [](std::span<const Spec> own, std::span<const Spec> more) {
        std::vector<Spec> v(own.begin(), own.end());
        v.insert(v.end(), more.begin(), more.end());
        v.insert(v.end(), sockopt::socket_level().begin(), sockopt::socket_level().end());
        return v;
    };
    static const std::vector<Spec> v4 = make(kInetOptions, {});
    static const std::vector<Spec> v6 = make(kInet6Options, kInetOptions);
    return family == AF_INET6 ? v6 : v4;
}

struct Identity {
    int family, type, protocol;
};

Result<Identity> identity_of(int s) {
    Identity id{};
    id.family = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"));
    id.type = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_TYPE, "SO_TYPE"));
    id.protocol = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL"));
    return id;
}

const char* protocol_name(int family, int type, int protocol) {
    if (type == SOCK_RAW) return "raw";
    switch (protocol) {
        case IPPROTO_UDP: return "UDP";
        case IPPROTO_UDPLITE: return "UDP-Lite";
        case IPPROTO_ICMP: return family == AF_INET ? "ICMP ping" : nullptr;
        case IPPROTO_ICMPV6: return family == AF_INET6 ? "ICMPv6 ping" : nullptr;
        default: return nullptr;
    }
}

std::string describe(const Identity& id) {
    const char* p = protocol_name(id.family, id.type, id.protocol);
    return fmt::format("{} {} socket{}", sockopt::family_name(id.family), p ? p : sockopt::type_name(id.type),
                       id.type == SOCK_RAW ? fmt::format(" of protocol {}", id.protocol) : "");
}

// Every AF_INET and AF_INET6 socket TCP does not claim (tcp comes first): those of other
// types and protocols (SCTP, MPTCP...) are refused by name at dump.
bool claims_inet(const FdProbe& probe) {
    if (!starts_with(probe.link, "socket:[")) return false;
    auto s = probe.take();
    if (!s) return false;
    auto family = sockopt::get_int(s->get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
    return family && (*family == AF_INET || *family == AF_INET6);
}

bool is_any(const image::InetAddr& a) { return a.addr().find_first_not_of('\0') == std::string::npos; }

// ---- dump ---------------------------------------------------------------------------------

// Refuses a socket with anything queued for it to read: the first datagram (its size and
// sender) named.
Result<void> refuse_queued(int s, bool rcv_shutdown) {
    sockaddr_storage from{};
    socklen_t fl = sizeof from;
    char b;
    ssize_t n;
    do n = recvfrom(s, &b, 1, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC, reinterpret_cast<sockaddr*>(&from), &fl);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) return sys_error("recv(MSG_PEEK)");
    // Shut down for reading, an empty queue reads as a datagram of 0 bytes: the memory the
    // queue holds tells them apart.
    uint32_t mem[SK_MEMINFO_VARS] = {};
    socklen_t ml = sizeof mem;
    if (getsockopt(s, SOL_SOCKET, SO_MEMINFO, mem, &ml) != 0) return sys_error("getsockopt(SO_MEMINFO)");
    const bool queued = n > 0 || (n == 0 && !rcv_shutdown) || mem[SK_MEMINFO_RMEM_ALLOC] != 0;
    if (!queued) return ok();
    std::string sender = "?";
    if (n >= 0 && (from.ss_family == AF_INET || from.ss_family == AF_INET6)) {
        image::InetAddr a;
        record_addr(from, &a);
        sender = show_addr(a);
    }
    return error_code(ENOTSUP,
                      "datagrams queued to be read ({} bytes of memory in the receive queue, the first datagram of {} bytes from {}): "
                      "queued datagrams are not supported (they cannot be sent again from their senders' addresses)",
                      mem[SK_MEMINFO_RMEM_ALLOC], n < 0 ? 0 : n, sender);
}

Result<void> dump_inet(const FdProbe& probe, image::Fd* f) {
    UniqueFd sock = CKPT_TRY(probe.take());
    const int s = sock.get();
    const Identity id = CKPT_TRY(identity_of(s));
    const std::string what = describe(id);
    if ((id.type != SOCK_DGRAM && id.type != SOCK_RAW) || !protocol_name(id.family, id.type, id.protocol))
        return error_code(ENOTSUP, "an {} {} socket of protocol {}: not supported (only TCP, UDP, UDP-Lite, ICMP ping "
                                   "and raw sockets)",
                          sockopt::family_name(id.family), sockopt::type_name(id.type), id.protocol);
    bool is_new = false;
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()), &is_new)));
    if (!is_new) return ok();  // another fd of a socket recorded already

    auto ctx = [&](Error e) { return e.context("{}", what); };
    image::InetDgramSocket* d = f->mutable_inet_dgram();
    d->set_family(id.family);
    d->set_type(id.type);
    d->set_protocol(id.protocol);

    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (getsockname(s, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return ctx(sys_error("getsockname"));
    image::InetAddr local;
    record_addr(ss, &local);
    // A raw socket's "port" is its protocol; it is bound to an address or not at all.
    const bool bound = id.type == SOCK_RAW ? !is_any(local) : local.port() != 0;
    if (bound) *d->mutable_local() = local;
    sl = sizeof ss;
    if (getpeername(s, reinterpret_cast<sockaddr*>(&ss), &sl) == 0)
        record_addr(ss, d->mutable_peer());
    else if (errno != ENOTCONN)
        return ctx(sys_error("getpeername"));
    const std::string where = fmt::format("{} on {}{}", what, bound ? show_addr(local) : "no address",
                                          d->has_peer() ? " connected to " + show_addr(d->peer()) : "");
    auto wctx = [&](Error e) { return e.context("{}", where); };

    pollfd p{s, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) < 0) return wctx(sys_error("poll"));
    const bool rcv_shutdown = p.revents & POLLRDHUP;
    d->set_shutdown(p.revents & POLLHUP ? 3u : rcv_shutdown ? 1u : 0u);

    if (auto r = sockopt::refuse_filter_and_errors(s); !r) return wctx(std::move(r).error());
    if (auto r = refuse_queued(s, rcv_shutdown); !r) return wctx(std::move(r).error());
    int outq = 0;
    if (ioctl(s, SIOCOUTQ, &outq) != 0) return wctx(sys_error("ioctl(SIOCOUTQ)"));
    if (outq != 0)
        return wctx(error_code(ENOTSUP, "{} bytes not sent yet (held by UDP_CORK or MSG_MORE): not supported", outq));
    if (id.protocol == IPPROTO_UDP || id.protocol == IPPROTO_UDPLITE) {
        auto encap = sockopt::get_int(s, IPPROTO_UDP, UDP_ENCAP, "UDP_ENCAP");
        if (encap && *encap != 0)
            return wctx(error_code(ENOTSUP, "a kernel encapsulation (UDP_ENCAP {}): not supported", *encap));
    }
    if (id.protocol == IPPROTO_UDPLITE) {
        for (int opt : {UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV}) {
            auto v = sockopt::get_int(s, IPPROTO_UDPLITE, opt, "UDPLITE_CSCOV");
            if (!v) return wctx(std::move(v).error());
            if (*v != 0) return wctx(error_code(ENOTSUP, "a UDP-Lite checksum coverage: not supported"));
        }
    }

    d->set_sndbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"), "{}", where)));
    d->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"), "{}", where)));
    d->set_bind_device(CKPT_TRY_CTX(sockopt::bound_device(s), "{}", where));
    CKPT_TRY_CTX(sockopt::record(s, specs_of(id.family), d->mutable_options()), "{}", where);
    return ok();
}

// ---- restore ------------------------------------------------------------------------------

bool v6only(const image::InetDgramSocket& d) {
    for (const auto& o : d.options())
        if (o.level() == IPPROTO_IPV6 && o.name() == IPV6_V6ONLY) return o.value() != std::string(4, '\0');
    return true;
}

bool is_v4_mapped(const image::InetAddr& a) {
    return a.addr().size() == 16 && a.addr().compare(0, 12, std::string("\0\0\0\0\0\0\0\0\0\0\xff\xff", 12)) == 0;
}

Result<UniqueFd> make_inet(const image::InetDgramSocket& d) {
    const Identity id{d.family(), d.type(), d.protocol()};
    if ((id.family != AF_INET && id.family != AF_INET6) || (id.type != SOCK_DGRAM && id.type != SOCK_RAW) ||
        !protocol_name(id.family, id.type, id.protocol) || id.protocol < 0 || id.protocol > 255)
        return error_code(EINVAL, "a socket of family {} type {} protocol {} (image is corrupt)", id.family, id.type,
                          id.protocol);
    if (d.shutdown() != 0 && d.shutdown() != 1 && d.shutdown() != 3)
        return error_code(EINVAL, "shutdown state {} (image is corrupt)", d.shutdown());
    const std::string what = describe(id);
    UniqueFd sock(socket(id.family, id.type | SOCK_CLOEXEC, id.protocol));
    if (!sock) {
        if (errno == EPERM && id.type == SOCK_RAW) return sys_error("{}: socket (a raw socket needs CAP_NET_RAW)", what);
        if (errno == EACCES && id.type == SOCK_DGRAM)
            return sys_error("{}: socket (ping sockets need a group of net.ipv4.ping_group_range)", what);
        return sys_error("{}: socket", what);
    }
    const int s = sock.get();
    const std::string where = fmt::format("{} on {}{}", what, d.has_local() ? show_addr(d.local()) : "no address",
                                          d.has_peer() ? " connected to " + show_addr(d.peer()) : "");
    auto ctx = [&](Error e) { return e.context("{}", where); };
    if (auto r = sockopt::bind_device(s, d.bind_device()); !r) return ctx(std::move(r).error());
    if (auto r = sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, d.sndbuf(), "SO_SNDBUF"); !r)
        return ctx(std::move(r).error());
    if (auto r = sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, d.rcvbuf(), "SO_RCVBUF"); !r)
        return ctx(std::move(r).error());
    // Before bind: IPV6_V6ONLY, the reuse flags, IP_FREEBIND decide what bind may take.
    if (auto r = sockopt::restore(s, specs_of(id.family), d.options()); !r) return ctx(std::move(r).error());
    if (d.has_local()) {
        auto [addr, len] = CKPT_TRY_CTX(sockaddr_of(id.family, d.local(), "local"), "{}", where);
        // Bound to an IPv6 address (not v4-mapped) the socket would be IPV6_V6ONLY: one that
        // is not was bound to the wildcard address, and took this one when it connected.
        if (id.family == AF_INET6 && d.has_peer() && !v6only(d) && !is_v4_mapped(d.local())) {
            auto& in6 = reinterpret_cast<sockaddr_in6&>(addr);
            in6.sin6_addr = in6addr_any;
            in6.sin6_scope_id = 0;
        }
        if (bind(s, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
            if (errno == EADDRINUSE)
                return ctx(error_code(EADDRINUSE, "bind to {}: the port is taken here by another socket", show_addr(d.local())));
            return ctx(sys_error("bind to {}", show_addr(d.local())));
        }
    }
    if (d.has_peer()) {
        auto [addr, len] = CKPT_TRY_CTX(sockaddr_of(id.family, d.peer(), "peer"), "{}", where);
        if (connect(s, reinterpret_cast<sockaddr*>(&addr), len) != 0)
            return ctx(sys_error("connect to {}", show_addr(d.peer())));
    }
    // The address the kernel gave is the recorded one (connect binds a socket never bound; a
    // socket bound to a wildcard address takes the route's when it connects).
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (getsockname(s, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return ctx(sys_error("getsockname"));
    image::InetAddr now;
    record_addr(ss, &now);
    if (d.has_local() && now.SerializeAsString() != d.local().SerializeAsString())
        return ctx(error_code(EINVAL, "bound to {} once made, {} at dump", show_addr(now), show_addr(d.local())));
    if (!d.has_local() && id.type == SOCK_DGRAM && now.port() != 0)
        return ctx(error_code(EINVAL, "never bound at dump, but connected: the image is corrupt"));
    if (d.shutdown() != 0 && shutdown(s, d.shutdown() == 3 ? SHUT_RDWR : SHUT_RD) != 0 && errno != ENOTCONN)
        return ctx(sys_error("shutdown"));
    return sock;
}

Result<void> restore_inet(RestoreTask& t, const image::Fd& f) {
    if (f.description_id() == 0) return error_code(EINVAL, "datagram socket without a description id (image is corrupt)");
    return install_description(
        t, f,
        [&]() -> Result<UniqueFd> {
            if (!f.has_inet_dgram())
                return error_code(EINVAL, "datagram socket: its first fd carries no state (image is corrupt)");
            return make_inet(f.inet_dgram());
        },
        true);
}

}  // namespace

extern const FdKind kInetDgramKind{
    .name = "datagram or raw socket",
    .image_kind = image::Fd::INET_DGRAM,
    .claims = claims_inet,
    .dump = dump_inet,
    .restore = restore_inet,
};

}  // namespace ckpt::engine
