// Dump: freeze the tree, record every process, write the images, then resume or kill.
// Any failure resumes the tree exactly as it was.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <thread>

#include "ckpt/arch/arch.h"
#include "ckpt/clock.h"
#include "ckpt/engine/engine.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/image_names.h"
#include "dump_context.h"
#include "fd_table.h"
#include "inventory.pb.h"
#include "ipc_ns.h"
#include "image_stream.h"
#include "mem_track.h"
#include "memory.h"
#include "proc.h"
#include "ptrace_ctl.h"
#include "sched_state.h"
#include "snapshot.h"
#include "task_state.h"
#include "threads.h"

namespace ckpt::engine {
namespace {

// Every thread of the tree, stopped under ptrace. Detaching resumes them.
class FrozenTree {
public:
    ~FrozenTree() { release(); }
    std::vector<FrozenProcess> processes;  // parents before children

    Result<void> freeze(pid_t root, int timeout_ms) {
        // Seize until a pass finds no new thread or child (the tree may be forking, and its
        // processes exiting: what exits meanwhile is seen as it is at the next pass).
        int half_dead_passes = 0;
        for (int pass = 0;; ++pass) {
            bool grew = false;
            std::vector<pid_t> queue{root};
            std::vector<FrozenProcess> order;
            while (!queue.empty()) {
                pid_t pid = queue.front();
                queue.erase(queue.begin());
                auto st = read_stat(pid);
                if (!st && pid != root && gone(pid, pid)) {
                    grew = true;  // reaped by its parent since it was listed
                    continue;
                }
                if (!st) return std::move(st).error().context("pid {}", pid);
                FrozenProcess p;
                p.pid = pid;
                p.stat = *st;
                p.zombie = st->state == 'Z';
                if (p.zombie) {
                    // A leader that called pthread_exit is a zombie while its threads run on.
                    std::string live = CKPT_TRY(live_threads_of_zombie(pid));
                    if (!live.empty()) {
                        if (++half_dead_passes > 20)
                            return error_code(ENOTSUP,
                                              "pid {}: its thread-group leader has exited (pthread_exit) while its "
                                              "threads {}run on: such a process cannot be dumped",
                                              pid, live);
                        usleep(1000);  // or the whole group is exiting: let it finish
                        grew = true;
                    }
                } else {
                    for (pid_t tid : CKPT_TRY(read_tasks(pid))) {
                        if (!seized_.count(tid)) {
                            auto sig = seize_and_stop(tid, timeout_ms);
                            grew = true;
                            if (!sig && gone(pid, tid)) continue;  // exited meanwhile
                            if (!sig) return std::move(sig).error().context("pid {}", pid);
                            seized_.insert(tid);
                            stop_of_[tid] = *sig;
                        }
                        p.threads.push_back(tid);
                    }
                    for (pid_t c : CKPT_TRY(read_children(pid))) queue.push_back(c);
                }
                order.push_back(std::move(p));
            }
            processes = std::move(order);
            if (!grew && pass > 0) break;
            if (pass > 100) return error("pid {}: the tree keeps changing; cannot freeze it", root);
        }
        for (auto& p : processes) {
            if (p.zombie) continue;
            for (pid_t tid : p.threads) p.thread_stops.push_back(stop_of_[tid]);
            CKPT_TRY(settle_stop_state(p));
        }
        return ok();
    }

    void release() {
        for (pid_t tid : seized_) ptrace(PTRACE_DETACH, tid, 0, 0);
        seized_.clear();
    }

    Result<void> kill_all() {
        for (auto& p : processes) kill(p.pid, SIGKILL);
        release();
        return ok();
    }

private:
    // A thread (or process) that has exited, or is exiting: no longer to be seized.
    static bool gone(pid_t pid, pid_t tid) {
        auto st = read_stat(pid, tid);
        return !st || st->state == 'Z' || st->state == 'X';
    }
    // The threads, other than the leader, of a zombie leader that are neither exiting nor
    // gone ("" when none).
    static Result<std::string> live_threads_of_zombie(pid_t pid) {
        auto tasks = read_tasks(pid);
        if (!tasks) return std::string();  // reaped meanwhile
        std::string live;
        for (pid_t tid : *tasks)
            if (tid != pid && !gone(pid, tid)) live += std::to_string(tid) + " ";
        return live;
    }

    std::set<pid_t> seized_;
    std::map<pid_t, int> stop_of_;  // the stop each seized thread reported
};

// The pids the images record are the tree's own, as its processes see themselves
// (getpid, gettid, getpgid, getsid): the innermost level of NSpid, NSpgid and NSsid, in the
// pid namespace of the root. So a tree restored with --new-pidns and dumped from the host
// keeps its pids. A process in a namespace below the root's would need its other levels
// recorded too: refused, naming it, until nested namespaces are supported. own_pidns says
// whether the tree's namespace is the engine's (its numbers are the engine's then).
Result<void> read_tree_pids(FrozenTree& tree, pid_t root, bool* own_pidns) {
    const ino_t ns = CKPT_TRY_CTX(read_ns_inode(root, "pid"), "pid {}", root);
    *own_pidns = ns == CKPT_TRY_CTX(read_ns_inode(getpid(), "pid"), "the engine");
    auto innermost = [](const std::vector<pid_t>& levels) { return levels.back(); };
    size_t root_levels = 0;
    std::map<pid_t, pid_t> ns_of;  // pid or tid, the engine's -> the tree's
    for (auto& p : tree.processes) {
        ProcStatus s = CKPT_TRY_CTX(read_status(p.pid), "pid {}", p.pid);
        if (s.nspid.empty() || s.nspgid.size() != s.nspid.size() || s.nssid.size() != s.nspid.size())
            return error_code(ENOTSUP, "pid {}: /proc/{}/status lacks the NSpid, NSpgid and NSsid levels (Linux 4.1)",
                              p.pid, p.pid);
        if (p.pid == root) root_levels = s.nspid.size();  // the first, parents come first
        bool nested = s.nspid.size() != root_levels;
        // A zombie has no namespaces left to look at: its levels say it.
        if (!nested && !p.zombie) nested = CKPT_TRY_CTX(read_ns_inode(p.pid, "pid"), "pid {}", p.pid) != ns;
        if (nested)
            return error_code(ENOTSUP,
                              "pid {} is in a nested pid namespace (pid {} there) below the one of the tree's root "
                              "{}: nested pid namespaces are not supported",
                              p.pid, innermost(s.nspid), root);
        // Strict seccomp mode: the kernel kills the thread at any call but read, write, exit
        // and sigreturn, so the dump's first injected call would kill it (per thread, below).
        if (!p.zombie && s.seccomp_mode == 1)
            return error_code(ENOTSUP,
                              "pid {} is in strict seccomp mode (SECCOMP_MODE_STRICT): any call the dump makes "
                              "in it would kill it; not supported",
                              p.pid);
        if (!p.zombie) {
            // After unshare(CLONE_NEWPID) its children would be born in a namespace of their
            // own (ENOENT until the first one is), which a restore would not make again.
            auto children = read_ns_inode(p.pid, "pid_for_children");
            if (!children && children.error().code() != ENOENT)
                return std::move(children).error().context("pid {}", p.pid);
            if (!children || *children != ns)
                return error_code(ENOTSUP,
                                  "pid {} has unshared the pid namespace of its children (unshare(CLONE_NEWPID)): "
                                  "they would be in a nested pid namespace, which is not supported",
                                  p.pid);
        }
        p.ns_pid = innermost(s.nspid);
        p.ns_pgid = innermost(s.nspgid);
        p.ns_sid = innermost(s.nssid);
        p.ns_threads.clear();
        p.thread_seccomp_modes.clear();
        for (pid_t tid : p.threads) {
            pid_t ns_tid = p.ns_pid;
            int seccomp_mode = s.seccomp_mode;
            if (tid != p.pid) {
                ProcStatus ts = CKPT_TRY_CTX(read_status(p.pid, tid), "pid {} (thread {})", p.pid, tid);
                if (ts.nspid.size() != s.nspid.size())
                    return error_code(EINVAL, "pid {} (thread {}): NSpid has {} levels, its process {}", p.pid, tid,
                                      ts.nspid.size(), s.nspid.size());
                if (ts.seccomp_mode == 1)
                    return error_code(ENOTSUP,
                                      "pid {} (thread {}) is in strict seccomp mode (SECCOMP_MODE_STRICT): any call "
                                      "the dump makes in it would kill it; not supported",
                                      p.pid, tid);
                ns_tid = innermost(ts.nspid);
                seccomp_mode = ts.seccomp_mode;
            }
            p.ns_threads.push_back(ns_tid);
            p.thread_seccomp_modes.push_back(seccomp_mode);
            ns_of[tid] = ns_tid;
        }
        ns_of[p.pid] = p.ns_pid;  // a zombie has no threads listed
    }
    for (auto& p : tree.processes) {
        if (p.pid == root) {
            p.ns_ppid = 0;
            continue;
        }
        auto parent = ns_of.find(p.stat.ppid);
        if (parent == ns_of.end()) return error("pid {}: its parent {} is not in the tree", p.pid, p.stat.ppid);
        p.ns_ppid = parent->second;
    }
    return ok();
}

// The images' pids and tids of one process, from the engine's numbers the resource kinds
// recorded (a timer's target is one of its threads).
// The owner of an fd's signals (F_SETOWN) as the tree sees it; it must be of the tree, which
// a restore makes again: one of its threads, processes, or a group one of them leads.
Result<pid_t> owner_in_tree(const FrozenTree& tree, uint32_t type, pid_t owner) {
    for (const auto& q : tree.processes) {
        if (type == F_OWNER_TID) {
            for (size_t i = 0; i < q.threads.size(); ++i)
                if (q.threads[i] == owner) return q.ns_threads[i];
        } else if (q.pid == owner && (type == F_OWNER_PID || q.ns_pgid == q.ns_pid)) {
            return q.ns_pid;
        }
    }
    const char* what = type == F_OWNER_TID ? "thread" : type == F_OWNER_PGRP ? "process group" : "process";
    return error_code(ENOTSUP, "its owner (F_SETOWN) is {} {}, outside the dumped tree: it cannot be restored", what,
                      owner);
}

Result<void> record_tree_pids(const FrozenTree& tree, const FrozenProcess& p, bool own_pidns, image::TaskCore* core,
                              image::FdTable* fds) {
    auto tid_in_tree = [&](pid_t tid) -> Result<pid_t> {
        for (size_t i = 0; i < p.threads.size(); ++i)
            if (p.threads[i] == tid) return p.ns_threads[i];
        // The engine's own numbers are the tree's: kept as read, as ever.
        if (own_pidns) return tid;
        return error_code(ENOTSUP, "pid {}: tid {} is not a thread of the process: it cannot be recorded as the "
                                   "tree's pid namespace sees it", p.pid, tid);
    };
    core->set_pid(p.ns_pid);
    for (auto& tc : *core->mutable_threads()) tc.set_tid(CKPT_TRY(tid_in_tree(tc.tid())));
    for (auto& t : *core->mutable_posix_timers())
        if (t.notify_tid() != 0)
            t.set_notify_tid(CKPT_TRY_CTX(tid_in_tree(t.notify_tid()), "POSIX timer {}", t.id()));
    fds->set_pid(p.ns_pid);
    for (auto& f : *fds->mutable_fds()) {
        if (f.kind() == image::Fd::PIDFD) {
            // Only a process of the tree comes back to be named again (zombies included).
            const FrozenProcess* named = nullptr;
            for (const auto& q : tree.processes)
                if (q.pid == f.pidfd().pid()) named = &q;
            if (!named)
                return error_code(ENOTSUP, "pid {}: fd {} is a pidfd of process {}, outside the dumped tree: refused",
                                  p.pid, f.fd(), f.pidfd().pid());
            f.mutable_pidfd()->set_pid(named->ns_pid);
        }
        if (f.has_async() && f.async().owner() != 0)
            f.mutable_async()->set_owner(CKPT_TRY_CTX(owner_in_tree(tree, f.async().owner_type(), f.async().owner()),
                                                      "pid {}: fd {}", p.pid, f.fd()));
    }
    return ok();
}

// A file-backed executable mapping to place the trap code in (not the vDSO: the engine
// must leave no trace there).
Result<uint64_t> trap_site_address(pid_t pid) {
    for (const auto& m : CKPT_TRY(read_maps(pid)))
        if (m.exec && m.inode != 0 && !m.path.empty() && m.path[0] == '/') return m.start;
    return error("pid {}: no executable file mapping to run injected system calls from", pid);
}

// One dump of a tree: what the dump of every process shares.
struct DumpShared {
    const DumpOptions& opts;
    const image::ImageDir& dir;
    const FrozenTree& tree;
    bool own_pidns;
    bool own_ipcns;  // the tree has its own IPC namespace (ipc_ns.h)
    FileRegistry& files;
    const DumpExclusions& ex;
    FdDumpState& fds;
    // The pages are to be copied by a copy-on-write snapshot: every process has its
    // userfaultfd (false once one cannot).
    bool snapshot = false;
    // Where the frozen time goes, per phase, summed over the processes (ns; -vv).
    struct Phases {
        uint64_t inside = 0, uffd = 0, memory = 0, fds = 0, images = 0;
    } phases;
    // Incremental dumps (mem_track.h): this dump's id; the previous dump's folder name.
    uint64_t dump_id = 0;
    std::string prev_name;
};

// One process being dumped (the dump's side of RestoreTask): its images as they are
// recorded. The page data is copied later, for the whole tree at once (plan).
struct DumpTask {
    DumpTask(DumpShared& s, FrozenProcess& proc) : shared(s), p(proc) {}
    ~DumpTask() { join_protector(); }
    DumpShared& shared;
    FrozenProcess& p;
    std::vector<FrozenProcess*> live_children;  // their wait state is read from p
    // Its parent, dumped before it, when alive in the tree: pages they still share
    // copy-on-write are recorded as inherited (memory.cpp).
    std::optional<ForkParent> fork_parent;
    image::TaskCore core;
    image::MmCore mm;
    image::FdTable fds;
    image::PageMap pagemap;
    PagePlan plan;
    uint64_t brk = 0;
    UniqueFd uffd;  // for the snapshot
    MemTrack track;  // dump --track-mem, --prev-images-dir
    // Registers and write-protects its private memory (the snapshot) while the rest is
    // recorded; joined before the snapshot is armed.
    std::thread protector;
    std::vector<std::pair<uint64_t, uint64_t>> registered;
    std::optional<Error> protect_error;
    void join_protector() {
        if (protector.joinable()) protector.join();
    }
};

// What only the process can tell, asked from inside it through injected system calls (its
// threads attached one after the other).
Result<void> dump_from_inside(DumpTask& t, RemoteThread& leader, RemoteScratch& arena, uint64_t code,
                              int* held_stops) {
    const FrozenProcess& p = t.p;
    const DumpExclusions& ex = t.shared.ex;
    t.brk = static_cast<uint64_t>(CKPT_TRY(leader.syscall(SYS_brk, {0})));
    CKPT_TRY(dump_thp_disable(leader, &t.mm));
    CKPT_TRY(dump_sigactions(leader, arena, code + TrapCodeSite::kBatchOffset, &t.core));
    CKPT_TRY(dump_creds(p, leader, arena, &t.core));
    CKPT_TRY(dump_proc_attrs(p.pid, &t.core));
    CKPT_TRY(dump_membarrier(leader, &t.core));
    CKPT_TRY(dump_timers(p, leader, arena, &t.core));
    for (FrozenProcess* c : t.live_children) CKPT_TRY(dump_child_wait_state(leader, arena, *c));
    for (pid_t tid : p.threads) {
        if (ex.threads.count(tid)) continue;
        if (tid == p.pid) {
            CKPT_TRY_CTX(dump_thread(p.pid, leader, arena, t.core.add_threads()), "thread {}", tid);
            continue;
        }
        auto rt = CKPT_TRY_CTX(RemoteThread::attach(tid, code), "thread {}", tid);
        image::ThreadCore* tc = t.core.add_threads();
        auto r = dump_thread(p.pid, rt, arena, tc);
        if (r) r = dump_thread_creds(p.pid, rt, t.core.creds(), tc);
        auto back = rt.restore_state();
        *held_stops += rt.held_stops();
        if (!r) return std::move(r).error().context("thread {}", tid);
        if (!back) return std::move(back).error();
    }
    if (t.shared.opts.track_mem || t.track.prev) {
        const std::set<int> found = t.shared.fds.engine_fds[p.pid];
        CKPT_TRY(prepare_tracker(p.pid, leader, found, p.status.seccomp_mode != 0, &t.track,
                                 &t.shared.fds.engine_fds[p.pid]));
    }
    if (t.shared.snapshot) {
        const uint64_t t_uffd = monotonic_ns();
        t.uffd = CKPT_TRY(make_snapshot_uffd(p.pid, leader, arena, p.status.seccomp_mode != 0));
        t.shared.phases.uffd += monotonic_ns() - t_uffd;
        if (!t.uffd) t.shared.snapshot = false;
    }
    return ok();
}

// Runs body(leader, arena, code, &held_stops) inside the frozen process p through injected
// system calls (a page of scratch memory mapped for it), then puts back everything the
// injection changed: registers, the scratch page, the trap code, stops it held back.
template <typename Body>
Result<void> inside_process(const FrozenProcess& p, Body&& body) {
    // Injected syscalls would take a pending SIGSTOP: held back, then put back as it was.
    const PendingStops stops_before = CKPT_TRY(read_pending_stops(p));
    int held_stops = 0;
    uint64_t code = CKPT_TRY(trap_site_address(p.pid));
    auto site = CKPT_TRY(TrapCodeSite::install(p.pid, code));
    {
        auto leader = CKPT_TRY(RemoteThread::attach(p.pid, code));
        // Room for a batch's table of calls and their results (signals.cpp: 62 of each).
        constexpr uint64_t kScratch = 16384;
        int64_t scratch = CKPT_TRY(leader.syscall_ok("mmap(scratch)", SYS_mmap,
                                                     {0, kScratch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                                      static_cast<uint64_t>(-1), 0}));
        uint64_t s = static_cast<uint64_t>(scratch);
        RemoteScratch arena(p.pid, s, kScratch);
        Result<void> r = body(leader, arena, code, &held_stops);
        auto unmapped = leader.syscall_ok("munmap(scratch)", SYS_munmap, {s, kScratch});
        auto restored = leader.restore_state();
        held_stops += leader.held_stops();
        auto put_back = put_back_stops(p, stops_before, held_stops);
        if (!r) return std::move(r).error().context("pid {}", p.pid);
        if (!put_back) return std::move(put_back).error();
        if (!unmapped) return std::move(unmapped).error();
        if (!restored) return std::move(restored).error();
    }
    return site.remove();
}

// Records one process and writes its images but the page map, whose page data is copied
// later for the whole tree at once (t.plan).
Result<void> dump_process(DumpTask& t) {
    const FrozenProcess& p = t.p;
    DumpShared& sh = t.shared;
    t.core.set_exit_signal(p.stat.exit_signal);
    const uint64_t t_inside = monotonic_ns();
    CKPT_TRY(inside_process(p, [&t](RemoteThread& leader, RemoteScratch& arena, uint64_t code, int* held_stops) {
        return dump_from_inside(t, leader, arena, code, held_stops);
    }));
    CKPT_TRY(dump_pending(p.pid, &t.core));
    CKPT_TRY(dump_seccomp(p, &t.core));
    // Trackers it holds that this dump does not arm: recorded, so that a dump naming this
    // one knows them (else it would refuse them as an application's own).
    if (!t.track.rearm)
        for (int fd : sh.fds.engine_fds[p.pid]) {
            struct stat st{};
            if (stat((proc_path(p.pid, "fd/") + std::to_string(fd)).c_str(), &st) != 0)
                return sys_error("pid {}: fd {}: stat of a write tracker", p.pid, fd);
            t.mm.add_held_tracker_inos(st.st_ino);
        }
    if (t.uffd) {
        // Nothing more is run inside the process: its private memory is registered (before
        // its mappings are read) and write-protected as the rest is recorded.
        const uint64_t t_reg = monotonic_ns();
        CKPT_TRY(register_private_memory(p.pid, t.uffd.get(), &t.registered));
        sh.phases.uffd += monotonic_ns() - t_reg;
        t.protector = std::thread([&t, pid = p.pid, uffd = t.uffd.get()] {
            if (auto r = protect_registered(pid, uffd, t.registered); !r) t.protect_error = std::move(r).error();
        });
    }

    const uint64_t t_memory = monotonic_ns();
    sh.phases.inside += t_memory - t_inside;
    const bool tracking = sh.opts.track_mem || t.track.prev;
    CKPT_TRY(dump_memory(p.pid, t.brk, sh.files, sh.ex, sh.dir, &t.mm, &t.pagemap, &t.plan,
                         t.fork_parent ? &*t.fork_parent : nullptr, sh.own_ipcns, tracking ? &t.track : nullptr));
    t.pagemap.set_dump_id(sh.dump_id);
    if (t.track.rearm) {
        t.mm.set_tracker_fd(t.track.fd);
        t.mm.set_tracker_ino(t.track.ino);
    }
    const auto& runs = t.pagemap.runs();
    if (std::any_of(runs.begin(), runs.end(), [](const image::PageRun& r) { return r.in_parent(); })) {
        t.pagemap.set_parent_dir(sh.prev_name);
        t.pagemap.set_parent_dump_id(t.track.prev->pm.dump_id());
        t.pagemap.set_parent_pagemap_xxh3(t.track.prev->pagemap_xxh3);
        t.pagemap.set_chain_length(t.track.prev->pm.chain_length() + 1);
    }
    const uint64_t t_fds = monotonic_ns();
    sh.phases.memory += t_fds - t_memory;
    CKPT_TRY(dump_fds(p.pid, sh.fds, &t.fds));
    // Last: the resource kinds above use the recorded tids as the engine's (ptrace).
    CKPT_TRY(record_tree_pids(sh.tree, p, sh.own_pidns, &t.core, &t.fds));
    const uint64_t t_images = monotonic_ns();
    sh.phases.fds += t_images - t_fds;

    CKPT_TRY(image::write_image(sh.dir, image::names::core(p.ns_pid), image::Kind::Core, t.core));
    CKPT_TRY(image::write_image(sh.dir, image::names::mm(p.ns_pid), image::Kind::Mm, t.mm));
    CKPT_TRY(image::write_image(sh.dir, image::names::fds(p.ns_pid), image::Kind::Fds, t.fds));
    sh.phases.images += monotonic_ns() - t_images;
    return ok();
}

// The restore makes each process from its recorded parent, then gives it its own session
// (setsid) or process group (setpgid), or moves it into a group led in the tree. A session
// other than its own or its parent's, or a group whose leader is not in the tree (exited, or
// moved to another group) and is not its parent's, cannot be made: refused by name.
Result<void> check_groups(const FrozenTree& tree) {
    std::map<pid_t, const FrozenProcess*> by_ns;
    for (const auto& p : tree.processes) by_ns[p.ns_pid] = &p;
    for (const auto& p : tree.processes) {
        if (&p == &tree.processes.front()) continue;  // the root's groups may be led from outside
        auto up = by_ns.find(p.ns_ppid);
        if (up == by_ns.end()) return error("pid {}: its parent {} is not in the tree", p.pid, p.ns_ppid);
        const FrozenProcess* parent = up->second;
        const char* what = p.zombie ? "zombie " : "";
        if (p.ns_sid != p.ns_pid && p.ns_sid != parent->ns_sid)
            return error_code(ENOTSUP,
                              "{}pid {}: its session {} is neither its own nor its parent {}'s ({}): a restore "
                              "cannot put it there",
                              what, p.pid, p.ns_sid, parent->pid, parent->ns_sid);
        if (p.ns_pgid == p.ns_pid || p.ns_pgid == parent->ns_pgid) continue;
        auto leader = by_ns.find(p.ns_pgid);
        if (leader == by_ns.end() || leader->second->ns_pgid != p.ns_pgid || leader->second->ns_sid != p.ns_sid)
            return error_code(ENOTSUP,
                              "{}pid {}: its process group {} has no leader in the tree (it exited or changed "
                              "groups) and is not its parent's: a restore cannot make that group",
                              what, p.pid, p.ns_pgid);
    }
    return ok();
}

// Processes sharing what only threads of one process share here: one address space (clone
// with CLONE_VM, not CLONE_THREAD: a vfork child before its exec, some runtimes' helpers), or
// one cwd, root and umask (CLONE_FS). Each would be restored with a copy of its own: refused.
// For each, the frozen processes sorted by that object (kcmp orders them), neighbours compared.
Result<void> check_unshared(const FrozenTree& tree) {
    struct Shared {
        int kcmp_type;
        const char* kcmp_name;
        const char* what;
    };
    static constexpr Shared kShared[] = {
        {1, "KCMP_VM", "one address space (clone with CLONE_VM, as vfork makes before its child calls exec)"},
        {3, "KCMP_FS", "one cwd, root and umask (clone with CLONE_FS)"},
    };
    std::vector<pid_t> live;
    for (const auto& p : tree.processes)
        if (!p.zombie) live.push_back(p.pid);
    for (const Shared& kind : kShared) {
        std::optional<Error> failed;
        auto cmp = [&](pid_t a, pid_t b) -> long {
            long r = syscall(SYS_kcmp, a, b, kind.kcmp_type, 0, 0);
            if (r < 0 && !failed) failed = sys_error("kcmp(pid {}, pid {}, {})", a, b, kind.kcmp_name);
            return r;
        };
        std::sort(live.begin(), live.end(), [&](pid_t a, pid_t b) { return cmp(a, b) == 1; });
        for (size_t i = 1; i < live.size() && !failed; ++i)
            if (cmp(live[i - 1], live[i]) == 0)
                return error_code(ENOTSUP, "pid {} and pid {} share {} without being threads of one process: not supported",
                                  std::min(live[i - 1], live[i]), std::max(live[i - 1], live[i]), kind.what);
        if (failed) return std::move(*failed);
    }
    return ok();
}

// A dump by an engine that is not root takes only processes its user could trace without
// privilege: it may hold CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE (ambient, as the user),
// which would let it copy a root or setuid process of the user's tree (a `su` child) into
// the user's folder. Checked on the frozen tree, so nothing can change, and before anything
// else is read from it or injected into it.
// CRIU's action scripts: /bin/sh -c SCRIPT with CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR and
// CRTOOLS_INIT_PID in its environment (CRIU's names), waited for; any failure is the dump's.
// The environment is built before fork: the engine may have threads, so the child only execs.
Result<void> run_action_scripts(const DumpOptions& opts, const char* action) {
    for (const auto& script : opts.action_scripts) {
        std::vector<std::string> env{std::string("CRTOOLS_SCRIPT_ACTION=") + action,
                                     "CRTOOLS_IMAGE_DIR=" + opts.image_dir,
                                     "CRTOOLS_INIT_PID=" + std::to_string(opts.root)};
        for (char** e = environ; *e; ++e)
            if (std::strncmp(*e, "CRTOOLS_", 8) != 0) env.emplace_back(*e);
        std::vector<char*> envp;
        for (auto& e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        const char* argv[] = {"sh", "-c", script.c_str(), nullptr};
        pid_t pid = fork();
        if (pid < 0) return sys_error("action script {} ({}): fork", script, action);
        if (pid == 0) {
            execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
            _exit(127);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR) return sys_error("action script {} ({}): waitpid", script, action);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
        if (WIFEXITED(st))
            return error_code(EIO, "action script {} ({}) exited {}", script, action, WEXITSTATUS(st));
        return error_code(EIO, "action script {} ({}) was killed by signal {}", script, action, WTERMSIG(st));
    }
    return ok();
}

// The words the kernel writes into a process when one of its threads exits: each thread's
// clear_child_tid and the futexes on its robust list (walked as the kernel walks it, up to
// its limit; a list that cannot be read is one the kernel cannot use either).
std::vector<uint64_t> exit_writes(pid_t pid, const image::TaskCore& core) {
    std::vector<uint64_t> out;
    for (const auto& tc : core.threads()) {
        if (tc.clear_child_tid()) out.push_back(tc.clear_child_tid());
        uint64_t head = tc.robust_list();
        if (!head) continue;
        uint64_t h[3];  // struct robust_list_head: next, futex_offset, list_op_pending
        if (!read_remote(pid, head, h, sizeof h)) continue;
        const auto off = static_cast<int64_t>(h[1]);
        if (h[2]) out.push_back(h[2] + static_cast<uint64_t>(off));
        uint64_t entry = h[0];
        for (int n = 0; entry && entry != head && n < 2048; ++n) {  // ROBUST_LIST_LIMIT
            out.push_back(entry + static_cast<uint64_t>(off));
            if (!read_remote(pid, entry, &entry, sizeof entry)) break;
        }
    }
    return out;
}

Result<void> check_own_processes(const FrozenTree& tree) {
    const uid_t uid = geteuid();
    const gid_t gid = getegid();
    if (uid == 0) return ok();
    for (const auto& p : tree.processes) {
        if (p.zombie) continue;  // nothing is read from a zombie but its exit status
        for (pid_t tid : p.threads) {
            std::string who = tid == p.pid ? fmt::format("pid {}", p.pid) : fmt::format("pid {} (thread {})", p.pid, tid);
            ProcStatus s = CKPT_TRY_CTX(read_status(p.pid, tid), "{}", who);
            for (uint32_t u : s.uid)
                if (u != uid)
                    return error_code(EPERM, "{} runs as uid {} (the dump runs as uid {} and takes only that user's processes)",
                                      who, u, uid);
            for (uint32_t g : s.gid)
                if (g != gid)
                    return error_code(EPERM, "{} runs as gid {} (the dump runs as gid {} and takes only that group's processes)",
                                      who, g, gid);
            if (s.cap_prm || s.cap_eff || s.cap_inh || s.cap_amb)
                return error_code(EPERM,
                                  "{} holds capabilities (permitted {:#x}, effective {:#x}, inheritable {:#x}, ambient "
                                  "{:#x}; the dump runs as uid {} and takes only processes without any)",
                                  who, s.cap_prm, s.cap_eff, s.cap_inh, s.cap_amb, uid);
            // The kernel gives the /proc files of a process that is not dumpable to root
            // (task_dump_owner): its owner says so without running anything inside it.
            std::string status = proc_task_path(p.pid, tid, "status");
            struct stat st;
            if (stat(status.c_str(), &st) != 0) return sys_error("stat {}", status);
            if (st.st_uid != uid)
                return error_code(EPERM,
                                  "{} is not dumpable (it changed identity or cleared PR_SET_DUMPABLE; its /proc "
                                  "files belong to uid {}): the dump runs as uid {} and takes only what that user "
                                  "may trace",
                                  who, st.st_uid, uid);
        }
    }
    return ok();
}

}  // namespace

namespace {

// The folder of the previous dump (dump --prev-images-dir): beside the images folder, or a
// "cousin" (a folder in a folder beside the images folder's: set-000041/member-3 for
// set-000042/member-3), not a link, made by a dump that recorded an id. Returns what the
// images record and the restore opens there: its name, or "FOLDER/NAME"; *inv gets its
// inventory.
Result<std::string> prev_dump_name(const DumpOptions& opts, image::Inventory* inv) {
    auto split_path = [](std::string p) {
        while (p.size() > 1 && p.back() == '/') p.pop_back();
        size_t slash = p.rfind('/');
        if (slash == std::string::npos) return std::make_pair(std::string("."), p);
        return std::make_pair(slash == 0 ? std::string("/") : p.substr(0, slash), p.substr(slash + 1));
    };
    auto plain = [](const std::string& n) { return !n.empty() && n != "." && n != ".." && n != "/"; };
    auto same = [](const std::string& x, const std::string& y) {
        char a[PATH_MAX], b[PATH_MAX];
        return realpath(x.c_str(), a) && realpath(y.c_str(), b) && std::strcmp(a, b) == 0;
    };
    auto is_folder = [](const std::string& p) {
        struct stat st{};
        return lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    };
    auto [prev_parent, prev] = split_path(opts.prev_images_dir);
    auto [parent, self] = split_path(opts.image_dir);
    auto [prev_grand, prev_folder] = split_path(prev_parent);
    auto [grand, folder] = split_path(parent);
    std::string ref;
    if (plain(prev) && same(prev_parent, parent)) {
        if (prev == self)
            return error_code(EINVAL, "--prev-images-dir {}: is the images folder itself", opts.prev_images_dir);
        ref = prev;
    } else if (plain(prev) && plain(prev_folder) && plain(folder) && same(prev_grand, grand)) {
        if (!is_folder(prev_parent))
            return error_code(ENOTDIR, "--prev-images-dir {}: {} is not a folder (a link is not followed)",
                              opts.prev_images_dir, prev_parent);
        ref = prev_folder + "/" + prev;
    } else {
        return error_code(EINVAL, "--prev-images-dir {}: must be a folder beside the images folder {}, or in a folder "
                                  "beside its folder (the images record its name, and the restore opens it there)",
                          opts.prev_images_dir, opts.image_dir);
    }
    if (!is_folder(opts.prev_images_dir)) {
        struct stat st{};
        if (lstat(opts.prev_images_dir.c_str(), &st) != 0) return sys_error("--prev-images-dir {}", opts.prev_images_dir);
        return error_code(ENOTDIR, "--prev-images-dir {}: not a folder (a link is not followed)", opts.prev_images_dir);
    }
    CKPT_TRY_CTX(image::read_image(opts.prev_images_dir + "/" + image::names::kInventory, image::Kind::Inventory, inv),
                 "--prev-images-dir");
    if (!inv->dump_id())
        return error_code(EINVAL, "--prev-images-dir {}: made by an engine without incremental dumps", opts.prev_images_dir);
    return ref;
}

// A process's images in the previous dump, when usable as its parent: the same process
// number alive there, its images readable and of that dump, its runs in address order,
// its chain not too long. Otherwise null (its pages are saved whole; -v says why).
const PrevImages* load_prev_images(const std::string& dir, uint32_t max_chain, const image::Inventory& inv,
                                   const FrozenProcess& p, PrevImages* out, bool* saved_whole) {
    bool alive = std::any_of(inv.tasks().begin(), inv.tasks().end(), [&](const image::TaskEntry& e) {
        return e.pid() == p.ns_pid && e.state() == image::TaskEntry::ALIVE;
    });
    auto whole = [&](const std::string& why) -> const PrevImages* {
        logger()->debug("pid {}: not in the previous dump as it is ({}): its pages are saved whole", p.pid, why);
        return nullptr;
    };
    if (!alive) return whole("no such process there");
    if (auto r = image::read_image(dir + "/" + image::names::mm(p.ns_pid), image::Kind::Mm, &out->mm); !r)
        return whole(r.error().message());
    if (auto r = image::read_image(dir + "/" + image::names::pagemap(p.ns_pid), image::Kind::PageMap, &out->pm,
                                   &out->pagemap_xxh3);
        !r)
        return whole(r.error().message());
    if (out->pm.dump_id() != inv.dump_id()) return whole("its page map is another dump's");
    uint64_t end = 0;
    for (const auto& r : out->pm.runs()) {
        if (r.vaddr() < end || r.nr_pages() == 0 || r.nr_pages() > (~0ull - r.vaddr()) / 4096)
            return whole("malformed page runs");
        end = r.vaddr() + r.nr_pages() * 4096;
    }
    if (out->pm.chain_length() + 1 > std::min(max_chain, kMaxParentChain)) {
        logger()->debug("pid {}: its chain of parent dumps would be longer than {}: its pages are saved whole", p.pid,
                        std::min(max_chain, kMaxParentChain));
        *saved_whole = true;
    }
    return out;
}

// The inodes of the write trackers that the previous dump recorded in its processes (forked
// children hold their parent's). A process whose memory image cannot be read records none.
std::set<uint64_t> recorded_trackers(const std::string& dir, const image::Inventory& inv) {
    std::set<uint64_t> inos;
    for (const auto& e : inv.tasks()) {
        if (e.state() != image::TaskEntry::ALIVE) continue;
        image::MmCore mm;
        if (auto r = image::read_image(dir + "/" + image::names::mm(e.pid()), image::Kind::Mm, &mm); !r) continue;
        if (mm.tracker_fd() > 0 && mm.tracker_ino()) inos.insert(mm.tracker_ino());
        inos.insert(mm.held_tracker_inos().begin(), mm.held_tracker_inos().end());
    }
    return inos;
}

// One dump; with snapshot, the pages are copied while the tree runs. *again: the snapshot
// failed once the tree was running again (it changed its mappings under the copy...): the
// images are not the instant's, and the dump is to be made again, frozen.
Result<DumpStats> dump_tree(const DumpOptions& opts, bool snapshot, bool* again) {
    DumpStats stats;
    const uint64_t start = monotonic_ns();
    if (opts.root <= 0) return error_code(EINVAL, "no process to dump (-t PID)");
    if (kill(opts.root, 0) != 0) return sys_error("pid {}", opts.root);
    if (opts.root == getpid()) return error_code(EINVAL, "pid {}: the engine cannot dump itself", opts.root);
    // --stream: the images held in memory, streamed once complete (page data straight from
    // the processes); the stream is opened before the tree is frozen (a FIFO waits for its
    // reader).
    const bool streaming = !opts.stream.empty();
    UniqueFd stream_fd;
    if (streaming) stream_fd = CKPT_TRY_CTX(image::open_stream(opts.stream, true), "--stream {}", opts.stream);
    else if (mkdir(opts.image_dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir {}", opts.image_dir);
    // Opened once: every file of the dump is created through it (image::ImageDir::create).
    auto dir = streaming ? image::ImageDir::in_memory("stream:" + opts.stream) : CKPT_TRY(image::ImageDir::open(opts.image_dir));
    // A stale inventory must not make an unfinished dump look complete.
    CKPT_TRY(dir.remove(image::names::kInventory));

    auto root_stat = CKPT_TRY(read_stat(opts.root));
    if (root_stat.state == 'Z') return error_code(ESRCH, "pid {} is a zombie: nothing to dump", opts.root);
    CKPT_TRY(run_action_scripts(opts, "pre-dump"));
    FrozenTree tree;
    auto t0 = monotonic_ns();
    CKPT_TRY(tree.freeze(opts.root, opts.freeze_timeout_ms));
    const uint64_t t_frozen = monotonic_ns();
    CKPT_TRY(check_own_processes(tree));
    bool own_pidns = true;
    CKPT_TRY(read_tree_pids(tree, opts.root, &own_pidns));
    CKPT_TRY(check_groups(tree));
    CKPT_TRY(check_unshared(tree));
    for (const auto& p : tree.processes)
        if (p.zombie) CKPT_TRY(check_zombie(p));
    // System V IPC: a namespace of the tree's own is recorded whole (before anything is
    // injected: nothing of the tree runs meanwhile).
    image::IpcNamespace ipc;
    const bool own_ipcns = CKPT_TRY(dump_ipc_namespace(tree.processes, &ipc));

    DumpExclusions ex;
    ex.memory = opts.exclude_memory;
    ex.threads = opts.exclude_threads;
    ex.fds = opts.exclude_fds;
    ex.root = opts.root;
    ex.external_fds = opts.external_fds;
    FileRegistry files(dir, opts.save_files_under);
    files.set_link_remap(opts.link_remap);
    FdDumpState fd_state(files, ex);
    fd_state.shell_job = opts.shell_job;
    fd_state.external_stdio = opts.external_stdio;
    fd_state.file_locks = opts.file_locks;
    fd_state.ext_unix_sk = opts.ext_unix_sk;
    fd_state.tcp_established = opts.tcp_established;
    image::Inventory inv;
    inv.set_format_version(image::kFormatVersion);
    inv.set_arch(static_cast<image::Arch>(arch::image_arch()));
    utsname u{};
    uname(&u);
    inv.set_kernel_release(u.release);
    inv.set_hostname(u.nodename);
    inv.set_dump_time_ns(t0);
    inv.set_root_pid(tree.processes.front().ns_pid);
    inv.set_shell_job(opts.shell_job);
    inv.set_engine_version(CKPT_VERSION);

    std::set<pid_t> fd_table_of_parent;
    {
        std::map<pid_t, pid_t> live;  // ns pid -> pid
        for (const auto& p : tree.processes)
            if (!p.zombie) live[p.ns_pid] = p.pid;
        std::vector<std::pair<pid_t, pid_t>> procs;
        for (const auto& p : tree.processes)
            if (!p.zombie)
                procs.emplace_back(p.pid, p.pid != opts.root && live.count(p.ns_ppid) ? live[p.ns_ppid] : 0);
        fd_table_of_parent = CKPT_TRY(find_shared_fd_tables(procs));
    }
    // Incremental dumps: the engine's write trackers in the tree are never recorded; the
    // previous dump, if any.
    uint64_t dump_id = 0;
    while (!dump_id)
        if (getrandom(&dump_id, sizeof dump_id, 0) != static_cast<ssize_t>(sizeof dump_id)) return sys_error("getrandom");
    inv.set_dump_id(dump_id);
    std::string prev_name;
    image::Inventory prev_inv;
    if (!opts.prev_images_dir.empty()) prev_name = CKPT_TRY(prev_dump_name(opts, &prev_inv));
    // A write tracker is known by the inode the dump that armed it recorded: an application's
    // own userfaultfd of the same features is never taken for one.
    const std::set<uint64_t> tracker_inos =
        prev_name.empty() ? std::set<uint64_t>{} : recorded_trackers(opts.prev_images_dir, prev_inv);
    for (const auto& p : tree.processes) {
        if (p.zombie) continue;
        fd_state.engine_fds[p.pid] = CKPT_TRY(find_trackers(p.pid, tracker_inos));
        for (int fd : fd_state.engine_fds[p.pid])
            logger()->debug("pid {}: fd {} is the engine's write tracker: not recorded", p.pid, fd);
    }
    // (A full dump naming an earlier one only to recognise its trackers touches none.)
    if ((opts.track_mem || (!prev_name.empty() && opts.max_chain > 0)) && !fd_table_of_parent.empty())
        return error_code(ENOTSUP, "pid {} shares its fd table with its parent (CLONE_FILES): --track-mem and "
                                   "--prev-images-dir do not support that yet",
                          *fd_table_of_parent.begin());
    std::map<pid_t, PrevImages> prevs;
    for (const auto& p : tree.processes)
        if (!p.zombie) CKPT_TRY(survey_fds(p.pid, fd_state));
    CKPT_TRY(record_pty_sessions(tree.processes, fd_state));
    {
        // For fds on /proc files of the tree's processes (reopened for the restored ones).
        std::map<pid_t, pid_t> tree_pids;
        std::set<pid_t> other_threads;
        for (const auto& p : tree.processes) {
            tree_pids[p.pid] = p.ns_pid;
            for (pid_t tid : p.threads)
                if (tid != p.pid) other_threads.insert(tid);
        }
        fd_state.tree_pids = tree_pids;
        files.set_tree_pids(std::move(tree_pids), std::move(other_threads));
    }

    const uint64_t t_survey = monotonic_ns();
    DumpShared shared{opts, dir, tree, own_pidns, own_ipcns, files, ex, fd_state, snapshot, {}, dump_id, prev_name};
    std::deque<DumpTask> tasks;  // stable addresses: each plan points into its task's page map
    // A dump that fails after it made a new write tracker in a process closes it there before
    // the tree is let go: no dump recorded it, so every later dump would refuse it as an
    // unknown userfaultfd. (A tracker kept from the previous dump stays: moved to another fd,
    // it matches that dump's record no more, and the next dump saves its pages whole.)
    struct NewTrackersGuard {
        std::deque<DumpTask>& tasks;
        bool keep = false;
        ~NewTrackersGuard() {
            if (keep) return;
            for (auto& t : tasks) {
                if (!t.track.made) continue;
                const auto fd = static_cast<uint64_t>(t.track.fd);
                auto closed = inside_process(t.p, [fd](RemoteThread& leader, RemoteScratch&, uint64_t, int*) -> Result<void> {
                    CKPT_TRY(leader.syscall_ok("close(new write tracker)", SYS_close, {fd}));
                    return ok();
                });
                if (!closed)
                    logger()->warn("pid {}: the dump failed, and its new write tracker stays at fd {}: {}", t.p.pid, fd,
                                   closed.error().message());
            }
        }
    } new_trackers{tasks};
    for (auto& p : tree.processes) {
        auto* t = inv.add_tasks();
        // A session or group led from outside the tree is recorded as its number in the
        // tree's namespace (0 where the leader is not visible there): restore leaves such
        // ones as the restorer's, like any leader outside the tree.
        t->set_pid(p.ns_pid);
        t->set_ppid(p.ns_ppid);
        t->set_pgid(p.ns_pgid);
        t->set_sid(p.ns_sid);
        if (p.zombie) {
            t->set_state(image::TaskEntry::ZOMBIE);
            t->set_exit_status(p.stat.exit_code);
            t->set_comm(p.stat.comm);
            continue;
        }
        t->set_fd_table_of_parent(fd_table_of_parent.count(p.pid) > 0);
        t->set_stop_signal(p.stop_signal);
        t->set_stop_reported(p.stop_reported);
        for (pid_t tid : p.ns_threads) t->add_threads(tid);
        p.status = CKPT_TRY_CTX(read_status(p.pid), "pid {}", p.pid);
        if (p.pid == opts.root) {
            inv.set_owner_uid(p.status.uid[0]);
            inv.set_owner_gid(p.status.gid[0]);
        }
        DumpTask& task = tasks.emplace_back(shared, p);
        for (auto& c : tree.processes)
            if (!c.zombie && c.pid != opts.root && c.ns_ppid == p.ns_pid) task.live_children.push_back(&c);
        for (auto& up : tasks)
            if (p.pid != opts.root && &up != &task && up.p.ns_pid == p.ns_ppid)
                task.fork_parent = ForkParent{up.p.pid, &up.mm, &up.pagemap, &up.plan};
        task.track.rearm = opts.track_mem;
        if (!prev_name.empty()) {
            task.track.prev = load_prev_images(opts.prev_images_dir, opts.max_chain, prev_inv, p, &prevs[p.ns_pid],
                                               &task.track.whole);
            // Saved whole and not armed again: the previous dump serves only to know its trackers.
            if (task.track.whole && !opts.track_mem) task.track.prev = nullptr;
        }
        CKPT_TRY(dump_process(task));
    }
    CKPT_TRY(finish_fd_dump(fd_state));
    // Page data of every process at once, then the page maps that describe it.
    std::vector<PagePlan> plans;
    std::vector<UniqueFd> uffds;
    const uint64_t t_join = monotonic_ns();
    for (auto& t : tasks) {
        t.join_protector();
        if (t.protect_error) {
            logger()->debug("snapshot not armed ({}): pages copied frozen", t.protect_error->message());
            shared.snapshot = false;
        }
    }
    for (auto& t : tasks) {
        plans.push_back(std::move(t.plan));
        uffds.push_back(std::move(t.uffd));
        plans.back().registered = std::move(t.registered);
        if (shared.snapshot) plans.back().exit_writes = exit_writes(t.p.pid, t.core);
    }
    std::unique_ptr<Snapshot> snap;
    const uint64_t t_recorded = monotonic_ns();
    const uint64_t waited_protect = t_recorded - t_join;
    if (shared.snapshot) {
        auto armed = Snapshot::arm(plans, std::move(uffds));
        if (armed) snap = std::move(*armed);
        else logger()->debug("snapshot not armed ({}): pages copied frozen", armed.error().message());
    }
    // Where the time went until the page data (-vv): the snapshot's frozen time, or what
    // comes before the copy of a dump that stays frozen for it.
    auto log_phases = [&](const char* what, uint64_t until, const char* then) {
        const auto& ph = shared.phases;
        auto ms = [](uint64_t ns) { return static_cast<double>(ns) / 1e6; };
        logger()->debug("tree {} {} {:.1f} ms: freeze {:.1f}, survey {:.1f}, processes {:.1f} (injected {:.1f} of which "
                        "userfaultfd made and memory registered {:.1f}, memory {:.1f}, fds {:.1f}, images {:.1f}, "
                        "write-protection waited for {:.1f}), {} {:.1f}",
                        opts.root, what, ms(until - t0), ms(t_frozen - t0), ms(t_survey - t_frozen),
                        ms(t_recorded - t_survey), ms(ph.inside), ms(ph.uffd), ms(ph.memory), ms(ph.fds),
                        ms(ph.images), ms(waited_protect), then, ms(until - t_recorded));
    };
    if (!snap && streaming) {
        uffds.clear();  // the page data is streamed below, read once (with its checksums)
    } else if (!snap) {
        CKPT_TRY(write_page_data(plans, opts.compress));
        log_phases("recorded and its pages copied in", monotonic_ns(), "page data");
        uffds.clear();  // what was write-protected is let go before the tree runs
    } else {
        // Frozen no longer: the pages are copied as the tree runs. TCP sockets leave repair
        // mode first: the tree may send at once.
        fd_state.tcp_repair.release();
        tree.release();
        stats.frozen_ns = monotonic_ns() - t0;
        log_phases("frozen", t0 + stats.frozen_ns, "snapshot armed and tree resumed in");
        auto copied = snap->finish(opts.compress);
        snap.reset();
        if (!copied) {
            *again = true;
            return std::move(copied).error();
        }
        stats.snapshot = true;
        stats.snapshot_faults = copied->faults;
        logger()->debug("tree {}: pages copied {:.1f} ms after the freeze; {} writes waited for their page, {} bytes "
                        "copied frozen",
                        opts.root, (monotonic_ns() - t0) / 1e6, copied->faults, copied->frozen_bytes);
    }
    uint64_t pages_written = 0;
    for (size_t i = 0; i < plans.size(); ++i) {
        CKPT_TRY(image::write_image(dir, image::names::pagemap(tasks[i].p.ns_pid), image::Kind::PageMap,
                                    *plans[i].pm));
        pages_written += plans[i].total;
        stats.stored_bytes += plans[i].pm->blocks_size() ? plans[i].pm->stored_bytes() : plans[i].total;
    }
    // Every resource of the tree is recorded (the inotify fds checked for queued events):
    // the hidden links of --link-remap now.
    CKPT_TRY(files.make_link_remaps());
    CKPT_TRY(image::write_image(dir, image::names::kFiles, image::Kind::Files, files.table()));
    if (own_ipcns) CKPT_TRY(image::write_image(dir, image::names::kIpc, image::Kind::Ipc, ipc));
    else CKPT_TRY(dir.remove(image::names::kIpc));  // a stale one must not make a namespace
    CKPT_TRY(image::write_image(dir, image::names::kInventory, image::Kind::Inventory, inv));
    std::optional<image::StreamWriter> stream;
    if (streaming) {
        stream.emplace(stream_fd.get(), dir.path());
        CKPT_TRY(stream->begin());
        CKPT_TRY(stream_metadata(dir, *stream));
        CKPT_TRY(stream_page_data(plans, *stream, opts.compress));
    }
    logger()->info("dumped {} processes of tree {} in {:.1f} ms", tree.processes.size(), opts.root,
                   (monotonic_ns() - t0) / 1e6);
    if (auto r = run_action_scripts(opts, "post-dump"); !r) {
        // The tree runs on (the destructor lets it go); the images must not look complete.
        (void)dir.remove(image::names::kInventory);
        return std::move(r).error();
    }
    // The stream is complete once post-dump agreed: without its trailer it is refused.
    if (stream) CKPT_TRY(stream->end());
    // The images are complete: the hidden links stay for their restore (or a later dump).
    files.keep_link_remaps();

    new_trackers.keep = true;  // the images that record them are complete
    if (opts.leave_running) {
        fd_state.tcp_repair.release();  // before the tree runs: a send in repair mode fails
        tree.release();
    } else {
        fd_state.tcp_repair.close_silently = true;
        CKPT_TRY(tree.kill_all());
    }
    if (!stats.snapshot) stats.frozen_ns = monotonic_ns() - t0;
    stats.total_ns = monotonic_ns() - start;
    stats.processes = tree.processes.size();
    for (const auto& p : tree.processes) stats.threads += p.threads.size();
    stats.pages_bytes = pages_written;
    return stats;
}

}  // namespace

Result<DumpStats> dump(const DumpOptions& opts) {
    // The post-dump action scripts' moment is the tree still frozen, images written.
    if (!opts.stream.empty() && !opts.image_dir.empty())
        return error_code(EINVAL, "dump: --stream and an images folder (-D) together: choose one");
    if (!opts.stream.empty() && (opts.track_mem || !opts.prev_images_dir.empty()))
        return error_code(EINVAL, "dump: --stream does not go together with --track-mem or --prev-images-dir (an "
                                  "incremental dump refers to a folder of images)");
    if (opts.compress < 0 || opts.compress > kMaxCompressLevel)
        return error_code(EINVAL, "dump: --compress level {}: zstd levels 1 to {}", opts.compress, kMaxCompressLevel);
    const bool snapshot = opts.leave_running && opts.snapshot && opts.action_scripts.empty() && opts.stream.empty();
    if (opts.track_mem && !opts.leave_running)
        return error_code(EINVAL, "--track-mem needs --leave-running (the tracker lives in the running tree)");
    if ((opts.track_mem || !opts.prev_images_dir.empty()) && opts.snapshot)
        return error_code(EINVAL, "--track-mem and --prev-images-dir do not go together with --snapshot");
    if (snapshot) {
        // Pages files of an earlier dump into this folder would be freed while the tree is
        // frozen when the new ones replace them: removed before it is.
        if (DIR* d = opendir(opts.image_dir.c_str())) {
            std::vector<std::string> stale;
            while (dirent* e = readdir(d)) {
                std::string_view n = e->d_name;
                if (n.starts_with("pages-") && n.ends_with(".img")) stale.emplace_back(n);
            }
            closedir(d);
            if (auto dir = image::ImageDir::open(opts.image_dir))
                for (const auto& n : stale) (void)dir->remove(n);
        }
    }
    bool again = false;
    auto r = dump_tree(opts, snapshot, &again);
    if (r || !again) return r;
    logger()->debug("copy-on-write snapshot of tree {} given up ({}): dumping it again, frozen", opts.root,
                    r.error().message());
    return dump_tree(opts, false, &again);
}

}  // namespace ckpt::engine
