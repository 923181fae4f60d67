// The copy-on-write snapshot (see snapshot.h).
//
// How the image stays the instant's. Every page to copy lies in a unit of kUnit bytes of
// its pages file, each Todo, Copying (claimed by one thread) or Done. The tree's writes to
// a page not yet copied fault to the fault thread, which copies the page's unit first (or
// leaves the writer to the thread copying it), then lifts the protection of the unit's
// pages, which wakes the writer; copier threads walk the other units. A page is read while
// still write-protected, so what is read is what it held at the freeze, as long as the
// tree has not moved, unmapped or dropped it meanwhile. The tree does that through
// munmap, mremap and madvise(MADV_DONTNEED/REMOVE): each reaches the engine as an event
// (UFFD_FEATURE_EVENT_UNMAP/REMAP/REMOVE) and, from the change on until the fault thread has
// read it, makes UFFDIO_WRITEPROTECT fail with EAGAIN (the kernel's mmap_changing). A unit
// is Done only once its protection was lifted without EAGAIN and every event read before
// has been looked at: so an event over pages whose unit is not Done (their copy may be
// wrong, or still to do) is always seen, and fails the snapshot; the dump is then made again
// with the tree frozen. Events over pages already copied change nothing. fork needs no
// event: a child's writes to private memory copy the page for the child (copy-on-write),
// and the parent's copy stays protected. Shared memory is saved by object while frozen
// (files.cpp), as are private copies in file mappings, which write-protect mode cannot
// register.
#include "snapshot.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "ckpt/clock.h"
#include "ckpt/engine/syscalls.h"
#include "dump_context.h"
#include "proc.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kUnit = 256u << 10;  // what a fault copies
// Units a copier takes at once (those still to do of the next 4), copied and unprotected
// together: lifting protection flushes the tree's TLB, and one change of 1 MiB instead of
// four of 256 KiB cost an application writing its memory during a 1 GiB snapshot about 15 %
// less of its work here (run_bench.py --slowdown-only, docs/engine.md). A write waits for at
// most this much to be copied; a fault copies one unit.
constexpr size_t kUnitsPerStep = 4;
constexpr unsigned kCopiers = 2;
constexpr uint64_t kFeatures = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;
enum : uint8_t { kTodo, kCopying, kDone };

// 0 or the errno of UFFDIO_WRITEPROTECT over [start, start + len).
int write_protect(int uffd, uint64_t start, uint64_t len, bool protect) {
    uffdio_writeprotect w{};
    w.range.start = start;
    w.range.len = len;
    w.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0 ? 0 : errno;
}

// Private anonymous memory (heap, stacks, anonymous mappings and their names).
bool private_anonymous(const ProcMapping& m) {
    if (m.shared || m.inode != 0) return false;
    return m.path.empty() || m.path == "[heap]" || m.path.starts_with("[stack") || m.path.starts_with("[anon:");
}

// The userfaultfd at fd of the frozen process pid, taken into the engine; empty (with a
// debug line) where it cannot be. The caller closes fd in the process.
UniqueFd take_uffd(pid_t pid, int pidfd, int64_t fd) {
    UniqueFd uffd(sys_pidfd_getfd(pidfd, static_cast<int>(fd), 0));
    if (!uffd) {
        logger()->debug("pid {}: pidfd_getfd of its userfaultfd: {}: no snapshot", pid, std::strerror(errno));
        return uffd;
    }
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = kFeatures;
    if (ioctl(uffd.get(), UFFDIO_API, &api) != 0 || (api.features & kFeatures) != kFeatures ||
        !(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        logger()->debug("pid {}: userfaultfd lacks write-protect mode or unmap/remap/remove events: no snapshot", pid);
        return UniqueFd();
    }
    return uffd;
}

// Puts the engine's fd into the frozen process pid (root may take an fd out of another
// user's process with pidfd_getfd, but that process may not take one out of root's: the
// restore's RestoreTask::install_fd cannot serve): a socket pair made in the process, one
// end taken by the engine, which sends fd over it (SCM_RIGHTS), received in the process.
// Returns its number there, or a negative errno (with the step in *what) where the process
// cannot take it (out of fds...). Every fd made in the process is added to *made, for the
// caller to close whatever happens.
Result<int64_t> send_fd_into(pid_t pid, int pidfd, RemoteThread& leader, RemoteScratch& arena, int fd,
                             std::vector<int64_t>* made, const char** what) {
    auto scope = arena.scope();
    const uint64_t pair_at = CKPT_TRY(scope.take(2 * sizeof(int), alignof(int)));
    *what = "socketpair";
    int64_t r = CKPT_TRY(leader.syscall(SYS_socketpair, {AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair_at}));
    if (r < 0) return r;
    int pair[2];
    CKPT_TRY(read_remote(pid, pair_at, pair, sizeof pair));
    made->push_back(pair[0]);
    made->push_back(pair[1]);
    *what = "pidfd_getfd of the socket";
    UniqueFd end(sys_pidfd_getfd(pidfd, pair[0], 0));
    if (!end) return -errno;
    const char byte = 0;
    *what = "sendmsg";
    if (send_with_fds(end.get(), &byte, 1, std::span(&fd, 1), MSG_DONTWAIT | MSG_NOSIGNAL) != 1) return -errno;

    // The same message, received in the process: its control buffer in the scratch page,
    // read back into control.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    const uint64_t byte_at = CKPT_TRY(scope.take(1, 1));
    const uint64_t control_at = CKPT_TRY(scope.take(sizeof control, alignof(cmsghdr)));
    iovec remote_iov{reinterpret_cast<void*>(byte_at), 1};
    const uint64_t iov_at = CKPT_TRY(scope.put(remote_iov));
    msghdr remote{};
    remote.msg_iov = reinterpret_cast<iovec*>(iov_at);
    remote.msg_iovlen = 1;
    remote.msg_control = reinterpret_cast<void*>(control_at);
    remote.msg_controllen = sizeof control;
    const uint64_t mh_at = CKPT_TRY(scope.put(remote));
    *what = "recvmsg";
    r = CKPT_TRY(leader.syscall(SYS_recvmsg, {static_cast<uint64_t>(pair[1]), mh_at, MSG_DONTWAIT | MSG_CMSG_CLOEXEC}));
    if (r < 0) return r;
    CKPT_TRY(read_remote(pid, mh_at, &remote, sizeof remote));
    std::memset(control, 0, sizeof control);
    CKPT_TRY(read_remote(pid, control_at, control, sizeof control));
    // Whatever fds came, they are the process's now (the socket is the engine's alone, but
    // the kernel may have installed fewer than sent: MSG_CTRUNC).
    msghdr mh{};
    mh.msg_control = control;
    mh.msg_controllen = std::min<size_t>(remote.msg_controllen, sizeof control);
    int got = -1, count = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        for (size_t i = 0; CMSG_LEN((i + 1) * sizeof(int)) <= c->cmsg_len; ++i) {
            int in;
            std::memcpy(&in, CMSG_DATA(c) + i * sizeof(int), sizeof in);
            made->push_back(in);
            got = in;
            ++count;
        }
    }
    if (count != 1 || (remote.msg_flags & MSG_CTRUNC)) return -EMFILE;
    return got;
}

// Where the process's user may not make a userfaultfd itself: root opens /dev/userfaultfd,
// puts it into the process and makes one there (USERFAULTFD_IOC_NEW: one of the mm of the
// caller, as userfaultfd() would, without the user-mode-only restriction), then takes it.
// The process is not dumpable meanwhile (when it was), so no other process of its user may
// take either fd from it (pidfd_getfd, /proc/PID/fd); every fd made in it is closed before
// this returns, on every path.
Result<UniqueFd> uffd_through_device(pid_t pid, int pidfd, RemoteThread& leader, RemoteScratch& arena) {
    UniqueFd dev(open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (!dev) {
        logger()->debug("pid {}: userfaultfd() refused to its user (vm.unprivileged_userfaultfd=0), and /dev/userfaultfd: "
                        "{}: no snapshot, its pages are copied frozen",
                        pid, std::strerror(errno));
        return UniqueFd();
    }
    const int64_t dumpable = CKPT_TRY(leader.syscall_ok("prctl(PR_GET_DUMPABLE)", SYS_prctl, {PR_GET_DUMPABLE}));
    const bool hide = dumpable == 1;  // SUID_DUMP_USER; 0 and 2 keep the user out already
    if (hide) CKPT_TRY(leader.syscall_ok("prctl(PR_SET_DUMPABLE, 0)", SYS_prctl, {PR_SET_DUMPABLE, 0}));
    std::vector<int64_t> made;
    auto taken = [&]() -> Result<UniqueFd> {
        const char* what = "";
        int64_t in = CKPT_TRY(send_fd_into(pid, pidfd, leader, arena, dev.get(), &made, &what));
        if (in < 0) {
            logger()->debug("pid {}: putting /dev/userfaultfd into it: {}: {}: no snapshot, its pages are copied frozen",
                            pid, what, std::strerror(static_cast<int>(-in)));
            return UniqueFd();
        }
        int64_t fd = CKPT_TRY(leader.syscall(SYS_ioctl, {static_cast<uint64_t>(in), USERFAULTFD_IOC_NEW,
                                                         O_CLOEXEC | O_NONBLOCK}));
        if (fd < 0) {
            logger()->debug("pid {}: ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW) in the process: {}: no snapshot, its "
                            "pages are copied frozen",
                            pid, std::strerror(static_cast<int>(-fd)));
            return UniqueFd();
        }
        made.push_back(fd);
        return take_uffd(pid, pidfd, fd);
    }();
    // At once, whatever happened: the process keeps neither /dev/userfaultfd nor the
    // userfaultfd (the registration lives with the file the engine took).
    for (auto it = made.rbegin(); it != made.rend(); ++it) {
        auto closed = leader.syscall_ok("close", SYS_close, {static_cast<uint64_t>(*it)});
        if (!closed && taken) taken = std::move(closed).error().context("pid {}: fd {} made by the engine", pid, *it);
    }
    if (hide) {
        auto back = leader.syscall_ok("prctl(PR_SET_DUMPABLE, 1)", SYS_prctl, {PR_SET_DUMPABLE, 1});
        if (!back && taken) taken = std::move(back).error().context("pid {}", pid);
    }
    return taken;
}

}  // namespace

Result<UniqueFd> make_snapshot_uffd(pid_t pid, RemoteThread& leader, RemoteScratch& arena, bool seccomp) {
    if (seccomp) {
        // A filter could kill the process for a system call it never makes itself.
        logger()->debug("pid {}: a seccomp filter: no snapshot, its pages are copied frozen", pid);
        return UniqueFd();
    }
    UniqueFd pidfd(sys_pidfd_open(pid, 0));
    if (!pidfd) {
        logger()->debug("pid {}: pidfd_open: {}: no snapshot, its pages are copied frozen", pid, std::strerror(errno));
        return UniqueFd();
    }
    int64_t fd = CKPT_TRY(leader.syscall(SYS_userfaultfd, {O_CLOEXEC | O_NONBLOCK}));
    if (fd == -EPERM) return uffd_through_device(pid, pidfd.get(), leader, arena);
    if (fd < 0) {
        logger()->debug("pid {}: userfaultfd() in the process: {}: no snapshot, its pages are copied frozen", pid,
                        std::strerror(static_cast<int>(-fd)));
        return UniqueFd();
    }
    UniqueFd uffd = take_uffd(pid, pidfd.get(), fd);
    // At once: the process must not keep it (nor the next dump see it).
    CKPT_TRY(leader.syscall_ok("close(userfaultfd)", SYS_close, {static_cast<uint64_t>(fd)}));
    return uffd;
}

struct Snapshot::State {
    struct Proc {
        PagePlan* plan = nullptr;
        int out = -1;  // its pages file
        UniqueFd uffd;
        std::vector<char> wp;  // per copy: in a registered mapping, so write-protected
        size_t units = 0;
        std::unique_ptr<std::atomic<uint8_t>[]> state;
    };
    std::vector<PagePlan>* plans = nullptr;
    std::vector<UniqueFd> outs;
    std::vector<Proc> procs;
    UniqueFd stop;
    std::thread handler;
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::optional<Error> first_error;
    std::atomic<uint64_t> reads_started{0}, reads_done{0}, faults{0};
    uint64_t frozen_bytes = 0;

    ~State() { shutdown(); }

    void fail(Error e) {
        std::lock_guard lock(mu);
        if (!first_error) first_error = std::move(e);
        failed = true;
    }
    void shutdown() {
        if (!handler.joinable()) return;
        uint64_t one = 1;
        if (write(stop.get(), &one, sizeof one) != sizeof one) failed = true;
        handler.join();
    }

    // fn(vaddr, len, copy) for the pieces of unit u of p's pages file.
    template <typename Fn>
    static void pieces(const Proc& p, size_t u, size_t n, Fn&& fn) {
        const auto& copies = p.plan->copies;
        uint64_t lo = u * kUnit, hi = std::min(p.plan->total, (u + n) * kUnit);
        auto it = std::upper_bound(copies.begin(), copies.end(), lo,
                                   [](uint64_t off, const PageCopy& c) { return off < c.file_off + c.len; });
        for (; it != copies.end() && it->file_off < hi; ++it) {
            uint64_t from = std::max(lo, it->file_off), to = std::min(hi, it->file_off + it->len);
            fn(it->vaddr + (from - it->file_off), to - from, static_cast<size_t>(it - copies.begin()));
        }
    }
    // fn(unit) for the units holding pages of [lo, hi) of p's address space.
    template <typename Fn>
    static void units_of(const Proc& p, uint64_t lo, uint64_t hi, Fn&& fn) {
        const auto& copies = p.plan->copies;  // in address order too
        auto it = std::upper_bound(copies.begin(), copies.end(), lo,
                                   [](uint64_t at, const PageCopy& c) { return at < c.vaddr + c.len; });
        for (; it != copies.end() && it->vaddr < hi; ++it) {
            uint64_t a = std::max(lo, it->vaddr), b = std::min(hi, it->vaddr + it->len);
            for (uint64_t u = (it->file_off + a - it->vaddr) / kUnit; u <= (it->file_off + b - it->vaddr - 1) / kUnit; ++u)
                fn(static_cast<size_t>(u));
        }
    }

    // Copies units u to u + n - 1 (claimed: Copying) and lifts their protection; Done when
    // nothing the tree did meanwhile can have changed what was read.
    Result<void> copy_units(Proc& p, size_t u, size_t n, bool fault_thread) {
        const pid_t pid = p.plan->pid;
        CKPT_TRY(copy_page_range(*p.plan, p.out, u * kUnit, (u + n) * kUnit));
        for (int tries = 0;; ++tries) {
            int err = 0;
            pieces(p, u, n, [&](uint64_t addr, uint64_t len, size_t c) {
                if (!err && p.wp[c]) err = write_protect(p.uffd.get(), addr, len, false);
            });
            if (!err) break;
            // EAGAIN: the tree is changing its mappings; its event is on its way to the fault
            // thread (which cannot wait for itself).
            if (err != EAGAIN || fault_thread || tries > 20000)
                return sys_error_code(err, fmt::format("pid {}: lifting the write protection of copied pages", pid));
            if (failed) return error("pid {}: snapshot stopped", pid);
            usleep(100);
        }
        if (!fault_thread) {
            uint64_t started = reads_started.load();
            while (reads_done.load() < started && !failed) std::this_thread::yield();
        }
        if (failed) return error("pid {}: snapshot stopped", pid);
        for (size_t k = u; k < u + n; ++k) p.state[k] = kDone;
        return ok();
    }

    void on_fault(Proc& p, uint64_t addr) {
        ++faults;
        addr &= ~(kPage - 1);
        const auto& copies = p.plan->copies;
        auto it = std::upper_bound(copies.begin(), copies.end(), addr,
                                   [](uint64_t at, const PageCopy& c) { return at < c.vaddr + c.len; });
        if (it != copies.end() && it->vaddr <= addr) {
            size_t u = static_cast<size_t>((it->file_off + addr - it->vaddr) / kUnit);
            uint8_t expect = kTodo;
            if (p.state[u].compare_exchange_strong(expect, kCopying)) {
                if (auto r = copy_units(p, u, 1, true); !r) fail(std::move(r).error());
                return;
            }
            if (expect == kCopying) return;  // its copier's lifting the protection wakes the writer
        }
        // Copied already, or not a page of the image: let the write through.
        if (write_protect(p.uffd.get(), addr, kPage, false) != 0) {
            uffdio_range r{addr, kPage};
            (void)ioctl(p.uffd.get(), UFFDIO_WAKE, &r);
        }
    }

    void on_event(Proc& p, const uffd_msg& msg) {
        auto check = [&](uint64_t lo, uint64_t hi, const char* what) {
            bool copied = true;
            units_of(p, lo, hi, [&](size_t u) { copied = copied && p.state[u] == kDone; });
            if (!copied)
                fail(error_code(EAGAIN, "pid {}: {} of {:#x}-{:#x} while its pages were being copied", p.plan->pid,
                                what, lo, hi));
        };
        switch (msg.event) {
            case UFFD_EVENT_REMOVE:
                check(msg.arg.remove.start, msg.arg.remove.end, "madvise(MADV_DONTNEED or MADV_REMOVE)");
                break;
            case UFFD_EVENT_UNMAP:
                check(msg.arg.remove.start, msg.arg.remove.end, "munmap");
                break;
            case UFFD_EVENT_REMAP:
                check(msg.arg.remap.from, msg.arg.remap.from + msg.arg.remap.len, "mremap");
                check(msg.arg.remap.to, msg.arg.remap.to + msg.arg.remap.len, "mremap");
                break;
            default:
                fail(error("pid {}: unexpected userfaultfd event {}", p.plan->pid, msg.event));
        }
    }

    void handle() {
        std::vector<pollfd> fds;
        for (auto& p : procs) fds.push_back({p.uffd.get(), POLLIN, 0});
        fds.push_back({stop.get(), POLLIN, 0});
        while (!failed) {
            if (poll(fds.data(), fds.size(), -1) < 0) {
                if (errno == EINTR) continue;
                fail(sys_error("snapshot: poll"));
                return;
            }
            if (fds.back().revents) return;
            for (size_t i = 0; i < procs.size(); ++i) {
                if (!fds[i].revents) continue;
                for (;;) {
                    ++reads_started;
                    uffd_msg msg;
                    ssize_t n = read(procs[i].uffd.get(), &msg, sizeof msg);
                    if (n != static_cast<ssize_t>(sizeof msg)) {
                        int err = errno;
                        ++reads_done;
                        if (n < 0 && err == EAGAIN) break;
                        fail(sys_error_code(n < 0 ? err : EIO, fmt::format("pid {}: read userfaultfd", procs[i].plan->pid)));
                        return;
                    }
                    if (msg.event == UFFD_EVENT_PAGEFAULT) {
                        ++reads_done;
                        on_fault(procs[i], msg.arg.pagefault.address);
                    } else {
                        on_event(procs[i], msg);
                        ++reads_done;
                    }
                }
            }
        }
    }
};

Result<void> register_private_memory(pid_t pid, int uffd, std::vector<std::pair<uint64_t, uint64_t>>* registered) {
    for (const auto& m : CKPT_TRY(read_maps(pid))) {
        if (!private_anonymous(m)) continue;
        uffdio_register reg{};
        reg.range.start = m.start;
        reg.range.len = m.end - m.start;
        reg.mode = UFFDIO_REGISTER_MODE_WP;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0 || !(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
            logger()->debug("pid {}: mapping {:#x}-{:#x} cannot be write-protected ({}): copied frozen", pid, m.start,
                            m.end, std::strerror(errno));
            continue;
        }
        // Registering may merge it with a registered neighbour: recorded as listed before.
        registered->emplace_back(m.start, m.end);
    }
    return ok();
}

Result<void> protect_registered(pid_t pid, int uffd, const std::vector<std::pair<uint64_t, uint64_t>>& registered) {
    const uint64_t t0 = monotonic_ns();
    // One call per mapping: the kernel skips what has no page table, so a huge reserved
    // mapping without pages costs little.
    for (auto [start, end] : registered)
        if (int err = write_protect(uffd, start, end - start, true))
            return sys_error_code(err, fmt::format("pid {}: write-protecting {:#x}-{:#x}", pid, start, end));
    logger()->debug("pid {}: private memory write-protected in {:.1f} ms", pid, (monotonic_ns() - t0) / 1e6);
    return ok();
}

Result<std::unique_ptr<Snapshot>> Snapshot::arm(std::vector<PagePlan>& plans, std::vector<UniqueFd> uffds) {
    auto snap = std::unique_ptr<Snapshot>(new Snapshot());
    snap->s_ = std::make_unique<State>();
    State& s = *snap->s_;
    s.plans = &plans;
    const uint64_t t_start = monotonic_ns();
    s.outs = CKPT_TRY(create_pages_files(plans));
    const uint64_t t_files = monotonic_ns();
    s.stop = UniqueFd(eventfd(0, EFD_CLOEXEC));
    if (!s.stop) return sys_error("eventfd");
    s.procs.resize(plans.size());
    for (size_t i = 0; i < plans.size(); ++i) {
        State::Proc& p = s.procs[i];
        p.plan = &plans[i];
        p.out = s.outs[i].get();
        p.uffd = std::move(uffds[i]);
        const auto& copies = p.plan->copies;
        p.wp.assign(copies.size(), 0);
        p.units = static_cast<size_t>((p.plan->total + kUnit - 1) / kUnit);
        p.state = std::make_unique<std::atomic<uint8_t>[]>(p.units);
        for (size_t u = 0; u < p.units; ++u) p.state[u] = kTodo;
        std::vector<char> keep_writable(p.units, 0);  // units the kernel may write at a thread's exit
        for (uint64_t a : p.plan->exit_writes) {
            auto it = std::upper_bound(copies.begin(), copies.end(), a,
                                       [](uint64_t at, const PageCopy& c) { return at < c.vaddr + c.len; });
            if (it != copies.end() && it->vaddr <= a) {
                keep_writable[(it->file_off + a - it->vaddr) / kUnit] = 1;
                continue;
            }
            // Not a page of the image (a zero page...), but maybe protected with its mapping.
            const uint64_t page = a & ~(kPage - 1);
            for (auto [lo, hi] : p.plan->registered)
                if (lo <= page && page < hi) {
                    if (int err = write_protect(p.uffd.get(), page, kPage, false))
                        return sys_error_code(err, fmt::format("pid {}: lifting the write protection at {:#x}",
                                                               p.plan->pid, page));
                    break;
                }
        }
        // Copies inside a registered mapping are write-protected already (the whole mapping,
        // protect_private_memory).
        const auto& reg = p.plan->registered;  // in address order, as copies
        auto r = reg.begin();
        for (size_t c = 0; c < copies.size(); ++c) {
            while (r != reg.end() && r->second <= copies[c].vaddr) ++r;
            p.wp[c] = r != reg.end() && r->first <= copies[c].vaddr && copies[c].vaddr + copies[c].len <= r->second;
        }
        // Units with pages that cannot be protected, or that must stay writable, are copied
        // now, and their protection lifted.
        for (size_t u = 0; u < p.units; ++u) {
            bool all_wp = true;
            State::pieces(p, u, 1, [&](uint64_t, uint64_t, size_t c) { all_wp = all_wp && p.wp[c]; });
            if (all_wp && !keep_writable[u]) continue;
            CKPT_TRY(copy_page_range(*p.plan, p.out, u * kUnit, (u + 1) * kUnit));
            s.frozen_bytes += std::min(p.plan->total, (u + 1) * kUnit) - u * kUnit;
            int err = 0;
            uint64_t at = 0;
            State::pieces(p, u, 1, [&](uint64_t addr, uint64_t len, size_t c) {
                if (!err && p.wp[c] && (err = write_protect(p.uffd.get(), addr, len, false))) at = addr;
            });
            if (err) return sys_error_code(err, fmt::format("pid {}: lifting the write protection at {:#x}", p.plan->pid, at));
            p.state[u] = kDone;
        }
    }
    s.handler = std::thread([&s] { s.handle(); });
    logger()->debug("snapshot armed: files {:.1f} ms, {} bytes copied frozen {:.1f} ms", (t_files - t_start) / 1e6,
                    s.frozen_bytes, (monotonic_ns() - t_files) / 1e6);
    return snap;
}

Snapshot::~Snapshot() = default;

Result<SnapshotStats> Snapshot::finish(int compress_level) {
    State& s = *s_;
    std::vector<std::pair<size_t, size_t>> work;  // (process, unit)
    for (size_t i = 0; i < s.procs.size(); ++i)
        for (size_t u = 0; u < s.procs[i].units; ++u) work.emplace_back(i, u);
    std::atomic<size_t> next{0};
    auto copier = [&] {
        for (size_t k; !s.failed && (k = next++) < work.size();) {
            auto [i, u] = work[k];
            State::Proc& p = s.procs[i];
            uint8_t expect = kTodo;
            if (!p.state[u].compare_exchange_strong(expect, kCopying)) continue;
            // With the units after it still to do (the other copier, finding them taken,
            // passes them by).
            size_t n = 1;
            for (uint8_t todo = kTodo; n < kUnitsPerStep && u + n < p.units &&
                                       p.state[u + n].compare_exchange_strong(todo, kCopying);
                 todo = kTodo)
                ++n;
            if (auto r = s.copy_units(p, u, n, false); !r) s.fail(std::move(r).error());
        }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < kCopiers; ++t) pool.emplace_back(copier);
    copier();
    for (auto& t : pool) t.join();
    // Units the fault thread took may still be on their way.
    for (auto [i, u] : work)
        while (!s.failed && s.procs[i].state[u] != kDone) usleep(100);
    s.shutdown();
    if (s.failed) {
        std::lock_guard lock(s.mu);
        if (!s.first_error) return error("snapshot: the fault thread could not be stopped");
        return std::move(*s.first_error);
    }
    // Closing the userfaultfds unregisters the mappings and lifts what protection is left.
    for (auto& p : s.procs) p.uffd.reset();
    if (compress_level) CKPT_TRY(compress_page_files(*s.plans, s.outs, compress_level));
    else CKPT_TRY(checksum_page_data(*s.plans, s.outs));
    return SnapshotStats{s.faults.load(), s.frozen_bytes};
}

}  // namespace ckpt::engine
