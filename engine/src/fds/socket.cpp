// Sockets. A connected pair of unnamed AF_UNIX sockets (a socketpair) whose two ends the tree
// holds is the tree's own: made again at restore with socketpair(), with what is queued for
// each end (message by message for SOCK_DGRAM and SOCK_SEQPACKET), its shutdown state and
// buffer sizes. Any other AF_UNIX socket the tree holds is one entry of its own (UNIX_SK):
// bound to a path (the socket file made again, in the same folder, with its owner and mode;
// a deleted one bound and unlinked again), an abstract or autobind name, listening with the
// clients (of the tree) whose connections wait in its accept queue, an end accepted from a
// listener of the tree and its client, a datagram socket connected to a named socket of the
// tree (or, with --ext-unix-sk, outside it) with what is queued for it and who sent each
// message. Every one is made in the engine once every process of the tree exists (before any
// fd is installed): bound, listening, the clients connected again (and accepted where they
// were), the data sent again by its peer or sender. Whatever the kernel stamps with its
// caller's credentials (socketpair(), listen(), connect(): SO_PEERCRED, SO_PEERPIDFD) is called
// from inside the process of the tree that called it at the dump.
// Any other socket as fd 0-2 (a service's stdio connected to a socket) is an external
// resource bound at restore to the restorer's own; any other socket is refused by name.
//
// Each end is found by its inode ("socket:[INODE]"), its peer, name, queue length and shutdown
// state by NETLINK_SOCK_DIAG (man 7 sock_diag). What is queued is read without taking it
// out: MSG_PEEK, walking the queue with SO_PEEK_OFF, put back as it was afterwards.
// Messages queued for a receiver with SO_PASSCRED are kept with their senders' credentials
// (SCM_CREDENTIALS: a process of the tree, or none), sent again with them once the tree's
// processes exist.
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/openat2.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "fd_kind.h"
#include "proc.h"
#include "restore_task.h"
#include "sock_opts.h"
#include "unix_queue.h"

namespace ckpt::engine {
namespace {

// Queued bytes one end may hold in the image (beyond any default buffer by far).
constexpr size_t kMaxQueued = 64u << 20;
// A single message's largest size (a datagram cannot exceed the sender's buffer).
constexpr size_t kMaxMessage = 8u << 20;
constexpr uint32_t kRcvShutdown = 1, kSendShutdown = 2;  // sk_shutdown bits

constexpr uint8_t kEstablished = 1, kClose = 7, kListen = 10;  // sk_state (TCP_*)

struct UnixDiag {
    uint8_t type = 0;
    uint8_t state = 0;
    uint32_t peer = 0;
    bool named = false;
    std::string name;
    uint32_t rqueue = 0;
    uint32_t wqueue = 0;  // bytes sent not yet read (a listener: its backlog)
    uint8_t shutdown = 0;
    bool has_vfs = false;  // bound in the file system: the socket file's inode
    uint32_t vfs_ino = 0, vfs_dev = 0;
    std::vector<uint32_t> icons;  // a listener's pending connections: their clients' inodes
};

Result<uint64_t> socket_inode(std::string_view link) {
    // "socket:[12345]"
    return parse_uint(link.substr(8, link.size() - 9)).context("socket fd link '{}'", link);
}

// What sock_diag says of the AF_UNIX socket of inode ino (in the engine's network namespace).
Result<UnixDiag> unix_diag(uint64_t ino, uint32_t show = 0) {
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
    msg.req.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | show;  // the shutdown bits always come
    msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(nl.get(), &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
        return sys_error("sock_diag: send");
    alignas(nlmsghdr) static thread_local char buf[1 << 17];
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
                    if (dlen >= sizeof(unix_diag_rqlen)) {
                        d.rqueue = reinterpret_cast<const unix_diag_rqlen*>(data)->udiag_rqueue;
                        d.wqueue = reinterpret_cast<const unix_diag_rqlen*>(data)->udiag_wqueue;
                    }
                    break;
                case UNIX_DIAG_VFS:
                    if (dlen >= sizeof(unix_diag_vfs)) {
                        d.has_vfs = true;
                        d.vfs_ino = reinterpret_cast<const unix_diag_vfs*>(data)->udiag_vfs_ino;
                        d.vfs_dev = reinterpret_cast<const unix_diag_vfs*>(data)->udiag_vfs_dev;
                    }
                    break;
                case UNIX_DIAG_ICONS:
                    for (size_t i = 0; i + 4 <= dlen; i += 4) {
                        uint32_t c;
                        std::memcpy(&c, data + i, 4);
                        d.icons.push_back(c);
                    }
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

std::string_view type_name(int type) {
    switch (type) {
        case SOCK_STREAM: return "SOCK_STREAM";
        case SOCK_DGRAM: return "SOCK_DGRAM";
        case SOCK_SEQPACKET: return "SOCK_SEQPACKET";
        default: return "other type";
    }
}

// Takes the fds a peek with SCM_RIGHTS put into the engine into fds, and the sender's
// credentials (SCM_CREDENTIALS, a receiver with SO_PASSCRED) into creds; closes a pidfd
// (SCM_PIDFD); says what other ancillary data came (empty: none).
std::string take_ancillary(msghdr& mh, std::vector<UniqueFd>* fds, std::optional<ucred>* creds) {
    std::string what;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(ucred))) {
            ucred u;
            std::memcpy(&u, CMSG_DATA(c), sizeof u);
            *creds = u;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
                int passed;
                std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
                fds->emplace_back(passed);
            }
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_PIDFD && c->cmsg_len == CMSG_LEN(sizeof(int))) {
            // A pidfd the kernel made for the engine (peek_queue turns SO_PASSPIDFD off so
            // that none comes): closed, the sender is known by its credentials.
            int pidfd;
            std::memcpy(&pidfd, CMSG_DATA(c), sizeof pidfd);
            UniqueFd closed(pidfd);
        } else if (what.empty() && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_SECURITY) {
            what = "its sender's security context (SCM_SECURITY: a receiver with SO_PASSSEC under an LSM)";
        } else if (what.empty()) {
            what = fmt::format("ancillary data of level {} type {}", c->cmsg_level, c->cmsg_type);
        }
    }
    if (what.empty() && (mh.msg_flags & MSG_CTRUNC)) what = "ancillary data (truncated)";
    return what;
}

// The sun_path bytes of an address (empty: unnamed).
std::string address_name(const sockaddr_un& a, socklen_t len) {
    if (len <= offsetof(sockaddr_un, sun_path)) return std::string();
    size_t n = std::min<size_t>(len - offsetof(sockaddr_un, sun_path), sizeof a.sun_path);
    return std::string(a.sun_path, n);
}

// A name as people write it: a path, or "@name" for an abstract one.
std::string shown_name(std::string_view name) {
    if (name.empty()) return "(unnamed)";
    if (name[0] == '\0') return "@" + std::string(name.substr(1));
    return std::string(name.substr(0, name.find('\0')));
}

// The fds in flight of the messages of a queue: (index in the queue, the engine's copies).
using PassedFds = std::vector<std::pair<uint32_t, std::vector<UniqueFd>>>;

// Whether SO_PASSPIDFD is on (a kernel before 6.5 has no such option).
Result<bool> passes_pidfd(int sock) {
    auto on = sockopt::get_int(sock, SOL_SOCKET, SO_PASSPIDFD, "SO_PASSPIDFD");
    if (!on && on.error().code() == ENOPROTOOPT) return false;
    return CKPT_TRY(std::move(on)) != 0;
}

// What is queued for sock to read, copied without taking it out: each message, or the
// stream's bytes as one entry. SO_PEEK_OFF is put back as it was, whatever happens.
// creds: with SO_PASSCRED or SO_PASSPIDFD on sock, each entry's credentials as the engine
// sees them (a read never goes past a change of credentials on a stream, unix_skb_scm_eq: its
// bytes are then one entry per run with the same credentials).
// senders (SOCK_DGRAM): each message's sender address, as address_name gives it.
// passed: the fds messages carry (SCM_RIGHTS), received by the peek; null: refused. Never
// on a stream: the fds come with the read that reaches the first byte sent with them, but a
// peek that stops before them returns them too, so where they begin cannot be read.
Result<std::vector<std::string>> peek_queue(int sock, int type, const UnixDiag& d, std::vector<ucred>* creds,
                                            std::vector<std::string>* senders = nullptr, PassedFds* passed = nullptr) {
    auto peek_off = CKPT_TRY(sockopt::Borrowed::set(sock, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF", 0));
    // With SO_PASSPIDFD each peek would put a pidfd of the message's sender into the engine:
    // the option is off for the peek, SO_PASSCRED on in its place (the credentials name the
    // same sender, the one a restore sends them again from; a message that carries none gives
    // no pidfd either).
    std::optional<sockopt::Borrowed> passpidfd, passcred;
    if (CKPT_TRY(passes_pidfd(sock))) {
        passpidfd.emplace(CKPT_TRY(sockopt::Borrowed::set(sock, SOL_SOCKET, SO_PASSPIDFD, "SO_PASSPIDFD", 0)));
        passcred.emplace(CKPT_TRY(sockopt::Borrowed::set(sock, SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED", 1)));
    }
    if (type == SOCK_STREAM) passed = nullptr;

    std::vector<std::string> out;
    std::string buf(kMaxMessage, '\0');
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred)) + 256];
    size_t total = 0;
    for (;;) {
        iovec iov{buf.data(), buf.size()};
        sockaddr_un from{};
        msghdr mh{};
        mh.msg_name = &from;
        mh.msg_namelen = sizeof from;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        ssize_t n = recvmsg(sock, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n < 0) return sys_error("recvmsg(MSG_PEEK)");
        std::vector<UniqueFd> fds;
        std::optional<ucred> cred;
        std::string ancillary = take_ancillary(mh, &fds, &cred);
        if (!ancillary.empty())
            return error_code(ENOTSUP, "a message queued on this AF_UNIX socket carries {}: not supported", ancillary);
        if (!fds.empty() && !passed)
            return error_code(ENOTSUP, "a message queued on this AF_UNIX socket carries {} fd(s) in flight (SCM_RIGHTS), "
                                       "which are kept on socketpairs and connections of type SOCK_SEQPACKET or "
                                       "SOCK_DGRAM only{}",
                              fds.size(), type == SOCK_STREAM ? " (on a stream a peek cannot tell where the bytes "
                                                                "sent with them begin)" : "");
        if (mh.msg_flags & MSG_TRUNC)
            return error_code(ENOTSUP, "a message queued on this AF_UNIX socket is larger than {} bytes", kMaxMessage);
        if (n == 0) {
            // The end of a stream shut down, or of a message queue shut down; a zero-length
            // message cannot be told from that and is not supported.
            if (type == SOCK_STREAM || (d.shutdown & kRcvShutdown)) break;
            return error_code(ENOTSUP, "a zero-length message is queued on this AF_UNIX socket: not supported");
        }
        if (senders && (type != SOCK_STREAM || out.empty())) senders->push_back(address_name(from, mh.msg_namelen));
        total += static_cast<size_t>(n);
        if (total > kMaxQueued)
            return error_code(ENOTSUP, "more than {} bytes queued on this AF_UNIX socket: not supported", kMaxQueued);
        if (!out.empty() && cred.has_value() != !creds->empty())
            return error_code(ENOTSUP, "AF_UNIX socket: credentials (SCM_CREDENTIALS) came with some messages only");
        if (type == SOCK_STREAM && !out.empty() &&
            (!cred || (cred->pid == creds->back().pid && cred->uid == creds->back().uid && cred->gid == creds->back().gid))) {
            out.back().append(buf.data(), static_cast<size_t>(n));
        } else {
            out.emplace_back(buf.data(), static_cast<size_t>(n));
            if (cred) creds->push_back(*cred);
            if (!fds.empty()) passed->emplace_back(static_cast<uint32_t>(out.size() - 1), std::move(fds));
        }
    }
    if (passcred) CKPT_TRY(passcred->give_back());
    if (passpidfd) CKPT_TRY(passpidfd->give_back());
    CKPT_TRY(peek_off.give_back());
    // sock_diag counts the bytes queued for a stream or seqpacket socket: all of them were seen.
    if (type != SOCK_DGRAM && total != d.rqueue)
        return error("AF_UNIX socket: {} bytes peeked, {} queued", total, d.rqueue);
    return out;
}

// The overflow uid or gid (/proc/sys/kernel/overflowuid, overflowgid): what a read shows, with
// pid 0, of a message that carries no credentials.
Result<uint32_t> overflow_id(const char* which) {
    std::string text = CKPT_TRY(read_file(fmt::format("/proc/sys/kernel/{}", which)));
    return static_cast<uint32_t>(CKPT_TRY(parse_uint(trim(text))));
}

// Records the credentials a queued message carries as the engine's peek read them: none (the
// sender attached none: pid 0 with the overflow ids), or those of a process of the tree, its
// pid as the tree sees it (the same pid in the restored tree). Says why it cannot be kept
// (empty: it can).
Result<std::string> record_creds(const FdDumpState& st, const ucred& c, image::MessageCreds* out) {
    if (c.pid == 0) {
        // Every sender the tree could see, the engine sees: pid 0 is none for the tree too.
        if (c.uid == CKPT_TRY(overflow_id("overflowuid")) && c.gid == CKPT_TRY(overflow_id("overflowgid"))) {
            out->set_none(true);
            return std::string();
        }
        return fmt::format("a message queued with the credentials (SCM_CREDENTIALS) of a sender the engine's pid "
                           "namespace does not see (pid 0, uid {}, gid {}): they cannot be sent again", c.uid, c.gid);
    }
    auto it = st.tree_pids.find(c.pid);
    if (it == st.tree_pids.end())
        return fmt::format("a message queued with the credentials (SCM_CREDENTIALS) of pid {} (uid {}, gid {}), "
                           "which is not a process of the tree (it exited, or is outside it): its pid cannot be "
                           "given again", c.pid, c.uid, c.gid);
    out->set_pid(static_cast<uint32_t>(it->second));
    out->set_uid(c.uid);
    out->set_gid(c.gid);
    return std::string();
}

// SO_PEERGROUPS: the supplementary groups of the socket's maker (the process SO_PEERCRED names);
// nullopt when the socket has no peer credentials (ENODATA).
Result<std::optional<std::vector<gid_t>>> peer_groups(int sock) {
    std::vector<gid_t> groups(32);
    for (;;) {
        socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
            groups.resize(len / sizeof(gid_t));
            return std::optional{std::move(groups)};
        }
        if (errno == ENODATA) return std::optional<std::vector<gid_t>>();
        // ERANGE: len says how much room they need (at most NGROUPS_MAX, 65536).
        if (errno != ERANGE || len / sizeof(gid_t) <= groups.size() || len / sizeof(gid_t) > 65536)
            return sys_error("getsockopt(SO_PEERGROUPS)");
        groups.resize(len / sizeof(gid_t));
    }
}

// Records what SO_PEERCRED reads (the process that made the peer's end: socketpair(),
// connect(), listen()), its pid as the tree sees it (0: none, or a process outside the tree),
// its supplementary groups (SO_PEERGROUPS), the AF_UNIX options kept beside SO_PASSCRED and
// a socket filter.
Result<void> record_unix_opts(const FdDumpState& st, int sock, image::PeerCred* peer, sockopt::Options* opts,
                              image::SocketFilter* filter) {
    CKPT_TRY(sockopt::record(sock, sockopt::unix_level(), opts));
    CKPT_TRY(sockopt::record_filter(sock, filter));
    ucred c{};
    socklen_t len = sizeof c;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return sys_error("getsockopt(SO_PEERCRED)");
    auto it = st.tree_pids.find(c.pid);
    peer->set_recorded(true);
    peer->set_pid(it == st.tree_pids.end() ? 0 : static_cast<uint32_t>(it->second));
    peer->set_uid(c.uid);
    peer->set_gid(c.gid);
    if (auto groups = CKPT_TRY(peer_groups(sock))) {
        peer->set_groups_recorded(true);
        for (gid_t g : *groups) peer->add_groups(g);
    }
    return ok();
}

// The socket's address family (SO_DOMAIN), -1 when it cannot be read.
int socket_domain(const FdProbe& probe) {
    auto sock = probe.take();
    if (!sock) return -1;
    auto domain = sockopt::get_int(sock->get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
    return domain ? *domain : -1;
}

// Every socket but TCP/UDP ones (fds/tcp.cpp claims AF_INET and AF_INET6).
bool claims_socket(const FdProbe& probe) {
    if (!starts_with(probe.link, "socket:[")) return false;
    int domain = socket_domain(probe);
    return domain != AF_INET && domain != AF_INET6;
}

// Collects the inode of every socket the tree holds, so that the dump knows a peer is inside,
// and of AF_UNIX ones the listeners by name (and their pending clients) and the datagram
// sockets by name (the senders of queued messages).
Result<void> survey_socket(const FdProbe& probe) {
    if (probe.restorers()) return ok();
    uint64_t ino = CKPT_TRY(socket_inode(probe.link));
    FdDumpState& st = *probe.state;
    st.sockets.insert(ino);
    auto d = unix_diag(ino, UDIAG_SHOW_ICONS);
    if (!d) return ok();  // not AF_UNIX, or not examinable: the dump says why
    if (d->state == kListen && d->named) {
        st.unix_listeners[d->name] = ino;
        for (uint32_t c : d->icons)
            if (c) st.unix_pending[c] = ino;
    }
    if (d->type == SOCK_DGRAM && d->named) st.unix_dgram_names[d->name] = ino;
    return ok();
}

// Whether the socket is an end of a connected unnamed pair of the tree (a socketpair).
Result<bool> is_pair(const FdProbe& probe, uint64_t ino, int type, const UnixDiag& d) {
    if (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET) return false;
    if (d.state == kListen || (d.named && !d.name.empty()) || d.peer == 0) return false;
    if (!probe.state->sockets.count(d.peer)) return false;
    auto pd = unix_diag(d.peer);
    if (!pd) return false;
    return pd->peer == ino && !(pd->named && !pd->name.empty());
}

// Whether a connected end carries the name of a listener of the tree other than itself
// (accept() gives the accepted end its listener's name).
std::optional<uint64_t> accepted_from(const FdDumpState& st, uint64_t ino, const UnixDiag& d) {
    if (!d.named || d.name.empty()) return std::nullopt;
    auto it = st.unix_listeners.find(d.name);
    if (it == st.unix_listeners.end() || it->second == ino) return std::nullopt;
    return it->second;
}

// The major and minor of a kernel dev_t (sock_diag's) and of a user one (stat's) agree.
bool same_dev(uint32_t kdev, dev_t udev) { return (kdev >> 20) == major(udev) && (kdev & 0xfffff) == minor(udev); }

// Records the socket file of a name bound in the file system: its mode and owner, its folder,
// or that it was deleted (or replaced) since. Returns why it cannot be restored (empty: it can).
std::string record_path(const std::string& name, const UnixDiag& d, image::UnixSkEntry* e) {
    std::string path(name.c_str());
    if (path.empty() || path[0] != '/')
        return fmt::format("bound to the relative path '{}' (only absolute paths are restored)", path);
    size_t slash = path.rfind('/');
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    struct stat ds;
    if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
        return fmt::format("bound to '{}' whose folder no longer exists", path);
    e->set_dir_dev(ds.st_dev);
    e->set_dir_ino(ds.st_ino);
    struct stat st;
    bool same = d.has_vfs && ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == d.vfs_ino &&
                same_dev(d.vfs_dev, st.st_dev);
    if (!same) {
        e->set_deleted(true);
        return std::string();
    }
    e->set_mode(st.st_mode & 07777);
    e->set_uid(st.st_uid);
    e->set_gid(st.st_gid);
    return std::string();
}

// Whether the socket has a peer, closed or not (getpeername fails with ENOTCONN when none).
bool has_peer_name(int sock) {
    sockaddr_un a{};
    socklen_t len = sizeof a;
    return getpeername(sock, reinterpret_cast<sockaddr*>(&a), &len) == 0;
}

// Records an AF_UNIX socket that is not an end of a pair into e, or says why it cannot be
// restored (empty: it can).
Result<std::string> record_unix_sk(const FdProbe& probe, int sock, uint64_t ino, int type, const UnixDiag& d,
                                   image::UnixSkEntry* e) {
    FdDumpState& st = *probe.state;
    std::string_view tn = type_name(type);
    if (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET)
        return fmt::format("an AF_UNIX socket of type {}", type);
    e->set_id(ino);
    e->set_type(type);
    if (d.named) e->set_name(d.name);
    std::string shown = shown_name(d.name);
    auto peer_diag = [&](const char* what) -> Result<UnixDiag> {
        return CKPT_TRY_CTX(unix_diag(d.peer), "{} socket:[{}]", what, d.peer);
    };

    if (d.state == kListen) {
        e->set_state(image::UnixSkEntry::LISTENING);
        e->set_backlog(d.wqueue);
        auto icons = CKPT_TRY(unix_diag(ino, UDIAG_SHOW_ICONS)).icons;
        for (uint32_t c : icons) {
            if (c == 0)
                return fmt::format("a listening AF_UNIX socket '{}' with a pending connection whose client has closed "
                                   "(it cannot be made again)", shown);
            if (!st.sockets.count(c))
                return fmt::format("a listening AF_UNIX socket '{}' with a pending connection from socket:[{}] outside "
                                   "the tree (it cannot be made again)", shown, c);
            e->add_pending(c);
        }
    } else if (d.state == kEstablished && type == SOCK_DGRAM && d.peer == 0 && !has_peer_name(sock)) {
        // The target of another's connect() is ESTABLISHED too, and connected to nobody.
        e->set_state(image::UnixSkEntry::ALONE);
    } else if (d.state == kEstablished && type == SOCK_DGRAM) {
        e->set_state(image::UnixSkEntry::CONNECTED);
        if (d.peer == 0) return fmt::format("an AF_UNIX SOCK_DGRAM socket '{}' connected to a socket since closed", shown);
        UnixDiag pd = CKPT_TRY(peer_diag("peer"));
        if (!pd.named || pd.name.empty())
            return fmt::format("an AF_UNIX SOCK_DGRAM socket '{}' connected to the unnamed socket:[{}]", shown, d.peer);
        if (st.sockets.count(d.peer)) {
            e->set_peer(d.peer);
        } else if (st.ext_unix_sk) {
            e->set_ext_peer(pd.name);
        } else {
            return fmt::format("an AF_UNIX SOCK_DGRAM socket '{}' connected to '{}' (socket:[{}]) outside the tree "
                               "(dump --ext-unix-sk connects it to that name again)",
                               shown, shown_name(pd.name), d.peer);
        }
    } else if (d.state == kEstablished) {
        auto pending = st.unix_pending.find(ino);
        if (pending != st.unix_pending.end()) {
            e->set_state(image::UnixSkEntry::PENDING);
            e->set_listener(pending->second);
            if (d.wqueue > 0)
                return fmt::format("an AF_UNIX {} client that sent {} bytes on a connection not accepted yet (what "
                                   "waits in an accept queue cannot be read)", tn, d.wqueue);
        } else {
            e->set_state(image::UnixSkEntry::CONNECTED);
            if (d.peer == 0) return fmt::format("an AF_UNIX {} socket '{}' whose peer is closed", tn, shown);
            if (!st.sockets.count(d.peer))
                return fmt::format("an AF_UNIX {} socket '{}' connected to socket:[{}] outside the tree (a stream "
                                   "connection cannot be made again, --ext-unix-sk or not)", tn, shown, d.peer);
            UnixDiag pd = CKPT_TRY(peer_diag("peer"));
            if (pd.peer != ino)
                return fmt::format("an AF_UNIX {} socket connected to socket:[{}], itself connected elsewhere", tn, d.peer);
            auto mine = accepted_from(st, ino, d);
            auto theirs = accepted_from(st, d.peer, pd);
            if (mine && theirs)
                return fmt::format("an AF_UNIX {} socket '{}' whose peer socket:[{}] also carries a listener's name",
                                   tn, shown, d.peer);
            if (!mine && !theirs)
                return fmt::format("an AF_UNIX {} connection between '{}' and '{}' whose listening socket the tree "
                                   "does not hold (closed): it cannot be made again", tn, shown, shown_name(pd.name));
            if (mine) {
                e->set_accepted(true);
                e->set_listener(*mine);
            }
            e->set_peer(d.peer);
        }
    } else if (d.state == kClose) {
        e->set_state(image::UnixSkEntry::ALONE);
    } else {
        return fmt::format("an AF_UNIX {} socket '{}' in state {}", tn, shown, d.state);
    }

    if (!d.name.empty() && d.name[0] != '\0' && !e->accepted()) {
        std::string why = record_path(d.name, d, e);
        if (!why.empty()) return fmt::format("an AF_UNIX {} socket {}", tn, why);
    }

    // An unconnected stream socket has nothing queued (and recv refuses it).
    if (type == SOCK_DGRAM || e->state() == image::UnixSkEntry::CONNECTED || e->state() == image::UnixSkEntry::PENDING) {
        std::vector<std::string> senders;
        // fds in flight are sent again by the peer of a seqpacket connection (a datagram's
        // sender may be gone, or outside the tree; streams: see peek_queue).
        PassedFds passed;
        bool connection = type == SOCK_SEQPACKET && e->state() == image::UnixSkEntry::CONNECTED;
        std::vector<ucred> creds;
        auto queued = CKPT_TRY(peek_queue(sock, type, d, &creds, type == SOCK_DGRAM ? &senders : nullptr,
                                          connection ? &passed : nullptr));
        for (auto& [message, fds] : passed)
            st.fds_in_flight.push_back({probe.pid, probe.fd, ino, false, 0, message, std::move(fds)});
        if (type == SOCK_DGRAM && !queued.empty() && (!d.named || d.name.empty()))
            return fmt::format("an unnamed AF_UNIX SOCK_DGRAM socket with {} message(s) queued", queued.size());
        for (size_t i = 0; i < queued.size(); ++i) {
            auto* m = e->add_queued();
            m->set_data(std::move(queued[i]));
            if (!creds.empty()) {
                std::string why = CKPT_TRY(record_creds(st, creds[i], m->mutable_creds()));
                if (!why.empty()) return fmt::format("an AF_UNIX {} socket '{}' with {}", tn, shown, why);
            }
            if (type != SOCK_DGRAM) continue;
            m->set_sender(senders[i]);
            auto it = st.unix_dgram_names.find(senders[i]);
            if (!senders[i].empty() && it != st.unix_dgram_names.end())
                m->set_sender_id(it->second);
            else if (!senders[i].empty() && senders[i][0] != '\0')
                return fmt::format("an AF_UNIX SOCK_DGRAM socket '{}' with a message queued from '{}', which no socket "
                                   "of the tree is bound to (the name cannot be borrowed to send it again)",
                                   shown, shown_name(senders[i]));
        }
    }
    e->set_shutdown(d.shutdown & (kRcvShutdown | kSendShutdown));
    e->set_sndbuf(static_cast<uint32_t>(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"))));
    e->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"))));
    e->set_passcred(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED")) != 0);
    CKPT_TRY(record_unix_opts(st, sock, e->mutable_peercred(), e->mutable_options(), e->mutable_filter()));
    return std::string();
}

// One end of a pair of the tree.
Result<void> dump_pair_end(const FdProbe& probe, int sock, uint64_t ino, int type, const UnixDiag& d, image::Fd* f) {
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
    PassedFds passed;
    std::vector<ucred> creds;
    for (auto& m : CKPT_TRY(peek_queue(sock, type, d, &creds, nullptr, &passed))) me->add_queued(std::move(m));
    for (const ucred& c : creds) {
        std::string why = CKPT_TRY(record_creds(*probe.state, c, me->add_creds()));
        if (!why.empty()) return error_code(ENOTSUP, "an AF_UNIX {} socketpair end with {}", type_name(type), why);
    }
    me->set_passcred(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED")) != 0);
    CKPT_TRY(record_unix_opts(*probe.state, sock, me->mutable_peercred(), me->mutable_options(), me->mutable_filter()));
    for (auto& [message, fds] : passed) probe.state->fds_in_flight.push_back({probe.pid, probe.fd, id, true, end, message, std::move(fds)});
    me->set_shutdown(d.shutdown & (kRcvShutdown | kSendShutdown));
    me->set_sndbuf(static_cast<uint32_t>(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"))));
    me->set_rcvbuf(static_cast<uint32_t>(CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"))));
    me->set_recorded(true);
    return ok();
}

Result<void> dump_socket(const FdProbe& probe, image::Fd* f) {
    uint64_t ino = CKPT_TRY(socket_inode(probe.link));
    FdDumpState& st = *probe.state;
    // Another fd of a socket recorded already.
    if (auto seen = st.unix_sks.find(ino); seen != st.unix_sks.end()) {
        f->set_kind(image::Fd::UNIX_SK);
        f->set_unix_sk_id(ino);
        f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
        return ok();
    }
    std::string why;
    image::UnixSkEntry entry;
    UniqueFd sock;
    if (st.sockets.count(ino)) {
        sock = CKPT_TRY(probe.take());
        int type = CKPT_TRY(sockopt::get_int(sock.get(), SOL_SOCKET, SO_TYPE, "SO_TYPE"));
        int domain = CKPT_TRY(sockopt::get_int(sock.get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"));
        if (domain == AF_UNIX) {
            auto diag = unix_diag(ino, UDIAG_SHOW_VFS);
            if (!diag)
                why = fmt::format("an AF_UNIX socket sock_diag cannot examine ({})", diag.error().message());
            else if (CKPT_TRY(is_pair(probe, ino, type, *diag)))
                return dump_pair_end(probe, sock.get(), ino, type, *diag, f);
            else
                why = CKPT_TRY(record_unix_sk(probe, sock.get(), ino, type, *diag, &entry));
        } else {
            why = fmt::format("an {} {} socket (AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK sockets are supported)",
                              sockopt::family_name(domain), sockopt::type_name(type));
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
    f->set_kind(image::Fd::UNIX_SK);
    f->set_unix_sk_id(ino);
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    image::FileTable& table = st.files.table();
    st.unix_sks.emplace(ino, table.unix_sks_size());
    *table.add_unix_sks() = std::move(entry);
    return ok();
}

// Which open file description of the tree an fd in flight is (the engine's copy of it).
Result<image::InFlightFd> in_flight_description(const FdDumpState& st, int fd) {
    struct stat s;
    if (fstat(fd, &s) != 0) return sys_error("fstat");
    std::string link = CKPT_TRY(read_link("/proc/self/fd/" + std::to_string(fd)));
    image::InFlightFd r;
    if (starts_with(link, "pipe:[")) {
        auto it = st.pipes.ends.find(s.st_ino);
        if (it == st.pipes.ends.end() || it->second.first == 0 || it->second.second == 0)
            return error_code(ENOTSUP, "an fd in flight (SCM_RIGHTS) on {}, a pipe whose two ends the tree does not "
                                       "both hold: not supported", link);
        r.set_pipe_id(s.st_ino);
        r.set_pipe_write((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY);
        return r;
    }
    constexpr int kKcmpFile = 0;
    auto seen = st.descs.by_inode.find({static_cast<uint64_t>(s.st_dev), static_cast<uint64_t>(s.st_ino)});
    if (seen != st.descs.by_inode.end())
        for (const auto& held : seen->second) {
            long same = syscall(SYS_kcmp, getpid(), held.pid, kKcmpFile, fd, held.fd);
            if (same < 0) return sys_error("kcmp(pid {} fd {})", held.pid, held.fd);
            if (same == 0) {
                r.set_description_id(held.id);
                return r;
            }
        }
    return error_code(ENOTSUP, "an fd in flight (SCM_RIGHTS) on {} that no process of the tree holds open: not "
                               "supported (only the message holds it)", link);
}

// Every fd in flight of the tree's queues, now that every fd of the tree has been seen.
Result<void> record_fds_in_flight(FdDumpState& st) {
    image::FileTable& table = st.files.table();
    for (auto& m : st.fds_in_flight) {
        google::protobuf::RepeatedPtrField<image::InFlightFd>* out;
        if (m.pair) {
            auto* fds = table.mutable_unix_sockets(st.unix_pairs.at(m.socket))->mutable_ends(static_cast<int>(m.end))->add_in_flight();
            fds->set_message(m.message);
            out = fds->mutable_fds();
        } else {
            out = table.mutable_unix_sks(st.unix_sks.at(m.socket))->mutable_queued(static_cast<int>(m.message))->mutable_fds();
        }
        for (const UniqueFd& fd : m.fds)
            *out->Add() = CKPT_TRY_CTX(in_flight_description(st, fd.get()), "pid {}: fd {} (AF_UNIX socket): message {} queued",
                                       m.pid, m.fd, m.message);
    }
    st.fds_in_flight.clear();
    return ok();
}

// The engine's copy of the open file description an fd in flight is: made by the restore of
// the tree's fds (so only once every fd of the tree is in place).
Result<int> in_flight_fd(const RestoreShared& sh, const image::InFlightFd& f) {
    if ((f.description_id() != 0) == (f.pipe_id() != 0))
        return error_code(EINVAL, "an fd in flight names no open file description, or two (image is corrupt)");
    if (f.pipe_id()) {
        auto it = sh.pipes.find(f.pipe_id());
        if (it == sh.pipes.end()) return error_code(EINVAL, "an fd in flight on pipe {}, not in the images", f.pipe_id());
        return f.pipe_write() ? it->second.second.get() : it->second.first.get();
    }
    auto it = sh.descriptions.find(f.description_id());
    if (it == sh.descriptions.end())
        return error_code(EINVAL, "an fd in flight on open file description {}, which no fd of the tree has (image "
                                  "is corrupt)", f.description_id());
    return it->second.get();
}

constexpr int kMaxFdsPerMessage = 253;  // SCM_MAX_FD

// The engine's copies of the descriptions of a message's fds in flight.
Result<std::vector<int>> in_flight_fds(const RestoreShared& sh,
                                       const google::protobuf::RepeatedPtrField<image::InFlightFd>& in_flight) {
    if (in_flight.empty() || in_flight.size() > kMaxFdsPerMessage)
        return error_code(EINVAL, "a message with {} fds in flight (image is corrupt)", in_flight.size());
    std::vector<int> fds;
    for (const auto& f : in_flight) fds.push_back(CKPT_TRY(in_flight_fd(sh, f)));
    return fds;
}

// Whether a message carries its sender's credentials (not none, nor unrecorded).
bool has_creds(const image::MessageCreds* c) { return c && !c->none(); }

// What a message's recorded credentials may say, and whether the restorer may send them:
// under --restore-as the kernel takes another process's pid only from CAP_SYS_ADMIN (and other
// ids only from CAP_SETUID, CAP_SETGID), which the user lacks; none are always kept (sent
// without any). Checked before anything is made.
Result<void> check_creds(const image::MessageCreds& c, const RestoreShared& sh) {
    if (c.none() == (c.pid() != 0) || c.pid() > static_cast<uint32_t>(INT32_MAX))
        return error_code(EINVAL, "message credentials with no pid, or a pid and none (image is corrupt)");
    if (!c.none() && sh.user)
        return error_code(EPERM, "a message queued with its sender's credentials (SCM_CREDENTIALS: pid {}, uid {}, gid "
                                 "{}): a restore as the user may not send another process's credentials (the kernel "
                                 "asks CAP_SYS_ADMIN for its pid); restore as root", c.pid(), c.uid(), c.gid());
    return ok();
}

// Sends one queued message (or a run of a stream's bytes) with what it carries: fds in flight
// (the engine's copies of their descriptions) and its sender's credentials, the restored
// sender's pid as the engine sees it (its recorded one in the tree's namespace) with the
// recorded ids. A message recorded with none (or without SO_PASSCRED) is sent without any,
// before either end has SO_PASSCRED (the kernel attaches the sender's own then). To the
// address `to` when given (a datagram).
Result<void> send_message(int from, int type, const std::string& m, const std::vector<int>& fds,
                          const image::MessageCreds* creds, const RestoreShared* sh, const sockaddr_un* to = nullptr,
                          socklen_t tolen = 0) {
    if (m.empty()) return error_code(EINVAL, "an empty queued message (image is corrupt)");
    ucred u{};
    if (has_creds(creds)) {
        if (!sh) return error("credentials of a message before the tree's processes exist");
        auto host = sh->hosts.find(static_cast<pid_t>(creds->pid()));
        if (host == sh->hosts.end())
            return error_code(EINVAL, "a message with the credentials of pid {}, not a process of the images (image is "
                                      "corrupt)", creds->pid());
        u = {host->second, creds->uid(), creds->gid()};
    }
    if (!fds.empty() && type == SOCK_STREAM) return error_code(EINVAL, "fds in flight on a stream (image is corrupt)");
    // Built once: a stream's run may go in parts (each with the credentials: a read joins
    // them), a message in one.
    size_t space = (fds.empty() ? 0 : CMSG_SPACE(sizeof(int) * fds.size())) + (has_creds(creds) ? CMSG_SPACE(sizeof u) : 0);
    std::vector<cmsghdr> control(space / sizeof(cmsghdr) + 1);
    msghdr mh{};
    mh.msg_name = const_cast<sockaddr_un*>(to);
    mh.msg_namelen = tolen;
    if (space) {
        mh.msg_control = control.data();
        mh.msg_controllen = space;
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        if (!fds.empty()) {
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
            c = CMSG_NXTHDR(&mh, c);
        }
        if (has_creds(creds)) {
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_CREDENTIALS;
            c->cmsg_len = CMSG_LEN(sizeof u);
            std::memcpy(CMSG_DATA(c), &u, sizeof u);
        }
    }
    size_t done = 0;
    while (done < m.size()) {
        iovec iov{const_cast<char*>(m.data() + done), m.size() - done};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        ssize_t n = sendmsg(from, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return error_code(ENOBUFS, "the data queued does not fit the socket's buffer");
        if (n < 0 && has_creds(creds))
            return sys_error("sendmsg with the sender's credentials (SCM_CREDENTIALS: pid {} in the tree, {} for the "
                             "engine, uid {}, gid {})", creds->pid(), u.pid, u.uid, u.gid);
        if (n < 0) return sys_error("sendmsg");
        if (type != SOCK_STREAM && static_cast<size_t>(n) != m.size())
            return error("a message of {} bytes sent as {}", m.size(), n);
        done += static_cast<size_t>(n);
    }
    return ok();
}

// What a list of messages' fds in flight may say, checked before anything is made.
Result<void> check_in_flight(const google::protobuf::RepeatedPtrField<image::MessageFds>& list, int type, int queued) {
    if (!list.empty() && type == SOCK_STREAM) return error_code(EINVAL, "fds in flight on a stream (image is corrupt)");
    int64_t last = -1;
    for (const auto& m : list) {
        if (static_cast<int64_t>(m.message()) <= last || static_cast<int64_t>(m.message()) >= queued)
            return error_code(EINVAL, "fds in flight of message {} of {}, or out of order (image is corrupt)", m.message(),
                              queued);
        if (m.fds().empty() || m.fds_size() > kMaxFdsPerMessage)
            return error_code(EINVAL, "a message with {} fds in flight (image is corrupt)", m.fds_size());
        last = m.message();
    }
    return ok();
}

// Sends what is queued for one end from the other, message by message (with the fds in
// flight and credentials they carry: sh, once every fd and process of the tree is in place).
Result<void> queue_into(int from, int type, const image::UnixSocketEnd& to, uint64_t id, int end,
                        const RestoreShared* sh = nullptr) {
    auto fds = to.in_flight().begin();
    for (int i = 0; i < to.queued_size(); ++i) {
        const std::string& m = to.queued(i);
        std::vector<int> passed;
        if (fds != to.in_flight().end() && fds->message() == static_cast<uint32_t>(i)) {
            if (!sh) return error("unix socket pair {}: fds in flight before the tree's fds are in place", id);
            passed = CKPT_TRY_CTX(in_flight_fds(*sh, fds->fds()), "unix socket pair {}: message {} queued for end {}", id,
                                  i, end);
            ++fds;
        }
        CKPT_TRY_CTX(send_message(from, type, m, passed, to.creds_size() ? &to.creds(i) : nullptr, sh),
                     "unix socket pair {}: message {} queued for end {}", id, i, end);
    }
    return ok();
}

// What an end's recorded credentials may say (one per queued entry, or none recorded),
// checked before anything is made; whether any is a sender's (sent once the tree exists).
Result<bool> check_end_creds(const image::UnixSocketEnd& end, const RestoreShared& sh) {
    if (end.creds_size() && end.creds_size() != end.queued_size())
        return error_code(EINVAL, "credentials of {} messages, {} queued (image is corrupt)", end.creds_size(),
                          end.queued_size());
    bool any = false;
    for (const auto& c : end.creds()) {
        CKPT_TRY(check_creds(c, sh));
        any = any || has_creds(&c);
    }
    return any;
}

// Shuts a socket down as the recorded sk_shutdown bits say (once its data is in: a peer that
// cannot receive refuses it).
Result<void> shut(int fd, uint32_t s) {
    int how = (s & kRcvShutdown) && (s & kSendShutdown) ? SHUT_RDWR
              : (s & kRcvShutdown)                      ? SHUT_RD
              : (s & kSendShutdown)                     ? SHUT_WR
                                                        : -1;
    if (how >= 0 && shutdown(fd, how) != 0) return sys_error("shutdown");
    return ok();
}

bool has_sender_creds(const image::UnixSocketEnd& end) {
    return std::any_of(end.creds().begin(), end.creds().end(), [](const image::MessageCreds& c) { return has_creds(&c); });
}

// Whether a pair is filled only once the tree exists: messages carry fds in flight, or their
// senders' credentials (whose pids exist only then).
bool pair_filled_late(const image::UnixSocketEntry& e) {
    return e.ends(0).in_flight_size() > 0 || e.ends(1).in_flight_size() > 0 || has_sender_creds(e.ends(0)) ||
           has_sender_creds(e.ends(1));
}

// SO_PASSCRED and the other options of sockopt::unix_level (SO_PASSPIDFD, SO_PASSSEC) as
// recorded, once what is queued is in (a message recorded with no credentials is sent while
// neither end has SO_PASSCRED or SO_PASSPIDFD: the kernel would attach the engine's); the
// socket filter too (it would judge the messages put back).
template <typename Entry>
Result<void> set_receive_options(int fd, const Entry& e) {
    if (e.passcred()) CKPT_TRY(sockopt::set_int(fd, SOL_SOCKET, SO_PASSCRED, 1, "SO_PASSCRED"));
    CKPT_TRY(sockopt::restore(fd, sockopt::unix_level(), e.options()));
    return sockopt::restore_filter(fd, e.filter());
}

// SO_PEERCRED of a socket made again against the one recorded: a difference a process can
// see (another peer pid, other ids) is logged; docs/engine.md says when it stays.
Result<void> note_peercred(int fd, const image::PeerCred& want, const RestoreShared& sh, const std::string& what) {
    if (!want.recorded()) return ok();
    ucred now{};
    socklen_t len = sizeof now;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &now, &len) != 0) return sys_error("{}: getsockopt(SO_PEERCRED)", what);
    auto host = sh.hosts.find(static_cast<pid_t>(want.pid()));
    bool same_pid = want.pid() != 0 && host != sh.hosts.end() && now.pid == host->second;
    if ((want.pid() != 0 && !same_pid) || now.uid != want.uid() || now.gid != want.gid())
        logger()->info("{}: SO_PEERCRED names pid {} (as the engine sees it), uid {}, gid {}, not the peer of the dump "
                       "(pid {} in the tree, uid {}, gid {})", what, now.pid, now.uid, now.gid, want.pid(), want.uid(),
                       want.gid());
    if (want.groups_recorded()) {
        auto groups = CKPT_TRY_CTX(peer_groups(fd), "{}", what);
        if (!groups || !std::equal(groups->begin(), groups->end(), want.groups().begin(), want.groups().end()))
            logger()->info("{}: SO_PEERGROUPS names {} supplementary groups, not the {} of the peer of the dump", what,
                           groups ? groups->size() : 0, want.groups_size());
    }
    return ok();
}

// The process of the tree that made a pair, when both ends recorded it (socketpair() stamps
// both with its credentials, which SO_PEERCRED reads): the pair is made again by that process
// once it exists (make_pairs_in_tree), so that both ends name it again. 0 (none recorded, a
// process outside the tree or gone): the engine makes it before any process.
pid_t pair_creator(const image::UnixSocketEntry& e) {
    const image::PeerCred &a = e.ends(0).peercred(), &b = e.ends(1).peercred();
    if (!a.recorded() || !b.recorded() || a.pid() == 0 || a.pid() != b.pid() || a.uid() != b.uid() ||
        a.gid() != b.gid())
        return 0;
    return static_cast<pid_t>(a.pid());
}

// Runs call (injected syscalls of t's leader) as the process of the tree that made a socket
// at the dump: the kernel stamps the caller's credentials on it (SO_PEERCRED and
// SO_PEERGROUPS read them). Root restoring as recorded makes the call with the recorded
// effective ids and supplementary groups, taking its own back after (t still holds root's
// real and saved ids; its groups are the engine's until its own are restored, at the end).
// Under --restore-as the process already is the user and keeps the groups it has.
template <class Call>
Result<int64_t> as_maker(RestoreTask& t, const image::PeerCred& cred, Call&& call) {
    constexpr uint64_t kKeep = static_cast<uint32_t>(-1);
    RemoteThread& rt = *t.leader;
    bool swap = !t.shared->user && (geteuid() != cred.uid() || getegid() != cred.gid());
    std::vector<uint32_t> own;
    bool regroup = false;
    if (!t.shared->user && cred.groups_recorded()) {
        own = CKPT_TRY(read_status(t.host)).groups;
        regroup = !std::equal(own.begin(), own.end(), cred.groups().begin(), cred.groups().end());
    }
    auto s = t.scratch.scope();
    uint64_t own_at = 0;
    if (regroup) {
        static_assert(sizeof(gid_t) == sizeof(uint32_t));
        auto put = [&](const uint32_t* g, size_t n) -> Result<uint64_t> {
            if (n == 0) return uint64_t{0};
            return s.put(g, n * sizeof(uint32_t), alignof(uint32_t));
        };
        uint64_t want_at = CKPT_TRY(put(cred.groups().data(), cred.groups().size()));
        own_at = CKPT_TRY(put(own.data(), own.size()));
        CKPT_TRY(rt.syscall_ok("setgroups", SYS_setgroups, {static_cast<uint64_t>(cred.groups_size()), want_at}));
    }
    if (swap) {
        CKPT_TRY(rt.syscall_ok("setresgid", SYS_setresgid, {kKeep, cred.gid(), kKeep}));
        CKPT_TRY(rt.syscall_ok("setresuid", SYS_setresuid, {kKeep, cred.uid(), kKeep}));
    }
    Result<int64_t> r = call(rt);
    if (swap) {
        CKPT_TRY(rt.syscall_ok("setresuid", SYS_setresuid, {kKeep, geteuid(), kKeep}));
        CKPT_TRY(rt.syscall_ok("setresgid", SYS_setresgid, {kKeep, getegid(), kKeep}));
    }
    if (regroup) CKPT_TRY(rt.syscall_ok("setgroups", SYS_setgroups, {static_cast<uint64_t>(own.size()), own_at}));
    return r;
}

// The living process of the tree a recorded SO_PEERCRED names (null: none, or not restored
// living: the engine makes the call itself).
RestoreTask* maker_of(const RestoreShared& sh, const image::PeerCred& cred) {
    if (!cred.recorded() || cred.pid() == 0) return nullptr;
    auto t = sh.made.find(static_cast<pid_t>(cred.pid()));
    return t == sh.made.end() ? nullptr : t->second;
}

// socketpair() called by process t as the pair's maker, its two ends taken into the engine
// (and closed in t).
Result<std::pair<UniqueFd, UniqueFd>> socketpair_in(RestoreTask& t, int type, const image::PeerCred& cred) {
    auto s = t.scratch.scope();
    uint64_t sv = CKPT_TRY(s.take(2 * sizeof(int), alignof(int)));
    CKPT_TRY(as_maker(t, cred, [&](RemoteThread& rt) {
        return rt.syscall_ok("socketpair", SYS_socketpair, {AF_UNIX, static_cast<uint64_t>(type) | SOCK_CLOEXEC, 0, sv});
    }));
    int remote[2];
    CKPT_TRY(read_remote(t.host, sv, remote, sizeof remote));
    UniqueFd pidfd(sys_pidfd_open(t.host, 0));
    int err = pidfd ? 0 : errno;
    UniqueFd mine[2];
    for (int i = 0; i < 2 && pidfd; ++i) {
        mine[i] = UniqueFd(sys_pidfd_getfd(pidfd.get(), remote[i], 0));
        if (!mine[i] && !err) err = errno;
    }
    for (int fd : remote) CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    if (err) return sys_error_code(err, fmt::format("taking a socketpair from pid {}", t.pid));
    return std::pair{std::move(mine[0]), std::move(mine[1])};
}

// A call on the engine's socket fd made from inside t as the socket's maker (as_maker): the
// socket is put in t for the call (at the number given to call) and taken out after. Returns
// the call's raw result (a negative errno when it failed).
template <class Call>
Result<int64_t> socket_call_in(RestoreTask& t, const image::PeerCred& cred, int fd, Call&& call) {
    int there = CKPT_TRY(t.install_fd(fd, -1, true));
    Result<int64_t> r = as_maker(t, cred, [&](RemoteThread& rt) { return call(rt, static_cast<uint64_t>(there)); });
    CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(there)}));
    return r;
}

// Puts back what is queued for each end, then shuts them down as they were.
Result<void> fill_pair(const image::UnixSocketEntry& e, int a, int b, const RestoreShared* sh = nullptr) {
    int fds[2] = {a, b};
    for (int i = 0; i < 2; ++i) CKPT_TRY(queue_into(fds[1 - i], e.type(), e.ends(i), e.id(), i, sh));
    // Shut down once the data is in: a peer that cannot receive refuses it.
    for (int i = 0; i < 2; ++i) {
        CKPT_TRY_CTX(shut(fds[i], e.ends(i).shutdown()), "unix socket pair {} end {}", e.id(), i);
        CKPT_TRY_CTX(set_receive_options(fds[i], e.ends(i)), "unix socket pair {} end {}",
                     e.id(), i);
    }
    return ok();
}

// A pair made again: its buffers, then what is queued for each end (unless that waits for the
// tree, release_unix_pairs).
Result<void> finish_pair(RestoreShared& sh, const image::UnixSocketEntry& e, UniqueFd a, UniqueFd b) {
    int fds[2] = {a.get(), b.get()};
    for (int i = 0; i < 2; ++i) {
        CKPT_TRY_CTX(sockopt::restore_buffer(fds[i], SO_SNDBUF, SO_SNDBUFFORCE, e.ends(i).sndbuf(), "SO_SNDBUF"),
                     "unix socket pair {} end {}", e.id(), i);
        CKPT_TRY_CTX(sockopt::restore_buffer(fds[i], SO_RCVBUF, SO_RCVBUFFORCE, e.ends(i).rcvbuf(), "SO_RCVBUF"),
                     "unix socket pair {} end {}", e.id(), i);
        CKPT_TRY(note_peercred(fds[i], e.ends(i).peercred(), sh, fmt::format("unix socket pair {} end {}", e.id(), i)));
    }
    if (!pair_filled_late(e)) CKPT_TRY(fill_pair(e, a.get(), b.get()));
    sh.unix_pairs[e.id()] = {std::move(a), std::move(b)};
    return ok();
}

Result<std::pair<UniqueFd, UniqueFd>> engine_socketpair(int type) {
    int sv[2];
    if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) return sys_error("socketpair");
    return std::pair{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// Every pair of the tree checked, and those no process of the tree made (pair_creator) made
// with what is queued for each end, before any process (the others: make_pairs_in_tree).
Result<void> make_unix_pairs(RestoreShared& sh) {
    std::set<uint64_t> seen;
    for (const auto& e : sh.files.unix_sockets()) {
        if (e.ends_size() != 2)
            return error_code(EINVAL, "unix socket pair {}: {} ends recorded, not 2 (image is corrupt)", e.id(),
                              e.ends_size());
        if (e.type() != SOCK_STREAM && e.type() != SOCK_DGRAM && e.type() != SOCK_SEQPACKET)
            return error_code(EINVAL, "unix socket pair {}: socket type {} (image is corrupt)", e.id(), e.type());
        if (!seen.insert(e.id()).second)
            return error_code(EINVAL, "unix socket pair {} recorded twice (image is corrupt)", e.id());
        for (int i = 0; i < 2; ++i) {
            CKPT_TRY_CTX(check_in_flight(e.ends(i).in_flight(), e.type(), e.ends(i).queued_size()), "unix socket pair {} end {}",
                         e.id(), i);
            CKPT_TRY_CTX(check_end_creds(e.ends(i), sh), "unix socket pair {} end {}", e.id(), i);
        }
        if (pair_creator(e) != 0) continue;
        auto [a, b] = CKPT_TRY(engine_socketpair(e.type()));
        CKPT_TRY(finish_pair(sh, e, std::move(a), std::move(b)));
    }
    return ok();
}

// Every process of the tree exists: each pair a process of it made is made again by that
// process (the engine makes it when that process is not restored living, a zombie).
Result<void> make_pairs_in_tree(RestoreShared& sh) {
    for (const auto& e : sh.files.unix_sockets()) {
        if (pair_creator(e) == 0) continue;
        RestoreTask* t = maker_of(sh, e.ends(0).peercred());
        auto ends = !t ? CKPT_TRY(engine_socketpair(e.type()))
                       : CKPT_TRY_CTX(socketpair_in(*t, e.type(), e.ends(0).peercred()), "unix socket pair {}", e.id());
        CKPT_TRY(finish_pair(sh, e, std::move(ends.first), std::move(ends.second)));
    }
    return ok();
}

// Installs f as a description of the engine's socket mine (a copy of it, with f's flags).
Result<void> install_socket(RestoreTask& t, const image::Fd& f, int mine) {
    return install_description(
        t, f,
        [mine]() -> Result<UniqueFd> {
            UniqueFd d(fcntl(mine, F_DUPFD_CLOEXEC, 3));
            if (!d) return sys_error("dup");
            return d;
        },
        true);
}

Result<void> restore_unix_socket(RestoreTask& t, const image::Fd& f) {
    auto it = t.shared->unix_pairs.find(f.unix_socket_id());
    if (it == t.shared->unix_pairs.end())
        return error_code(EINVAL, "unix socket pair {} missing from the images (image is corrupt)", f.unix_socket_id());
    if (f.unix_socket_end() > 1)
        return error_code(EINVAL, "unix socket pair {}: end {} (image is corrupt)", f.unix_socket_id(), f.unix_socket_end());
    if (f.description_id() == 0)
        return error_code(EINVAL, "unix socket pair {}: no description id (image is corrupt)", f.unix_socket_id());
    return install_socket(t, f, f.unix_socket_end() == 0 ? it->second.first.get() : it->second.second.get());
}

// Every end and process is in place: the pairs with fds in flight or senders' credentials are
// filled now that those exist, then the engine's own copies go (a restore that keeps running
// after the tree must not hold an end open).
Result<void> release_unix_pairs(RestoreShared& sh) {
    for (const auto& e : sh.files.unix_sockets()) {
        if (!pair_filled_late(e)) continue;
        const auto& ends = sh.unix_pairs.at(e.id());
        CKPT_TRY(fill_pair(e, ends.first.get(), ends.second.get(), &sh));
    }
    sh.unix_pairs.clear();
    return ok();
}


// ---- Every other AF_UNIX socket (UNIX_SK), made in the engine once every process exists.

constexpr size_t kSunPath = sizeof(sockaddr_un::sun_path);
constexpr uint32_t kMaxBacklog = 1u << 16;

using SkEntry = image::UnixSkEntry;

sockaddr_un make_address(const std::string& name, socklen_t* len) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), std::min(name.size(), kSunPath));
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + std::min(name.size(), kSunPath));
    return a;
}

bool is_path(const std::string& name) { return !name.empty() && name[0] != '\0'; }

std::string sk_name(const SkEntry& e) { return fmt::format("AF_UNIX socket:[{}] '{}'", e.id(), shown_name(e.name())); }

// The names bound again for sockets whose file was deleted since (and temporary senders):
// unlinked once every socket is connected, if the file is still the socket's.
struct NamesToUnlink {
    struct Name {
        UniqueFd dir;
        std::string base;
        ino_t ino;
    };
    std::vector<Name> names;
    ~NamesToUnlink() {
        for (auto& n : names) {
            struct stat st;
            if (fstatat(n.dir.get(), n.base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
                st.st_ino == n.ino)
                unlinkat(n.dir.get(), n.base.c_str(), 0);
        }
    }
};

// The folder of a path name, reached without following a symlink and checked to be the one
// of the dump; base is the name in it.
Result<UniqueFd> open_folder(const SkEntry& e, std::string* base) {
    std::string path(e.name().c_str());
    size_t slash = path.rfind('/');
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS;
    UniqueFd fd(static_cast<int>(syscall(SYS_openat2, AT_FDCWD, dir.c_str(), &how, sizeof how)));
    if (!fd) return sys_error("its folder {} (opened without following a symlink)", dir);
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return sys_error("fstat {}", dir);
    if (st.st_dev != e.dir_dev() || st.st_ino != e.dir_ino())
        return error_code(ESTALE, "its folder {} is not the folder of the dump (another inode)", dir);
    return fd;
}

// Frees a name whose socket file is left from the dump (a connect to it is refused: nobody
// is bound to it any more); anything else at the name is refused.
Result<void> free_stale_name(int dir, const std::string& base, const SkEntry& e) {
    struct stat st;
    if (fstatat(dir, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return ok();
        return sys_error("fstatat");
    }
    if (!S_ISSOCK(st.st_mode)) return error_code(EEXIST, "something other than a socket file has the name");
    UniqueFd probe(socket(AF_UNIX, e.type() | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!probe) return sys_error("socket");
    socklen_t len;
    sockaddr_un a = make_address(e.name(), &len);
    if (connect(probe.get(), reinterpret_cast<sockaddr*>(&a), len) == 0 || errno != ECONNREFUSED)
        return error_code(EADDRINUSE, "a live socket is bound to the name (is the original still running?)");
    struct stat again;
    if (fstatat(dir, base.c_str(), &again, AT_SYMLINK_NOFOLLOW) == 0 && again.st_ino == st.st_ino &&
        unlinkat(dir, base.c_str(), 0) != 0 && errno != ENOENT)
        return sys_error("unlinking the socket file left from the dump");
    return ok();
}

// Binds a socket to its path name in the folder of the dump; the file made is then checked to
// be the socket's, and given its recorded owner and mode (a deleted one is unlinked later).
Result<void> bind_path(int sock, const SkEntry& e, NamesToUnlink& later) {
    std::string base;
    UniqueFd dir = CKPT_TRY(open_folder(e, &base));
    CKPT_TRY(free_stale_name(dir.get(), base, e));
    socklen_t len;
    sockaddr_un a = make_address(e.name(), &len);
    if (bind(sock, reinterpret_cast<sockaddr*>(&a), len) != 0) return sys_error("bind");
    struct stat mine;
    if (fstat(sock, &mine) != 0) return sys_error("fstat");
    UnixDiag d = CKPT_TRY(unix_diag(mine.st_ino, UDIAG_SHOW_VFS));
    UniqueFd file(openat(dir.get(), base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    struct stat st;
    if (!file || fstat(file.get(), &st) != 0 || !S_ISSOCK(st.st_mode) || !d.has_vfs || st.st_ino != d.vfs_ino)
        return error_code(ESTALE, "the socket file bound is not in the folder of the dump (changed meanwhile)");
    if (e.deleted()) {
        later.names.push_back({std::move(dir), base, st.st_ino});
        return ok();
    }
    if ((st.st_uid != e.uid() || st.st_gid != e.gid()) && fchownat(file.get(), "", e.uid(), e.gid(), AT_EMPTY_PATH) != 0)
        return sys_error("giving the socket file its owner {}:{}", e.uid(), e.gid());
    std::string self = "/proc/self/fd/" + std::to_string(file.get());
    if (chmod(self.c_str(), e.mode() & 07777) != 0) return sys_error("giving the socket file its mode {:o}", e.mode());
    return ok();
}

// What an image may say of one socket, checked before anything is made.
Result<void> check_sk(const SkEntry& e, const std::map<uint64_t, const SkEntry*>& by_id) {
    auto other = [&](uint64_t id, const char* what) -> Result<const SkEntry*> {
        auto it = by_id.find(id);
        if (it == by_id.end()) return error_code(EINVAL, "its {} socket:[{}] is not in the images", what, id);
        return it->second;
    };
    if (e.type() != SOCK_STREAM && e.type() != SOCK_DGRAM && e.type() != SOCK_SEQPACKET)
        return error_code(EINVAL, "socket type {}", e.type());
    if (!SkEntry::State_IsValid(e.state())) return error_code(EINVAL, "state {}", static_cast<int>(e.state()));
    if (e.name().size() > kSunPath || e.ext_peer().size() > kSunPath) return error_code(EINVAL, "a name too long");
    if (is_path(e.name()) && (e.name()[0] != '/' || std::string_view(e.name().c_str()).size() + 1 < e.name().size()))
        return error_code(EINVAL, "a path name not absolute, or with a NUL inside");
    if (e.shutdown() > 3 || (e.mode() & ~07777u) || e.backlog() > kMaxBacklog) return error_code(EINVAL, "a field out of range");
    if (e.accepted() != (e.listener() != 0 && e.state() == SkEntry::CONNECTED))
        return error_code(EINVAL, "accepted from no listener");
    if (e.state() == SkEntry::CONNECTED) {
        if (e.type() == SOCK_DGRAM) {
            if ((e.peer() != 0) == !e.ext_peer().empty()) return error_code(EINVAL, "connected to no peer, or to two");
            if (e.peer()) {
                const SkEntry* p = CKPT_TRY(other(e.peer(), "peer"));
                if (p->type() != SOCK_DGRAM || p->name().empty() || p->accepted())
                    return error_code(EINVAL, "its peer is not a named datagram socket");
            }
        } else {
            const SkEntry* p = CKPT_TRY(other(e.peer(), "peer"));
            if (p->type() != e.type() || p->state() != SkEntry::CONNECTED || p->peer() != e.id() ||
                p->accepted() == e.accepted())
                return error_code(EINVAL, "its peer is not its accepted (or accepting) end");
        }
    } else if (e.peer() || !e.ext_peer().empty()) {
        return error_code(EINVAL, "a peer but not connected");
    }
    if (e.accepted() || e.state() == SkEntry::PENDING) {
        const SkEntry* l = CKPT_TRY(other(e.listener(), "listening"));
        if (l->state() != SkEntry::LISTENING || l->type() != e.type() || (e.accepted() && l->name() != e.name()))
            return error_code(EINVAL, "its listener socket:[{}] is not listening with its name", e.listener());
        if (e.state() == SkEntry::PENDING &&
            std::find(l->pending().begin(), l->pending().end(), e.id()) == l->pending().end())
            return error_code(EINVAL, "not among its listener's pending connections");
    }
    if (e.state() == SkEntry::LISTENING) {
        if (e.type() == SOCK_DGRAM || e.name().empty() || e.queued_size())
            return error_code(EINVAL, "a listening datagram, unnamed or with queued data");
        if (static_cast<uint32_t>(e.pending_size()) > e.backlog() + 1) return error_code(EINVAL, "more pending than its backlog");
        for (uint64_t c : e.pending()) {
            const SkEntry* p = CKPT_TRY(other(c, "pending client"));
            if (p->state() != SkEntry::PENDING || p->listener() != e.id())
                return error_code(EINVAL, "pending client socket:[{}] is not pending on it", c);
        }
    }
    size_t total = 0;
    for (const auto& m : e.queued()) {
        total += m.data().size();
        if (m.data().empty() || m.data().size() > kMaxMessage || total > kMaxQueued || m.sender().size() > kSunPath)
            return error_code(EINVAL, "a queued message empty or too large");
        if (e.type() != SOCK_DGRAM && (!m.sender().empty() || m.sender_id())) return error_code(EINVAL, "a stream with senders");
        if (m.fds_size() && (e.type() != SOCK_SEQPACKET || e.state() != SkEntry::CONNECTED || m.fds_size() > kMaxFdsPerMessage))
            return error_code(EINVAL, "fds in flight on a socket that is no connection, or too many");
        if (e.type() == SOCK_DGRAM && e.name().empty()) return error_code(EINVAL, "messages queued for no name");
        if (m.sender_id()) {
            const SkEntry* p = CKPT_TRY(other(m.sender_id(), "sender"));
            if (p->type() != SOCK_DGRAM || p->name() != m.sender() || p->name().empty())
                return error_code(EINVAL, "a message's sender is not the named datagram socket it says");
        } else if (is_path(m.sender())) {
            return error_code(EINVAL, "a message from a path no socket of the tree is bound to");
        }
    }
    if (e.type() != SOCK_DGRAM && e.state() != SkEntry::CONNECTED && e.queued_size())
        return error_code(EINVAL, "data queued on a stream not connected");
    return ok();
}

// A socket to send a message from with the sender address recorded: the tree's own sender,
// else one made for it (unnamed, or bound to the abstract name for the time of the send).
Result<UniqueFd> temporary_sender(const image::UnixMessage& m) {
    UniqueFd s(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) return sys_error("socket");
    if (!m.sender().empty()) {
        socklen_t len;
        sockaddr_un a = make_address(m.sender(), &len);
        if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0)
            return sys_error("binding a socket to its sender's name '{}' (the sender is not in the tree)",
                             shown_name(m.sender()));
    }
    return s;
}

Result<void> connect_to(int sock, const std::string& name) {
    socklen_t len;
    sockaddr_un a = make_address(name, &len);
    if (connect(sock, reinterpret_cast<sockaddr*>(&a), len) != 0) return sys_error("connect to '{}'", shown_name(name));
    return ok();
}

Result<ino_t> inode_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error("fstat");
    return st.st_ino;
}

// Whether what is queued for e is sent only once the tree exists: messages carry fds in
// flight, or their senders' credentials.
bool sk_queued_late(const SkEntry& e) {
    return std::any_of(e.queued().begin(), e.queued().end(), [](const image::UnixMessage& m) {
        return m.fds_size() > 0 || (m.has_creds() && has_creds(&m.creds()));
    });
}

// Whether e is shut down (and given SO_PASSCRED) only then: its queue, or its peer's, is sent
// late, or (a datagram socket) it sends a datagram queued late.
bool waits_for_late_queue(const SkEntry& e, const std::map<uint64_t, const SkEntry*>& by_id) {
    if (sk_queued_late(e)) return true;
    if (e.type() == SOCK_DGRAM) {
        for (const auto& [id, r] : by_id)
            if (r->type() == SOCK_DGRAM && sk_queued_late(*r))
                for (const auto& m : r->queued())
                    if (m.sender_id() == e.id()) return true;
        return false;
    }
    if (e.state() != SkEntry::CONNECTED) return false;
    auto peer = by_id.find(e.peer());
    return peer != by_id.end() && sk_queued_late(*peer->second);
}

// The datagrams queued for e, each sent to its name by its sender (the tree's socket bound to
// the sender's name, or one made for it) with the credentials it carries (sh: once the tree
// exists).
Result<void> send_datagrams(const SkEntry& e, const std::map<uint64_t, UniqueFd>& made, const RestoreShared* sh) {
    socklen_t len;
    sockaddr_un to = make_address(e.name(), &len);
    for (const auto& m : e.queued()) {
        UniqueFd temp;
        int from = m.sender_id() ? made.at(m.sender_id()).get() : -1;
        if (from < 0) {
            temp = CKPT_TRY_CTX(temporary_sender(m), "{}", sk_name(e));
            from = temp.get();
        }
        CKPT_TRY_CTX(send_message(from, SOCK_DGRAM, m.data(), {}, m.has_creds() ? &m.creds() : nullptr, sh, &to, len),
                     "{}: a message from '{}'", sk_name(e), shown_name(m.sender()));
    }
    return ok();
}

// A datagram socket connected again to its peer's name (once what is queued for it is in: a
// connected one takes only its peer's).
Result<void> connect_dgram(const SkEntry& e, int fd, const std::map<uint64_t, const SkEntry*>& by_id) {
    return connect_to(fd, e.peer() ? by_id.at(e.peer())->name() : e.ext_peer()).context("{}", sk_name(e));
}

// What is queued on a connection, sent by its peer (with the fds in flight and credentials:
// sh, once every fd and process of the tree is in place).
Result<void> send_connection_queue(const SkEntry& e, int peer, const RestoreShared* sh) {
    for (int i = 0; i < e.queued_size(); ++i) {
        const auto& m = e.queued(i);
        std::vector<int> passed;
        if (m.fds_size()) {
            if (!sh) return error("{}: fds in flight before the tree's fds are in place", sk_name(e));
            passed = CKPT_TRY_CTX(in_flight_fds(*sh, m.fds()), "{}: message {} queued", sk_name(e), i);
        }
        CKPT_TRY_CTX(send_message(peer, e.type(), m.data(), passed, m.has_creds() ? &m.creds() : nullptr, sh),
                     "{}: message {} queued", sk_name(e), i);
    }
    return ok();
}

Result<std::map<uint64_t, const SkEntry*>> sks_by_id(const RestoreShared& sh) {
    std::map<uint64_t, const SkEntry*> by_id;
    for (const auto& e : sh.files.unix_sks())
        if (e.id() == 0 || !by_id.emplace(e.id(), &e).second)
            return error_code(EINVAL, "AF_UNIX socket id {} twice or zero (image is corrupt)", e.id());
    return by_id;
}

// What the images say of every AF_UNIX socket but the pairs, checked before any process.
Result<void> check_unix_sks(RestoreShared& sh) {
    auto by_id = CKPT_TRY(sks_by_id(sh));
    for (const auto& e : sh.files.unix_sks()) {
        CKPT_TRY_CTX(check_sk(e, by_id), "{} (image is corrupt)", sk_name(e));
        for (const auto& m : e.queued())
            if (m.has_creds()) CKPT_TRY_CTX(check_creds(m.creds(), sh), "{}", sk_name(e));
        if (!e.ext_peer().empty() && !sh.ext_unix_sk)
            return error_code(ENOTSUP, "{}: connected to '{}' outside the tree: restore with --ext-unix-sk to connect "
                                       "to it again", sk_name(e), shown_name(e.ext_peer()));
    }
    return ok();
}

// listen() by the process of the tree that called it at the dump (which the listening
// socket's SO_PEERCRED names, and its clients' after connect), else by the engine.
Result<void> listen_as_maker(const RestoreShared& sh, const SkEntry& e, int fd) {
    RestoreTask* t = maker_of(sh, e.peercred());
    int64_t r = 0;
    if (!t) r = listen(fd, static_cast<int>(e.backlog())) == 0 ? 0 : -errno;
    else
        r = CKPT_TRY(socket_call_in(*t, e.peercred(), fd, [&](RemoteThread& rt, uint64_t there) {
            return rt.syscall(SYS_listen, {there, e.backlog()});
        }));
    if (r < 0) return sys_error_code(static_cast<int>(-r), fmt::format("{}: listen{}", sk_name(e),
                                                                      t ? fmt::format(" (from pid {})", t->pid) : ""));
    return ok();
}

// connect() of a client to its listener by the process of the tree that called it at the dump
// (which the accepted end's SO_PEERCRED names), else by the engine: also when that process,
// under its recorded ids, may no longer reach the name (a socket file or folder whose mode
// changed since), where the accepted end then names the engine (logged by note_peercred).
Result<void> connect_as_maker(const RestoreShared& sh, const image::PeerCred& connector, int client,
                              const std::string& name) {
    RestoreTask* t = maker_of(sh, connector);
    if (t) {
        socklen_t len;
        sockaddr_un a = make_address(name, &len);
        auto s = t->scratch.scope();
        uint64_t addr = CKPT_TRY(s.put(&a, len));
        int64_t r = CKPT_TRY(socket_call_in(*t, connector, client, [&](RemoteThread& rt, uint64_t there) {
            return rt.syscall(SYS_connect, {there, addr, len});
        }));
        if (r == 0) return ok();
        if (r != -EACCES && r != -EPERM)
            return sys_error_code(static_cast<int>(-r), fmt::format("connect to '{}' from pid {}", shown_name(name), t->pid));
        logger()->info("connect to '{}' from pid {}: {}: connected by the engine", shown_name(name), t->pid,
                       strerror(static_cast<int>(-r)));
    }
    return connect_to(client, name);
}

// Every AF_UNIX socket of the tree but the pairs, once every process exists: made, bound,
// listening, with what is queued for the datagram ones (sent by their senders), connected
// again (stream clients to their listeners, accepted at once where they were accepted, left
// pending where they were), what is queued on connections sent by their peers, shut down,
// datagram sockets connected; names of deleted files unlinked again at the end. listen() and
// the connect() of an accepted connection are called by the processes that called them at the
// dump, whose credentials the kernel stamps on the sockets (SO_PEERCRED).
Result<void> make_unix_sks(RestoreShared& sh) {
    const auto& list = sh.files.unix_sks();
    auto by_id = CKPT_TRY(sks_by_id(sh));
    NamesToUnlink later;
    auto& made = sh.unix_sks;
    auto fd_of = [&](uint64_t id) { return made.at(id).get(); };
    for (const auto& e : list) {
        if (e.accepted()) continue;  // accept() makes it
        UniqueFd s(socket(AF_UNIX, e.type() | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!s) return sys_error("{}: socket", sk_name(e));
        CKPT_TRY_CTX(sockopt::restore_buffer(s.get(), SO_SNDBUF, SO_SNDBUFFORCE, e.sndbuf(), "SO_SNDBUF"), "{}",
                     sk_name(e));
        CKPT_TRY_CTX(sockopt::restore_buffer(s.get(), SO_RCVBUF, SO_RCVBUFFORCE, e.rcvbuf(), "SO_RCVBUF"), "{}",
                     sk_name(e));
        if (!e.name().empty()) {
            if (is_path(e.name())) {
                CKPT_TRY_CTX(bind_path(s.get(), e, later), "{}", sk_name(e));
            } else {
                socklen_t len;
                sockaddr_un a = make_address(e.name(), &len);
                if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), len) != 0)
                    return sys_error("{}: bind (is the original still running?)", sk_name(e));
            }
        }
        if (e.state() == SkEntry::LISTENING) CKPT_TRY(listen_as_maker(sh, e, s.get()));
        made.emplace(e.id(), std::move(s));
    }
    // Datagrams, while no receiver is connected (a connected one takes only its peer's); those
    // with senders' credentials once the tree exists (release_unix_sks).
    for (const auto& e : list)
        if (e.type() == SOCK_DGRAM && !sk_queued_late(e)) CKPT_TRY(send_datagrams(e, made, nullptr));
    // Connections, listener by listener: each accepted one made and accepted at once, then
    // the pending ones in their order.
    for (const auto& l : list) {
        if (l.state() != SkEntry::LISTENING) continue;
        for (const auto& e : list) {
            if (!e.accepted() || e.listener() != l.id()) continue;
            int client = fd_of(e.peer());
            CKPT_TRY_CTX(connect_as_maker(sh, e.peercred(), client, l.name()), "{}: its client socket:[{}]", sk_name(e),
                         e.peer());
            UniqueFd acc(accept4(fd_of(l.id()), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!acc) return sys_error("{}: accept", sk_name(e));
            // The connection accepted is the client's, not one from outside meanwhile.
            UnixDiag d = CKPT_TRY(unix_diag(CKPT_TRY(inode_of(acc.get()))));
            if (d.peer != CKPT_TRY(inode_of(client)))
                return error_code(EBUSY, "{}: another process connected to '{}' during the restore", sk_name(e),
                                  shown_name(l.name()));
            CKPT_TRY_CTX(sockopt::restore_buffer(acc.get(), SO_SNDBUF, SO_SNDBUFFORCE, e.sndbuf(), "SO_SNDBUF"), "{}",
                         sk_name(e));
            CKPT_TRY_CTX(sockopt::restore_buffer(acc.get(), SO_RCVBUF, SO_RCVBUFFORCE, e.rcvbuf(), "SO_RCVBUF"), "{}",
                         sk_name(e));
            made.emplace(e.id(), std::move(acc));
        }
        for (uint64_t c : l.pending())
            CKPT_TRY_CTX(connect_to(fd_of(c), l.name()), "{}: its pending client socket:[{}]", sk_name(l), c);
    }
    for (const auto& e : list) {
        int fd = fd_of(e.id());
        // A queue with fds in flight is sent once they exist (release_unix_sks).
        if (e.type() != SOCK_DGRAM && e.state() == SkEntry::CONNECTED && !sk_queued_late(e))
            CKPT_TRY(send_connection_queue(e, fd_of(e.peer()), nullptr));
        if (e.type() == SOCK_DGRAM && e.state() == SkEntry::CONNECTED && !sk_queued_late(e))
            CKPT_TRY(connect_dgram(e, fd, by_id));
    }
    for (const auto& e : list) {
        int fd = fd_of(e.id());
        CKPT_TRY(note_peercred(fd, e.peercred(), sh, sk_name(e)));
        if (waits_for_late_queue(e, by_id)) continue;
        CKPT_TRY_CTX(shut(fd, e.shutdown()), "{}", sk_name(e));
        CKPT_TRY_CTX(set_receive_options(fd, e), "{}", sk_name(e));
    }
    return ok();
}

Result<void> restore_unix_sk(RestoreTask& t, const image::Fd& f) {
    auto it = t.shared->unix_sks.find(f.unix_sk_id());
    if (it == t.shared->unix_sks.end())
        return error_code(EINVAL, "AF_UNIX socket {} missing from the images (image is corrupt)", f.unix_sk_id());
    if (f.description_id() == 0)
        return error_code(EINVAL, "AF_UNIX socket {}: no description id (image is corrupt)", f.unix_sk_id());
    return install_socket(t, f, it->second.get());
}

// Every fd and process of the tree is in place: the queues with fds in flight or senders'
// credentials are sent now, and their sockets shut down and given SO_PASSCRED as they were;
// then the engine's own copies go.
Result<void> release_unix_sks(RestoreShared& sh) {
    std::map<uint64_t, const SkEntry*> by_id;
    for (const auto& e : sh.files.unix_sks()) by_id.emplace(e.id(), &e);
    for (const auto& e : sh.files.unix_sks())
        if (sk_queued_late(e) && e.type() != SOCK_DGRAM)
            CKPT_TRY(send_connection_queue(e, sh.unix_sks.at(e.peer()).get(), &sh));
    // Every late datagram before any of their receivers connects (a connected one takes only
    // its peer's).
    for (const auto& e : sh.files.unix_sks())
        if (sk_queued_late(e) && e.type() == SOCK_DGRAM) CKPT_TRY(send_datagrams(e, sh.unix_sks, &sh));
    for (const auto& e : sh.files.unix_sks())
        if (sk_queued_late(e) && e.type() == SOCK_DGRAM && e.state() == SkEntry::CONNECTED)
            CKPT_TRY(connect_dgram(e, sh.unix_sks.at(e.id()).get(), by_id));
    for (const auto& e : sh.files.unix_sks())
        if (waits_for_late_queue(e, by_id)) {
            CKPT_TRY_CTX(shut(sh.unix_sks.at(e.id()).get(), e.shutdown()), "{}", sk_name(e));
            CKPT_TRY_CTX(set_receive_options(sh.unix_sks.at(e.id()).get(), e), "{}", sk_name(e));
        }
    sh.unix_sks.clear();
    return ok();
}

}  // namespace

Result<std::vector<std::pair<std::string, pid_t>>> peek_unix_queue(int sock) {
    int type = CKPT_TRY(sockopt::get_int(sock, SOL_SOCKET, SO_TYPE, "SO_TYPE"));
    UnixDiag d = CKPT_TRY(unix_diag(CKPT_TRY(inode_of(sock))));
    std::vector<ucred> creds;
    PassedFds passed;
    auto queued = CKPT_TRY(peek_queue(sock, type, d, &creds, nullptr, &passed));
    std::vector<std::pair<std::string, pid_t>> out;
    for (size_t i = 0; i < queued.size(); ++i) out.emplace_back(std::move(queued[i]), i < creds.size() ? creds[i].pid : 0);
    return out;
}

extern const FdKind kSocketKind{
    .name = "socket",
    .image_kind = image::Fd::UNIX_SOCKET,
    .claims = claims_socket,
    .survey = survey_socket,
    .dump = dump_socket,
    .finish_dump = record_fds_in_flight,
    .prepare_restore = make_unix_pairs,
    .tree_made = make_pairs_in_tree,
    .restore = restore_unix_socket,
    .finish_restore = release_unix_pairs,
};

// The fds of the other AF_UNIX sockets (the socket kind claims and records them).
extern const FdKind kUnixSkKind{
    .name = "AF_UNIX socket",
    .image_kind = image::Fd::UNIX_SK,
    .prepare_restore = check_unix_sks,
    .tree_made = make_unix_sks,
    .restore = restore_unix_sk,
    .finish_restore = release_unix_sks,
};

}  // namespace ckpt::engine
