// Relays between a node's ranks and the lead's coordinator (relay.h).
#include "relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"
#include "ckpt/mpi/control.h"

namespace ckpt::mpi {
namespace {

namespace ctl = control;

auto logger() {
    static auto l = log::get("mpi");
    return l;
}

// One rank's channel, node side: the rank's connection and, once the lead is known, the
// TCP connection that carries it.
struct RankLink {
    UniqueFd rank_fd;
    pid_t pid = 0;
    int rank = -1;
    UniqueFd up;
    std::string from_up;  // bytes of a frame not complete yet
};

// One rank's channel, lead side: the TCP connection from its node's relay and, once that
// proved itself with the token, the connection to the coordinator.
struct LeadLink {
    UniqueFd tcp;
    std::string from_tcp;
    UniqueFd coord;
};

// Never SIGPIPE: a peer gone is an error of this channel, not the agent's death.
Result<void> send_all(int fd, const char* data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("send");
        data += n;
        len -= static_cast<size_t>(n);
    }
    return ok();
}

Result<void> send_frame(int fd, const char* data, size_t len) {
    uint32_t n = htonl(static_cast<uint32_t>(len));
    CKPT_TRY(send_all(fd, reinterpret_cast<const char*>(&n), sizeof n));
    return send_all(fd, data, len);
}

// Appends what the socket has to `buf` and takes out whole frames. False: the connection
// ended (or sent nonsense).
bool read_frames(int fd, std::string& buf, std::vector<std::string>& frames) {
    char chunk[65536];
    ssize_t n;
    do
        n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return false;
    if (n > 0) buf.append(chunk, static_cast<size_t>(n));
    while (buf.size() >= 4) {
        uint32_t len;
        std::memcpy(&len, buf.data(), 4);
        len = ntohl(len);
        if (len > ctl::kMaxRecord + sizeof(ctl::Header)) return false;
        if (buf.size() < 4 + len) break;
        frames.emplace_back(buf.substr(4, len));
        buf.erase(0, 4 + len);
    }
    return true;
}

// One record from a SOCK_SEQPACKET channel; nullopt: it ended.
std::optional<std::string> read_record(int fd) {
    std::string rec(ctl::kMaxRecord + sizeof(ctl::Header), '\0');
    ssize_t n;
    do
        n = recv(fd, rec.data(), rec.size(), MSG_DONTWAIT | MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) return std::string();
    if (n <= 0 || static_cast<size_t>(n) > rec.size() || static_cast<size_t>(n) < sizeof(ctl::Header))
        return std::nullopt;
    rec.resize(static_cast<size_t>(n));
    return rec;
}

uint32_t type_of(const std::string& rec) {
    ctl::Header h;
    std::memcpy(&h, rec.data(), sizeof h);
    return h.type;
}

std::string random_token() {
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0) got += static_cast<size_t>(n);
    }
    std::string s;
    for (unsigned char c : b) s += fmt::format("{:02x}", c);
    return s;
}

bool same_token(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

std::string this_host() {
    char h[256] = {};
    gethostname(h, sizeof h - 1);
    return h;
}

// A TCP connection to the lead, within 5 s.
Result<UniqueFd> connect_to(const LeadAddress& lead) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(lead.port);
    if (lead.host == this_host()) {
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        addrinfo hints{}, *res = nullptr;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if (int rc = getaddrinfo(lead.host.c_str(), nullptr, &hints, &res); rc != 0 || !res)
            return error("cannot resolve the lead's host {}: {}", lead.host, gai_strerror(rc));
        addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return sys_error("socket");
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS)
        return sys_error("connect {}:{}", lead.host, lead.port);
    pollfd p{fd.get(), POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&p, 1, 5000) != 1 || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
        return error_code(err ? err : ETIMEDOUT, "connect {}:{}: {}", lead.host, lead.port,
                          std::strerror(err ? err : ETIMEDOUT));
    fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

}  // namespace

struct Relay::State {
    UniqueFd rank_listener;
    UniqueFd wake;  // eventfd: the main thread changed something, or the relay must stop
    std::atomic<bool> stop{false};
    std::thread thread;

    mutable std::mutex mu;  // guards what follows, shared with the main thread
    std::optional<LeadAddress> lead;
    std::map<pid_t, ParkedRank> parked;
    std::map<pid_t, int> ranks;
    // Lead only:
    UniqueFd tcp_listener;
    std::string coordinator_socket;
    std::string token;

    std::list<RankLink> rank_links;  // the relay thread's alone
    std::list<LeadLink> lead_links;

    void poke() {
        uint64_t one = 1;
        (void)!write(wake.get(), &one, sizeof one);
    }

    void run();
    void accept_ranks();
    void connect_up(RankLink& l, const LeadAddress& lead);
    bool from_rank(RankLink& l);
    bool from_up(RankLink& l);
    void accept_nodes(int listener);
    bool from_node(LeadLink& l);
    bool from_coordinator(LeadLink& l);
    void forget(const RankLink& l);
};

void Relay::State::accept_ranks() {
    for (;;) {
        int fd = accept4(rank_listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid()) {
            logger()->warn("relay: refused a rank connection from uid {} (not the job's user)", cred.uid);
            close(fd);
            continue;
        }
        RankLink& l = rank_links.emplace_back();
        l.rank_fd = UniqueFd(fd);
        l.pid = cred.pid;
    }
}

void Relay::State::connect_up(RankLink& l, const LeadAddress& lead) {
    auto fd = connect_to(lead);
    if (fd) {
        if (auto r = send_frame(fd->get(), lead.token.data(), lead.token.size()); r) {
            l.up = std::move(*fd);
            return;
        }
    }
    logger()->error("relay: pid {}: cannot reach the step's coordinator: {}", l.pid,
                    fd ? "the token was not taken" : fd.error().message());
    l.rank_fd.reset();  // the rank goes on without checkpoints
}

void Relay::State::forget(const RankLink& l) {
    std::lock_guard g(mu);
    parked.erase(l.pid);
    ranks.erase(l.pid);
}

// A record from a rank, passed on to the lead; what only this node knows is put in.
bool Relay::State::from_rank(RankLink& l) {
    auto rec = read_record(l.rank_fd.get());
    if (!rec) return false;
    if (rec->empty()) return true;
    uint32_t type = type_of(*rec);
    if (type == static_cast<uint32_t>(ctl::Msg::Hello) && rec->size() == sizeof(ctl::Header) + sizeof(ctl::Hello)) {
        ctl::Hello h;
        std::memcpy(&h, rec->data() + sizeof(ctl::Header), sizeof h);
        l.rank = h.rank;
        h.pid = l.pid;  // as this node sees it (a restored rank's getpid() is its namespace's)
        std::memcpy(rec->data() + sizeof(ctl::Header), &h, sizeof h);
        std::lock_guard g(mu);
        ranks[l.pid] = l.rank;
    } else if (type == static_cast<uint32_t>(ctl::Msg::Quiesced) &&
               rec->size() >= sizeof(ctl::Header) + sizeof(ctl::Quiesced)) {
        ctl::Quiesced q;
        char* body = rec->data() + sizeof(ctl::Header);
        std::memcpy(&q, body, sizeof q);
        size_t need = sizeof q + (q.nthreads + q.nfds) * sizeof(int32_t) + q.nranges * 2 * sizeof(uint64_t);
        if (rec->size() - sizeof(ctl::Header) == need) {
            ParkedRank p;
            p.rank = l.rank;
            p.pid = l.pid;
            p.control_fd = q.control_fd;
            char* at = body + sizeof q;
            std::vector<pid_t> inner(q.nthreads);
            if (q.nthreads) std::memcpy(inner.data(), at, q.nthreads * sizeof(int32_t));
            auto tids = host_tids(l.pid, inner);
            if (tids) {
                // The coordinator takes a relay's thread ids as they are.
                if (q.nthreads) std::memcpy(at, tids->data(), q.nthreads * sizeof(int32_t));
                p.lower_threads = std::move(*tids);
                at += q.nthreads * sizeof(int32_t);
                p.lower_fds.resize(q.nfds);
                if (q.nfds) std::memcpy(p.lower_fds.data(), at, q.nfds * sizeof(int32_t));
                at += q.nfds * sizeof(int32_t);
                p.lower_memory.resize(q.nranges);
                if (q.nranges) std::memcpy(p.lower_memory.data(), at, q.nranges * 2 * sizeof(uint64_t));
                std::lock_guard g(mu);
                parked[l.pid] = std::move(p);
            } else {
                // Not recorded as parked: this node's dump of the rank refuses.
                logger()->error("relay: rank {} (pid {}): {}", l.rank, l.pid, tids.error().message());
            }
        }
    }
    if (auto r = send_frame(l.up.get(), rec->data(), rec->size()); !r) return false;
    return true;
}

// A record from the coordinator, passed on to the rank.
bool Relay::State::from_up(RankLink& l) {
    std::vector<std::string> frames;
    bool alive = read_frames(l.up.get(), l.from_up, frames);
    for (const auto& f : frames) {
        if (f.size() < sizeof(ctl::Header)) return false;
        uint32_t type = type_of(f);
        if (type == static_cast<uint32_t>(ctl::Msg::Resume) || type == static_cast<uint32_t>(ctl::Msg::Abort)) {
            std::lock_guard g(mu);
            parked.erase(l.pid);
        }
        if (send(l.rank_fd.get(), f.data(), f.size(), MSG_NOSIGNAL) < 0) return false;
    }
    return alive;
}

void Relay::State::accept_nodes(int listener) {
    for (;;) {
        int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lead_links.emplace_back().tcp = UniqueFd(fd);
    }
}

bool Relay::State::from_node(LeadLink& l) {
    std::vector<std::string> frames;
    bool alive = read_frames(l.tcp.get(), l.from_tcp, frames);
    for (const auto& f : frames) {
        if (!l.coord) {
            // The first frame is the token: nothing else from a peer that does not know it.
            if (!same_token(f, token)) {
                logger()->warn("relay: a connection without the step's token: closed");
                return false;
            }
            sockaddr_un addr;
            auto len = unix_address(coordinator_socket, &addr);
            UniqueFd c(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
            if (!len || !c || connect(c.get(), reinterpret_cast<sockaddr*>(&addr), *len) != 0) {
                logger()->error("relay: cannot reach the coordinator at {}: {}", coordinator_socket,
                                std::strerror(errno));
                return false;
            }
            l.coord = std::move(c);
            continue;
        }
        if (f.size() < sizeof(ctl::Header) || send(l.coord.get(), f.data(), f.size(), MSG_NOSIGNAL) < 0) return false;
    }
    return alive;
}

bool Relay::State::from_coordinator(LeadLink& l) {
    auto rec = read_record(l.coord.get());
    if (!rec) return false;
    if (rec->empty()) return true;
    return static_cast<bool>(send_frame(l.tcp.get(), rec->data(), rec->size()));
}

void Relay::State::run() {
    while (!stop.load()) {
        std::optional<LeadAddress> lead_now;
        int node_listener = -1;  // the lead's, once it serves as one
        {
            std::lock_guard g(mu);
            lead_now = lead;
            node_listener = tcp_listener.get();
        }
        if (lead_now)
            for (auto& l : rank_links)
                if (l.rank_fd && !l.up) connect_up(l, *lead_now);
        std::erase_if(rank_links, [this](const RankLink& l) {
            if (l.rank_fd) return false;
            forget(l);
            return true;
        });

        std::vector<pollfd> p{{wake.get(), POLLIN, 0}, {rank_listener.get(), POLLIN, 0}};
        if (node_listener >= 0) p.push_back({node_listener, POLLIN, 0});
        size_t first_link = p.size();
        for (auto& l : rank_links) {
            // A rank waits (its hello unread) until its channel to the lead exists.
            p.push_back({l.rank_fd.get(), static_cast<short>(l.up ? POLLIN : 0), 0});
            p.push_back({l.up ? l.up.get() : -1, POLLIN, 0});
        }
        size_t first_lead = p.size();
        for (auto& l : lead_links) {
            p.push_back({l.tcp.get(), POLLIN, 0});
            p.push_back({l.coord ? l.coord.get() : -1, POLLIN, 0});
        }
        if (poll(p.data(), p.size(), 1000) < 0) {
            if (errno == EINTR) continue;
            logger()->error("relay: poll: {}", std::strerror(errno));
            return;
        }
        if (p[0].revents) {
            uint64_t v;
            (void)!read(wake.get(), &v, sizeof v);
        }
        size_t k = first_link;
        for (auto& l : rank_links) {
            pollfd& r = p[k++];
            pollfd& u = p[k++];
            bool ok = true;
            if (r.revents & (POLLIN | POLLHUP | POLLERR)) ok = l.up ? from_rank(l) : false;
            if (ok && (u.revents & (POLLIN | POLLHUP | POLLERR))) ok = from_up(l);
            if (!ok) {
                l.rank_fd.reset();  // the coordinator sees the channel close, and so does the rank
                l.up.reset();
            }
        }
        k = first_lead;
        for (auto& l : lead_links) {
            pollfd& t = p[k++];
            pollfd& c = p[k++];
            bool ok = true;
            if (t.revents & (POLLIN | POLLHUP | POLLERR)) ok = from_node(l);
            if (ok && l.coord && (c.revents & (POLLIN | POLLHUP | POLLERR))) ok = from_coordinator(l);
            if (!ok) {
                l.tcp.reset();
                l.coord.reset();
            }
        }
        std::erase_if(lead_links, [](const LeadLink& l) { return !l.tcp; });
        if (p[1].revents & POLLIN) accept_ranks();
        if (node_listener >= 0 && (p[2].revents & POLLIN)) accept_nodes(node_listener);
    }
}

Result<std::unique_ptr<Relay>> Relay::start(const std::string& rank_socket) {
    std::unique_ptr<Relay> relay(new Relay);
    relay->state_ = std::make_unique<State>();
    State& s = *relay->state_;
    sockaddr_un addr;
    socklen_t len = CKPT_TRY(unix_address(rank_socket, &addr));
    s.rank_listener = UniqueFd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s.rank_listener) return sys_error("socket");
    if (bind(s.rank_listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
        return sys_error("bind {}", rank_socket);
    if (listen(s.rank_listener.get(), 128) != 0) return sys_error("listen {}", rank_socket);
    s.wake = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!s.wake) return sys_error("eventfd");
    s.thread = std::thread([&s] { s.run(); });
    return relay;
}

Relay::~Relay() {
    if (!state_) return;
    state_->stop.store(true);
    state_->poke();
    if (state_->thread.joinable()) state_->thread.join();
}

Result<LeadAddress> Relay::serve_as_lead(const std::string& coordinator_socket) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return sys_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof addr;
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return sys_error("bind a TCP port");
    if (listen(fd.get(), 128) != 0) return sys_error("listen");
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return sys_error("getsockname");
    LeadAddress lead{this_host(), ntohs(addr.sin_port), random_token()};
    {
        std::lock_guard g(state_->mu);
        if (state_->tcp_listener) return error("this relay serves as the lead already");
        state_->coordinator_socket = coordinator_socket;
        state_->token = lead.token;
        state_->tcp_listener = std::move(fd);
        state_->lead = lead;
    }
    state_->poke();
    return lead;
}

void Relay::set_lead(const LeadAddress& lead) {
    {
        std::lock_guard g(state_->mu);
        state_->lead = lead;
    }
    state_->poke();
}

bool Relay::has_lead() const {
    std::lock_guard g(state_->mu);
    return state_->lead.has_value();
}

std::map<pid_t, ParkedRank> Relay::parked() const {
    std::lock_guard g(state_->mu);
    return state_->parked;
}

std::map<pid_t, int> Relay::ranks() const {
    std::lock_guard g(state_->mu);
    return state_->ranks;
}

}  // namespace ckpt::mpi
