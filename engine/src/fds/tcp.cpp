// TCP sockets of AF_INET and AF_INET6 (v4-mapped addresses too). A listening socket is made
// again with its address, backlog and options. An established connection (only with
// --tcp-established) is taken apart and put together again with TCP_REPAIR: in repair mode
// the kernel hands out and takes back a connection's sequence numbers, the contents of both
// queues, the options its handshake negotiated, its windows and timestamp clock, and a
// connect() sends no SYN but makes the connection established at once.
//
// The dump reads each socket through the engine's own copy of its fd (pidfd_getfd), which is
// the tree's socket: options, TCP_INFO (state, accept queue, negotiated options) and, in
// repair mode, the queues (MSG_PEEK on the chosen queue). While it does, a socket filter that
// drops every incoming segment is attached: nothing is acknowledged that the image would
// lack. When the tree is left running, repair mode and the filter go again (TCP_REPAIR_OFF
// sends a window probe: the peer retransmits what was dropped at once). When the tree is
// killed, its connections are closed by the engine still in repair mode: silently, no FIN,
// no reset. Between that kill and the restore the connection has no socket here: a segment
// the peer sends then is answered with a reset (docs/engine.md, "TCP").
//
// The restore makes each connection in repair mode and leaves repair mode only once every
// fd of the tree is in place (the peer may be another socket of the tree), then sends what
// had never been sent.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/in6.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"
#include "sock_opts.h"

namespace ckpt::engine {
namespace {

// Bytes one queue of a connection may hold in the image (beyond any socket buffer by far).
constexpr size_t kMaxQueue = 64u << 20;
// The largest listen(2) backlog the kernel keeps (sk_max_ack_backlog is a u32, somaxconn an int).
constexpr uint32_t kMaxBacklog = 65535;
// Limits the kernel puts on the keepalive options and window scaling.
constexpr uint32_t kMaxKeepIdle = 32767, kMaxKeepIntvl = 32767, kMaxKeepCnt = 127, kMaxWscale = 14;

using sockopt::get_int;
using sockopt::set_int;

Result<int> ioctl_int(int s, unsigned long req, const char* name) {
    int v = 0;
    if (ioctl(s, req, &v) != 0) return sys_error("ioctl({})", name);
    return v;
}

const char* state_name(int st) {
    switch (st) {
        case TCP_ESTABLISHED: return "ESTABLISHED";
        case TCP_SYN_SENT: return "SYN_SENT";
        case TCP_SYN_RECV: return "SYN_RECV";
        case TCP_FIN_WAIT1: return "FIN_WAIT1";
        case TCP_FIN_WAIT2: return "FIN_WAIT2";
        case TCP_TIME_WAIT: return "TIME_WAIT";
        case TCP_CLOSE: return "CLOSE";
        case TCP_CLOSE_WAIT: return "CLOSE_WAIT";
        case TCP_LAST_ACK: return "LAST_ACK";
        case TCP_LISTEN: return "LISTEN";
        case TCP_CLOSING: return "CLOSING";
        default: return "unknown";
    }
}

// The states of a connection one end or both have shut down (sent a FIN) that are restored:
// which FINs were sent by this end (and acknowledged by the peer) or received from the peer.
// TIME_WAIT of a socket still held is seen as CLOSE (the kernel moved the connection to a
// socket of its own) and refused.
bool half_closed(int st) {
    return st == TCP_FIN_WAIT1 || st == TCP_FIN_WAIT2 || st == TCP_CLOSE_WAIT || st == TCP_LAST_ACK ||
           st == TCP_CLOSING;
}
bool fin_sent(int st) { return st == TCP_FIN_WAIT1 || st == TCP_FIN_WAIT2 || st == TCP_LAST_ACK || st == TCP_CLOSING; }
bool fin_acked(int st) { return st == TCP_FIN_WAIT2; }
bool fin_received(int st) { return st == TCP_CLOSE_WAIT || st == TCP_LAST_ACK || st == TCP_CLOSING; }

// Whether an AF_INET6 address is a v4-mapped one (::ffff:a.b.c.d).
bool v4_mapped(const std::string& a) {
    static constexpr char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\xff', '\xff'};
    return a.size() == 16 && std::memcmp(a.data(), kMapped, 12) == 0;
}

// The engine's copy of the fd when it is a TCP socket of AF_INET or AF_INET6.
Result<UniqueFd> take_tcp(const FdProbe& probe) {
    UniqueFd s = CKPT_TRY(probe.take());
    int domain = CKPT_TRY(get_int(s.get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"));
    int type = CKPT_TRY(get_int(s.get(), SOL_SOCKET, SO_TYPE, "SO_TYPE"));
    int proto = CKPT_TRY(get_int(s.get(), SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL"));
    if ((domain != AF_INET && domain != AF_INET6) || type != SOCK_STREAM || proto != IPPROTO_TCP)
        return error_code(ENOTSUP, "not a TCP socket");
    return s;
}

bool claims_tcp(const FdProbe& probe) { return starts_with(probe.link, "socket:[") && static_cast<bool>(take_tcp(probe)); }

// ---- options ----------------------------------------------------------------------------

// TCP's own options beyond the fields of TcpSocket (TCP_MAXSEG and TCP_WINDOW_CLAMP belong to
// a connection's repair, TCP_QUICKACK is a moment's state).
constexpr sockopt::Spec kTcpLevel[] = {
    {IPPROTO_TCP, TCP_CORK, "TCP_CORK", 4},
    {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", 4},
    {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", 4},
    {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", 4},
    {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", 4},
    {IPPROTO_TCP, TCP_SYNCNT, "TCP_SYNCNT", 4},
    {IPPROTO_TCP, TCP_LINGER2, "TCP_LINGER2", 4},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", 4},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", 4},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", 4},
    {IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, "TCP_THIN_LINEAR_TIMEOUTS", 4},
    {IPPROTO_TCP, TCP_FASTOPEN, "TCP_FASTOPEN", 4},
    {IPPROTO_TCP, TCP_FASTOPEN_CONNECT, "TCP_FASTOPEN_CONNECT", 4},
    {IPPROTO_TCP, TCP_INQ, "TCP_INQ", 4},
    {IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION", 0},
};

// Every option of a TCP socket of the family beyond TcpSocket's fields: IP level (without the
// multicast ones, which the kernel refuses to set on a stream socket: an accepted connection
// reads its SYN's TTL as its multicast TTL), TCP level, socket level (SO_BUF_LOCK last, after
// the buffers). Those of the tables a TCP socket does not know are left out by record().
const std::vector<sockopt::Spec>& tcp_specs(int family) {
    auto make = [](std::initializer_list<std::span<const sockopt::Spec>> parts) {
        static constexpr std::pair<int, int> kMulticast[] = {
            {IPPROTO_IP, IP_MULTICAST_TTL},       {IPPROTO_IP, IP_MULTICAST_LOOP},
            {IPPROTO_IP, IP_MULTICAST_ALL},       {IPPROTO_IP, IP_MULTICAST_IF},
            {IPPROTO_IPV6, IPV6_MULTICAST_HOPS},  {IPPROTO_IPV6, IPV6_MULTICAST_LOOP},
            {IPPROTO_IPV6, IPV6_MULTICAST_ALL},   {IPPROTO_IPV6, IPV6_MULTICAST_IF}};
        std::vector<sockopt::Spec> v;
        for (auto part : parts)
            for (const sockopt::Spec& spec : part)
                if (std::find(std::begin(kMulticast), std::end(kMulticast), std::pair{spec.level, spec.name}) ==
                    std::end(kMulticast))
                    v.push_back(spec);
        return v;
    };
    static const std::vector<sockopt::Spec> v4 = make({sockopt::ip_level(), kTcpLevel, sockopt::socket_level()});
    static const std::vector<sockopt::Spec> v6 =
        make({sockopt::ipv6_level(), sockopt::ip_level(), kTcpLevel, sockopt::socket_level()});
    return family == AF_INET6 ? v6 : v4;
}

// SO_BUF_LOCK as recorded (a connection's buffers, set again last, locked them).
Result<void> restore_buf_lock(int s, const sockopt::Options& options) {
    for (const auto& o : options)
        if (o.level() == SOL_SOCKET && o.name() == SO_BUF_LOCK) {
            int v = 0;
            if (o.value().size() != sizeof v) return error_code(EINVAL, "SO_BUF_LOCK of {} bytes (image is corrupt)", o.value().size());
            std::memcpy(&v, o.value().data(), sizeof v);
            return set_int(s, SOL_SOCKET, SO_BUF_LOCK, v, "SO_BUF_LOCK");
        }
    return ok();
}

Result<void> dump_options(int s, int family, image::TcpSocket* t) {
    t->set_reuseaddr(CKPT_TRY(get_int(s, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR")) != 0);
    t->set_reuseport(CKPT_TRY(get_int(s, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT")) != 0);
    t->set_sndbuf(static_cast<uint32_t>(CKPT_TRY(get_int(s, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"))));
    t->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY(get_int(s, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"))));
    t->set_keepalive(CKPT_TRY(get_int(s, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE")) != 0);
    t->set_keepidle(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"))));
    t->set_keepintvl(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"))));
    t->set_keepcnt(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"))));
    t->set_nodelay(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY")) != 0);
    if (family == AF_INET6) t->set_v6only(CKPT_TRY(get_int(s, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY")) != 0);
    t->set_freebind(CKPT_TRY(get_int(s, IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND")) != 0);
    linger l{};
    socklen_t len = sizeof l;
    if (getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &len) != 0) return sys_error("getsockopt(SO_LINGER)");
    t->set_linger(l.l_onoff != 0);
    t->set_linger_secs(static_cast<uint32_t>(l.l_linger));
    CKPT_TRY(sockopt::record(s, tcp_specs(family), t->mutable_options()));
    t->set_bind_device(CKPT_TRY(sockopt::bound_device(s)));
    // The process's own filter: the dump's replaces it on a connection while it is recorded,
    // and gives it back (TcpRepairHold).
    return sockopt::record_filter(s, t->mutable_filter());
}

// Options set before bind (IPV6_V6ONLY, the reuse flags decide what bind may share).
Result<void> restore_options(int s, int family, const image::TcpSocket& t, bool lock_buffers) {
    if (t.keepidle() < 1 || t.keepidle() > kMaxKeepIdle || t.keepintvl() < 1 || t.keepintvl() > kMaxKeepIntvl ||
        t.keepcnt() < 1 || t.keepcnt() > kMaxKeepCnt || t.linger_secs() > static_cast<uint32_t>(INT_MAX))
        return error_code(EINVAL, "TCP keepalive or linger time out of range (image is corrupt)");
    if (family != AF_INET6 && t.v6only()) return error_code(EINVAL, "IPV6_V6ONLY on an AF_INET socket (image is corrupt)");
    CKPT_TRY(set_int(s, SOL_SOCKET, SO_REUSEADDR, t.reuseaddr(), "SO_REUSEADDR"));
    CKPT_TRY(set_int(s, SOL_SOCKET, SO_REUSEPORT, t.reuseport(), "SO_REUSEPORT"));
    CKPT_TRY(set_int(s, SOL_SOCKET, SO_KEEPALIVE, t.keepalive(), "SO_KEEPALIVE"));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(t.keepidle()), "TCP_KEEPIDLE"));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(t.keepintvl()), "TCP_KEEPINTVL"));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(t.keepcnt()), "TCP_KEEPCNT"));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_NODELAY, t.nodelay(), "TCP_NODELAY"));
    if (family == AF_INET6) CKPT_TRY(set_int(s, IPPROTO_IPV6, IPV6_V6ONLY, t.v6only(), "IPV6_V6ONLY"));
    CKPT_TRY(set_int(s, IPPROTO_IP, IP_FREEBIND, t.freebind(), "IP_FREEBIND"));
    linger l{t.linger() ? 1 : 0, static_cast<int>(t.linger_secs())};
    if (setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0) return sys_error("setsockopt(SO_LINGER)");
    // A connection's buffers are always set (locked): its queues are put in with room to
    // spare (make_connection) and the recorded sizes set back after (finish_tcp). A listening
    // socket's only where they differ from a fresh socket's (setting one turns the kernel's
    // tuning of the connections it accepts off).
    CKPT_TRY(sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, t.sndbuf(), "SO_SNDBUF", lock_buffers));
    CKPT_TRY(sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, t.rcvbuf(), "SO_RCVBUF", lock_buffers));
    return ok();
}

// ---- repair mode ------------------------------------------------------------------------

Result<void> select_queue(int s, int q) { return set_int(s, IPPROTO_TCP, TCP_REPAIR_QUEUE, q, "TCP_REPAIR_QUEUE"); }

// What the selected queue holds: exactly `len` bytes, copied without taking them out.
Result<std::string> peek_queue(int s, size_t len, const char* which) {
    std::string data(len + 1, '\0');  // one more: a queue longer than counted is seen
    ssize_t n;
    do n = recv(s, data.data(), data.size(), MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN && len == 0) n = 0;
    if (n < 0) return sys_error("recv(MSG_PEEK) of the {} queue", which);
    if (static_cast<size_t>(n) != len) return error("the {} queue holds {} bytes, {} peeked", which, len, n);
    data.resize(len);
    return data;
}

// Attaches a filter that drops every incoming segment before TCP sees it (no acknowledgment).
Result<void> drop_incoming(int s) {
    sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    sock_fprog prog{1, &drop};
    if (setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) return sys_error("setsockopt(SO_ATTACH_FILTER)");
    return ok();
}

Result<void> dump_connection(const FdProbe& probe, int s, const tcp_info& info, image::TcpSocket* t) {
    if (t->filter().locked())
        return error_code(ENOTSUP, "SO_LOCK_FILTER: the dump cannot hold the connection's incoming segments with a "
                                   "filter of its own (not supported)");
    CKPT_TRY(drop_incoming(s));
    UniqueFd held(fcntl(s, F_DUPFD_CLOEXEC, 3));
    if (!held) return sys_error("dup");
    // Released (the process's filter back, or none) whatever happens.
    probe.state->tcp_repair.socks.push_back({std::move(held), t->filter()});
    if (auto r = set_int(s, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR"); !r)
        return std::move(r).error().context("TCP_REPAIR needs CAP_NET_ADMIN in the socket's network namespace");

    image::TcpConnection* c = t->mutable_conn();
    const int st = info.tcpi_state;
    // Our FIN, sent and not acknowledged, is counted in the send queue (one sequence number).
    const size_t fin_out = fin_sent(st) && !fin_acked(st) ? 1 : 0;
    size_t outq = static_cast<size_t>(CKPT_TRY(ioctl_int(s, SIOCOUTQ, "SIOCOUTQ")));
    size_t unsent = static_cast<size_t>(CKPT_TRY(ioctl_int(s, SIOCOUTQNSD, "SIOCOUTQNSD")));
    size_t inq = static_cast<size_t>(CKPT_TRY(ioctl_int(s, SIOCINQ, "SIOCINQ")));
    if (outq > kMaxQueue || inq > kMaxQueue)
        return error_code(ENOTSUP, "more than {} bytes queued on this TCP connection: not supported", kMaxQueue);
    if (unsent > outq) return error("{} bytes not sent of {} in the send queue", unsent, outq);
    if (outq < fin_out) return error("state {} with an empty send queue", state_name(st));
    outq -= fin_out;
    // Bytes the peer's window has not taken yet: a connection restored so was seen to stall
    // (its segments dropped by the peer, retransmitted with growing backoff).
    if (unsent > 0)
        return error_code(ENOTSUP,
                          "{} bytes in its send queue were never sent (the peer's window is closed): not supported",
                          unsent);

    CKPT_TRY(select_queue(s, TCP_SEND_QUEUE));
    c->set_snd_seq(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ"))));
    c->set_send_queue(CKPT_TRY(peek_queue(s, outq, "send")));
    c->set_unsent(static_cast<uint32_t>(unsent));
    CKPT_TRY(select_queue(s, TCP_RECV_QUEUE));
    c->set_rcv_seq(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ"))));
    c->set_recv_queue(CKPT_TRY(peek_queue(s, inq, "receive")));
    CKPT_TRY(select_queue(s, TCP_NO_QUEUE));

    c->set_mss(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG"))));
    c->set_wscale(info.tcpi_options & TCPI_OPT_WSCALE);
    c->set_snd_wscale(info.tcpi_snd_wscale);
    c->set_rcv_wscale(info.tcpi_rcv_wscale);
    c->set_sack(info.tcpi_options & TCPI_OPT_SACK);
    c->set_timestamps(info.tcpi_options & TCPI_OPT_TIMESTAMPS);
    c->set_timestamp(static_cast<uint32_t>(CKPT_TRY(get_int(s, IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP"))));
    tcp_repair_window w{};
    socklen_t wl = sizeof w;
    if (getsockopt(s, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &wl) != 0) return sys_error("getsockopt(TCP_REPAIR_WINDOW)");
    c->set_snd_wl1(w.snd_wl1);
    c->set_snd_wnd(w.snd_wnd);
    c->set_max_window(w.max_window);
    c->set_rcv_wnd(w.rcv_wnd);
    c->set_rcv_wup(w.rcv_wup);
    // Nothing may have changed meanwhile (the filter holds incoming segments, the tree is
    // frozen): the state read first still holds.
    tcp_info again{};
    socklen_t il = sizeof again;
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &again, &il) != 0) return sys_error("getsockopt(TCP_INFO)");
    if (again.tcpi_state != info.tcpi_state)
        return error_code(ENOTSUP, "the connection went from state {} to {} while it was dumped", state_name(st),
                          state_name(again.tcpi_state));
    if (half_closed(st)) c->set_tcp_state(static_cast<uint32_t>(st));
    return ok();
}

Result<void> dump_tcp(const FdProbe& probe, image::Fd* f) {
    UniqueFd sock = CKPT_TRY(take_tcp(probe));
    int s = sock.get();
    bool is_new = false;
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()), &is_new)));
    if (!is_new) return ok();  // another fd of a socket recorded already

    int family = CKPT_TRY(get_int(s, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"));
    tcp_info info{};
    socklen_t il = sizeof info;
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &info, &il) != 0) return sys_error("getsockopt(TCP_INFO)");
    image::TcpSocket* t = f->mutable_tcp();
    t->set_family(family);
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (getsockname(s, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return sys_error("getsockname");
    record_addr(ss, t->mutable_local());
    const std::string local = show_addr(t->local());

    if (info.tcpi_state == TCP_LISTEN) {
        // For a listening socket TCP_INFO counts its accept queue and keeps its backlog.
        if (info.tcpi_unacked != 0)
            return error_code(ENOTSUP,
                              "a listening TCP socket on {} with {} connections waiting in its accept queue: not "
                              "supported",
                              local, info.tcpi_unacked);
        t->set_state(image::TcpSocket::LISTEN);
        t->set_backlog(info.tcpi_sacked);
        return dump_options(s, family, t);
    }
    if (info.tcpi_state == TCP_CLOSE) {
        // Never connected: a connection that ended (reset, closed both ways, a connect that
        // failed) has its receive side shut down, which a new socket would not have.
        pollfd p{s, POLLIN | POLLRDHUP, 0};
        if (poll(&p, 1, 0) < 0) return sys_error("poll");
        if (p.revents & POLLRDHUP)
            return error_code(ENOTSUP, "a TCP socket on {} whose connection has ended (state CLOSE): not supported",
                              local);
        CKPT_TRY(sockopt::refuse_errors(s));
        t->set_state(image::TcpSocket::CLOSED);
        return dump_options(s, family, t);
    }
    if (info.tcpi_state != TCP_ESTABLISHED && !half_closed(info.tcpi_state)) {
        return error_code(ENOTSUP,
                          "a TCP socket on {} in state {}: only LISTEN, ESTABLISHED and the half-closed FIN_WAIT1/2, "
                          "CLOSE_WAIT, LAST_ACK and CLOSING are supported",
                          local, state_name(info.tcpi_state));
    }
    sl = sizeof ss;
    if (getpeername(s, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return sys_error("getpeername");
    record_addr(ss, t->mutable_peer());
    const std::string conn = fmt::format("{} -> {}", local, show_addr(t->peer()));
    if (!probe.state->tcp_established)
        return error_code(ENOTSUP, "an established TCP connection {}: dump with --tcp-established to save it", conn);
    t->set_state(image::TcpSocket::ESTABLISHED);
    CKPT_TRY(dump_options(s, family, t));
    return dump_connection(probe, s, info, t).context("TCP connection {}", conn);
}

// ---- restore ----------------------------------------------------------------------------

Result<void> send_all(int s, std::string_view data, const char* what) {
    while (!data.empty()) {
        ssize_t n = send(s, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN)
            return error_code(ENOBUFS, "{}: {} bytes do not fit the socket's buffer", what, data.size());
        if (n < 0) return sys_error("{}: send", what);
        data.remove_prefix(static_cast<size_t>(n));
    }
    return ok();
}

Result<void> check_connection(const image::TcpConnection& c) {
    if (c.send_queue().size() > kMaxQueue || c.recv_queue().size() > kMaxQueue)
        return error_code(EINVAL, "a queue of {} bytes, more than {} (image is corrupt)",
                          std::max(c.send_queue().size(), c.recv_queue().size()), kMaxQueue);
    if (c.unsent() > c.send_queue().size())
        return error_code(EINVAL, "{} bytes unsent of a send queue of {} (image is corrupt)", c.unsent(),
                          c.send_queue().size());
    if (c.mss() < 88 || c.mss() > 65535) return error_code(EINVAL, "MSS {} (image is corrupt)", c.mss());
    if (c.snd_wscale() > kMaxWscale || c.rcv_wscale() > kMaxWscale)
        return error_code(EINVAL, "window scale {}/{} (image is corrupt)", c.snd_wscale(), c.rcv_wscale());
    if (c.snd_wnd() > c.max_window()) return error_code(EINVAL, "send window beyond its maximum (image is corrupt)");
    return ok();
}

// The connection's TCP state (TCP_INFO).
Result<int> tcp_state(int s) {
    tcp_info info{};
    socklen_t il = sizeof info;
    if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &info, &il) != 0) return sys_error("getsockopt(TCP_INFO)");
    return info.tcpi_state;
}

uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

uint32_t add_words(const unsigned char* p, size_t len, uint32_t sum = 0) {
    for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
    if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
    return sum;
}

// Hands the restored connection (in repair mode) one segment from its peer, as the peer sent
// it before the dump: its FIN (`fin`) and the acknowledgment `ack`, at sequence number `seq`.
// The kernel has no repair option for a FIN received or a FIN of ours acknowledged; this
// segment, made here and sent through a raw socket (CAP_NET_RAW) to the connection's local
// address, takes the connection to the state it was in. It goes no further than this host
// (the destination is local) and carries no data. An IPv4 packet for AF_INET and v4-mapped
// AF_INET6 connections (IPv4 on the wire), an IPv6 one for the others; the raw socket is
// given the whole packet, its header included (IPPROTO_RAW). Then waits until the
// connection is in state `want`.
Result<void> inject_segment(int s, const image::TcpSocket& t, bool fin, uint32_t seq, uint32_t ack, int want) {
    const image::TcpConnection& c = t.conn();
    auto v4 = [](const std::string& a) -> const char* {
        return a.size() == 4 ? a.data() : v4_mapped(a) ? a.data() + 12 : nullptr;
    };
    const std::string& peer = t.peer().addr();
    const std::string& local = t.local().addr();
    const bool ipv4 = v4(peer) && v4(local);
    if (!ipv4 && (peer.size() != 16 || local.size() != 16))
        return error_code(EINVAL, "state {}: addresses of {} and {} bytes (image is corrupt)", state_name(want),
                          peer.size(), local.size());
    const size_t ip_len = ipv4 ? 20 : 40;
    const size_t addr_len = ipv4 ? 4 : 16;
    const char* src = ipv4 ? v4(peer) : peer.data();
    const char* dst = ipv4 ? v4(local) : local.data();
    auto put16 = [](unsigned char* p, uint32_t v) {
        p[0] = static_cast<unsigned char>(v >> 8);
        p[1] = static_cast<unsigned char>(v);
    };
    auto put32 = [&](unsigned char* p, uint32_t v) {
        put16(p, v >> 16);
        put16(p + 2, v & 0xffff);
    };
    unsigned char pkt[60] = {};
    const size_t len = ip_len + 20;
    if (ipv4) {
        // IPv4 header (the kernel fills in its checksum).
        pkt[0] = 0x45;
        pkt[3] = static_cast<unsigned char>(len);
        pkt[8] = 64;  // TTL
        pkt[9] = IPPROTO_TCP;
        std::memcpy(pkt + 12, src, 4);
        std::memcpy(pkt + 16, dst, 4);
    } else {
        // IPv6 header: version 6, no traffic class or flow label; the TCP header follows.
        pkt[0] = 0x60;
        put16(pkt + 4, 20);  // payload length
        pkt[6] = IPPROTO_TCP;
        pkt[7] = 64;  // hop limit
        std::memcpy(pkt + 8, src, 16);
        std::memcpy(pkt + 24, dst, 16);
    }
    // TCP header: no options (a connection with timestamps takes a segment without them).
    unsigned char* tcp = pkt + ip_len;
    put16(tcp, t.peer().port());
    put16(tcp + 2, t.local().port());
    put32(tcp + 4, seq);
    put32(tcp + 8, ack);
    tcp[12] = 5 << 4;
    tcp[13] = static_cast<unsigned char>(0x10 | (fin ? 0x01 : 0));  // ACK, FIN
    // The peer's window as recorded (it updates ours: the same value).
    uint32_t wnd = c.wscale() ? c.snd_wnd() >> c.snd_wscale() : c.snd_wnd();
    put16(tcp + 14, std::min<uint32_t>(wnd, 65535));
    // The pseudo-header: both addresses, then (IPv4) zero, protocol, TCP length (16 bits) or
    // (IPv6, RFC 8200 8.1) the TCP length (32 bits), three zeros, next header.
    unsigned char pseudo[40] = {};
    std::memcpy(pseudo, src, addr_len);
    std::memcpy(pseudo + addr_len, dst, addr_len);
    const size_t pseudo_len = ipv4 ? 12 : 40;
    if (ipv4) {
        pseudo[9] = IPPROTO_TCP;
        pseudo[11] = 20;
    } else {
        pseudo[35] = 20;
        pseudo[39] = IPPROTO_TCP;
    }
    put16(tcp + 16, fold(add_words(tcp, 20, add_words(pseudo, pseudo_len))));

    const int family = ipv4 ? AF_INET : AF_INET6;
    UniqueFd raw(socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!raw)
        return sys_error("socket({}, SOCK_RAW) for the peer's segment (needs CAP_NET_RAW)",
                         ipv4 ? "AF_INET" : "AF_INET6");
    sockaddr_storage to{};
    socklen_t to_len;
    if (ipv4) {
        auto& in = reinterpret_cast<sockaddr_in&>(to);
        in.sin_family = AF_INET;
        std::memcpy(&in.sin_addr, dst, 4);
        to_len = sizeof in;
    } else {
        auto& in6 = reinterpret_cast<sockaddr_in6&>(to);
        in6.sin6_family = AF_INET6;
        std::memcpy(&in6.sin6_addr, dst, 16);
        in6.sin6_scope_id = t.local().scope_id();  // a link-local address names its interface
        to_len = sizeof in6;
    }
    if (sendto(raw.get(), pkt, len, 0, reinterpret_cast<sockaddr*>(&to), to_len) != static_cast<ssize_t>(len))
        return sys_error("sendto of the peer's {} segment", fin ? "FIN" : "ACK");
    // Taken in by the time sendto returns on loopback; a little longer is allowed.
    constexpr int kWaitMs = 2000;
    int now = 0;
    for (int i = 0; i < kWaitMs; ++i) {
        now = CKPT_TRY(tcp_state(s));
        if (now == want) return ok();
        usleep(1000);
    }
    return error_code(EPROTO, "the peer's {} segment left the connection in state {}, not {} (dropped by a firewall?)",
                      fin ? "FIN" : "ACK", state_name(now), state_name(want));
}

// Our FIN, sent: shutdown in repair mode with the send queue selected queues it as sent,
// transmitting nothing.
Result<void> restore_fin_sent(int s, int want) {
    CKPT_TRY(select_queue(s, TCP_SEND_QUEUE));
    if (shutdown(s, SHUT_WR) != 0) return sys_error("shutdown(SHUT_WR) in repair mode");
    CKPT_TRY(select_queue(s, TCP_NO_QUEUE));
    int now = CKPT_TRY(tcp_state(s));
    if (now != want) return error_code(EPROTO, "state {} after our FIN, not {}", state_name(now), state_name(want));
    return ok();
}

// A half-closed connection's FINs, the queues in place (both in repair mode): ours queued as
// sent, the peer's received (and its acknowledgment of ours), in the order that leads to the
// recorded state.
Result<void> restore_fins(int s, const image::TcpSocket& t, int st, uint32_t snd_una) {
    const image::TcpConnection& c = t.conn();
    const uint32_t rcv_fin = c.rcv_seq() - 1;  // the peer's FIN's sequence number
    switch (st) {
        case TCP_CLOSE_WAIT: return inject_segment(s, t, true, rcv_fin, snd_una, TCP_CLOSE_WAIT);
        case TCP_LAST_ACK:  // the peer's FIN first, then ours
            CKPT_TRY(inject_segment(s, t, true, rcv_fin, snd_una, TCP_CLOSE_WAIT));
            return restore_fin_sent(s, TCP_LAST_ACK);
        case TCP_FIN_WAIT1: return restore_fin_sent(s, TCP_FIN_WAIT1);
        case TCP_FIN_WAIT2:  // ours, then the peer's acknowledgment of it
            CKPT_TRY(restore_fin_sent(s, TCP_FIN_WAIT1));
            return inject_segment(s, t, false, c.rcv_seq(), c.snd_seq(), TCP_FIN_WAIT2);
        case TCP_CLOSING:  // ours, then the peer's FIN not acknowledging it
            CKPT_TRY(restore_fin_sent(s, TCP_FIN_WAIT1));
            return inject_segment(s, t, true, rcv_fin, snd_una, TCP_CLOSING);
        default: return ok();
    }
}

// The connection in repair mode: bound, both sequence numbers, connected (no SYN), the
// handshake's options, what it had received and what it had sent unacknowledged, windows;
// then the FINs of a half-closed one.
Result<void> make_connection(RestoreShared& sh, int s, int family, const image::TcpSocket& t) {
    const image::TcpConnection& c = t.conn();
    CKPT_TRY(check_connection(c));
    auto [peer, peer_len] = CKPT_TRY_CTX(sockaddr_of(family, t.peer(), "peer"), "TCP socket");
    const uint32_t in_len = static_cast<uint32_t>(c.recv_queue().size());
    const uint32_t out_len = static_cast<uint32_t>(c.send_queue().size());
    const int st = c.tcp_state() ? static_cast<int>(c.tcp_state()) : TCP_ESTABLISHED;
    if (st != TCP_ESTABLISHED && !half_closed(st))
        return error_code(EINVAL, "TCP connection state {} (image is corrupt)", c.tcp_state());
    if (fin_sent(st) && c.unsent() != 0)
        return error_code(EINVAL, "state {} with bytes never sent (image is corrupt)", state_name(st));
    if (fin_acked(st) && out_len != 0)
        return error_code(EINVAL, "state {} with bytes not acknowledged (image is corrupt)", state_name(st));
    // The FINs take a sequence number each, after the data (snd_seq and rcv_seq count them).
    const uint32_t fin_in = fin_received(st) ? 1 : 0, fin_out = fin_sent(st) ? 1 : 0;
    const uint32_t snd_una = c.snd_seq() - out_len - (fin_out && !fin_acked(st) ? 1 : 0);
    CKPT_TRY(select_queue(s, TCP_RECV_QUEUE));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.rcv_seq() - fin_in - in_len), "TCP_QUEUE_SEQ"));
    CKPT_TRY(select_queue(s, TCP_SEND_QUEUE));
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(c.snd_seq() - fin_out - out_len), "TCP_QUEUE_SEQ"));
    if (c.timestamps())
        CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>(c.timestamp()), "TCP_TIMESTAMP"));
    // The segment size the connection is made with (TCP_REPAIR_OPTIONS sets the clamp only
    // after connect, when the kernel has sized segments on the 536-byte default already).
    // (TCP_MAXSEG takes no more than 32767: the clamp gets the rest.)
    constexpr uint32_t kMaxUserMss = 32767;
    CKPT_TRY(set_int(s, IPPROTO_TCP, TCP_MAXSEG, static_cast<int>(std::min(c.mss(), kMaxUserMss)), "TCP_MAXSEG"));
    if (connect(s, reinterpret_cast<sockaddr*>(&peer), peer_len) != 0)
        return sys_error("connect in repair mode to {} (a connection of this host already has the addresses?)",
                         show_addr(t.peer()));

    tcp_repair_opt opts[4];
    unsigned n = 0;
    opts[n++] = {TCPOPT_MAXSEG, c.mss()};
    if (c.wscale()) opts[n++] = {TCPOPT_WINDOW, c.snd_wscale() | (c.rcv_wscale() << 16)};
    if (c.sack()) opts[n++] = {TCPOPT_SACK_PERMITTED, 0};
    if (c.timestamps()) opts[n++] = {TCPOPT_TIMESTAMP, 0};
    if (setsockopt(s, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, static_cast<socklen_t>(n * sizeof opts[0])) != 0)
        return sys_error("setsockopt(TCP_REPAIR_OPTIONS)");

    // Room for the queues whatever the buffers were (set back as recorded in finish_tcp): the
    // same bytes may take more memory in the new socket's buffers than they did in the old.
    constexpr uint32_t kSlack = 256u << 10;
    CKPT_TRY(sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, std::max(t.sndbuf(), 2 * out_len + kSlack),
                                     "SO_SNDBUF", true));
    CKPT_TRY(sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, std::max(t.rcvbuf(), 2 * in_len + kSlack),
                                     "SO_RCVBUF", true));
    CKPT_TRY(select_queue(s, TCP_RECV_QUEUE));
    CKPT_TRY(send_all(s, c.recv_queue(), "the receive queue"));
    // What was sent goes in as sent (repair mode transmits nothing); what was never sent is
    // sent once repair mode is off (finish_tcp).
    CKPT_TRY(select_queue(s, TCP_SEND_QUEUE));
    const size_t sent = out_len - c.unsent();
    CKPT_TRY(send_all(s, std::string_view(c.send_queue()).substr(0, sent), "the send queue"));
    CKPT_TRY(select_queue(s, TCP_NO_QUEUE));

    // Until the peer's FIN is in, the connection expects it next: the window's edge recorded
    // past it is at it.
    const uint32_t rcv_nxt = c.rcv_seq() - fin_in;
    const uint32_t rcv_wup = static_cast<int32_t>(c.rcv_wup() - rcv_nxt) > 0 ? rcv_nxt : c.rcv_wup();
    tcp_repair_window w{c.snd_wl1(), c.snd_wnd(), c.max_window(), c.rcv_wnd(), rcv_wup};
    if (setsockopt(s, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) != 0)
        return sys_error("setsockopt(TCP_REPAIR_WINDOW)");
    CKPT_TRY_CTX(restore_fins(s, t, st, snd_una), "state {}", state_name(st));

    UniqueFd held(fcntl(s, F_DUPFD_CLOEXEC, 3));
    if (!held) return sys_error("dup");
    sh.tcp_repairing.push_back(
        {std::move(held), c.send_queue().substr(sent), t.reuseaddr(), t.sndbuf(), t.rcvbuf(), t.filter(), t.options()});
    return ok();
}

// Whether a connection's local address (sock_diag's, in network order) would share the
// listener's: the same port, and the listener's address is a wildcard or the same.
bool under_listener(const inet_diag_msg& m, const image::InetAddr& listener) {
    if (ntohs(m.id.idiag_sport) != listener.port()) return false;
    const std::string& a = listener.addr();
    if (a.find_first_not_of('\0') == std::string::npos) return true;
    const auto* src = reinterpret_cast<const char*>(m.id.idiag_src);
    if (m.idiag_family == AF_INET) {
        return (a.size() == 4 && std::memcmp(src, a.data(), 4) == 0) ||
               (v4_mapped(a) && std::memcmp(src, a.data() + 12, 4) == 0);
    }
    return a.size() == 16 && std::memcmp(src, a.data(), 16) == 0;
}

// Ends the connections of this network namespace in TIME_WAIT whose local address is the one
// a listener is to be bound to (SOCK_DESTROY, CAP_NET_ADMIN); returns how many. Those are left
// by connections the tree's listener accepted and closed before the dump: a listener without
// SO_REUSEADDR (its accepted connections had none either) cannot be bound beside them, and the
// original, bound before them, never met them. Only TIME_WAIT: a live socket still keeps the
// bind from happening.
Result<int> end_time_wait(const image::InetAddr& listener) {
    UniqueFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!nl) return sys_error("socket(NETLINK_SOCK_DIAG)");
    struct Request {
        nlmsghdr nlh;
        inet_diag_req_v2 req;
    };
    auto send_req = [&](uint16_t type, uint16_t flags, int family, const inet_diag_sockid& id) -> Result<void> {
        Request msg{};
        msg.nlh.nlmsg_len = sizeof msg;
        msg.nlh.nlmsg_type = type;
        msg.nlh.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
        msg.req.sdiag_family = static_cast<uint8_t>(family);
        msg.req.sdiag_protocol = IPPROTO_TCP;
        msg.req.idiag_states = 1u << TCP_TIME_WAIT;
        msg.req.id = id;
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        if (sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
            return sys_error("sock_diag: send");
        return ok();
    };
    alignas(nlmsghdr) static thread_local char buf[1 << 16];
    std::vector<std::pair<int, inet_diag_sockid>> found;
    for (int family : {AF_INET, AF_INET6}) {
        CKPT_TRY(send_req(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, family, inet_diag_sockid{}));
        for (bool done = false; !done;) {
            ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
            if (n < 0) return sys_error("sock_diag: recv");
            int len = static_cast<int>(n);
            for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
                if (h->nlmsg_type == NLMSG_DONE) done = true;
                if (h->nlmsg_type == NLMSG_ERROR) {
                    auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
                    if (e->error) return sys_error_code(-e->error, "sock_diag: TCP sockets in TIME_WAIT");
                    done = true;
                }
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
                const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
                if (m->idiag_state == TCP_TIME_WAIT && under_listener(*m, listener))
                    found.emplace_back(m->idiag_family, m->id);
            }
        }
    }
    int ended = 0;
    for (const auto& [family, id] : found) {
        CKPT_TRY(send_req(SOCK_DESTROY, NLM_F_ACK, family, id));
        ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
        if (n < 0) return sys_error("sock_diag: recv");
        auto* h = reinterpret_cast<nlmsghdr*>(buf);
        if (NLMSG_OK(h, static_cast<int>(n)) && h->nlmsg_type == NLMSG_ERROR) {
            int err = -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
            if (err == ENOENT) continue;  // ended meanwhile
            if (err) return sys_error_code(err, "sock_diag: SOCK_DESTROY of a connection in TIME_WAIT");
        }
        ++ended;
    }
    return ended;
}

Result<UniqueFd> make_tcp(RestoreShared& sh, const image::TcpSocket& t) {
    int family = t.family();
    if (family != AF_INET && family != AF_INET6) return error_code(EINVAL, "TCP socket of family {} (image is corrupt)", family);
    auto [local, local_len] = CKPT_TRY_CTX(sockaddr_of(family, t.local(), "local"), "TCP socket");
    const bool established = t.state() == image::TcpSocket::ESTABLISHED;
    const bool closed = t.state() == image::TcpSocket::CLOSED;
    if (established && !sh.tcp_established)
        return error_code(ENOTSUP, "an established TCP connection {} -> {}: restore with --tcp-established",
                          show_addr(t.local()), show_addr(t.peer()));
    if (!established && !closed && t.state() != image::TcpSocket::LISTEN)
        return error_code(EINVAL, "TCP socket in state {} (image is corrupt)", static_cast<int>(t.state()));
    if (!established && (t.has_conn() || t.has_peer()))
        return error_code(EINVAL, "a TCP socket not connected with a connection's state (image is corrupt)");
    if ((established || closed) && t.backlog() != 0)
        return error_code(EINVAL, "a TCP socket not listening with a backlog (image is corrupt)");
    if (t.backlog() > kMaxBacklog) return error_code(EINVAL, "backlog {} (image is corrupt)", t.backlog());

    UniqueFd s(socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!s) return sys_error("socket");
    CKPT_TRY(restore_options(s.get(), family, t, established));
    // Before bind and connect (IP_FREEBIND, IP_BIND_ADDRESS_NO_PORT, TCP_FASTOPEN_CONNECT
    // count there); a connection's again once its buffers are back (finish_tcp).
    CKPT_TRY_CTX(sockopt::restore(s.get(), tcp_specs(family), t.options()), "TCP socket on {}", show_addr(t.local()));
    CKPT_TRY_CTX(sockopt::bind_device(s.get(), t.bind_device()), "TCP socket on {}", show_addr(t.local()));
    if (closed) {
        // Bound where it was (an address or a port of its choosing); a socket never bound has
        // port 0 and the any address.
        const bool bound = t.local().port() != 0;
        if (bound && bind(s.get(), reinterpret_cast<sockaddr*>(&local), local_len) != 0)
            return sys_error("bind to {}", show_addr(t.local()));
        CKPT_TRY_CTX(sockopt::restore_filter(s.get(), t.filter()), "TCP socket on {}", show_addr(t.local()));
        return s;
    }
    // After SO_REUSEADDR, which would undo it: repair mode lets the bind share its port with
    // other connections (those a listener accepted share the listener's).
    if (established)
        if (auto r = set_int(s.get(), IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR"); !r)
            return std::move(r).error().context("TCP_REPAIR needs CAP_NET_ADMIN");
    // A listener shares its port with the connections it accepted, which may be made before it
    // (in repair mode: bound at once): SO_REUSEADDR for the time of bind and listen lets it
    // (a listener of that address elsewhere, the original still running, is still refused).
    if (!established && !t.reuseaddr()) CKPT_TRY(set_int(s.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"));
    if (bind(s.get(), reinterpret_cast<sockaddr*>(&local), local_len) != 0) {
        int err = errno;
        if (err != EADDRINUSE || established) return sys_error_code(err, fmt::format("bind to {}", show_addr(t.local())));
        auto ended = end_time_wait(t.local());
        if (!ended)
            return sys_error_code(err, fmt::format("bind to {} (its connections in TIME_WAIT could not be ended: {})",
                                                   show_addr(t.local()), ended.error().message()));
        if (*ended == 0 || bind(s.get(), reinterpret_cast<sockaddr*>(&local), local_len) != 0)
            return sys_error("bind to {}", show_addr(t.local()));
        logger()->info("ended {} connection(s) in TIME_WAIT on {} to bind its listener", *ended, show_addr(t.local()));
    }
    if (established) {
        CKPT_TRY_CTX(make_connection(sh, s.get(), family, t), "TCP connection {} -> {}", show_addr(t.local()),
                     show_addr(t.peer()));
    } else {
        if (listen(s.get(), static_cast<int>(t.backlog())) != 0) return sys_error("listen on {}", show_addr(t.local()));
        if (!t.reuseaddr()) CKPT_TRY(set_int(s.get(), SOL_SOCKET, SO_REUSEADDR, 0, "SO_REUSEADDR"));
        CKPT_TRY_CTX(sockopt::restore_filter(s.get(), t.filter()), "TCP socket listening on {}", show_addr(t.local()));
    }
    return s;
}

Result<void> restore_tcp(RestoreTask& t, const image::Fd& f) {
    if (f.description_id() == 0) return error_code(EINVAL, "TCP socket without a description id (image is corrupt)");
    RestoreShared& sh = *t.shared;
    return install_description(
        t, f,
        [&]() -> Result<UniqueFd> {
            if (!f.has_tcp())
                return error_code(EINVAL, "TCP socket: its first fd carries no state (image is corrupt)");
            return make_tcp(sh, f.tcp());
        },
        true);
}

// Every fd of the tree is in place: each connection leaves repair mode (a window probe tells
// its peer it is back) and sends what it had never sent.
Result<void> finish_tcp(RestoreShared& sh) {
    // All of them first: a segment sent to a peer of the tree still in repair mode would be
    // taken in, but its acknowledgment lost.
    for (auto& c : sh.tcp_repairing) {
        CKPT_TRY(set_int(c.sock.get(), IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "TCP_REPAIR"));
        CKPT_TRY(set_int(c.sock.get(), SOL_SOCKET, SO_REUSEADDR, c.reuseaddr, "SO_REUSEADDR"));
    }
    for (auto& c : sh.tcp_repairing) {
        int s = c.sock.get();
        CKPT_TRY(send_all(s, c.unsent, "the unsent part of the send queue"));
        CKPT_TRY(sockopt::restore_buffer(s, SO_SNDBUF, SO_SNDBUFFORCE, c.sndbuf, "SO_SNDBUF", true));
        CKPT_TRY(sockopt::restore_buffer(s, SO_RCVBUF, SO_RCVBUFFORCE, c.rcvbuf, "SO_RCVBUF", true));
        // After the buffers: SO_BUF_LOCK says whether their sizes were the process's.
        CKPT_TRY(restore_buf_lock(s, c.options));
        CKPT_TRY(sockopt::restore_filter(s, c.filter));
    }
    sh.tcp_repairing.clear();
    return ok();
}

}  // namespace

void TcpRepairHold::release() {
    for (auto& h : socks) {
        // Not in repair mode (it failed to enter it) is no harm; the dump's filter goes in any
        // case, the process's own (if it had one) back in its place.
        int off = TCP_REPAIR_OFF;
        (void)setsockopt(h.sock.get(), IPPROTO_TCP, TCP_REPAIR, &off, sizeof off);
        if (!h.filter.code().empty()) {
            if (auto r = sockopt::restore_filter(h.sock.get(), h.filter); !r)
                logger()->warn("a TCP connection of the tree keeps the dump's filter, not its own: {}", r.error().message());
            continue;
        }
        int zero = 0;
        if (setsockopt(h.sock.get(), SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero) != 0)
            logger()->warn("a TCP connection of the tree keeps the dump's filter: {}", strerror(errno));
    }
    socks.clear();
}

extern const FdKind kTcpKind{
    .name = "TCP socket",
    .image_kind = image::Fd::TCP_SOCKET,
    .claims = claims_tcp,
    .dump = dump_tcp,
    .restore = restore_tcp,
    .finish_restore = finish_tcp,
};

}  // namespace ckpt::engine
