// Sockets. A connected pair of unnamed AF_UNIX sockets (a socketpair) whose two ends the tree
// holds is the tree's own: made again at restore with socketpair(), with what is queued for
// each end (message by message for SOCK_DGRAM and SOCK_SEQPACKET), its shutdown state and
// buffer sizes. Any other socket as fd 0-2 (a service's stdio connected to a socket) is an
// external resource bound at restore to the restorer's own; any other socket is refused.
//
// Each end is found by its inode ("socket:[INODE]"), its peer, name, queue length and shutdown
// state by NETLINK_SOCK_DIAG (man 7 sock_diag). What is queued is read without taking it
// out: MSG_PEEK, walking the queue with SO_PEEK_OFF, put back as it was afterwards.
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

// Queued bytes one end may hold in the image (beyond any default buffer by far).
constexpr size_t kMaxQueued = 64u << 20;
// A single message's largest size (a datagram cannot exceed the sender's buffer).
constexpr size_t kMaxMessage = 8u << 20;
constexpr uint32_t kRcvShutdown = 1, kSendShutdown = 2;  // sk_shutdown bits

struct UnixDiag {
    uint8_t type = 0;
    uint8_t state = 0;
    uint32_t peer = 0;
    bool named = false;
    std::string name;
    uint32_t rqueue = 0;
    uint8_t shutdown = 0;
};

Result<uint64_t> socket_inode(std::string_view link) {
    // "socket:[12345]"
    return parse_uint(link.substr(8, link.size() - 9)).context("socket fd link '{}'", link);
}

// What sock_diag says of the AF_UNIX socket of inode ino (in the engine's network namespace).
Result<UnixDiag> unix_diag(uint64_t ino) {
    UniqueFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (!nl) return sys_error("socket(NETLINK_SOCK_DIAG)");
    struct {
        nlmsghdr nlh;
        unix_diag_req req;
    } msg{};
    msg.nlh.nlmsg_len = sizeof msg;
    msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    msg.nlh.nlmsg_flags = NLM_F_REQUEST;
    msg.nlh.nlmsg_seq = 1;
    msg.req.sdiag_family = AF_UNIX;
    msg.req.udiag_states = ~0u;
    msg.req.udiag_ino = static_cast<uint32_t>(ino);
    msg.req.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;  // the shutdown bits always come
    msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
        return sys_error("sock_diag: send");
    alignas(nlmsghdr) static thread_local char buf[16384];
    ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
    if (n < 0) return sys_error("sock_diag: recv");
    auto* h = reinterpret_cast<nlmsghdr*>(buf);
    int len = static_cast<int>(n);
    for (; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
            auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
            if (e->error == 0) continue;
            return sys_error_code(-e->error, fmt::format("sock_diag: AF_UNIX socket inode {}", ino));
        }
        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
        auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
        if (m->udiag_ino != ino) continue;
        UnixDiag d;
        d.type = m->udiag_type;
        d.state = m->udiag_state;
        int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
        for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
            const char* data = static_cast<const char*>(RTA_DATA(a));
            size_t dlen = RTA_PAYLOAD(a);
            switch (a->rta_type) {
                case UNIX_DIAG_NAME:
                    d.named = true;
                    d.name.assign(data, dlen);
                    break;
                case UNIX_DIAG_PEER:
                    if (dlen >= 4) std::memcpy(&d.peer, data, 4);
                    break;
                case UNIX_DIAG_RQLEN:
                    if (dlen >= sizeof(unix_diag_rqlen))
                        d.rqueue = reinterpret_cast<const unix_diag_rqlen*>(data)->udiag_rqueue;
                    break;
                case UNIX_DIAG_SHUTDOWN:
                    if (dlen >= 1) d.shutdown = static_cast<uint8_t>(data[0]);
                    break;
                default: break;
            }
        }
        return d;
    }
    return error_code(ENOENT, "sock_diag: no answer for AF_UNIX socket inode {}", ino);
}

Result<int> sockopt_int(int fd, int level, int opt, const char* name) {
    int v = 0;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, opt, &v, &l) != 0) return sys_error("getsockopt({})", name);
    return v;
}

std::string_view type_name(int type) {
    switch (type) {
        case SOCK_STREAM: return "SOCK_STREAM";
        case SOCK_DGRAM: return "SOCK_DGRAM";
        case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
        default: return "other type";
    }
}

// Closes fds a peek with SCM_RIGHTS put into the engine.
void close_passed_fds(msghdr& mh) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int passed;
            std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
            ::close(passed);
        }
    }
}

// What is queued for sock to read, copied without taking it out: each message, or the
// stream's bytes as one entry. SO_PEEK_OFF is put back as it was, whatever happens.
Result<std::vector<std::string>> peek_queue(int sock, int type, const UnixDiag& d) {
    int saved_off = CKPT_TRY(sockopt_int(sock, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF"));
    int zero = 0;
    if (setsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) != 0) return sys_error("setsockopt(SO_PEEK_OFF)");
    struct Restore {
        int sock, off;
        ~Restore() {
            if (setsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) != 0)
                logger()->warn("cannot put SO_PEEK_OFF back to {}: {}", off, strerror(errno));
        }
    } restore{sock, saved_off};

    std::vector<std::string> out;
    std::string buf(kMaxMessage, '\0');
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred)) + 256];
    size_t total = 0;
    for (;;) {
        iovec iov{buf.data(), buf.size()};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        ssize_t n = recvmsg(sock, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n < 0) return sys_error("recvmsg(MSG_PEEK)");
        bool ancillary = mh.msg_controllen > 0 || (mh.msg_flags & MSG_CTRUNC);
        close_passed_fds(mh);
        if (ancillary)
            return error_code(ENOTSUP,
                              "a message queued on this AF_UNIX socket carries ancillary data (SCM_RIGHTS fds in "
                              "flight or SCM_CREDENTIALS): not supported");
        if (mh.msg_flags & MSG_TRUNC)
            return error_code(ENOTSUP, "a message queued on this AF_UNIX socket is larger than {} bytes", kMaxMessage);
        if (n == 0) {
            // The end of a stream shut down, or of a message queue shut down; a zero-length
            // message cannot be told from that and is not supported.
            if (type == SOCK_STREAM || (d.shutdown & kRcvShutdown)) break;
            return error_code(ENOTSUP, "a zero-length message is queued on this AF_UNIX socket: not supported");
        }
        total += static_cast<size_t>(n);
        if (total > kMaxQueued)
            return error_code(ENOTSUP, "more than {} bytes queued on this AF_UNIX socket: not supported", kMaxQueued);
        if (type == SOCK_STREAM && !out.empty())
            out.back().append(buf.data(), static_cast<size_t>(n));
        else
            out.emplace_back(buf.data(), static_cast<size_t>(n));
    }
    // sock_diag counts the bytes queued for a stream or seqpacket socket: all of them were seen.
    if (type != SOCK_DGRAM && total != d.rqueue)
        return error("AF_UNIX socket: {} bytes peeked, {} queued", total, d.rqueue);
    return out;
}

bool claims_socket(const FdProbe& probe) { return starts_with(probe.link, "socket:["); }

// Collects the inode of every socket the tree holds, so that the dump knows a peer is inside.
Result<void> survey_socket(const FdProbe& probe) {
    if (!probe.restorers()) probe.state->sockets.insert(CKPT_TRY(socket_inode(probe.link)));
    return ok();
}

// Why the socket is not an end of a pair of the tree (empty: it is one).
Result<std::string> not_a_pair(const FdProbe& probe, uint64_t ino, int type, const UnixDiag& d) {
    if (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET)
        return fmt::format("an AF_UNIX socket of type {}", type);
    if (d.state == 10 /* TCP_LISTEN */) return fmt::format("a listening AF_UNIX socket '{}'", d.name);
    if (d.named && !d.name.empty()) {
        std::string shown = d.name[0] == '\0' ? "@" + d.name.substr(1) : d.name;
        return fmt::format("an AF_UNIX {} socket bound to '{}' (bound sockets are not supported)", type_name(type), shown);
    }
    if (d.peer == 0)
        return fmt::format("an unconnected AF_UNIX {} socket, or one whose peer is closed", type_name(type));
    if (!probe.state->sockets.count(d.peer))
        return fmt::format("an AF_UNIX {} socket connected to socket:[{}] outside the tree", type_name(type), d.peer);
    auto pd = unix_diag(d.peer);
    if (!pd) return fmt::format("an AF_UNIX socket whose peer socket:[{}] cannot be examined ({})", d.peer,
                                pd.error().message());
    if (pd->peer != ino || (pd->named && !pd->name.empty()))
        return fmt::format("an AF_UNIX {} socket connected to socket:[{}], itself named or connected elsewhere",
                           type_name(type), d.peer);
    return std::string();
}

Result<void> dump_socket(const FdProbe& probe, image::Fd* f) {
    uint64_t ino = CKPT_TRY(socket_inode(probe.link));
    std::string why;
    UniqueFd sock;
    int type = 0;
    UnixDiag d;
    if (probe.state->sockets.count(ino)) {
        sock = CKPT_TRY(probe.take());
        type = CKPT_TRY(sockopt_int(sock.get(), SOL_SOCKET, SO_TYPE, "SO_TYPE"));
        int domain = CKPT_TRY(sockopt_int(sock.get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"));
        if (domain == AF_UNIX) {
            auto diag = unix_diag(ino);
            if (diag) {
                d = *diag;
                why = CKPT_TRY(not_a_pair(probe, ino, type, d));
            } else {
                why = fmt::format("an AF_UNIX socket sock_diag cannot examine ({})", diag.error().message());
            }
        } else {
            why = fmt::format("a socket of address family {} (only AF_UNIX socketpairs are supported)", domain);
        }
    } else {
        why = "a socket the survey of the tree did not see";
    }
    if (!why.empty()) {
        if (probe.fd > 2) return error_code(ENOTSUP, "unsupported socket: {}", why);
        CKPT_TRY(probe.refuse_async_external(*f));
        f->set_kind(image::Fd::EXTERNAL);
        f->set_external_key(probe.link);
        return ok();
    }

    f->set_kind(image::Fd::UNIX_SOCKET);
    uint64_t id = std::min<uint64_t>(ino, d.peer);
    uint32_t end = ino == id ? 0 : 1;
    f->set_unix_socket_id(id);
    f->set_unix_socket_end(end);
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));

    image::FileTable& table = probe.state->files.table();
    auto [it, fresh] = probe.state->unix_pairs.try_emplace(id, table.unix_sockets_size());
    if (fresh) {
        auto* e = table.add_unix_sockets();
        e->set_id(id);
        e->set_type(type);
        e->add_ends();
        e->add_ends();
    }
    image::UnixSocketEnd* me = table.mutable_unix_sockets(it->second)->mutable_ends(static_cast<int>(end));
    if (me->recorded()) return ok();  // another fd of the same end
    for (auto& m : CKPT_TRY(peek_queue(sock.get(), type, d))) me->add_queued(std::move(m));
    me->set_shutdown(d.shutdown & (kRcvShutdown | kSendShutdown));
    me->set_sndbuf(static_cast<uint32_t>(CKPT_TRY(sockopt_int(sock.get(), SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"))));
    me->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY(sockopt_int(sock.get(), SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"))));
    me->set_recorded(true);
    return ok();
}

// Sets a buffer size read by getsockopt (twice what was asked) when the fresh socket's differs.
Result<void> set_buffer(int sock, int opt, int force, uint32_t want, const char* name) {
    if (want == 0) return ok();
    int now = CKPT_TRY(sockopt_int(sock, SOL_SOCKET, opt, name));
    if (static_cast<uint32_t>(now) == want) return ok();
    int half = static_cast<int>(want / 2);
    if (setsockopt(sock, SOL_SOCKET, force, &half, sizeof half) != 0 &&
        setsockopt(sock, SOL_SOCKET, opt, &half, sizeof half) != 0)
        return sys_error("setsockopt({}, {})", name, half);
    return ok();
}

// Sends what is queued for one end from the other, message by message.
Result<void> queue_into(int from, int type, const image::UnixSocketEnd& to, uint64_t id, int end) {
    for (const std::string& m : to.queued()) {
        if (m.empty()) return error_code(EINVAL, "unix socket pair {}: an empty queued message (image is corrupt)", id);
        size_t done = 0;
        while (done < m.size()) {
            ssize_t n = send(from, m.data() + done, m.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN)
                return error_code(ENOBUFS, "unix socket pair {}: the data queued for end {} does not fit its buffer",
                                  id, end);
            if (n < 0) return sys_error("unix socket pair {}: send to end {}", id, end);
            if (type != SOCK_STREAM && static_cast<size_t>(n) != m.size())
                return error("unix socket pair {}: a message of {} bytes sent as {}", id, m.size(), n);
            done += static_cast<size_t>(n);
        }
    }
    return ok();
}

// Every pair of the tree with what is queued for each end, before any process.
Result<void> make_unix_pairs(RestoreShared& sh) {
    for (const auto& e : sh.files.unix_sockets()) {
        if (e.ends_size() != 2)
            return error_code(EINVAL, "unix socket pair {}: {} ends recorded, not 2 (image is corrupt)", e.id(),
                              e.ends_size());
        if (e.type() != SOCK_STREAM && e.type() != SOCK_DGRAM && e.type() != SOCK_SEQPACKET)
            return error_code(EINVAL, "unix socket pair {}: socket type {} (image is corrupt)", e.id(), e.type());
        if (sh.unix_pairs.count(e.id()))
            return error_code(EINVAL, "unix socket pair {} recorded twice (image is corrupt)", e.id());
        int sv[2];
        if (socketpair(AF_UNIX, e.type() | SOCK_CLOEXEC, 0, sv) != 0) return sys_error("socketpair");
        UniqueFd a(sv[0]), b(sv[1]);
        int fds[2] = {a.get(), b.get()};
        for (int i = 0; i < 2; ++i) {
            CKPT_TRY_CTX(set_buffer(fds[i], SO_SNDBUF, SO_SNDBUFFORCE, e.ends(i).sndbuf(), "SO_SNDBUF"),
                         "unix socket pair {} end {}", e.id(), i);
            CKPT_TRY_CTX(set_buffer(fds[i], SO_RCVBUF, SO_RCVBUFFORCE, e.ends(i).rcvbuf(), "SO_RCVBUF"),
                         "unix socket pair {} end {}", e.id(), i);
        }
        for (int i = 0; i < 2; ++i) CKPT_TRY(queue_into(fds[1 - i], e.type(), e.ends(i), e.id(), i));
        // Shut down once the data is in: a peer that cannot receive refuses it.
        for (int i = 0; i < 2; ++i) {
            uint32_t s = e.ends(i).shutdown();
            int how = (s & kRcvShutdown) && (s & kSendShutdown) ? SHUT_RDWR
                      : (s & kRcvShutdown)                      ? SHUT_RD
                      : (s & kSendShutdown)                     ? SHUT_WR
                                                                : -1;
            if (how >= 0 && shutdown(fds[i], how) != 0) return sys_error("unix socket pair {}: shutdown end {}", e.id(), i);
        }
        sh.unix_pairs[e.id()] = {std::move(a), std::move(b)};
    }
    return ok();
}

Result<void> restore_unix_socket(RestoreTask& t, const image::Fd& f) {
    auto it = t.shared->unix_pairs.find(f.unix_socket_id());
    if (it == t.shared->unix_pairs.end())
        return error_code(EINVAL, "unix socket pair {} missing from the images (image is corrupt)", f.unix_socket_id());
    if (f.unix_socket_end() > 1)
        return error_code(EINVAL, "unix socket pair {}: end {} (image is corrupt)", f.unix_socket_id(), f.unix_socket_end());
    if (f.description_id() == 0)
        return error_code(EINVAL, "unix socket pair {}: no description id (image is corrupt)", f.unix_socket_id());
    int mine = f.unix_socket_end() == 0 ? it->second.first.get() : it->second.second.get();
    return install_description(
        t, f,
        [mine]() -> Result<UniqueFd> {
            UniqueFd d(fcntl(mine, F_DUPFD_CLOEXEC, 3));
            if (!d) return sys_error("dup");
            return d;
        },
        true);
}

// Every end is in place: the engine's own copies go (a restore that keeps running after the
// tree must not hold an end open).
Result<void> release_unix_pairs(RestoreShared& sh) {
    sh.unix_pairs.clear();
    return ok();
}

}  // namespace

extern const FdKind kSocketKind{
    .name = "socket",
    .image_kind = image::Fd::UNIX_SOCKET,
    .claims = claims_socket,
    .survey = survey_socket,
    .dump = dump_socket,
    .prepare_restore = make_unix_pairs,
    .restore = restore_unix_socket,
    .finish_restore = release_unix_pairs,
};

}  // namespace ckpt::engine
