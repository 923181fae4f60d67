// Datagram and raw sockets of AF_INET and AF_INET6: UDP, UDP-Lite, ICMP ping sockets
// (SOCK_DGRAM, IPPROTO_ICMP or IPPROTO_ICMPV6) and raw sockets (SOCK_RAW, any protocol). Each
// is made again with its family, type and protocol; bound to its address and port (a UDP or
// ping socket whose port is 0 was never bound and stays so; a raw socket has only an
// address), connected to its peer, shut down for reading as it was, and with the options
// that differ from a new socket's (sock_opts.h; SO_BINDTODEVICE by the interface's name).
//
// Datagrams queued for a UDP or UDP-Lite socket are kept: peeked at dump one after another
// (SO_PEEK_OFF) with their sender and destination, and sent again at restore from the
// sender's address and port through a raw socket, before the process runs (see "restore:
// queued datagrams" below). Refused: datagrams queued for ping and raw sockets, on a socket
// with SO_REUSEPORT, shut down for reading or bound to a device other than loopback, sent to
// a multicast, broadcast or link-local address or to another host's, and any when the
// dumping engine lacks CAP_NET_RAW (no restore as its user could put them back). A classic
// BPF filter is kept (set last, once the queue is back); an eBPF one, a pending error or
// error queue, a kernel encapsulation (UDP_ENCAP) and data held by UDP_CORK are refused.
// What no socket call shows is not kept: multicast group memberships (IP_ADD_MEMBERSHIP),
// IPv6 sticky options and flow labels, an IP_MULTICAST_IF given by interface index only.
//
// The restore makes the socket in the engine (as the restorer: a raw socket needs
// CAP_NET_RAW, a ping socket a group in net.ipv4.ping_group_range) before the process's fds
// are placed; a port taken meanwhile by another socket fails the restore naming it.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

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

// Every option of a socket of the family, SO_BUF_LOCK last (after the buffers).
const std::vector<Spec>& specs_of(int family) {
    auto make = [](std::span<const Spec> own, std::span<const Spec> more) {
        std::vector<Spec> v(own.begin(), own.end());
        v.insert(v.end(), more.begin(), more.end());
        v.insert(v.end(), sockopt::socket_level().begin(), sockopt::socket_level().end());
        return v;
    };
    static const std::vector<Spec> v4 = make(sockopt::ip_level(), {});
    static const std::vector<Spec> v6 = make(sockopt::ipv6_level(), sockopt::ip_level());
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

// The kernel's IPPROTO_MAX (263 since IPPROTO_MPTCP, 262): a raw socket may be made with any
// protocol below it, 256 to 262 included.
constexpr int kIpprotoMax = 263;

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

const std::string kV4MappedPrefix("\0\0\0\0\0\0\0\0\0\0\xff\xff", 12);

bool is_v4_mapped(const std::string& addr) { return addr.size() == 16 && addr.starts_with(kV4MappedPrefix); }
bool is_v4_mapped(const image::InetAddr& a) { return is_v4_mapped(a.addr()); }

// The IPv4 address a v4-mapped one holds; any other as it is.
std::string unmapped(const std::string& addr) { return is_v4_mapped(addr) ? addr.substr(12) : addr; }

// The unicast addresses of this host: 127.0.0.0/8, ::1 and every interface's own (getifaddrs,
// read once per socket), link-local ones left out (a scope would be needed). Queued datagrams
// are put back only to such an address: nothing sent then can leave the host, and no other
// socket can hold it with the port the socket holds alone.
class HostAddresses {
public:
    static Result<HostAddresses> read() {
        ifaddrs* list = nullptr;
        if (getifaddrs(&list) != 0) return sys_error("getifaddrs");
        HostAddresses h;
        for (ifaddrs* i = list; i; i = i->ifa_next) {
            if (!i->ifa_addr) continue;
            if (i->ifa_addr->sa_family == AF_INET)
                h.addrs_.emplace_back(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr), 4);
            else if (i->ifa_addr->sa_family == AF_INET6)
                h.addrs_.emplace_back(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr), 16);
        }
        freeifaddrs(list);
        return h;
    }
    // addr: 4 or 16 bytes, v4-mapped taken as IPv4.
    bool holds(const std::string& addr_in) const {
        const std::string addr = unmapped(addr_in);
        if (addr.size() == 4 && static_cast<uint8_t>(addr[0]) == 127) return true;
        if (addr.size() == 16) {
            if (addr == std::string(15, '\0') + '\1') return true;
            if (static_cast<uint8_t>(addr[0]) == 0xfe && (static_cast<uint8_t>(addr[1]) & 0xc0) == 0x80) return false;
        }
        return (addr.size() == 4 || addr.size() == 16) && std::find(addrs_.begin(), addrs_.end(), addr) != addrs_.end();
    }

private:
    std::vector<std::string> addrs_;
};

// ---- dump ---------------------------------------------------------------------------------

// The memory the socket's receive queue holds: every datagram queued counts there (a peek
// would hide one of 0 bytes from every later peek: see record_queued).
Result<uint32_t> queue_memory(int s) {
    uint32_t mem[SK_MEMINFO_VARS] = {};
    socklen_t ml = sizeof mem;
    if (getsockopt(s, SOL_SOCKET, SO_MEMINFO, mem, &ml) != 0) return sys_error("getsockopt(SO_MEMINFO)");
    return mem[SK_MEMINFO_RMEM_ALLOC];
}

// "the first of N bytes from ADDR", for a refusal of a ping or raw socket's queue.
std::string first_datagram(int s) {
    sockaddr_storage from{};
    socklen_t fl = sizeof from;
    char b;
    ssize_t n;
    do n = recvfrom(s, &b, 1, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC, reinterpret_cast<sockaddr*>(&from), &fl);
    while (n < 0 && errno == EINTR);
    if (n < 0) return "the first unreadable";
    std::string sender = "?";
    if (from.ss_family == AF_INET || from.ss_family == AF_INET6) {
        image::InetAddr a;
        record_addr(from, &a);
        sender = show_addr(a);
    }
    return fmt::format("the first of {} bytes from {}", n, sender);
}

// The destination address of a datagram the peek read, from its IP_PKTINFO or IPV6_PKTINFO
// (the kernel fills them from the datagram's own header).
std::optional<sockaddr_storage> destination_of(msghdr& mh, int family, uint16_t port) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        sockaddr_storage ss{};
        if (family == AF_INET && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            auto& in = reinterpret_cast<sockaddr_in&>(ss);
            in.sin_family = AF_INET;
            in.sin_addr = pi.ipi_addr;
            in.sin_port = htons(port);
            return ss;
        }
        if (family == AF_INET6 && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
            in6.sin6_family = AF_INET6;
            in6.sin6_addr = pi.ipi6_addr;
            in6.sin6_port = htons(port);
            return ss;
        }
    }
    return std::nullopt;
}

constexpr size_t kMaxDatagram = 65535;

// Records every datagram queued for a UDP or UDP-Lite socket, oldest first, without taking
// any: each peek starts where the last ended (SO_PEEK_OFF), with the destination address
// (IP_PKTINFO, IPV6_RECVPKTINFO); both options are given back as they were. Refused: datagrams
// on a socket the restore cannot hold alone while it puts them back (SO_REUSEPORT), shut down
// for reading, bound to a device other than loopback (they are sent again through it), or
// queued for a ping or raw socket.
Result<void> record_queued(int s, const Identity& id, bool rcv_shutdown, const image::InetAddr& local,
                           const std::string& device, image::InetDgramSocket* d) {
    const uint32_t memory = CKPT_TRY(queue_memory(s));
    if (memory == 0) return ok();
    auto refuse = [&](std::string_view why) {
        return error_code(ENOTSUP, "datagrams queued to be read ({} bytes of memory in the receive queue): {}", memory, why);
    };
    if (id.type != SOCK_DGRAM || (id.protocol != IPPROTO_UDP && id.protocol != IPPROTO_UDPLITE))
        return refuse(fmt::format("{}: not supported on ping and raw sockets (only UDP and UDP-Lite ones are put back)",
                                  first_datagram(s)));
    if (rcv_shutdown) return refuse("not supported on a socket shut down for reading");
    if (CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT")) != 0)
        return refuse("not supported with SO_REUSEPORT (the restore puts them back while the socket holds its port alone)");
    if (!device.empty() && device != "lo")
        return refuse(fmt::format("not supported on a socket bound to device {} (they are put back through loopback)", device));

    // A dump that could not put them back could not make a restore that does: an engine
    // without CAP_NET_RAW (a user's, as the Slurm agent runs it) keeps the last good
    // checkpoint instead of making one no restore as that user can take.
    if (UniqueFd raw(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW)); !raw && (errno == EPERM || errno == EACCES))
        return refuse("they are put back at restore from their senders' addresses, which needs CAP_NET_RAW, and this "
                      "dump (so a restore as the same user) does not have it");

    const bool v4 = id.family == AF_INET;
    auto peek_off = CKPT_TRY(sockopt::Borrowed::set(s, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF", 0));
    auto pktinfo = CKPT_TRY(v4 ? sockopt::Borrowed::set(s, IPPROTO_IP, IP_PKTINFO, "IP_PKTINFO", 1)
                               : sockopt::Borrowed::set(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 1));
    const HostAddresses host = CKPT_TRY(HostAddresses::read());
    std::string buf(kMaxDatagram + 1, '\0');
    alignas(cmsghdr) char control[4096];
    for (;;) {
        sockaddr_storage from{};
        iovec io{buf.data(), buf.size()};
        msghdr mh{};
        mh.msg_name = &from;
        mh.msg_namelen = sizeof from;
        mh.msg_iov = &io;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        const ssize_t n = recvmsg(s, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        const int k = d->queued_size() + 1;
        if (n < 0) return sys_error("recvmsg(MSG_PEEK) of datagram {}", k);
        if (static_cast<size_t>(n) > kMaxDatagram)
            return refuse(fmt::format("datagram {} has {} bytes (a GRO aggregate): not supported", k, n));
        if (from.ss_family != id.family)
            return error_code(EPROTO, "datagram {} of {} bytes: its sender has address family {}", k, n, from.ss_family);
        auto to = destination_of(mh, id.family, static_cast<uint16_t>(local.port()));
        if (!to) return error_code(EPROTO, "datagram {} of {} bytes: no IP_PKTINFO", k, n);
        image::QueuedDatagram* q = d->add_queued();
        record_addr(from, q->mutable_from());
        record_addr(*to, q->mutable_to());
        if (!host.holds(q->to().addr()))
            return refuse(fmt::format("datagram {} was sent to {}: only datagrams sent to a unicast address of this host are "
                                      "put back (not multicast, broadcast or link-local ones)",
                                      k, show_addr(q->to())));
        q->set_data(buf.data(), static_cast<size_t>(n));
    }
    CKPT_TRY(peek_off.give_back());
    CKPT_TRY(pktinfo.give_back());
    // A datagram of 0 bytes is skipped by every peek after the first (the kernel marks it
    // seen); one the process peeked itself is invisible. Where it is all the queue holds,
    // the memory shows it.
    if (d->queued_size() == 0)
        return refuse("no datagram a peek can see (one of 0 bytes the process has peeked already): not supported");
    return ok();
}

// The shutdown bits (sk_shutdown: 1 receive, 2 send) of a UDP or UDP-Lite socket, from
// sock_diag (the engine's network namespace, the tree's): poll shows a socket shut down for
// receiving, nothing shows one shut down for sending. Empty when sock_diag does not list it:
// a socket never bound is in no table.
Result<std::optional<uint8_t>> udp_shutdown_bits(const Identity& id, ino_t inode) {
    UniqueFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!nl) return sys_error("socket(NETLINK_SOCK_DIAG)");
    struct {
        nlmsghdr nlh;
        inet_diag_req_v2 req;
    } msg{};
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.req.sdiag_family = static_cast<uint8_t>(id.family);
    msg.req.sdiag_protocol = static_cast<uint8_t>(id.protocol);
    msg.req.idiag_states = ~0u;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
        return sys_error("sock_diag: send");
    alignas(nlmsghdr) static thread_local char buf[1 << 16];
    std::optional<uint8_t> found;
    for (bool done = false; !done;) {
        ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
        if (n < 0) return sys_error("sock_diag: recv");
        int len = static_cast<int>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) done = true;
            if (h->nlmsg_type == NLMSG_ERROR) {
                auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
                if (e->error)
                    return sys_error_code(-e->error, fmt::format("sock_diag: {} sockets (the kernel's udp_diag)",
                                                                 describe(id)));
                done = true;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || found) continue;
            const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
            if (m->idiag_inode != inode) continue;
            found = uint8_t{0};
            int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
            for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen))
                if (a->rta_type == INET_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1)
                    found = *static_cast<const uint8_t*>(RTA_DATA(a));
        }
    }
    return found;
}

// The peer of a connected ping or raw socket, which getpeername does not give (its "port"
// is 0: the kernel answers ENOTCONN): the line of the socket's inode in /proc/PID/net/{icmp,
// raw}[6] ("sl local rem st ... inode"), state 01 (connected). Addresses are printed as
// 32-bit words in the machine's order. (Found by CRIU's socket_icmp and sock_udp's ping
// socket, which had never run: ping sockets need net.ipv4.ping_group_range.)
Result<void> peer_from_proc(pid_t pid, const Identity& id, ino_t inode, image::InetDgramSocket* d) {
    const std::string path = fmt::format("/proc/{}/net/{}{}", pid, id.type == SOCK_RAW ? "raw" : "icmp",
                                         id.family == AF_INET6 ? "6" : "");
    const std::string text = CKPT_TRY(read_file(path, 1 << 20));
    for (std::string_view line : split(text, '\n')) {
        std::vector<std::string_view> w;
        for (std::string_view f : split(line, ' '))
            if (!f.empty()) w.push_back(f);
        if (w.size() < 10 || w[9] != std::to_string(inode)) continue;
        if (w[3] != "01") return ok();  // not connected
        const std::string_view rem = w[2].substr(0, w[2].find(':'));
        const size_t words = id.family == AF_INET6 ? 4 : 1;
        if (rem.size() != 8 * words) return error("{}: address '{}' of inode {} not understood", path, rem, inode);
        std::string addr;
        for (size_t i = 0; i < words; ++i) {
            const auto word = static_cast<uint32_t>(CKPT_TRY_CTX(parse_uint(rem.substr(8 * i, 8), 16), "{}", path));
            addr.append(reinterpret_cast<const char*>(&word), sizeof word);
        }
        d->mutable_peer()->set_addr(addr);
        d->mutable_peer()->set_port(0);
        return ok();
    }
    // Not listed: a ping socket never bound (connect binds it first, so it is not connected
    // either); a raw socket is listed from its making.
    if (id.type != SOCK_RAW) return ok();
    return error("{}: no line for socket inode {}", path, inode);
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
    else if (id.type == SOCK_RAW || id.protocol == IPPROTO_ICMP || id.protocol == IPPROTO_ICMPV6)
        CKPT_TRY_CTX(peer_from_proc(probe.pid, id, CKPT_TRY(probe.stat_target()).st_ino, d), "{}", what);
    const std::string where = fmt::format("{} on {}{}", what, bound ? show_addr(local) : "no address",
                                          d->has_peer() ? " connected to " + show_addr(d->peer()) : "");
    auto wctx = [&](Error e) { return e.context("{}", where); };

    pollfd p{s, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) < 0) return wctx(sys_error("poll"));
    uint32_t shutdown_bits = p.revents & POLLHUP ? 3u : p.revents & POLLRDHUP ? 1u : 0u;
    if (id.type == SOCK_DGRAM && (id.protocol == IPPROTO_UDP || id.protocol == IPPROTO_UDPLITE))
        if (auto diag = CKPT_TRY_CTX(udp_shutdown_bits(id, CKPT_TRY(probe.stat_target()).st_ino), "{}", where))
            shutdown_bits |= *diag & 3u;
    d->set_shutdown(shutdown_bits);
    const bool rcv_shutdown = shutdown_bits & 1u;

    if (auto r = sockopt::refuse_errors(s); !r) return wctx(std::move(r).error());
    if (auto r = sockopt::record_filter(s, d->mutable_filter()); !r) return wctx(std::move(r).error());
    const std::string device = CKPT_TRY_CTX(sockopt::bound_device(s), "{}", where);
    if (auto r = record_queued(s, id, rcv_shutdown, local, device, d); !r) return wctx(std::move(r).error());
    int outq = 0;
    // A ping socket sends each datagram whole at once (it has no corking) and some kernels
    // (6.18) do not answer SIOCOUTQ for it: nothing is held back there.
    const bool ping = id.type == SOCK_DGRAM && (id.protocol == IPPROTO_ICMP || id.protocol == IPPROTO_ICMPV6);
    if (ioctl(s, SIOCOUTQ, &outq) != 0 && !(ping && errno == ENOTTY)) return wctx(sys_error("ioctl(SIOCOUTQ)"));
    if (outq != 0)
        return wctx(error_code(ENOTSUP, "{} bytes not sent yet (held by UDP_CORK or MSG_MORE): not supported", outq));
    // UDP's own options: of datagram sockets only (a raw socket of protocol 17 or 136 has none).
    const bool udp = id.type == SOCK_DGRAM && (id.protocol == IPPROTO_UDP || id.protocol == IPPROTO_UDPLITE);
    if (udp) {
        auto encap = sockopt::get_int(s, IPPROTO_UDP, UDP_ENCAP, "UDP_ENCAP");
        if (encap && *encap != 0)
            return wctx(error_code(ENOTSUP, "a kernel encapsulation (UDP_ENCAP {}): not supported", *encap));
    }
    if (udp && id.protocol == IPPROTO_UDPLITE) {
        for (int opt : {UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV}) {
            auto v = sockopt::get_int(s, IPPROTO_UDPLITE, opt, "UDPLITE_CSCOV");
            if (!v) return wctx(std::move(v).error());
            if (*v != 0) return wctx(error_code(ENOTSUP, "a UDP-Lite checksum coverage: not supported"));
        }
    }

    d->set_sndbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"), "{}", where)));
    d->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"), "{}", where)));
    d->set_bind_device(device);
    CKPT_TRY_CTX(sockopt::record(s, specs_of(id.family), d->mutable_options()), "{}", where);
    return ok();
}

// ---- restore ------------------------------------------------------------------------------

bool v6only(const image::InetDgramSocket& d) {
    for (const auto& o : d.options())
        if (o.level() == IPPROTO_IPV6 && o.name() == IPV6_V6ONLY) return o.value() != std::string(4, '\0');
    return true;
}

// ---- restore: queued datagrams --------------------------------------------------------------
//
// Each datagram is sent again, oldest first, from its sender's address and port: a packet the
// engine writes whole (IP and UDP headers) on a raw socket (CAP_NET_RAW: under --restore-as
// the user's, which a user lacks, so such a restore is refused by the kernel) bound to the
// loopback device, to an address of this host (HostAddresses). The socket is bound alone
// while they arrive (SO_REUSEADDR given back after; SO_REUSEPORT refused at dump), not yet
// connected (a connected socket drops what its peer did not send), and admits only packets
// with the engine's mark (a socket filter, removed after): what others send meanwhile is
// dropped, as it would have been a moment earlier, before the socket existed. Each datagram
// must have arrived (the queue's memory grows) before the next is sent, so their order is
// the recorded one. What the kernel stamps at arrival is of the restore: SO_TIMESTAMP*, the
// drop counter (SO_RXQ_OVFL).

constexpr uint32_t kPutBackMark = 0x636b7074;  // "ckpt"

Result<void> admit_only_marked(int s) {
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_MARK)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kPutBackMark, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
    if (setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) return sys_error("setsockopt(SO_ATTACH_FILTER)");
    return ok();
}

uint32_t sum16(std::string_view bytes, uint32_t sum = 0) {
    for (size_t i = 0; i + 1 < bytes.size(); i += 2)
        sum += (static_cast<uint8_t>(bytes[i]) << 8) | static_cast<uint8_t>(bytes[i + 1]);
    if (bytes.size() & 1) sum += static_cast<uint8_t>(bytes.back()) << 8;
    return sum;
}

uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(sum);
}

void put16(std::string& p, size_t at, uint16_t v) {
    p[at] = static_cast<char>(v >> 8);
    p[at + 1] = static_cast<char>(v & 0xff);
}

// The whole packet of a queued datagram: IPv4 (src and dst 4 bytes) or IPv6 header, the UDP
// or UDP-Lite header (checksum over everything, the pseudo-header's way), the data.
std::string datagram_packet(const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport,
                            const std::string& data, int protocol) {
    const bool v4 = src.size() == 4;
    const size_t ip_len = v4 ? 20 : 40, udp_len = 8 + data.size();
    std::string p(ip_len + udp_len, '\0');
    if (v4) {
        p[0] = 0x45;
        put16(p, 2, static_cast<uint16_t>(ip_len + udp_len));
        p[8] = 64;  // TTL
        p[9] = static_cast<char>(protocol);
        p.replace(12, 4, src);
        p.replace(16, 4, dst);  // the kernel writes the header checksum
    } else {
        p[0] = 0x60;
        put16(p, 4, static_cast<uint16_t>(udp_len));
        p[6] = static_cast<char>(protocol);
        p[7] = 64;  // hop limit
        p.replace(8, 16, src);
        p.replace(24, 16, dst);
    }
    put16(p, ip_len, sport);
    put16(p, ip_len + 2, dport);
    // UDP-Lite's length field is its checksum coverage: 0, all of it.
    put16(p, ip_len + 4, protocol == IPPROTO_UDPLITE ? 0 : static_cast<uint16_t>(udp_len));
    p.replace(ip_len + 8, data.size(), data);
    std::string pseudo = src + dst;
    pseudo.append(v4 ? 2 : 4, '\0');
    if (v4) {
        pseudo[pseudo.size() - 1] = static_cast<char>(protocol);
        pseudo.append(2, '\0');
        put16(pseudo, pseudo.size() - 2, static_cast<uint16_t>(udp_len));
    } else {
        put16(pseudo, pseudo.size() - 2, static_cast<uint16_t>(udp_len));
        pseudo.append(4, '\0');
        pseudo[pseudo.size() - 1] = static_cast<char>(protocol);
    }
    uint16_t check = static_cast<uint16_t>(~fold(sum16(std::string_view(p).substr(ip_len), sum16(pseudo))));
    put16(p, ip_len + 6, check == 0 ? 0xffff : check);
    return p;
}

// Checks the recorded datagrams against the socket they are put back to: addresses of its
// family (v4-mapped both or neither), sent to its address where it is bound to one (another
// socket may hold the same port on another address), a size a packet can carry.
Result<void> check_queued(const image::InetDgramSocket& d, bool v6only) {
    for (int i = 0; i < d.queued_size(); ++i) {
        const image::QueuedDatagram& q = d.queued(i);
        const size_t size = d.family() == AF_INET ? 4 : 16;
        auto bad = [&](std::string_view what) {
            return error_code(EINVAL, "queued datagram {}: {} (image is corrupt)", i + 1, what);
        };
        if (q.from().addr().size() != size || q.to().addr().size() != size) return bad("an address of another family");
        if (q.from().port() > 65535) return bad("a sender's port past 65535");
        if (is_v4_mapped(q.from()) != is_v4_mapped(q.to())) return bad("one address IPv4, the other IPv6");
        if (is_v4_mapped(q.to()) && v6only) return bad("an IPv4 datagram queued for an IPV6_V6ONLY socket");
        if (q.to().port() != d.local().port()) return bad("sent to another port than the socket's");
        if (!is_any(d.local()) && q.to().addr() != d.local().addr()) return bad("sent to another address than the socket's");
        const size_t header = is_v4_mapped(q.to()) || size == 4 ? 20 : 0;
        if (q.data().size() + 8 + header > kMaxDatagram) return bad(fmt::format("{} bytes: more than a packet carries", q.data().size()));
    }
    return ok();
}

// A raw socket writing whole IPv4 or IPv6 packets with the engine's mark, bound to loopback.
Result<UniqueFd> put_back_socket(int family) {
    UniqueFd r(socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!r) {
        if (errno == EPERM)
            return sys_error("socket(SOCK_RAW): queued datagrams are sent again from their senders' addresses, which needs "
                             "CAP_NET_RAW (not a user's, under --restore-as)");
        return sys_error("socket(SOCK_RAW)");
    }
    CKPT_TRY(sockopt::set_int(r.get(), SOL_SOCKET, SO_MARK, static_cast<int>(kPutBackMark), "SO_MARK"));
    if (setsockopt(r.get(), SOL_SOCKET, SO_BINDTODEVICE, "lo", 2) != 0) return sys_error("setsockopt(SO_BINDTODEVICE lo)");
    return r;
}

// Sends every queued datagram again to the socket s (bound, admitting only marked packets),
// waiting for each. The receive buffer is opened wide meanwhile (their sizes in memory are
// this host's, not the sender's) and set back, its lock too.
Result<void> put_back_queued(int s, const image::InetDgramSocket& d) {
    UniqueFd raw4, raw6;  // made first: a restore that may not make them changes nothing
    for (int i = 0; i < d.queued_size(); ++i) {
        const image::QueuedDatagram& q = d.queued(i);
        const bool v4 = unmapped(q.to().addr()).size() == 4;
        UniqueFd& raw = v4 ? raw4 : raw6;
        if (!raw)
            raw = CKPT_TRY_CTX(put_back_socket(v4 ? AF_INET : AF_INET6), "queued datagram {} of {} ({} bytes from {} to {})",
                               i + 1, d.queued_size(), q.data().size(), show_addr(q.from()), show_addr(q.to()));
    }
    const HostAddresses host = CKPT_TRY(HostAddresses::read());
    const int rcvbuf = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"));
    const int buf_lock = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK"));
    CKPT_TRY(sockopt::set_int(s, SOL_SOCKET, SO_RCVBUFFORCE, INT_MAX / 2, "SO_RCVBUFFORCE"));
    for (int i = 0; i < d.queued_size(); ++i) {
        const image::QueuedDatagram& q = d.queued(i);
        auto ctx = [&](Error e) {
            return e.context("queued datagram {} of {} ({} bytes from {} to {})", i + 1, d.queued_size(), q.data().size(),
                             show_addr(q.from()), show_addr(q.to()));
        };
        if (!host.holds(q.to().addr()))
            return ctx(error_code(EADDRNOTAVAIL, "{} is not an address of this host", show_addr(q.to())));
        const std::string src = unmapped(q.from().addr()), dst = unmapped(q.to().addr());
        const bool v4 = dst.size() == 4;
        const UniqueFd& raw = v4 ? raw4 : raw6;
        const std::string packet = datagram_packet(src, dst, static_cast<uint16_t>(q.from().port()),
                                                   static_cast<uint16_t>(q.to().port()), q.data(), d.protocol());
        sockaddr_storage to{};
        socklen_t tl;
        if (v4) {
            auto& in = reinterpret_cast<sockaddr_in&>(to);
            in.sin_family = AF_INET;
            memcpy(&in.sin_addr, dst.data(), 4);
            tl = sizeof in;
        } else {
            auto& in6 = reinterpret_cast<sockaddr_in6&>(to);
            in6.sin6_family = AF_INET6;
            memcpy(&in6.sin6_addr, dst.data(), 16);
            tl = sizeof in6;
        }
        const uint32_t before = CKPT_TRY_CTX(queue_memory(s), "queued datagram {}", i + 1);
        ssize_t n;
        do n = sendto(raw.get(), packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to), tl);
        while (n < 0 && errno == EINTR);
        if (n != static_cast<ssize_t>(packet.size())) return ctx(sys_error("sendto on a raw socket"));
        // Loopback delivers it at once, or from the softirq thread soon after.
        bool arrived = false;
        for (int wait_us = 0; wait_us <= 2'000'000 && !arrived; wait_us += 200) {
            arrived = CKPT_TRY_CTX(queue_memory(s), "queued datagram {}", i + 1) > before;
            if (!arrived) usleep(200);
        }
        if (!arrived) return ctx(error_code(ETIMEDOUT, "sent again, it did not reach the socket within 2 s"));
    }
    CKPT_TRY(sockopt::set_int(s, SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf / 2, "SO_RCVBUFFORCE"));
    if (CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF")) != rcvbuf)
        return error_code(EINVAL, "SO_RCVBUF not set back to {}", rcvbuf);
    CKPT_TRY(sockopt::set_int(s, SOL_SOCKET, SO_BUF_LOCK, buf_lock, "SO_BUF_LOCK"));
    return ok();
}

Result<UniqueFd> make_inet(const image::InetDgramSocket& d) {
    const Identity id{d.family(), d.type(), d.protocol()};
    if ((id.family != AF_INET && id.family != AF_INET6) || (id.type != SOCK_DGRAM && id.type != SOCK_RAW) ||
        !protocol_name(id.family, id.type, id.protocol) || id.protocol < 0 || id.protocol >= kIpprotoMax)
        return error_code(EINVAL, "a socket of family {} type {} protocol {} (image is corrupt)", id.family, id.type,
                          id.protocol);
    if (d.shutdown() > 3) return error_code(EINVAL, "shutdown state {} (image is corrupt)", d.shutdown());
    const std::string what = describe(id);
    const bool queued = d.queued_size() > 0;
    if (queued) {
        if (id.type != SOCK_DGRAM || (id.protocol != IPPROTO_UDP && id.protocol != IPPROTO_UDPLITE) || (d.shutdown() & 1) ||
            !d.has_local() || (!d.bind_device().empty() && d.bind_device() != "lo"))
            return error_code(EINVAL, "{}: datagrams queued for a socket the dump refuses them on (image is corrupt)", what);
        for (const auto& o : d.options())
            if (o.level() == SOL_SOCKET && o.name() == SO_REUSEPORT && o.value() != std::string(4, '\0'))
                return error_code(EINVAL, "{}: datagrams queued with SO_REUSEPORT (image is corrupt)", what);
        if (auto r = check_queued(d, id.family == AF_INET6 && v6only(d)); !r) return std::move(r).error().context("{}", what);
    }
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
    if (queued) CKPT_TRY_CTX(admit_only_marked(s), "{}", where);
    if (auto r = sockopt::bind_device(s, d.bind_device()); !r) return ctx(std::move(r).error());
    if (auto r = sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, d.sndbuf(), "SO_SNDBUF"); !r)
        return ctx(std::move(r).error());
    if (auto r = sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, d.rcvbuf(), "SO_RCVBUF"); !r)
        return ctx(std::move(r).error());
    // Before bind: IPV6_V6ONLY, the reuse flags, IP_FREEBIND decide what bind may take.
    if (auto r = sockopt::restore(s, specs_of(id.family), d.options()); !r) return ctx(std::move(r).error());
    // With datagrams to put back, the socket holds its port alone until they are in.
    const bool reuseaddr = CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"), "{}", where) != 0;
    if (queued && reuseaddr) CKPT_TRY_CTX(sockopt::set_int(s, SOL_SOCKET, SO_REUSEADDR, 0, "SO_REUSEADDR"), "{}", where);
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
                return ctx(error_code(EADDRINUSE, "bind to {}: the port is taken here by another socket{}", show_addr(d.local()),
                                      queued ? " (with datagrams queued, it must hold the port alone while they are put back)"
                                             : ""));
            return ctx(sys_error("bind to {}", show_addr(d.local())));
        }
    }
    // Before connect: a connected socket drops what its peer did not send, and datagrams
    // queued before the connect came from anyone.
    if (queued) {
        CKPT_TRY_CTX(put_back_queued(s, d), "{}", where);
        const int unused = 0;
        if (setsockopt(s, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0)
            return ctx(sys_error("setsockopt(SO_DETACH_FILTER)"));
        if (reuseaddr) CKPT_TRY_CTX(sockopt::set_int(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"), "{}", where);
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
    // An unconnected socket says ENOTCONN, and is shut down all the same.
    if (d.shutdown() != 0 && shutdown(s, d.shutdown() == 3 ? SHUT_RDWR : d.shutdown() == 2 ? SHUT_WR : SHUT_RD) != 0 &&
        errno != ENOTCONN)
        return ctx(sys_error("shutdown"));
    CKPT_TRY_CTX(sockopt::restore_filter(s, d.filter()), "{}", where);
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
