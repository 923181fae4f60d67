// The quiesce protocol of a rank (see quiesce.h and docs/mpi.md): the control thread, the
// collective sequence numbers and their targets, the stop, the drain and the park.
#include "quiesce.h"

#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "ckpt/mpi/control.h"
#include "ckpt/mpi/lower_half.h"
#include "drained.h"
#include "resources.h"
#include "runtime.h"

namespace ckpt::mpi {

std::atomic<uint32_t> g_quiesce_active{0};
uint64_t* g_sent = nullptr;
uint64_t* g_received = nullptr;
DrainedMessage* g_drained_head = nullptr;

bool note_completed_requests();
bool all_sends_complete();
void repost_requests();
void connect_control();
std::vector<int> g_lower_signals;

namespace {

namespace ctl = control;

// What the control thread learnt of the current cycle, published to the application's
// thread with release stores of g_phase.
enum Phase : uint32_t { kNone, kIntent, kTargets, kStop, kExpect, kAborted };

std::atomic<uint32_t> g_phase{kNone};
std::atomic<uint32_t> g_events{0};  // bumped (and futex-woken) on every message
uint32_t g_cycle = 0;
// Targets: replaced by the control thread when raised, read by the application's thread.
std::mutex g_targets_mutex;
std::vector<ctl::CommSeq> g_targets;  // sorted by key
std::atomic<uint64_t> g_targets_generation{0};
std::vector<uint64_t> g_expect;

int g_world_rank = -1;
int g_world_size = 0;
int g_control_fd = -1;   // the coordinator; -1: this rank is never quiesced
int g_wake_fd = -1;      // tells the control thread to end
pthread_t g_control_thread{};
bool g_control_running = false;
std::atomic<bool> g_coordinator_gone{false};

// Communicators: live ones, and the final counts of freed ones (other members may be behind).
std::mutex g_registry_mutex;
std::vector<Comm*> g_comms;
std::vector<ctl::CommSeq> g_retired;

DrainedMessage* g_drained_tail = nullptr;

// Per cycle, the application's thread only.
uint64_t g_reached_generation = 0;  // of the targets last reported reached
bool g_sent_sent = false;
uint64_t g_cycles_finished = 0;

bool g_trace = false;  // CKPT_MPI_TRACE_QUIESCE=1: every step on stderr
#define TRACE(fmt, ...)                                                                        \
    do {                                                                                       \
        if (g_trace) std::fprintf(stderr, "ckpt-mpi: rank %d: " fmt, g_world_rank, __VA_ARGS__); \
    } while (0)

uint64_t load_seq(const Comm* c) {
    return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(c->coll_seq)).load(std::memory_order_relaxed);
}
void store_seq(Comm* c, uint64_t v) {
    std::atomic_ref<uint64_t>(c->coll_seq).store(v, std::memory_order_relaxed);
}

void bump_events() {
    g_events.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, &g_events, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

// Waits until an event after `seen`, or `timeout_ns`.
void wait_events(uint32_t seen, long timeout_ns) {
    timespec ts{0, timeout_ns};
    syscall(SYS_futex, &g_events, FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
}

bool send_record(ctl::Msg type, const void* payload, size_t len, const void* more = nullptr, size_t more_len = 0) {
    if (g_control_fd < 0)
        return false;
    ctl::Header h{static_cast<uint32_t>(type), g_cycle};
    iovec iov[3] = {{&h, sizeof h}, {const_cast<void*>(payload), len}, {const_cast<void*>(more), more_len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = 3;
    for (;;) {
        ssize_t n = sendmsg(g_control_fd, &m, MSG_NOSIGNAL);
        if (n >= 0)
            return true;
        if (errno != EINTR)
            return false;
    }
}

// One record from the coordinator into buf; its type, or 0 at end of file or error.
uint32_t recv_record(std::vector<char>& buf) {
    buf.resize(ctl::kMaxRecord);
    for (;;) {
        ssize_t n = recv(g_control_fd, buf.data(), buf.size(), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < static_cast<ssize_t>(sizeof(ctl::Header)))
            return 0;
        buf.resize(static_cast<size_t>(n));
        ctl::Header h;
        std::memcpy(&h, buf.data(), sizeof h);
        return h.type;
    }
}

template <class T>
std::vector<T> payload_of(const std::vector<char>& rec) {
    size_t n = (rec.size() - sizeof(ctl::Header)) / sizeof(T);
    std::vector<T> v(n);
    if (n)
        std::memcpy(v.data(), rec.data() + sizeof(ctl::Header), n * sizeof(T));
    return v;
}

uint32_t cycle_of(const std::vector<char>& rec) {
    ctl::Header h;
    std::memcpy(&h, rec.data(), sizeof h);
    return h.cycle;
}

void snapshot_and_send_seqs() {
    std::vector<ctl::CommSeq> seqs;
    {
        std::lock_guard<std::mutex> lock(g_registry_mutex);
        for (const Comm* c : g_comms)
            seqs.push_back({c->quiesce_key, load_seq(c)});
        seqs.insert(seqs.end(), g_retired.begin(), g_retired.end());
    }
    for (auto& cs : seqs) TRACE("cycle %u: comm %016llx at %llu\n", g_cycle, (unsigned long long)cs.key, (unsigned long long)cs.seq);
    send_record(ctl::Msg::Seqs, seqs.data(), seqs.size() * sizeof(ctl::CommSeq));
}

// The control thread: reads the coordinator's messages until told to end (Quiesced: the
// application's thread reads the answer itself) or the coordinator goes away.
void* control_main(void*) {
    std::vector<char> rec;
    pollfd p[2] = {{g_control_fd, POLLIN, 0}, {g_wake_fd, POLLIN, 0}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            return nullptr;
        uint32_t type = recv_record(rec);
        switch (static_cast<ctl::Msg>(type)) {
            case ctl::Msg::Intent:
                // An aborted cycle ends when the application's thread next calls MPI.
                while (g_quiesce_active.load(std::memory_order_acquire))
                    if (poll(&p[1], 1, 1) > 0)
                        return nullptr;
                g_cycle = cycle_of(rec);
                // Dekker with CollectiveScope: either this snapshot sees the application's
                // increment, or the application sees the cycle and checks the targets.
                g_quiesce_active.store(1, std::memory_order_relaxed);
                std::atomic_thread_fence(std::memory_order_seq_cst);
                snapshot_and_send_seqs();
                g_phase.store(kIntent, std::memory_order_release);
                break;
            case ctl::Msg::Targets: {
                if (rec.size() < sizeof(ctl::Header) + sizeof(uint64_t))
                    fatal("quiesce: a malformed targets message");
                uint64_t generation;
                std::memcpy(&generation, rec.data() + sizeof(ctl::Header), sizeof generation);
                std::vector<ctl::CommSeq> t((rec.size() - sizeof(ctl::Header) - sizeof generation) / sizeof(ctl::CommSeq));
                if (!t.empty())
                    std::memcpy(t.data(), rec.data() + sizeof(ctl::Header) + sizeof generation, t.size() * sizeof(ctl::CommSeq));
                std::sort(t.begin(), t.end(), [](const ctl::CommSeq& a, const ctl::CommSeq& b) { return a.key < b.key; });
                {
                    std::lock_guard<std::mutex> lock(g_targets_mutex);
                    g_targets = std::move(t);
                }
                g_targets_generation.store(generation, std::memory_order_release);
                if (g_phase.load(std::memory_order_relaxed) < kTargets)
                    g_phase.store(kTargets, std::memory_order_release);
                break;
            }
            case ctl::Msg::Stop:
                g_phase.store(kStop, std::memory_order_release);
                break;
            case ctl::Msg::Expect:
                g_expect = payload_of<uint64_t>(rec);
                if (g_expect.size() != static_cast<size_t>(g_world_size))
                    fatal("quiesce: the coordinator expects counts for %zu ranks, the world has %d",
                          g_expect.size(), g_world_size);
                g_phase.store(kExpect, std::memory_order_release);
                break;
            case ctl::Msg::Abort:
                g_phase.store(kAborted, std::memory_order_release);
                break;
            default:
                // The coordinator is gone (or speaks nonsense): the application's thread
                // closes the channel at its next MPI call; never quiesced again.
                g_coordinator_gone.store(true, std::memory_order_relaxed);
                g_phase.store(kAborted, std::memory_order_relaxed);
                g_quiesce_active.store(1, std::memory_order_release);
                bump_events();
                return nullptr;
        }
        bump_events();
    }
    return nullptr;
}

void start_control_thread() {
    if (g_control_fd < 0 || g_control_running)
        return;
    g_wake_fd = eventfd(0, EFD_CLOEXEC);
    if (g_wake_fd < 0)
        fatal("quiesce: eventfd: %s", std::strerror(errno));
    // No signal for it: the application's handlers run on its own threads.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g_control_thread, nullptr, control_main, nullptr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0)
        fatal("quiesce: cannot start the control thread: %s", std::strerror(rc));
    g_control_running = true;
}

void stop_control_thread() {
    if (!g_control_running)
        return;
    uint64_t one = 1;
    ssize_t w = write(g_wake_fd, &one, sizeof one);
    (void)w;
    pthread_join(g_control_thread, nullptr);
    close(g_wake_fd);
    g_wake_fd = -1;
    g_control_running = false;
}

// Under g_targets_mutex.
uint64_t target_of_locked(uint64_t key) {
    auto it = std::lower_bound(g_targets.begin(), g_targets.end(), key,
                               [](const ctl::CommSeq& a, uint64_t k) { return a.key < k; });
    // A communicator nobody reported was made after every member's snapshot: nothing on it.
    return it != g_targets.end() && it->key == key ? it->seq : 0;
}

uint64_t target_of(uint64_t key) {
    std::lock_guard<std::mutex> lock(g_targets_mutex);
    return target_of_locked(key);
}

bool at_targets() {
    std::lock_guard<std::mutex> lock(g_targets_mutex);
    for (const Comm* c : g_comms)
        if (load_seq(c) != target_of_locked(c->quiesce_key))
            return false;
    return true;
}

// Drives the lower half's progress engine (a probe that finds nothing still progresses).
void progress() {
    int flag = 0;
    g_lower.Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, in(MPI_COMM_WORLD), &flag, MPI_STATUS_IGNORE);
}

// Pulls every message that arrived unmatched into the upper half, and notes requests that
// completed. Returns whether anything happened.
bool drain_step() {
    bool any = false;
    for (Comm* c : g_comms) {
        for (;;) {
            int flag = 0;
            MPI_Status st{};
            g_lower.Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, in(handle<MPI_Comm>(c)), &flag, &st);
            if (!flag)
                break;
            append_drained(pull_message(c, st, "quiesce"));
            any = true;
        }
    }
    return note_completed_requests() || any;
}

bool drained() {
    for (int p = 0; p < g_world_size; ++p) {
        if (g_received[p] > g_expect[p])
            fatal("quiesce: received %llu messages from rank %d, which sent %llu", (unsigned long long)g_received[p],
                  p, (unsigned long long)g_expect[p]);
        if (g_received[p] < g_expect[p])
            return false;
    }
    return all_sends_complete();
}

void close_control() {
    if (g_control_fd < 0)
        return;
    std::fprintf(stderr, "ckpt: rank %d: the checkpoint coordinator went away; no more checkpoints\n", g_world_rank);
    close(g_control_fd);
    g_control_fd = -1;
}

void finish_cycle(bool completed) {
    ++g_cycles_finished;
    if (g_coordinator_gone.load(std::memory_order_relaxed)) {
        stop_control_thread();
        close_control();
    }
    g_sent_sent = false;
    {
        std::lock_guard<std::mutex> lock(g_targets_mutex);
        g_targets.clear();
    }
    g_reached_generation = 0;
    g_expect.clear();
    if (completed) {
        // Every member had every communicator at the same count: no one is behind on a freed one.
        std::lock_guard<std::mutex> lock(g_registry_mutex);
        g_retired.clear();
    }
    g_phase.store(kNone, std::memory_order_relaxed);
    g_quiesce_active.store(0, std::memory_order_release);
    bump_events();
    start_control_thread();
}

void send_quiesced() {
    std::vector<pid_t> threads(64);
    threads.resize(ckpt_mpi_lower_threads(threads.data(), threads.size()));
    std::vector<int> fds(256);
    for (;;) {
        size_t n = ckpt_mpi_lower_fds(fds.data(), fds.size());
        if (n <= fds.size()) {
            fds.resize(n);
            break;
        }
        fds.resize(n);
    }
    // The channel this rank parks on is the upper half's, whatever number it got.
    std::erase(fds, g_control_fd);
    auto ranges = lower_memory_to_leave_out();
    ctl::Quiesced q;
    q.control_fd = g_control_fd;
    q.nthreads = static_cast<uint32_t>(threads.size());
    q.nfds = static_cast<uint32_t>(fds.size());
    q.nranges = static_cast<uint32_t>(ranges.size());
    std::vector<char> body(sizeof q);
    std::memcpy(body.data(), &q, sizeof q);
    auto append = [&](const void* p, size_t n) { body.insert(body.end(), (const char*)p, (const char*)p + n); };
    append(threads.data(), threads.size() * sizeof(pid_t));
    append(fds.data(), fds.size() * sizeof(int));
    append(ranges.data(), ranges.size() * sizeof(ranges[0]));
    send_record(ctl::Msg::Quiesced, body.data(), body.size());
}

// Stop, drain and park, here: the application's thread at a point-to-point call or in the loop
// of a blocking call, told to stop. Returns when the cycle is over.
void quiesce_here() {
    if (!g_sent_sent) {
        send_record(ctl::Msg::Sent, g_sent, sizeof(uint64_t) * g_world_size);
        g_sent_sent = true;
    }
    for (;;) {
        bool progressed = drain_step();
        uint32_t phase = g_phase.load(std::memory_order_acquire);
        if (phase == kAborted)
            return finish_cycle(false);
        if (phase == kExpect && drained())
            break;
        if (!progressed)
            sched_yield();
    }
    // Parked: this thread alone, waiting in recv on the control fd (what a restore gives back).
    stop_control_thread();
    if (g_phase.load(std::memory_order_acquire) == kAborted)
        return finish_cycle(false);
    g_lower_signals = lower_signals();
    g_wtime_parked = g_lower.Wtime() + g_wtime_offset;
    send_quiesced();
    std::vector<char> rec;
    // A dump saves this thread here, in recv on the control fd; a restore gives it a new
    // channel at the same number, on which its restorer sends Restarted.
    uint32_t type = g_control_fd >= 0 ? recv_record(rec) : 0;
    if (type == static_cast<uint32_t>(ctl::Msg::Restarted)) {
        std::vector<std::string> env;
        const char* at = rec.data() + sizeof(ctl::Header);
        const char* end = rec.data() + rec.size();
        while (at < end) {
            const char* nul = static_cast<const char*>(std::memchr(at, 0, end - at));
            if (!nul)
                fatal("restart: a malformed environment from the restorer");
            env.emplace_back(at, nul);
            at = nul + 1;
        }
        close(g_control_fd);
        g_control_fd = -1;
        restart_lower(env);
        repost_requests();
        free_replayed_objects();
        g_coordinator_gone.store(false);
        connect_control();
        return finish_cycle(true);
    }
    if (type != static_cast<uint32_t>(ctl::Msg::Resume) && type != static_cast<uint32_t>(ctl::Msg::Abort))
        close_control();
    finish_cycle(type == static_cast<uint32_t>(ctl::Msg::Resume));
}

// Protocol work the application's thread does wherever it is outside every collective.
// `outside` is false in a collective's entry, committed to it.
void service(bool outside) {
    uint32_t phase = g_phase.load(std::memory_order_acquire);
    if (phase == kAborted)
        return finish_cycle(false);
    if (!outside)
        return;
    if (phase >= kTargets) {
        // Reached, once per generation of targets (a raise makes the ranks report again).
        uint64_t generation = g_targets_generation.load(std::memory_order_acquire);
        if (generation != g_reached_generation && at_targets()) {
            TRACE("cycle %u: reached generation %llu\n", g_cycle, (unsigned long long)generation);
            send_record(ctl::Msg::Reached, &generation, sizeof generation);
            g_reached_generation = generation;
        }
    }
    if (phase >= kStop)
        quiesce_here();
}

}  // namespace

// Requests, for the drain: posted ones are linked here until they complete.
namespace {
Request* g_active_head = nullptr;
}

void link_active(Request* r) {
    r->prev_active = nullptr;
    r->next_active = g_active_head;
    if (g_active_head)
        g_active_head->prev_active = r;
    g_active_head = r;
}

void unlink_active(Request* r) {
    if (r->prev_active)
        r->prev_active->next_active = r->next_active;
    else if (g_active_head == r)
        g_active_head = r->next_active;
    if (r->next_active)
        r->next_active->prev_active = r->prev_active;
    r->prev_active = r->next_active = nullptr;
}

bool note_completed_requests() {
    bool any = false;
    for (Request* r = g_active_head; r; r = r->next_active) {
        if (r->counted || r->done_upper)
            continue;
        int flag = 0;
        MPI_Status st{};
        g_lower.Request_get_status(real_of<MPI_Request>(r->h), &flag, &st);
        if (!flag)
            continue;
        r->counted = true;
        r->status = st;
        if (r->call == Request::Call::Recv)
            count_received(r->comm, st);
        any = true;
    }
    return any;
}

// After a restart: requests the drain saw complete are complete in the upper half (their
// lower half is gone); receives still waiting are posted again on the new lower half.
void repost_requests() {
    for (Request* r = g_active_head; r;) {
        Request* next = r->next_active;
        if (r->counted) {
            r->done_upper = true;
            r->h.real = g_lower_request_null;
            unlink_active(r);
        } else if (r->call == Request::Call::Recv) {
            MPI_Request l = MPI_REQUEST_NULL;
            int rc = g_lower.Irecv(const_cast<void*>(r->buf), r->count, in(handle<MPI_Datatype>(r->type)), r->peer,
                                   r->tag, in(handle<MPI_Comm>(r->comm)), &l);
            if (rc != MPI_SUCCESS)
                fatal("restart: cannot post a pending receive again (error %d)", rc);
            r->h.real = l;
        } else {
            fatal("restart: a send was still in flight at the checkpoint");
        }
        r = next;
    }
}

bool all_sends_complete() {
    for (Request* r = g_active_head; r; r = r->next_active)
        if (r->call != Request::Call::Recv && !r->counted && !r->done_upper)
            return false;
    return true;
}

void p2p_entry_slow() { service(true); }

void waiting_slow() { service(true); }

CollectiveScope::CollectiveScope(MPI_Comm comm) : c_(obj<Comm>(comm)) {
    if (g_control_fd < 0)
        return;
    store_seq(c_, load_seq(c_) + 1);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    while (g_quiesce_active.load(std::memory_order_relaxed)) {
        // A cycle runs: wait for the targets (committed to this collective meanwhile).
        uint32_t phase;
        while ((phase = g_phase.load(std::memory_order_acquire)) < kTargets) {
            uint32_t seen = g_events.load(std::memory_order_acquire);
            if (!g_quiesce_active.load(std::memory_order_acquire))
                return;
            progress();
            wait_events(seen, 1'000'000);
        }
        if (phase == kAborted) {
            finish_cycle(false);
            continue;
        }
        TRACE("cycle %u: entering collective %llu on %016llx, target %llu\n", g_cycle, (unsigned long long)load_seq(c_), (unsigned long long)c_->quiesce_key, (unsigned long long)target_of(c_->quiesce_key));
        if (load_seq(c_) <= target_of(c_->quiesce_key))
            return;  // inside the targets: go on
        // Beyond the target: step back out and stay until this cycle is over (the next one
        // may begin at once: its control thread starts when this one ends) or the targets
        // are raised. If this rank still has to reach a target elsewhere, program order
        // runs through this collective: ask for it.
        store_seq(c_, load_seq(c_) - 1);
        const uint64_t cycle = g_cycles_finished;
        const uint64_t generation = g_targets_generation.load(std::memory_order_acquire);
        if (!at_targets()) {
            ctl::CommSeq need{c_->quiesce_key, load_seq(c_) + 1};
            TRACE("cycle %u: asks for collective %llu on %016llx\n", g_cycle, (unsigned long long)need.seq,
                  (unsigned long long)need.key);
            send_record(ctl::Msg::Raise, &need, sizeof need);
        }
        while (g_cycles_finished == cycle && g_targets_generation.load(std::memory_order_acquire) == generation) {
            uint32_t seen = g_events.load(std::memory_order_acquire);
            service(true);
            if (g_cycles_finished != cycle)
                break;
            progress();
            wait_events(seen, 1'000'000);
        }
        store_seq(c_, load_seq(c_) + 1);
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

CollectiveScope::~CollectiveScope() {
    if (g_quiesce_active.load(std::memory_order_relaxed)) [[unlikely]]
        service(true);
}

void refresh_comm(Comm* c) {
    int size = 0;
    g_lower.Comm_size(in(handle<MPI_Comm>(c)), &size);
    c->size = size;
    if (c != obj<Comm>(MPI_COMM_WORLD)) {
        delete[] c->world_of;
        MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
        g_lower.Comm_group(in(handle<MPI_Comm>(c)), &mine);
        g_lower.Comm_group(in(MPI_COMM_WORLD), &world);
        std::vector<int> ranks(size);
        for (int i = 0; i < size; ++i)
            ranks[i] = i;
        c->world_of = new int[size];
        g_lower.Group_translate_ranks(mine, size, ranks.data(), world, c->world_of);
        g_lower.Group_free(&mine);
        g_lower.Group_free(&world);
    }
}

void register_comm(Comm* c) {
    refresh_comm(c);
    // The children of one split share an id: the world rank of rank 0 tells them apart.
    uint64_t first = static_cast<uint64_t>(world_rank_of(c, 0));
    c->quiesce_key = c->id * 0x100000001b3ULL ^ (first + 1) * 0x9e3779b97f4a7c15ULL;
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    g_comms.push_back(c);
}

void retire_comm(Comm* c) {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    auto it = std::find(g_comms.begin(), g_comms.end(), c);
    if (it == g_comms.end())
        return;
    g_comms.erase(it);
    if (g_control_fd >= 0)
        g_retired.push_back({c->quiesce_key, load_seq(c)});
}

void quiesce_after_init() {
    g_lower.Comm_rank(in(MPI_COMM_WORLD), &g_world_rank);
    g_lower.Comm_size(in(MPI_COMM_WORLD), &g_world_size);
    g_sent = new uint64_t[g_world_size]();
    g_received = new uint64_t[g_world_size]();
    register_comm(obj<Comm>(MPI_COMM_WORLD));
    register_comm(obj<Comm>(MPI_COMM_SELF));

    connect_control();
}

void connect_control() {
    g_trace = std::getenv("CKPT_MPI_TRACE_QUIESCE") && std::strcmp(std::getenv("CKPT_MPI_TRACE_QUIESCE"), "1") == 0;
    const char* path = std::getenv(ctl::kSocketEnv);
    if (!path || !*path)
        return;
    // A path, or "@name" in the abstract namespace (what a Slurm step's agent listens on).
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    size_t len = std::strlen(path);
    if (len >= sizeof addr.sun_path) {
        std::fprintf(stderr, "ckpt: rank %d: %s=%s is too long a socket path; not checkpointed\n", g_world_rank,
                     ctl::kSocketEnv, path);
        return;
    }
    std::memcpy(addr.sun_path, path, len);
    socklen_t addr_len = sizeof addr;
    if (path[0] == '@') {
        addr.sun_path[0] = '\0';
        addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    // The node's agent starts with the step's first task and may not listen yet: retry for a while.
    int rc = -1;
    for (int attempt = 0; fd >= 0 && attempt < 200; ++attempt) {
        rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len);
        if (rc == 0 || (errno != ECONNREFUSED && errno != ENOENT))
            break;
        usleep(50 * 1000);
    }
    if (fd < 0 || rc != 0) {
        std::fprintf(stderr, "ckpt: rank %d: cannot reach the checkpoint coordinator at %s: %s; not checkpointed\n",
                     g_world_rank, path, std::strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    g_control_fd = fd;
    ctl::Hello hello;
    hello.rank = g_world_rank;
    hello.size = g_world_size;
    hello.pid = getpid();
    send_record(ctl::Msg::Hello, &hello, sizeof hello);
    start_control_thread();
}

void quiesce_before_finalize() {
    if (g_control_fd < 0)
        return;
    {
        // MPI_Finalize is a collective on MPI_COMM_WORLD: a cycle in progress completes first.
        CollectiveScope scope(MPI_COMM_WORLD);
    }
    stop_control_thread();
    g_cycle = 0;
    send_record(ctl::Msg::Bye, nullptr, 0);
    // Closing with a message unread would reset the connection before the coordinator reads
    // the goodbye: wait (briefly) until it closes its end, discarding what it still sent.
    shutdown(g_control_fd, SHUT_WR);
    std::vector<char> rec;
    for (int i = 0; i < 100; ++i) {
        pollfd p{g_control_fd, POLLIN, 0};
        if (poll(&p, 1, 20) > 0 && recv_record(rec) == 0)
            break;
    }
    close(g_control_fd);
    g_control_fd = -1;
}

// Held messages.
DrainedMessage* find_drained(const Comm* comm, int source, int tag) {
    for (DrainedMessage* m = g_drained_head; m; m = m->next)
        if (m->comm == comm && (source == MPI_ANY_SOURCE || source == m->source) &&
            (tag == MPI_ANY_TAG || tag == m->tag))
            return m;
    return nullptr;
}

DrainedMessage* pull_message(Comm* c, const MPI_Status& probed, const char* why) {
    int bytes = 0;
    g_lower.Get_count(&probed, in(MPI_BYTE), &bytes);
    char* data = static_cast<char*>(std::malloc(bytes > 0 ? bytes : 1));
    if (!data)
        fatal("%s: out of memory holding a %d-byte message", why, bytes);
    MPI_Status got{};
    // In-order matching: the probed message is the first from that source with that tag.
    int rc = g_lower.Recv(data, bytes, in(MPI_BYTE), probed.MPI_SOURCE, probed.MPI_TAG, in(handle<MPI_Comm>(c)), &got);
    if (rc != MPI_SUCCESS)
        fatal("%s: cannot pull a message from rank %d (tag %d): error %d", why, probed.MPI_SOURCE, probed.MPI_TAG, rc);
    count_received(c, got);
    ++c->h.refs;
    return new DrainedMessage{c, got.MPI_SOURCE, got.MPI_TAG, static_cast<size_t>(bytes), data, nullptr};
}

void append_drained(DrainedMessage* m) {
    if (g_drained_tail)
        g_drained_tail->next = m;
    else
        g_drained_head = m;
    g_drained_tail = m;
}

void unlink_drained(DrainedMessage* m) {
    DrainedMessage** link = &g_drained_head;
    DrainedMessage* prev = nullptr;
    while (*link && *link != m) {
        prev = *link;
        link = &(*link)->next;
    }
    if (!*link)
        return;
    *link = m->next;
    m->next = nullptr;
    if (g_drained_tail == m)
        g_drained_tail = prev;
}

void drained_status(const DrainedMessage* m, MPI_Status* status) {
    status->MPI_SOURCE = m->source;
    status->MPI_TAG = m->tag;
    status->MPI_ERROR = MPI_SUCCESS;
    status->_cancelled = 0;
    status->_ucount = m->bytes;
}

int deliver_drained(DrainedMessage* m, void* buf, int count, MPI_Datatype type, MPI_Status* status) {
    int capacity = 0;
    g_lower.Pack_size(count, in(type), in(handle<MPI_Comm>(m->comm)), &capacity);
    int rc = MPI_SUCCESS;
    size_t bytes = m->bytes;
    if (bytes > static_cast<size_t>(capacity)) {
        rc = MPI_ERR_TRUNCATE;
        bytes = static_cast<size_t>(capacity);
    }
    int type_size = 0;
    g_lower.Type_size(in(type), &type_size);
    int whole = type_size > 0 ? static_cast<int>(bytes / type_size) : 0;
    int position = 0;
    if (whole > 0)
        g_lower.Unpack(m->data, static_cast<int>(bytes), &position, buf, whole, in(type), in(handle<MPI_Comm>(m->comm)));
    MPI_Status st{};
    drained_status(m, &st);
    st._ucount = bytes;
    st.MPI_ERROR = rc;
    if (status != MPI_STATUS_IGNORE)
        *status = st;
    unlink_drained(m);  // a matched probe's message is not in the list any more: no-op
    release_comm(m->comm);
    std::free(m->data);
    delete m;
    return rc;
}

}  // namespace ckpt::mpi
