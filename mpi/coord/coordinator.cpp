// The quiesce protocol, coordinator side (coordinator.h, docs/mpi.md).
#include "coordinator.h"

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/mpi/control.h"

namespace ckpt::mpi {
namespace {

namespace ctl = control;
using Clock = std::chrono::steady_clock;

auto logger() {
    static auto l = log::get("mpi");
    return l;
}

const char* msg_name(uint32_t t) {
    switch (static_cast<ctl::Msg>(t)) {
        case ctl::Msg::Hello: return "hello";
        case ctl::Msg::Intent: return "intent";
        case ctl::Msg::Seqs: return "collective counts";
        case ctl::Msg::Targets: return "targets";
        case ctl::Msg::Reached: return "reached";
        case ctl::Msg::Stop: return "stop";
        case ctl::Msg::Sent: return "sent counts";
        case ctl::Msg::Expect: return "expected counts";
        case ctl::Msg::Quiesced: return "parked";
        case ctl::Msg::Resume: return "resume";
        case ctl::Msg::Abort: return "abort";
        case ctl::Msg::Bye: return "goodbye (MPI_Finalize)";
        case ctl::Msg::Raise: return "a raise";
        case ctl::Msg::Restarted: return "restarted";
    }
    return "an unknown message";
}

int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(std::min<long long>(left, 1000)) : 0;
}

// One record: its header, and its payload in `body`. 0 bytes: the channel closed.
Result<ctl::Header> read_record(int fd, std::vector<char>& body) {
    std::vector<char> buf(ctl::kMaxRecord);
    ssize_t n;
    do
        n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    if (n < 0) return sys_error("recv");
    if (n == 0) return error_code(EPIPE, "closed its control channel");
    if (static_cast<size_t>(n) > buf.size()) return error("sent a record of {} bytes", n);
    if (static_cast<size_t>(n) < sizeof(ctl::Header)) return error("sent a record of {} bytes", n);
    ctl::Header h;
    std::memcpy(&h, buf.data(), sizeof h);
    body.assign(buf.begin() + sizeof h, buf.begin() + n);
    return h;
}

std::string rank_list(const std::vector<int>& ranks) {
    std::string s;
    for (size_t i = 0; i < ranks.size() && i < 16; ++i) s += (i ? "," : "") + std::to_string(ranks[i]);
    if (ranks.size() > 16) s += fmt::format(",... ({} ranks)", ranks.size());
    return s;
}

}  // namespace

Result<std::vector<pid_t>> host_tids(pid_t pid, const std::vector<pid_t>& inner) {
    std::map<pid_t, pid_t> host_of;
    std::string dir = fmt::format("/proc/{}/task", pid);
    DIR* d = opendir(dir.c_str());
    if (!d) return sys_error("opendir {}", dir);
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        auto status = read_file(fmt::format("{}/{}/status", dir, e->d_name));
        if (!status) continue;
        size_t at = status->find("NSpid:");
        if (at == std::string::npos) continue;
        std::string line = status->substr(at + 6, status->find('\n', at) - at - 6);
        size_t last = line.find_last_of(" \t");
        pid_t innermost = static_cast<pid_t>(std::atoi(line.c_str() + (last == std::string::npos ? 0 : last + 1)));
        host_of[innermost] = static_cast<pid_t>(std::atoi(e->d_name));
    }
    closedir(d);
    std::vector<pid_t> out;
    for (pid_t t : inner) {
        auto it = host_of.find(t);
        if (it == host_of.end()) return error("pid {}: no thread {} (as the rank numbers it)", pid, t);
        out.push_back(it->second);
    }
    return out;
}

Result<socklen_t> unix_address(const std::string& name, sockaddr_un* out) {
    *out = sockaddr_un{};
    out->sun_family = AF_UNIX;
    if (name.empty() || name.size() >= sizeof out->sun_path) return error("'{}': not a usable socket name", name);
    std::memcpy(out->sun_path, name.c_str(), name.size());
    if (name[0] != '@') return static_cast<socklen_t>(sizeof *out);
    out->sun_path[0] = '\0';  // abstract: the name is the bytes given, no terminator
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
}

std::string encode_parked(const ParkedRank& p) {
    auto list = [](const auto& v, auto&& one) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ",") + one(x);
        return s.empty() ? std::string("-") : s;
    };
    auto num = [](auto n) { return std::to_string(n); };
    return fmt::format("{} {} {} {} {} {}", p.rank, p.pid, p.control_fd, list(p.lower_threads, num),
                       list(p.lower_fds, num),
                       list(p.lower_memory, [](const auto& r) { return fmt::format("{:x}-{:x}", r.first, r.second); }));
}

Result<ParkedRank> decode_parked(std::string_view line) {
    auto words = split(line, ' ');
    if (words.size() != 6) return error("a parked rank of {} fields", words.size());
    auto items = [](std::string_view w) {
        return w == "-" ? std::vector<std::string_view>{} : split(w, ',');
    };
    ParkedRank p;
    auto rank = parse_int(words[0]), pid = parse_int(words[1]), fd = parse_int(words[2]);
    if (!rank || !pid || !fd || *rank < 0 || *pid <= 0 || *fd < 0) return error("a malformed parked rank");
    p.rank = static_cast<int>(*rank);
    p.pid = static_cast<pid_t>(*pid);
    p.control_fd = static_cast<int>(*fd);
    for (auto w : items(words[3])) {
        auto t = parse_int(w);
        if (!t || *t <= 0) return error("a malformed thread id '{}'", w);
        p.lower_threads.push_back(static_cast<pid_t>(*t));
    }
    for (auto w : items(words[4])) {
        auto f = parse_int(w);
        if (!f || *f < 0) return error("a malformed fd '{}'", w);
        p.lower_fds.push_back(static_cast<int>(*f));
    }
    for (auto w : items(words[5])) {
        size_t dash = w.find('-');
        auto a = dash == std::string_view::npos ? parse_uint("") : parse_uint(w.substr(0, dash), 16);
        auto b = dash == std::string_view::npos ? parse_uint("") : parse_uint(w.substr(dash + 1), 16);
        if (!a || !b || *a >= *b) return error("a malformed memory range '{}'", w);
        p.lower_memory.emplace_back(*a, *b);
    }
    return p;
}

std::vector<std::string> dump_exclusion_args(const ParkedRank& p) {
    auto join = [](const auto& v, auto&& one) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ",") + one(x);
        return s;
    };
    std::vector<std::string> args = {"--external-fd", fmt::format("{}:{}", p.control_fd, control::kControlFdKey)};
    if (!p.lower_fds.empty())
        args.insert(args.end(), {"--exclude-fds", join(p.lower_fds, [](int f) { return std::to_string(f); })});
    if (!p.lower_threads.empty())
        args.insert(args.end(), {"--exclude-threads", join(p.lower_threads, [](pid_t t) { return std::to_string(t); })});
    if (!p.lower_memory.empty())
        args.insert(args.end(), {"--exclude-memory", join(p.lower_memory, [](const auto& r) {
                                     return fmt::format("{:x}-{:x}", r.first, r.second);
                                 })});
    return args;
}

namespace {


}  // namespace

Result<Coordinator> Coordinator::listen(const std::string& path, int world_size, bool relayed) {
    if (world_size <= 0) return error("{} ranks: nothing to coordinate", world_size);
    sockaddr_un addr;
    socklen_t len = CKPT_TRY(unix_address(path, &addr));
    Coordinator c;
    c.listener_ = UniqueFd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!c.listener_) return sys_error("socket");
    // Only its owner may connect (the socket's mode; the peer's uid is checked too).
    mode_t old = umask(0177);
    int rc = bind(c.listener_.get(), reinterpret_cast<sockaddr*>(&addr), len);
    umask(old);
    if (rc != 0) return sys_error("bind {}", path);
    if (::listen(c.listener_.get(), 128) != 0) return sys_error("listen {}", path);
    c.path_ = path;
    c.world_size_ = world_size;
    c.ranks_.resize(world_size);
    c.relayed_ = relayed;
    return c;
}

int Coordinator::connected_ranks() const {
    int n = 0;
    for (const auto& r : ranks_) n += r.rank >= 0;
    return n;
}

Result<void> Coordinator::accept_ranks(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    int accepted = connected_ranks();
    for (bool first = true; accepted < world_size_; first = false) {
        int left = ms_left(deadline);
        if (left == 0 && !first)
            return error_code(ETIMEDOUT, "{} of {} ranks reached the coordinator at {} within {} ms", accepted,
                              world_size_, path_, timeout.count());
        std::vector<pollfd> p{{listener_.get(), POLLIN, 0}};
        for (auto& [f, pid] : pending_) p.push_back({f.get(), POLLIN, 0});
        if (poll(p.data(), p.size(), left) < 0 && errno != EINTR) return sys_error("poll");
        for (size_t i = 1; i < p.size(); ++i) {
            if (!p[i].revents) continue;
            auto [fd, peer_pid] = std::move(pending_[i - 1]);
            std::vector<char> body;
            auto h = read_record(fd.get(), body);
            if (!h) {
                logger()->warn("a rank left before saying hello: {}", h.error().message());
                continue;
            }
            ctl::Hello hello;
            if (h->type != static_cast<uint32_t>(ctl::Msg::Hello) || body.size() != sizeof hello)
                return error("a rank's first message is {}, not hello", msg_name(h->type));
            std::memcpy(&hello, body.data(), sizeof hello);
            if (hello.version != ctl::kVersion)
                return error("rank {} speaks control protocol {}, this coordinator {}", hello.rank, hello.version,
                             ctl::kVersion);
            if (hello.size != world_size_)
                return error("rank {} is one of {} ranks, the coordinator expects {}", hello.rank, hello.size,
                             world_size_);
            if (hello.rank < 0 || hello.rank >= world_size_ || ranks_[hello.rank].rank >= 0)
                return error("two ranks say they are rank {}", hello.rank);
            Rank& r = ranks_[hello.rank];
            r.fd = std::move(fd);
            r.rank = hello.rank;
            // A relay of this process speaks for a rank on its node: the pid is that node's.
            r.relayed = relayed_;
            r.pid = r.relayed ? hello.pid : peer_pid;
            ++accepted;
            logger()->debug("rank {} (pid {}) connected{}", r.rank, r.pid, r.relayed ? " through a relay" : "");
        }
        std::erase_if(pending_, [](const auto& e) { return !e.first.valid(); });
        if (p[0].revents & POLLIN) {
            for (;;) {
                int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0) break;
                ucred cred{};
                socklen_t len = sizeof cred;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid() ||
                    (relayed_ && cred.pid != getpid())) {
                    logger()->warn("refused a connection from pid {} uid {} (not the job's user, or not a relay)",
                                   cred.pid, cred.uid);
                    close(fd);
                } else {
                    pending_.emplace_back(UniqueFd(fd), cred.pid);
                }
            }
        }
    }
    return ok();
}

Result<void> Coordinator::send_to(Rank& r, uint32_t type, const void* payload, size_t len) {
    ctl::Header h{type, cycle_};
    iovec iov[2] = {{&h, sizeof h}, {const_cast<void*>(payload), len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    ssize_t n;
    do
        n = sendmsg(r.fd.get(), &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        r.gone = true;
        return sys_error("rank {} (pid {}): sending {}", r.rank, r.pid, msg_name(type));
    }
    return ok();
}

Result<void> Coordinator::send_all(uint32_t type, const void* payload, size_t len) {
    for (auto& r : ranks_) CKPT_TRY(send_to(r, type, payload, len));
    return ok();
}

template <class Take>
Result<void> Coordinator::collect(uint32_t type, const char* phase, Clock::time_point deadline, Take&& take) {
    std::vector<bool> have(world_size_, false);
    int missing = world_size_;
    std::vector<char> body;
    while (missing > 0) {
        std::vector<pollfd> p;
        std::vector<int> who;
        for (int i = 0; i < world_size_; ++i)
            if (!have[i]) {
                p.push_back({ranks_[i].fd.get(), POLLIN, 0});
                who.push_back(i);
            }
        int left = ms_left(deadline);
        if (left == 0)
            return error_code(ETIMEDOUT, "cycle {}: no {} from rank(s) {} in time", cycle_, phase, rank_list(who));
        if (poll(p.data(), p.size(), left) < 0 && errno != EINTR) return sys_error("poll");
        for (size_t k = 0; k < p.size(); ++k) {
            if (!p[k].revents) continue;
            Rank& r = ranks_[who[k]];
            auto h = read_record(r.fd.get(), body);
            if (!h) {
                if (h.error().code() == EAGAIN) continue;
                r.gone = true;
                return std::move(h).error().context("cycle {}: rank {} (pid {}) while {}", cycle_, r.rank, r.pid, phase);
            }
            if (h->type == static_cast<uint32_t>(ctl::Msg::Bye)) {
                finalized(r);
                return error("cycle {}: rank {} (pid {}) called MPI_Finalize: a finishing job is not checkpointed",
                             cycle_, r.rank, r.pid);
            }
            if (h->cycle != 0 && h->cycle < cycle_) continue;  // left over from an aborted cycle
            if (h->type != type || h->cycle != cycle_)
                return error("cycle {}: rank {} sent {} (cycle {}) while {}", cycle_, r.rank, msg_name(h->type),
                             h->cycle, phase);
            CKPT_TRY_CTX(take(r, body), "cycle {}: rank {}", cycle_, r.rank);
            have[who[k]] = true;
            --missing;
        }
    }
    return ok();
}

// A rank said goodbye: it waits for this end to close before it closes its own.
void Coordinator::finalized(Rank& r) {
    r.finalized = true;
    r.gone = true;
    r.fd.reset();
}

void Coordinator::abort_cycle() {
    for (auto& r : ranks_)
        if (r.fd.valid() && !r.gone) (void)send_to(r, static_cast<uint32_t>(ctl::Msg::Abort), nullptr, 0);
    parked_ = false;
}

// Sends the targets and waits until every rank reached the newest generation of them;
// a rank's Raise lifts a target and starts a new generation.
Result<void> Coordinator::reach_targets(std::map<uint64_t, uint64_t>& targets, Clock::time_point deadline) {
    uint64_t generation = 0;
    std::vector<uint64_t> reached(world_size_, 0);
    auto send_targets = [&]() -> Result<void> {
        ++generation;
        std::vector<char> body(sizeof generation);
        std::memcpy(body.data(), &generation, sizeof generation);
        for (auto [k, v] : targets) {
            ctl::CommSeq cs{k, v};
            body.insert(body.end(), reinterpret_cast<char*>(&cs), reinterpret_cast<char*>(&cs) + sizeof cs);
        }
        return send_all(static_cast<uint32_t>(ctl::Msg::Targets), body.data(), body.size());
    };
    CKPT_TRY(send_targets());
    std::vector<char> body;
    for (;;) {
        std::vector<pollfd> p;
        std::vector<int> waiting;
        for (int i = 0; i < world_size_; ++i) {
            p.push_back({ranks_[i].fd.get(), POLLIN, 0});
            if (reached[i] != generation) waiting.push_back(i);
        }
        if (waiting.empty()) return ok();
        int left = ms_left(deadline);
        if (left == 0)
            return error_code(ETIMEDOUT, "cycle {}: rank(s) {} did not reach the collective targets in time", cycle_,
                              rank_list(waiting));
        if (poll(p.data(), p.size(), left) < 0 && errno != EINTR) return sys_error("poll");
        bool raised = false;
        for (int i = 0; i < world_size_; ++i) {
            if (!p[i].revents) continue;
            Rank& r = ranks_[i];
            auto h = read_record(r.fd.get(), body);
            if (!h) {
                if (h.error().code() == EAGAIN) continue;
                r.gone = true;
                return std::move(h).error().context("cycle {}: rank {} (pid {}) while reaching its targets", cycle_,
                                                    r.rank, r.pid);
            }
            if (h->type == static_cast<uint32_t>(ctl::Msg::Bye)) {
                finalized(r);
                return error("cycle {}: rank {} (pid {}) called MPI_Finalize: a finishing job is not checkpointed",
                             cycle_, r.rank, r.pid);
            }
            if (h->cycle != 0 && h->cycle < cycle_) continue;
            if (h->type == static_cast<uint32_t>(ctl::Msg::Raise) && body.size() == sizeof(ctl::CommSeq)) {
                ctl::CommSeq need;
                std::memcpy(&need, body.data(), sizeof need);
                auto& t = targets[need.key];
                if (need.seq > t) {
                    logger()->debug("cycle {}: rank {} raises {:016x} to {}", cycle_, r.rank, need.key, need.seq);
                    t = need.seq;
                    raised = true;
                }
            } else if (h->type == static_cast<uint32_t>(ctl::Msg::Reached) && body.size() == sizeof(uint64_t)) {
                std::memcpy(&reached[i], body.data(), sizeof(uint64_t));
            } else {
                return error("cycle {}: rank {} sent {} while reaching its targets", cycle_, r.rank, msg_name(h->type));
            }
        }
        if (raised) CKPT_TRY(send_targets());
    }
}

Result<std::vector<ParkedRank>> Coordinator::quiesce(std::chrono::milliseconds timeout, QuiesceTimes* times) {
    for (auto& r : ranks_) {
        if (r.rank < 0) return error("rank {} never reached the coordinator", &r - ranks_.data());
        if (r.gone && !r.finalized) return error("rank {} (pid {}) is gone", r.rank, r.pid);
        if (r.finalized) return error("rank {} (pid {}) called MPI_Finalize: a finishing job is not checkpointed", r.rank, r.pid);
    }
    if (parked_) return error("the ranks are parked already");
    ++cycle_;
    auto start = Clock::now();
    auto deadline = start + timeout;
    auto run = [&]() -> Result<std::vector<ParkedRank>> {
        using M = ctl::Msg;
        CKPT_TRY(send_all(static_cast<uint32_t>(M::Intent), nullptr, 0));
        // Targets: the highest count any member reached, per communicator.
        std::map<uint64_t, uint64_t> targets;
        CKPT_TRY(collect(static_cast<uint32_t>(M::Seqs), "sending its collective counts", deadline,
                         [&](Rank&, const std::vector<char>& b) -> Result<void> {
                             if (b.size() % sizeof(ctl::CommSeq)) return error("a malformed count list");
                             for (size_t o = 0; o < b.size(); o += sizeof(ctl::CommSeq)) {
                                 ctl::CommSeq cs;
                                 std::memcpy(&cs, b.data() + o, sizeof cs);
                                 auto& t = targets[cs.key];
                                 t = std::max(t, cs.seq);
                             }
                             return ok();
                         }));
        auto t_seqs = Clock::now();
        CKPT_TRY(reach_targets(targets, deadline));
        auto t_reached = Clock::now();
        CKPT_TRY(send_all(static_cast<uint32_t>(M::Stop), nullptr, 0));
        // sent[from * n + to]
        std::vector<uint64_t> sent(static_cast<size_t>(world_size_) * world_size_);
        CKPT_TRY(collect(static_cast<uint32_t>(M::Sent), "stopping point-to-point", deadline,
                         [&](Rank& r, const std::vector<char>& b) -> Result<void> {
                             if (b.size() != sizeof(uint64_t) * world_size_) return error("a malformed sent count");
                             if (!b.empty()) std::memcpy(&sent[static_cast<size_t>(r.rank) * world_size_], b.data(), b.size());
                             return ok();
                         }));
        auto t_counts = Clock::now();
        std::vector<uint64_t> expect(world_size_);
        for (auto& r : ranks_) {
            for (int from = 0; from < world_size_; ++from)
                expect[from] = sent[static_cast<size_t>(from) * world_size_ + r.rank];
            CKPT_TRY(send_to(r, static_cast<uint32_t>(M::Expect), expect.data(), expect.size() * sizeof(uint64_t)));
        }
        std::vector<ParkedRank> parked(world_size_);
        CKPT_TRY(collect(static_cast<uint32_t>(M::Quiesced), "draining its messages", deadline,
                         [&](Rank& r, const std::vector<char>& b) -> Result<void> {
                             ctl::Quiesced q;
                             if (b.size() < sizeof q) return error("a malformed parked report");
                             std::memcpy(&q, b.data(), sizeof q);
                             size_t need = sizeof q + q.nthreads * sizeof(int32_t) + q.nfds * sizeof(int32_t) +
                                           q.nranges * 2 * sizeof(uint64_t);
                             if (b.size() != need) return error("a malformed parked report");
                             ParkedRank& p = parked[r.rank];
                             p.rank = r.rank;
                             p.pid = r.pid;
                             p.control_fd = q.control_fd;
                             const char* at = b.data() + sizeof q;
                             std::vector<pid_t> inner(q.nthreads);
                             // (memcpy wants real pointers, which empty lists do not have)
                             auto take = [](void* to, const char* from, size_t n) { if (n) std::memcpy(to, from, n); };
                             take(inner.data(), at, q.nthreads * sizeof(int32_t));
                             // A relay translated them where the rank runs.
                             p.lower_threads = r.relayed ? inner : CKPT_TRY(host_tids(r.pid, inner));
                             at += q.nthreads * sizeof(int32_t);
                             p.lower_fds.resize(q.nfds);
                             take(p.lower_fds.data(), at, q.nfds * sizeof(int32_t));
                             at += q.nfds * sizeof(int32_t);
                             p.lower_memory.resize(q.nranges);
                             take(p.lower_memory.data(), at, q.nranges * 2 * sizeof(uint64_t));
                             return ok();
                         }));
        if (times) {
            auto t_parked = Clock::now();
            times->to_seqs = t_seqs - start;
            times->to_reached = t_reached - start;
            times->to_counts = t_counts - start;
            times->to_parked = t_parked - start;
        }
        parked_ = true;
        return parked;
    };
    auto result = run();
    if (!result) {
        abort_cycle();
        logger()->warn("quiesce failed, every rank goes on: {}", result.error().message());
    }
    return result;
}

Result<void> Coordinator::resume() {
    if (!parked_) return error("no rank is parked");
    parked_ = false;
    return send_all(static_cast<uint32_t>(ctl::Msg::Resume), nullptr, 0);
}

int Coordinator::live_ranks() const {
    int n = 0;
    for (const auto& r : ranks_) n += r.fd.valid() && !r.gone && !r.finalized;
    return n;
}

Result<void> Coordinator::wait_finished(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::vector<char> body;
    for (;;) {
        std::vector<pollfd> p;
        std::vector<Rank*> who;
        for (auto& r : ranks_)
            if (r.fd.valid() && !r.gone) {
                p.push_back({r.fd.get(), POLLIN, 0});
                who.push_back(&r);
            }
        if (p.empty()) return ok();
        int left = ms_left(deadline);
        if (left == 0) return error_code(ETIMEDOUT, "{} ranks still running", p.size());
        if (poll(p.data(), p.size(), left) < 0 && errno != EINTR) return sys_error("poll");
        for (size_t k = 0; k < p.size(); ++k) {
            if (!p[k].revents) continue;
            auto h = read_record(p[k].fd, body);
            if (!h && h.error().code() == EAGAIN) continue;
            if (!h) {
                who[k]->gone = true;
            } else if (h->type == static_cast<uint32_t>(ctl::Msg::Bye)) {
                finalized(*who[k]);
            }
        }
    }
}

}  // namespace ckpt::mpi
