// AF_NETLINK sockets of the protocols whose state is all in the socket: NETLINK_ROUTE,
// NETLINK_SOCK_DIAG, NETLINK_XFRM, NETLINK_KOBJECT_UEVENT. NETLINK_GENERIC and NETLINK_NETFILTER
// are refused: their families may keep state in the kernel keyed by the socket's port id (a
// taskstats listener, an nfqueue bound to it...), which a new socket would not have.
// Each is made again with its type and protocol, bound to its port id (a socket never bound
// stays so; the kernel binds it at its first send), the multicast groups it joined
// (NETLINK_LIST_MEMBERSHIPS, every group, not only the first 32), connected to the port or
// group it was, with its options (sock_opts.h). Messages queued for it to read (a reply, a
// part of a dump, a notification) are refused by name: the kernel's answers cannot be put
// back. Other protocols (NETLINK_AUDIT, whose port id registers a daemon; NETLINK_USERSOCK,
// whose peers are processes...) are refused by name.
//
// The port id is in most cases the one the kernel chose: the process's pid at its first
// send (a negative one for its later sockets). The restored process has its pid, so the
// same port id is free again unless the original, left running, still holds it.
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"
#include "sock_opts.h"

#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

namespace ckpt::engine {
namespace {

using sockopt::Spec;

constexpr Spec kNetlinkOptions[] = {
    {SOL_NETLINK, NETLINK_PKTINFO, "NETLINK_PKTINFO", 4},
    {SOL_NETLINK, NETLINK_BROADCAST_ERROR, "NETLINK_BROADCAST_ERROR", 4},
    {SOL_NETLINK, NETLINK_NO_ENOBUFS, "NETLINK_NO_ENOBUFS", 4},
    {SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, "NETLINK_LISTEN_ALL_NSID", 4},
    {SOL_NETLINK, NETLINK_CAP_ACK, "NETLINK_CAP_ACK", 4},
    {SOL_NETLINK, NETLINK_EXT_ACK, "NETLINK_EXT_ACK", 4},
    {SOL_NETLINK, NETLINK_GET_STRICT_CHK, "NETLINK_GET_STRICT_CHK", 4},
};

// The most groups a socket may be in here (NETLINK_LIST_MEMBERSHIPS words).
constexpr size_t kMaxGroupWords = 64;

const std::vector<Spec>& specs() {
    static const std::vector<Spec> v = [] {
        std::vector<Spec> s(std::begin(kNetlinkOptions), std::end(kNetlinkOptions));
        s.insert(s.end(), sockopt::socket_level().begin(), sockopt::socket_level().end());
        return s;
    }();
    return v;
}

const char* protocol_name(int p) {
    switch (p) {
        case NETLINK_ROUTE: return "NETLINK_ROUTE";
        case NETLINK_SOCK_DIAG: return "NETLINK_SOCK_DIAG";
        case NETLINK_XFRM: return "NETLINK_XFRM";
        case NETLINK_KOBJECT_UEVENT: return "NETLINK_KOBJECT_UEVENT";
        default: return nullptr;
    }
}

const char* other_protocol_name(int p) {
    switch (p) {
        case NETLINK_GENERIC:
            return "NETLINK_GENERIC, whose families may keep state in the kernel keyed by its port id";
        case NETLINK_NETFILTER:
            return "NETLINK_NETFILTER, whose subsystems may keep state in the kernel keyed by its port id (nfqueue, "
                   "nflog)";
        case NETLINK_USERSOCK: return "NETLINK_USERSOCK";
        case NETLINK_FIREWALL: return "NETLINK_FIREWALL";
        case NETLINK_NFLOG: return "NETLINK_NFLOG";
        case NETLINK_SELINUX: return "NETLINK_SELINUX";
        case NETLINK_ISCSI: return "NETLINK_ISCSI";
        case NETLINK_AUDIT: return "NETLINK_AUDIT";
        case NETLINK_FIB_LOOKUP: return "NETLINK_FIB_LOOKUP";
        case NETLINK_CONNECTOR: return "NETLINK_CONNECTOR";
        case NETLINK_IP6_FW: return "NETLINK_IP6_FW";
        case NETLINK_DNRTMSG: return "NETLINK_DNRTMSG";
        case NETLINK_SCSITRANSPORT: return "NETLINK_SCSITRANSPORT";
        case NETLINK_ECRYPTFS: return "NETLINK_ECRYPTFS";
        case NETLINK_RDMA: return "NETLINK_RDMA";
        case NETLINK_CRYPTO: return "NETLINK_CRYPTO";
        case NETLINK_SMC: return "NETLINK_SMC";
        default: return "an unknown netlink protocol";
    }
}

bool claims_netlink(const FdProbe& probe) {
    if (!starts_with(probe.link, "socket:[")) return false;
    auto s = probe.take();
    if (!s) return false;
    auto family = sockopt::get_int(s->get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
    return family && *family == AF_NETLINK;
}

Result<sockaddr_nl> name_of(int s, bool peer) {
    sockaddr_nl a{};
    socklen_t l = sizeof a;
    if ((peer ? getpeername(s, reinterpret_cast<sockaddr*>(&a), &l) : getsockname(s, reinterpret_cast<sockaddr*>(&a), &l)) != 0)
        return sys_error("{}", peer ? "getpeername" : "getsockname");
    return a;
}

// Refuses a socket with messages queued for it to read, naming how many bytes.
Result<void> refuse_queued(int s) {
    char b;
    ssize_t n;
    do n = recv(s, &b, 1, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) return sys_error("recv(MSG_PEEK)");
    uint32_t mem[SK_MEMINFO_VARS] = {};
    socklen_t ml = sizeof mem;
    if (getsockopt(s, SOL_SOCKET, SO_MEMINFO, mem, &ml) != 0) return sys_error("getsockopt(SO_MEMINFO)");
    if (n < 0 && mem[SK_MEMINFO_RMEM_ALLOC] == 0) return ok();
    return error_code(ENOTSUP,
                      "messages queued to be read ({} bytes of memory in the receive queue, the first of {} bytes): queued netlink "
                      "messages are not supported",
                      mem[SK_MEMINFO_RMEM_ALLOC], n < 0 ? 0 : n);
}

Result<void> dump_netlink(const FdProbe& probe, image::Fd* f) {
    UniqueFd sock = CKPT_TRY(probe.take());
    const int s = sock.get();
    const int type = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_TYPE, "SO_TYPE"));
    const int protocol = CKPT_TRY(sockopt::get_int(s, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL"));
    const char* pname = protocol_name(protocol);
    if (!pname)
        return error_code(ENOTSUP, "an AF_NETLINK socket of protocol {} ({}): not supported", protocol,
                          other_protocol_name(protocol));
    if (type != SOCK_RAW && type != SOCK_DGRAM)
        return error_code(ENOTSUP, "an AF_NETLINK {} socket: not supported", sockopt::type_name(type));
    bool is_new = false;
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()), &is_new)));
    if (!is_new) return ok();

    image::NetlinkSocket* n = f->mutable_netlink();
    n->set_type(type);
    n->set_protocol(protocol);
    const sockaddr_nl local = CKPT_TRY(name_of(s, false));
    const sockaddr_nl peer = CKPT_TRY(name_of(s, true));
    n->set_portid(local.nl_pid);
    n->set_dst_portid(peer.nl_pid);
    if (peer.nl_groups != 0) {
        if (peer.nl_groups & (peer.nl_groups - 1))
            return error("getpeername gave the group mask {:#x}, not one group", peer.nl_groups);
        n->set_dst_group(static_cast<uint32_t>(__builtin_ctz(peer.nl_groups)) + 1);
    }
    const std::string where = fmt::format("AF_NETLINK {} socket, port id {}", pname, local.nl_pid);
    auto ctx = [&](Error e) { return e.context("{}", where); };

    std::vector<uint32_t> groups(kMaxGroupWords);
    socklen_t gl = static_cast<socklen_t>(groups.size() * sizeof(uint32_t));
    if (getsockopt(s, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups.data(), &gl) != 0)
        return ctx(sys_error("getsockopt(NETLINK_LIST_MEMBERSHIPS)"));
    if (gl > groups.size() * sizeof(uint32_t))
        return ctx(error_code(ENOTSUP, "a protocol of more than {} multicast groups: not supported", kMaxGroupWords * 32));
    groups.resize(gl / sizeof(uint32_t));
    while (!groups.empty() && groups.back() == 0) groups.pop_back();
    for (uint32_t w : groups) n->add_groups(w);

    if (auto r = sockopt::refuse_errors(s); !r) return ctx(std::move(r).error());
    if (auto r = sockopt::record_filter(s, n->mutable_filter()); !r) return ctx(std::move(r).error());
    if (auto r = refuse_queued(s); !r) return ctx(std::move(r).error());
    n->set_sndbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"), "{}", where)));
    n->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY_CTX(sockopt::get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"), "{}", where)));
    CKPT_TRY_CTX(sockopt::record(s, specs(), n->mutable_options()), "{}", where);
    return ok();
}

Result<UniqueFd> make_netlink(const image::NetlinkSocket& n) {
    const char* pname = protocol_name(n.protocol());
    if (!pname || (n.type() != SOCK_RAW && n.type() != SOCK_DGRAM))
        return error_code(EINVAL, "an AF_NETLINK socket of type {} protocol {} (image is corrupt)", n.type(), n.protocol());
    if (static_cast<size_t>(n.groups_size()) > kMaxGroupWords || n.dst_group() > kMaxGroupWords * 32)
        return error_code(EINVAL, "AF_NETLINK multicast groups beyond {} (image is corrupt)", kMaxGroupWords * 32);
    const std::string where = fmt::format("AF_NETLINK {} socket, port id {}", pname, n.portid());
    auto ctx = [&](Error e) { return e.context("{}", where); };
    UniqueFd sock(socket(AF_NETLINK, n.type() | SOCK_CLOEXEC, n.protocol()));
    if (!sock) return ctx(sys_error("socket"));
    const int s = sock.get();
    if (auto r = sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, n.sndbuf(), "SO_SNDBUF"); !r)
        return ctx(std::move(r).error());
    if (auto r = sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, n.rcvbuf(), "SO_RCVBUF"); !r)
        return ctx(std::move(r).error());
    if (auto r = sockopt::restore(s, specs(), n.options()); !r) return ctx(std::move(r).error());
    if (n.portid() != 0) {
        sockaddr_nl a{};
        a.nl_family = AF_NETLINK;
        a.nl_pid = n.portid();
        if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            if (errno == EADDRINUSE)
                return ctx(error_code(EADDRINUSE, "bind: port id {} is taken here by another netlink socket", n.portid()));
            return ctx(sys_error("bind"));
        }
    }
    // Every group by number (bind's mask reaches the first 32 only); joining needs the
    // rights the kernel asks of the restorer for the group, as it asked of the process.
    for (int w = 0; w < n.groups_size(); ++w)
        for (int bit = 0; bit < 32; ++bit)
            if (n.groups(w) & (1u << bit)) {
                int group = w * 32 + bit + 1;
                if (setsockopt(s, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
                    return ctx(sys_error("setsockopt(NETLINK_ADD_MEMBERSHIP, {})", group));
            }
    if (n.dst_portid() != 0 || n.dst_group() != 0) {
        sockaddr_nl a{};
        a.nl_family = AF_NETLINK;
        a.nl_pid = n.dst_portid();
        a.nl_groups = n.dst_group() ? 1u << (n.dst_group() - 1) : 0;
        if (n.dst_group() > 32)
            return ctx(error_code(ENOTSUP, "connected to multicast group {}: only groups 1-32 can be connected to",
                                  n.dst_group()));
        if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return ctx(sys_error("connect"));
    }
    // connect binds a socket never bound: only when it was bound at dump too.
    const sockaddr_nl now = CKPT_TRY(name_of(s, false));
    if (now.nl_pid != n.portid())
        return ctx(error_code(EINVAL, "port id {} once made, {} at dump (image is corrupt?)", now.nl_pid, n.portid()));
    CKPT_TRY_CTX(sockopt::restore_filter(s, n.filter()), "{}", where);
    return sock;
}

Result<void> restore_netlink(RestoreTask& t, const image::Fd& f) {
    if (f.description_id() == 0) return error_code(EINVAL, "netlink socket without a description id (image is corrupt)");
    return install_description(
        t, f,
        [&]() -> Result<UniqueFd> {
            if (!f.has_netlink())
                return error_code(EINVAL, "netlink socket: its first fd carries no state (image is corrupt)");
            return make_netlink(f.netlink());
        },
        true);
}

}  // namespace

extern const FdKind kNetlinkKind{
    .name = "netlink socket",
    .image_kind = image::Fd::NETLINK_SOCKET,
    .claims = claims_netlink,
    .dump = dump_netlink,
    .restore = restore_netlink,
};

}  // namespace ckpt::engine
