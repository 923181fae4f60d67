// Restore: recreate every process with its old pid and turn it into the dumped process
// by driving it with injected system calls. All or nothing: on any failure every process
// created so far is killed (they are traced with PTRACE_O_EXITKILL, so even a crash of
// the engine takes them down).
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/fsuid.h>
#include <sys/wait.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <span>

#include "ckpt/arch/arch.h"
#include "ckpt/engine/engine.h"
#include "ckpt/engine/syscalls.h"
#include "ckpt/image/image_file.h"
#include "dump_context.h"
#include "fds.h"
#include "files.h"
#include "inventory.pb.h"
#include "memory.h"
#include "proc.h"
#include "restore_task.h"
#include "task_state.h"
#include "threads.h"

namespace ckpt::engine {

Result<const image::FileEntry*> RestoreShared::file(uint32_t id) const {
    if (id == 0 || static_cast<int>(id) > files.files_size())
        return error_code(EINVAL, "{}/files.img: no file {}", image_dir, id);
    return &files.files(static_cast<int>(id) - 1);
}

Result<int> RestoreTask::install_fd(int engine_fd, int at_fd, bool cloexec) {
    int64_t fd = CKPT_TRY(leader->syscall_ok("pidfd_getfd", SYS_pidfd_getfd,
                                             {static_cast<uint64_t>(engine_pidfd_in_target),
                                              static_cast<uint64_t>(engine_fd), 0}));
    if (at_fd >= 0 && fd != at_fd) {
        CKPT_TRY(leader->syscall_ok("dup3", SYS_dup3,
                                    {static_cast<uint64_t>(fd), static_cast<uint64_t>(at_fd), cloexec ? O_CLOEXEC : 0u}));
        CKPT_TRY(leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
        return at_fd;
    }
    // pidfd_getfd sets close-on-exec; clear it unless wanted.
    if (!cloexec) CKPT_TRY(leader->syscall_ok("fcntl(F_SETFD)", SYS_fcntl, {static_cast<uint64_t>(fd), F_SETFD, 0}));
    return static_cast<int>(fd);
}

Result<int> RestoreTask::install_file(uint32_t file_id, int flags, int at_fd, bool cloexec) {
    const image::FileEntry* e = CKPT_TRY(shared->file(file_id));
    UniqueFd fd;
    {
        FsIdentity as(shared->fs_uid, shared->fs_gid);
        fd = CKPT_TRY(open_recorded_file(image_dir, *e, flags, shared->skip_file_checks));
    }
    return install_fd(fd.get(), at_fd, cloexec);
}

Result<int64_t> RestoreTask::mapping_fd(const image::Vma& v) {
    if (auto it = mapping_fds_.find(v.file_id()); it != mapping_fds_.end()) return it->second;
    const image::FileEntry* e = CKPT_TRY(shared->file(v.file_id()));
    int engine_fd;
    UniqueFd opened;
    FsIdentity as(shared->fs_uid, shared->fs_gid);
    if (e->memfd()) {
        // One memory object per recorded object, shared by every process that maps it.
        auto it = shared->shm_objects.find(v.file_id());
        if (it == shared->shm_objects.end()) {
            auto fd = CKPT_TRY(open_recorded_file(image_dir, *e, O_RDWR, shared->skip_file_checks));
            it = shared->shm_objects.emplace(v.file_id(), std::move(fd)).first;
        }
        engine_fd = it->second.get();
    } else {
        bool shared_write = (v.flags() & MAP_SHARED) && (v.prot() & PROT_WRITE);
        opened = CKPT_TRY(open_recorded_file(image_dir, *e, shared_write ? O_RDWR : O_RDONLY, shared->skip_file_checks));
        engine_fd = opened.get();
    }
    int fd = CKPT_TRY(install_fd(engine_fd));
    mapping_fds_[v.file_id()] = fd;
    return fd;
}

Result<void> RestoreTask::close_mapping_fds() {
    for (auto [id, fd] : mapping_fds_) CKPT_TRY(leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    mapping_fds_.clear();
    return ok();
}

namespace {

constexpr unsigned kTraceOptions = PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK;

// Every process created so far; killed unless the restore completes.
struct Created {
    std::vector<pid_t> pids;
    bool done = false;
    ~Created() {
        if (done) return;
        for (pid_t p : pids) kill(p, SIGKILL);
        for (pid_t p : pids) waitpid(p, nullptr, __WALL | WNOHANG);
    }
};

Result<void> check_pid_free(pid_t pid) {
    if (access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0)
        return error_code(EEXIST, "pid {} is in use; restore it where its pids are free or with --new-pidns", pid);
    return ok();
}

// In a freshly cloned copy of the engine: maps the trampoline and places the trap code.
// Raw system calls only; exits with 120 if the address is taken.
void map_trampoline_in_child(uint64_t trampoline, std::span<const uint8_t> code) {
    void* p = reinterpret_cast<void*>(syscall(SYS_mmap, trampoline, RestoreTask::kTrampolineSize,
                                              PROT_READ | PROT_WRITE | PROT_EXEC,
                                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0));
    if (p != reinterpret_cast<void*>(trampoline)) syscall(SYS_exit_group, 120);
    std::memcpy(p, code.data(), code.size());
}

// The root process: a child of the engine with the old pid, which maps the trampoline and
// stops, traced.
Result<pid_t> create_root(pid_t pid, uint64_t trampoline) {
    auto code = arch::syscall_trap_code();
    long r = sys_fork_with_pid(pid);
    if (r == 0) {
        // Only raw system calls from here: this is a copy of the engine about to be replaced.
        map_trampoline_in_child(trampoline, code);
        if (syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) != 0) syscall(SYS_exit_group, 121);
        syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
        syscall(SYS_exit_group, 122);
    }
    if (r < 0) {
        if (errno == EEXIST) return error_code(EEXIST, "pid {} is in use", pid);
        return sys_error("clone3(set_tid={})", pid);
    }
    int status = CKPT_TRY(wait_stopped(static_cast<pid_t>(r)));
    if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP)
        return error("pid {}: restore helper did not stop (status {:#x})", pid, status);
    if (ptrace(PTRACE_SETOPTIONS, r, 0, kTraceOptions) != 0) return sys_error("ptrace(SETOPTIONS) pid {}", r);
    return static_cast<pid_t>(r);
}

// --new-pidns: the init of a new pid namespace (pid 1 there) creates the root with its
// old pid as its own child, then reaps orphans and, once the root is gone, exits the way
// the root did, so that whoever waits for the init learns the root's status. The root maps
// the trampoline, reports ready and waits to be seized by the engine.
struct PidnsRoot {
    pid_t init = 0;
    pid_t root = 0;  // as the engine sees it
};

Result<PidnsRoot> create_root_in_pidns(pid_t root_in_ns, uint64_t trampoline) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return sys_error("pipe2");
    UniqueFd ready_rd(ready[0]), ready_wr(ready[1]);
    auto code = arch::syscall_trap_code();
    clone_args args{};
    args.flags = CLONE_NEWPID;
    args.exit_signal = SIGCHLD;
    long init = sys_clone3(&args, sizeof args);
    if (init == 0) {
        // Raw system calls only: a copy of the engine.
        sigset_t all;
        sigfillset(&all);
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, nullptr, 8);
        long root = sys_fork_with_pid(root_in_ns);
        if (root == 0) {
            map_trampoline_in_child(trampoline, code);
            char b = 1;
            syscall(SYS_write, ready[1], &b, 1);
            for (;;) syscall(SYS_pause);
        }
        if (root < 0) syscall(SYS_exit_group, 121);
        for (int fd = 0; fd < 1024; ++fd) syscall(SYS_close, fd);
        for (;;) {
            int status = 0;
            long p = syscall(SYS_wait4, -1, &status, __WALL, nullptr);
            if (p == root) {
                if (WIFSIGNALED(status)) syscall(SYS_exit_group, 128 + WTERMSIG(status));
                syscall(SYS_exit_group, WEXITSTATUS(status));
            }
            if (p < 0) syscall(SYS_exit_group, 122);
        }
    }
    if (init < 0) return sys_error("clone3(CLONE_NEWPID)");
    PidnsRoot out{static_cast<pid_t>(init), 0};
    ready_wr.reset();
    char b;
    if (read(ready_rd.get(), &b, 1) != 1) {
        int status = 0;
        waitpid(out.init, &status, 0);
        return error("pid {}: the new pid namespace's init failed (status {:#x})", root_in_ns, status);
    }
    auto children = CKPT_TRY(read_children(out.init));
    if (children.size() != 1) return error("pid {}: cannot find the new root under init {}", root_in_ns, out.init);
    out.root = children[0];
    if (ptrace(PTRACE_SEIZE, out.root, 0, kTraceOptions) != 0) return sys_error("ptrace(SEIZE) pid {}", out.root);
    if (ptrace(PTRACE_INTERRUPT, out.root, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) pid {}", out.root);
    CKPT_TRY(wait_stopped(out.root));
    return out;
}

Result<void> load_task_images(RestoreTask& t) {
    std::string s = "-" + std::to_string(t.pid) + ".img";
    const std::string& d = t.image_dir;
    CKPT_TRY(image::read_image(d + "/core" + s, image::Kind::Core, &t.core));
    CKPT_TRY(image::read_image(d + "/mm" + s, image::Kind::Mm, &t.mm));
    CKPT_TRY(image::read_image(d + "/pagemap" + s, image::Kind::PageMap, &t.pagemap));
    CKPT_TRY(image::read_image(d + "/fds" + s, image::Kind::Fds, &t.fds));
    if (t.core.threads_size() == 0) return error_code(EINVAL, "{}/core{}: no threads", d, s);
    return ok();
}

Result<void> restore_process(RestoreTask& t) {
    CKPT_TRY(restore_memory(t));
    CKPT_TRY(restore_sigactions(t));
    CKPT_TRY(restore_task_settings(t));
    CKPT_TRY(restore_fds(t));
    return ok();
}

// The groups of user uid with primary group gid, from the user database.
Result<std::vector<gid_t>> user_groups(uid_t uid, gid_t gid) {
    passwd* pw = getpwuid(uid);
    if (!pw) return error_code(EPERM, "uid {}: unknown user", uid);
    std::vector<gid_t> groups(64);
    for (;;) {
        int n = static_cast<int>(groups.size());
        if (getgrouplist(pw->pw_name, gid, groups.data(), &n) >= 0) {
            groups.resize(static_cast<size_t>(n));
            return groups;
        }
        // Too small: n is now the size needed.
        if (n <= static_cast<int>(groups.size())) return error_code(EPERM, "uid {}: cannot list the user's groups", uid);
        groups.resize(static_cast<size_t>(n));
    }
}

// Every uid and gid of the process is the owner's, and it holds no capability unless the
// owner is root.
Result<void> check_owner(const image::Creds& c, uint32_t uid, uint32_t gid) {
    for (uint32_t u : {c.uid(), c.euid(), c.suid(), c.fsuid()})
        if (u != uid) return error_code(EPERM, "images belong to uid {}, not to uid {}: refused", u, uid);
    for (uint32_t g : {c.gid(), c.egid(), c.sgid(), c.fsgid()})
        if (g != gid) return error_code(EPERM, "images have gid {}, expected {}: refused", g, gid);
    if (uid != 0 && (c.cap_prm() || c.cap_eff() || c.cap_inh() || c.cap_amb()))
        return error_code(EPERM, "images of uid {} claim capabilities: refused", uid);
    if (uid != 0) {
        std::vector<gid_t> allowed = CKPT_TRY(user_groups(uid, gid));
        for (uint32_t g : c.groups())
            if (std::find(allowed.begin(), allowed.end(), g) == allowed.end())
                return error_code(EPERM, "images claim group {}, which uid {} is not in: refused", g, uid);
    }
    return ok();
}

// The engine takes the owner's supplementary groups; files of the images are then
// opened with the owner's fsuid and fsgid (FsIdentity), so with the user's rights.
Result<void> act_as_owner(uid_t uid, gid_t gid) {
    if (uid == 0) return ok();
    std::vector<gid_t> groups = CKPT_TRY(user_groups(uid, gid));
    if (setgroups(groups.size(), groups.data()) != 0) return sys_error("setgroups for uid {}", uid);
    return ok();
}

}  // namespace

Result<RestoredTree> restore(const RestoreOptions& opts) {
    const std::string& dir = opts.image_dir;
    struct stat sb;
    if (stat(dir.c_str(), &sb) != 0) return sys_error("image directory {}", dir);
    image::Inventory inv;
    CKPT_TRY(image::read_image(dir + "/inventory.img", image::Kind::Inventory, &inv));
    if (inv.arch() != arch::image_arch())
        return error_code(EINVAL, "{}: images are for architecture {}, this machine is {}", dir,
                          image::Arch_Name(inv.arch()), arch::name());
    if (inv.tasks_size() == 0) return error_code(EINVAL, "{}/inventory.img: no processes", dir);
    if (inv.shell_job() && !opts.shell_job)
        return error_code(EINVAL, "{}: the images are of a shell job (dumped with --shell-job); restore with --shell-job", dir);

    RestoreShared shared;
    shared.image_dir = dir;
    shared.skip_file_checks = opts.skip_file_checks;
    shared.inherited = opts.inherit_fds;
    CKPT_TRY(image::read_image(dir + "/files.img", image::Kind::Files, &shared.files));
    for (const auto& p : shared.files.pipes()) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe2");
        shared.pipes[p.id()] = {UniqueFd(fds[0]), UniqueFd(fds[1])};
        if (p.capacity() && fcntl(fds[1], F_SETPIPE_SZ, p.capacity()) < 0)
            logger()->warn("pipe {}: cannot set capacity {}: {}", p.id(), p.capacity(), strerror(errno));
        CKPT_TRY_CTX(write_all(fds[1], p.queued().data(), p.queued().size()), "pipe {}: queued data", p.id());
    }

    // Load every image and check every pid before creating anything.
    const bool checked_owner = opts.restore_as_uid >= 0;
    if (checked_owner && inv.owner_uid() != static_cast<uint32_t>(opts.restore_as_uid))
        return error_code(EPERM, "{}: images belong to uid {}, not to uid {}: refused", dir, inv.owner_uid(),
                          opts.restore_as_uid);
    std::map<pid_t, RestoreTask> tasks;
    std::vector<pid_t> order;
    for (const auto& te : inv.tasks()) {
        if (opts.new_pidns) {
            if (te.pid() == 1) return error_code(EINVAL, "pid 1 cannot be restored into a new pid namespace");
        } else {
            CKPT_TRY(check_pid_free(te.pid()));
            for (pid_t tid : te.threads()) CKPT_TRY(check_pid_free(tid));
        }
        RestoreTask& t = tasks[te.pid()];
        t.pid = te.pid();
        t.image_dir = dir;
        t.shared = &shared;
        order.push_back(te.pid());
        if (te.state() == image::TaskEntry::ZOMBIE) continue;
        CKPT_TRY(load_task_images(t));
        if (checked_owner)
            CKPT_TRY_CTX(check_owner(t.core.creds(), static_cast<uint32_t>(opts.restore_as_uid),
                                     static_cast<uint32_t>(opts.restore_as_gid)),
                         "{}/core-{}.img", dir, t.pid);
    }
    // Files are opened with the owner's rights, so images cannot reach what the user cannot.
    if (checked_owner) {
        CKPT_TRY(act_as_owner(static_cast<uid_t>(opts.restore_as_uid), static_cast<gid_t>(opts.restore_as_gid)));
        shared.fs_uid = static_cast<uid_t>(opts.restore_as_uid);
        shared.fs_gid = static_cast<gid_t>(opts.restore_as_gid);
    }
    image::MmCore all_layouts;
    for (auto& [pid, t] : tasks)
        for (const auto& v : t.mm.vmas()) *all_layouts.add_vmas() = v;
    uint64_t trampoline = CKPT_TRY(find_trampoline_hole(all_layouts, RestoreTask::kTrampolineSize));

    Created created;
    std::map<pid_t, const image::TaskEntry*> entry;
    for (const auto& te : inv.tasks()) entry[te.pid()] = &te;
    pid_t root = inv.root_pid();

    // The engine's pidfd, inherited by every process created below (a pid namespace of
    // their own could not name the engine).
    UniqueFd engine_pidfd(sys_pidfd_open(getpid(), 0));
    if (!engine_pidfd) return sys_error("pidfd_open(self)");

    RestoredTree out;

    // 1. The tree: each process created by its parent, in inventory order (parents first).
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        const image::TaskEntry& te = *entry[pid];
        if (pid == root && opts.new_pidns) {
            auto r = CKPT_TRY(create_root_in_pidns(pid, trampoline));
            out.pidns_init = r.init;
            created.pids.push_back(r.init);
            t.host = r.root;
        } else if (pid == root) {
            t.host = CKPT_TRY(create_root(pid, trampoline));
        } else {
            auto parent = tasks.find(te.ppid());
            if (parent == tasks.end() || !parent->second.leader)
                return error("pid {}: parent {} is not in the images", pid, te.ppid());
            // From inside the parent, so that it is the parent's child.
            t.host = CKPT_TRY_CTX(create_task(*parent->second.leader, parent->second.scratch, NewTask::Process, pid),
                                  "parent {}", te.ppid());
        }
        created.pids.push_back(t.host);
        t.trampoline = trampoline;
        t.scratch = RemoteScratch(t.host, trampoline + RestoreTask::kCodeSize, RestoreTask::kScratchSize);
        t.leader = std::make_unique<RemoteThread>(CKPT_TRY(RemoteThread::attach(t.host, trampoline)));
        if (ptrace(PTRACE_SETOPTIONS, t.host, 0, kTraceOptions) != 0) return sys_error("ptrace(SETOPTIONS) pid {}", pid);
        CKPT_TRY_CTX(drop_inherited_rseq(*t.leader), "pid {}", pid);
        // Sessions and groups led by this process; others are inherited from the parent
        // (or, for the root, from the restorer).
        if (te.sid() == pid) CKPT_TRY(t.leader->syscall_ok("setsid", SYS_setsid));
        else if (te.pgid() == pid) CKPT_TRY(t.leader->syscall_ok("setpgid", SYS_setpgid, {0, 0}));
        // Every process is a copy of the engine (or of its parent) and so holds the
        // engine's pidfd under the same number: its way to take fds from the engine.
        t.engine_pidfd_in_target = engine_pidfd.get();
    }
    // Groups led by another process of the tree.
    for (pid_t pid : order) {
        const image::TaskEntry& te = *entry[pid];
        if (te.pgid() != pid && te.sid() != pid && tasks.count(te.pgid()) && te.pgid() != entry[te.ppid() ? te.ppid() : pid]->pgid())
            CKPT_TRY(tasks[pid].leader->syscall_ok("setpgid", SYS_setpgid, {0, static_cast<uint64_t>(te.pgid())}));
    }

    // 2. Each process: memory, handlers, settings, fds; zombies just exit.
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        const image::TaskEntry& te = *entry[pid];
        if (te.state() == image::TaskEntry::ZOMBIE) continue;
        CKPT_TRY_CTX(restore_process(t), "restore pid {}", pid);
    }
    // 3. Threads and the last per-thread state; identity is dropped last.
    struct ThreadToFinish {
        pid_t host;
        const image::ThreadCore* core;
    };
    std::vector<ThreadToFinish> threads;
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (entry[pid]->state() == image::TaskEntry::ZOMBIE) continue;
        for (int i = 0; i < t.core.threads_size(); ++i) {
            const auto& tc = t.core.threads(i);
            RemoteThread* rt = t.leader.get();
            std::unique_ptr<RemoteThread> other;
            if (i > 0) {
                pid_t host =
                    CKPT_TRY_CTX(create_task(*t.leader, t.scratch, NewTask::Thread, tc.tid()), "restore pid {}", pid);
                other = std::make_unique<RemoteThread>(CKPT_TRY(RemoteThread::attach(host, trampoline)));
                rt = other.get();
            }
            CKPT_TRY_CTX(restore_thread_final(*rt, t.scratch, tc), "restore pid {}: thread {}", pid, tc.tid());
            CKPT_TRY_CTX(restore_pending(*rt, t.scratch, pid, &tc, tc.pending()), "restore pid {}: thread {}", pid,
                         tc.tid());
            if (i > 0) {
                CKPT_TRY_CTX(restore_creds(*rt, t.scratch, t.core.creds()), "restore pid {}: thread {}", pid, tc.tid());
                threads.push_back({rt->tid(), &tc});
            }
        }
    }
    // 4. Zombies: the process exits the way it did.
    for (pid_t pid : order) {
        const image::TaskEntry& te = *entry[pid];
        if (te.state() != image::TaskEntry::ZOMBIE) continue;
        RestoreTask& t = tasks[pid];
        int status = te.exit_status();
        if (WIFSIGNALED(status)) {
            CKPT_TRY(t.leader->syscall(SYS_kill, {static_cast<uint64_t>(pid), static_cast<uint64_t>(WTERMSIG(status))}));
        }
        (void)t.leader->syscall(SYS_exit_group, {static_cast<uint64_t>(WEXITSTATUS(status))});
        waitpid(t.host, nullptr, __WALL);  // the tracer's view; the parent still sees the zombie
        t.leader.reset();
    }
    // 5. Let go: threads' registers, then each leader drops its trampoline and identity.
    for (const auto& th : threads) CKPT_TRY(set_thread_registers(th.host, *th.core));
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (!t.leader) continue;
        CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(t.engine_pidfd_in_target)}));
        CKPT_TRY_CTX(restore_pending(*t.leader, t.scratch, pid, nullptr, t.core.shared_pending()), "restore pid {}",
                     pid);
        // Timers after every recorded pending signal: a timer due at once must queue its
        // next signal behind the recorded one (which carries the overruns), not before it.
        CKPT_TRY_CTX(restore_timers(t), "restore pid {}", pid);
        // A filter needs no_new_privs or CAP_SYS_ADMIN: before the identity drop unless the
        // process has no_new_privs (then after, so the filter cannot refuse the drop).
        bool nnp = t.core.creds().no_new_privs();
        if (!nnp) CKPT_TRY(restore_seccomp(t));
        CKPT_TRY_CTX(restore_creds(*t.leader, t.scratch, t.core.creds()), "restore pid {}", pid);
        if (nnp) CKPT_TRY(restore_seccomp(t));
        // A change of identity makes the process non-dumpable (it would hide it from its own
        // user's debugger and /proc); set what it had, after the change.
        CKPT_TRY(t.leader->syscall_ok("prctl(PR_SET_DUMPABLE)", SYS_prctl, {PR_SET_DUMPABLE, t.core.dumpable() ? 1u : 0u}));
        // munmap of the trampoline returns into unmapped memory: the fault stops the thread.
        CKPT_TRY_CTX(t.leader->syscall_removing_code(SYS_munmap, {trampoline, RestoreTask::kTrampolineSize}),
                     "pid {}: dropping the trampoline", pid);
    }
    created.done = true;
    for (const auto& th : threads) ptrace(PTRACE_DETACH, th.host, 0, 0);
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (!t.leader) continue;
        CKPT_TRY(set_thread_registers(t.host, t.core.threads(0)));
        if (ptrace(PTRACE_DETACH, t.host, 0, 0) != 0) return sys_error("ptrace(DETACH) pid {}", pid);
    }
    out.root = tasks[root].host;
    if (!opts.pidfile.empty()) {
        auto fd = CKPT_TRY(open_file(opts.pidfile, O_WRONLY | O_CREAT | O_TRUNC, 0644));
        std::string s = std::to_string(out.root) + "\n";
        CKPT_TRY(write_all(fd.get(), s.data(), s.size()));
    }
    return out;
}

namespace {
volatile sig_atomic_t forward_to = 0;
void forward_signal(int sig) {
    if (forward_to > 0) kill(forward_to, sig);
}
}  // namespace

int wait_restored(const RestoredTree& tree) {
    forward_to = tree.root;
    struct sigaction sa{};
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT, SIGALRM}) sigaction(sig, &sa, nullptr);
    // Under a new pid namespace the root is the init's child: the init's exit code is the
    // root's status.
    pid_t child = tree.pidns_init > 0 ? tree.pidns_init : tree.root;
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            logger()->error("waitpid {}: {}", child, strerror(errno));
            status = 1 << 8;
            break;
        }
    }
    forward_to = 0;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

}  // namespace ckpt::engine
