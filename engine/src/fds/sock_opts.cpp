#include "sock_opts.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/if.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>

#include <climits>
#include <cstring>
#include <vector>

#include "ckpt/base/strings.h"
#include "dump_context.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace ckpt::engine {

void record_addr(const sockaddr_storage& ss, image::InetAddr* a) {
    if (ss.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
        a->set_addr(std::string(reinterpret_cast<const char*>(&in.sin_addr), 4));
        a->set_port(ntohs(in.sin_port));
    } else {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
        a->set_addr(std::string(reinterpret_cast<const char*>(&in6.sin6_addr), 16));
        a->set_port(ntohs(in6.sin6_port));
        a->set_scope_id(in6.sin6_scope_id);
    }
}

std::string show_addr(const image::InetAddr& a) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (a.addr().size() == 4) {
        inet_ntop(AF_INET, a.addr().data(), text, sizeof text);
        return fmt::format("{}:{}", text, a.port());
    }
    if (a.addr().size() == 16) inet_ntop(AF_INET6, a.addr().data(), text, sizeof text);
    return fmt::format("[{}]:{}", text, a.port());
}

Result<std::pair<sockaddr_storage, socklen_t>> sockaddr_of(int family, const image::InetAddr& a, const char* which) {
    sockaddr_storage ss{};
    if (a.port() > 65535) return error_code(EINVAL, "{} port {} (image is corrupt)", which, a.port());
    if (family == AF_INET) {
        if (a.addr().size() != 4 || a.scope_id() != 0)
            return error_code(EINVAL, "{} address of {} bytes for AF_INET (image is corrupt)", which, a.addr().size());
        auto& in = reinterpret_cast<sockaddr_in&>(ss);
        in.sin_family = AF_INET;
        in.sin_port = htons(static_cast<uint16_t>(a.port()));
        std::memcpy(&in.sin_addr, a.addr().data(), 4);
        return std::pair{ss, static_cast<socklen_t>(sizeof in)};
    }
    if (a.addr().size() != 16)
        return error_code(EINVAL, "{} address of {} bytes for AF_INET6 (image is corrupt)", which, a.addr().size());
    auto& in6 = reinterpret_cast<sockaddr_in6&>(ss);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(static_cast<uint16_t>(a.port()));
    in6.sin6_scope_id = a.scope_id();
    std::memcpy(&in6.sin6_addr, a.addr().data(), 16);
    return std::pair{ss, static_cast<socklen_t>(sizeof in6)};
}

}  // namespace ckpt::engine

namespace ckpt::engine::sockopt {

namespace {

constexpr Spec kSocketLevel[] = {
    {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", 4},
    {SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT", 4},
    {SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST", 4},
    {SOL_SOCKET, SO_DONTROUTE, "SO_DONTROUTE", 4},
    {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 4},
    {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE", 4},
    {SOL_SOCKET, SO_NO_CHECK, "SO_NO_CHECK", 4},
    {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY", 4},
    {SOL_SOCKET, SO_MARK, "SO_MARK", 4},
    {SOL_SOCKET, SO_LINGER, "SO_LINGER", sizeof(linger)},
    {SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT", 4},
    {SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO", sizeof(timeval)},
    {SOL_SOCKET, SO_SNDTIMEO, "SO_SNDTIMEO", sizeof(timeval)},
    {SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED", 4},
    {SOL_SOCKET, SO_PASSPIDFD, "SO_PASSPIDFD", 4},
    {SOL_SOCKET, SO_PASSSEC, "SO_PASSSEC", 4},
    {SOL_SOCKET, SO_TIMESTAMP, "SO_TIMESTAMP", 4},
    {SOL_SOCKET, SO_TIMESTAMPNS, "SO_TIMESTAMPNS", 4},
    {SOL_SOCKET, SO_TIMESTAMPING, "SO_TIMESTAMPING", 4},
    {SOL_SOCKET, SO_RXQ_OVFL, "SO_RXQ_OVFL", 4},
    {SOL_SOCKET, SO_WIFI_STATUS, "SO_WIFI_STATUS", 4},
    {SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF", 4},
    {SOL_SOCKET, SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE", 4},
    {SOL_SOCKET, SO_TXTIME, "SO_TXTIME", 8},
    // After the buffers (udp.cpp, netlink.cpp set those first): whether their sizes are the
    // user's (locked) or the kernel's to tune.
    {SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK", 4},
};

// The IP and IPv6 levels (every AF_INET and AF_INET6 socket; the UDP and ICMP ones only
// where the protocol knows them: record() leaves out what a socket refuses).
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


// What a receiver is given with each message, set once what is queued for it is in (the
// kernel attaches a sender's credentials to a message sent to a receiver with SO_PASSPIDFD).
constexpr Spec kUnixLevel[] = {
    {SOL_SOCKET, SO_PASSPIDFD, "SO_PASSPIDFD", 4},
    {SOL_SOCKET, SO_PASSSEC, "SO_PASSSEC", 4},
};

const Spec* find(std::span<const Spec> specs, int level, int name) {
    for (const Spec& s : specs)
        if (s.level == level && s.name == name) return &s;
    return nullptr;
}

Result<std::string> get_raw(int s, const Spec& spec) {
    std::string v(spec.size ? spec.size : kMaxValue, '\0');
    socklen_t len = static_cast<socklen_t>(v.size());
    if (getsockopt(s, spec.level, spec.name, v.data(), &len) != 0) return sys_error("getsockopt({})", spec.text);
    v.resize(len);
    return v;
}

std::string show(const std::string& v) {
    if (v.size() == 4) {
        int i;
        std::memcpy(&i, v.data(), 4);
        return std::to_string(i);
    }
    std::string hex;
    for (unsigned char c : v) hex += fmt::format("{:02x}", c);
    return "0x" + hex;
}

}  // namespace

std::span<const Spec> socket_level() { return kSocketLevel; }
std::span<const Spec> ip_level() { return kInetOptions; }
std::span<const Spec> ipv6_level() { return kInet6Options; }
std::span<const Spec> unix_level() { return kUnixLevel; }

Result<int> get_int(int s, int level, int name, const char* text) {
    int v = 0;
    socklen_t l = sizeof v;
    if (getsockopt(s, level, name, &v, &l) != 0) return sys_error("getsockopt({})", text);
    return v;
}

Result<void> set_int(int s, int level, int name, int v, const char* text) {
    if (setsockopt(s, level, name, &v, sizeof v) != 0) return sys_error("setsockopt({}, {})", text, v);
    return ok();
}

Result<Borrowed> Borrowed::set(int s, int level, int name, const char* text, int value) {
    Borrowed b(s, level, name, text, CKPT_TRY(get_int(s, level, name, text)));
    if (b.was_ != value) {
        CKPT_TRY(set_int(s, level, name, value, text));
        b.changed_ = true;
    }
    return b;
}

Result<void> Borrowed::give_back() {
    if (!std::exchange(changed_, false)) return ok();
    return set_int(s_, level_, name_, was_, text_).context("putting it back after the dump's reading");
}

Borrowed::~Borrowed() {
    if (auto r = give_back(); !r) logger()->warn("{}", r.error().message());
}

Result<void> record(int s, std::span<const Spec> specs, Options* out) {
    for (const Spec& spec : specs) {
        auto v = get_raw(s, spec);
        if (!v) {
            // Not an option of this socket's protocol.
            if (v.error().code() == ENOPROTOOPT || v.error().code() == EOPNOTSUPP) continue;
            return std::move(v).error();
        }
        if (spec.size && v->size() != spec.size)
            return error("getsockopt({}) gave {} bytes, not {}", spec.text, v->size(), spec.size);
        image::SocketOption* o = out->Add();
        o->set_level(spec.level);
        o->set_name(spec.name);
        o->set_value(std::move(*v));
    }
    return ok();
}

Result<void> restore(int s, std::span<const Spec> specs, const Options& opts) {
    for (const image::SocketOption& o : opts) {
        const Spec* spec = find(specs, o.level(), o.name());
        if (!spec) return error_code(EINVAL, "socket option {}:{} this socket does not take (image is corrupt)", o.level(), o.name());
        if (spec->size ? o.value().size() != spec->size : o.value().size() > kMaxValue)
            return error_code(EINVAL, "{} of {} bytes (image is corrupt)", spec->text, o.value().size());
        std::string now = CKPT_TRY(get_raw(s, *spec));
        if (now == o.value()) continue;
        if (setsockopt(s, spec->level, spec->name, o.value().data(), static_cast<socklen_t>(o.value().size())) != 0)
            return sys_error("setsockopt({}, {})", spec->text, show(o.value()));
        now = CKPT_TRY(get_raw(s, *spec));
        if (now != o.value())
            return error_code(EINVAL, "{} is {} once set, {} at dump", spec->text, show(now), show(o.value()));
    }
    return ok();
}

Result<void> restore_buffer(int s, int name, int force, uint32_t want, const char* text, bool lock) {
    if (want == 0) return ok();  // not recorded (getsockopt never reads 0)
    if (want > static_cast<uint32_t>(INT_MAX)) return error_code(EINVAL, "{} {} (image is corrupt)", text, want);
    if (!lock && static_cast<uint32_t>(CKPT_TRY(get_int(s, SOL_SOCKET, name, text))) == want) return ok();
    int half = static_cast<int>((want + 1) / 2);
    if (setsockopt(s, SOL_SOCKET, force, &half, sizeof half) != 0 && setsockopt(s, SOL_SOCKET, name, &half, sizeof half) != 0)
        return sys_error("setsockopt({}, {})", text, half);
    int now = CKPT_TRY(get_int(s, SOL_SOCKET, name, text));
    if (static_cast<uint32_t>(now) < want)
        return error_code(ENOBUFS, "{} is {} at dump, only {} here (the system's limit; root may exceed it)", text, want,
                          now);
    return ok();
}

Result<std::string> bound_device(int s) {
    char name[IFNAMSIZ + 1] = {};
    socklen_t len = IFNAMSIZ;
    if (getsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, name, &len) != 0) return sys_error("getsockopt(SO_BINDTODEVICE)");
    return std::string(name, strnlen(name, std::min<size_t>(len, IFNAMSIZ)));
}

Result<void> bind_device(int s, const std::string& name) {
    if (name.empty()) return ok();
    if (name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos)
        return error_code(EINVAL, "interface name of {} bytes (image is corrupt)", name.size());
    if (setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, name.data(), static_cast<socklen_t>(name.size())) != 0)
        return sys_error("setsockopt(SO_BINDTODEVICE, {}) (is there such an interface here?)", name);
    return ok();
}

Result<void> record_filter(int s, image::SocketFilter* out) {
    socklen_t count = 0;  // SO_GET_FILTER counts instructions, not bytes
    if (getsockopt(s, SOL_SOCKET, SO_GET_FILTER, nullptr, &count) != 0) {
        if (errno == EACCES)
            return error_code(ENOTSUP, "an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back: not supported");
        return sys_error("getsockopt(SO_GET_FILTER)");
    }
    std::vector<sock_filter> code(count);
    if (count != 0) {
        socklen_t got = count;
        if (getsockopt(s, SOL_SOCKET, SO_GET_FILTER, code.data(), &got) != 0) return sys_error("getsockopt(SO_GET_FILTER)");
        if (got != count) return error_code(EAGAIN, "the socket filter changed while it was read");
    }
    const bool locked = CKPT_TRY(get_int(s, SOL_SOCKET, SO_LOCK_FILTER, "SO_LOCK_FILTER")) != 0;
    if (code.empty() && !locked) return ok();
    out->set_code(reinterpret_cast<const char*>(code.data()), code.size() * sizeof(sock_filter));
    out->set_locked(locked);
    return ok();
}

Result<void> restore_filter(int s, const image::SocketFilter& f) {
    const std::string& code = f.code();
    if (code.size() % sizeof(sock_filter) != 0 || code.size() / sizeof(sock_filter) > BPF_MAXINSNS)
        return error_code(EINVAL, "a socket filter of {} bytes (image is corrupt)", code.size());
    if (!code.empty()) {
        std::vector<sock_filter> insns(code.size() / sizeof(sock_filter));
        memcpy(insns.data(), code.data(), code.size());
        sock_fprog prog{static_cast<unsigned short>(insns.size()), insns.data()};
        if (setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
            return sys_error("setsockopt(SO_ATTACH_FILTER) of {} instructions", insns.size());
        image::SocketFilter back;
        CKPT_TRY(record_filter(s, &back));
        if (back.code() != code) return error_code(EINVAL, "the socket filter reads back other than recorded");
    }
    if (f.locked()) CKPT_TRY(set_int(s, SOL_SOCKET, SO_LOCK_FILTER, 1, "SO_LOCK_FILTER"));
    return ok();
}

Result<void> refuse_errors(int s) {
    // poll() shows a pending error (which SO_ERROR would clear) and a non-empty error queue.
    pollfd p{s, 0, 0};
    if (poll(&p, 1, 0) < 0) return sys_error("poll");
    if (p.revents & POLLERR)
        return error_code(ENOTSUP, "a pending socket error or a non-empty error queue (IP_RECVERR): not supported");
    return ok();
}

std::string family_name(int family) {
    switch (family) {
        case AF_UNIX: return "AF_UNIX";
        case AF_INET: return "AF_INET";
        case AF_INET6: return "AF_INET6";
        case AF_NETLINK: return "AF_NETLINK";
        case AF_PACKET: return "AF_PACKET";
        case AF_KEY: return "AF_KEY";
        case AF_BLUETOOTH: return "AF_BLUETOOTH";
        case AF_ALG: return "AF_ALG";
        case AF_VSOCK: return "AF_VSOCK";
        case AF_XDP: return "AF_XDP";
        case AF_TIPC: return "AF_TIPC";
        case AF_CAN: return "AF_CAN";
        case AF_RDS: return "AF_RDS";
        case AF_APPLETALK: return "AF_APPLETALK";
        case AF_X25: return "AF_X25";
        case AF_AX25: return "AF_AX25";
        case AF_IPX: return "AF_IPX";
        case AF_LLC: return "AF_LLC";
        case AF_IB: return "AF_IB";
        case AF_MPLS: return "AF_MPLS";
        case AF_SMC: return "AF_SMC";
        case AF_QIPCRTR: return "AF_QIPCRTR";
        case AF_KCM: return "AF_KCM";
        default: return fmt::format("address family {}", family);
    }
}

std::string type_name(int type) {
    switch (type) {
        case SOCK_STREAM: return "SOCK_STREAM";
        case SOCK_DGRAM: return "SOCK_DGRAM";
        case SOCK_RAW: return "SOCK_RAW";
        case SOCK_RDM: return "SOCK_RDM";
        case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
        case SOCK_PACKET: return "SOCK_PACKET";
        default: return fmt::format("type {}", type);
    }
}

}  // namespace ckpt::engine::sockopt
