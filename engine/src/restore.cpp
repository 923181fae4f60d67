// Restore: recreate every process with its old pid and turn it into the dumped process
// by driving it with injected system calls. All or nothing: on any failure every process
// created so far is killed (they are traced with PTRACE_O_EXITKILL, so even a crash of
// the engine takes them down).
//
// Who runs as whom. Root restoring images as recorded (no --restore-as): everything runs as
// root, as it did. --restore-as UID:GID (the batch system restoring a user's job; needs
// --new-pidns): root only makes the new pid namespace, whose init becomes the user at once;
// then this process becomes the user too, before reading a byte of the images. Both keep
// only CAP_CHECKPOINT_RESTORE (clone3 set_tid, the PR_SET_MM_MAP exe link) until the tree
// exists, so a forged image can do no more than the user could: the kernel refuses the rest.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <span>
#include <thread>
#include <string_view>

#include "ckpt/arch/arch.h"
#include "ckpt/clock.h"
#include "ckpt/engine/engine.h"
#include "ckpt/engine/syscalls.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/image_names.h"
#include "dump_context.h"
#include "fd_table.h"
#include "files.h"
#include "inventory.pb.h"
#include "ipc_ns.h"
#include "image_stream.h"
#include "memory.h"
#include "parallel.h"
#include "proc.h"
#include "restore_task.h"
#include "sched_state.h"
#include "task_state.h"
#include "threads.h"

namespace ckpt::engine {

Result<const image::FileEntry*> RestoreShared::file(uint32_t id) const {
    if (id == 0 || static_cast<int>(id) > files.files_size())
        return error_code(EINVAL, "{}/{}: no file {}", image_dir, image::names::kFiles, id);
    return &files.files(static_cast<int>(id) - 1);
}

Result<int> RestoreShared::saved_object(uint32_t id) {
    if (auto it = saved_objects.find(id); it != saved_objects.end()) return it->second.get();
    const image::FileEntry* e = CKPT_TRY(file(id));
    if (!e->deleted()) return error_code(EINVAL, "{}/{}: file {} is not a saved file", image_dir, image::names::kFiles, id);
    std::optional<SavedName> named;
    UniqueFd fd = CKPT_TRY(recreate_saved_file(image_dir, *e, &named));
    if (named) saved_names.emplace(id, std::move(*named));
    return saved_objects.emplace(id, std::move(fd)).first->second.get();
}

Result<void> RestoreShared::release_saved_names() {
    Result<void> first = ok();
    for (auto& [id, name] : saved_names) {
        const image::FileEntry& e = files.files(static_cast<int>(id) - 1);
        remove_saved_name(e, name);
        auto given = give_saved_attributes(e, saved_objects.at(id).get());
        if (!given && first) first = std::move(given);
    }
    saved_names.clear();
    // The old names given back to files kept by --link-remap (their hidden links stay until
    // the restore has succeeded).
    for (auto& [id, l] : link_remapped) drop_old_name(files.files(static_cast<int>(id) - 1), l);
    return first;
}

Result<LinkRemapped*> RestoreShared::link_remapped_of(uint32_t id) {
    if (auto it = link_remapped.find(id); it != link_remapped.end()) return &it->second;
    const image::FileEntry* e = CKPT_TRY(file(id));
    LinkRemapped l = CKPT_TRY(open_link_remapped(*e, skip_file_checks));
    return &link_remapped.emplace(id, std::move(l)).first->second;
}

Result<UniqueFd> RestoreShared::open_watched(uint32_t id) {
    const image::FileEntry* e = CKPT_TRY(file(id));
    if (e->link_remap().empty())
        return error_code(EINVAL, "{}/{}: file {} is not kept by --link-remap (image is corrupt)", image_dir,
                          image::names::kFiles, id);
    LinkRemapped* l = CKPT_TRY(link_remapped_of(id));
    return reopen_link_remapped(*e, *l, O_PATH, skip_file_checks, false);
}

Result<void> RestoreShared::remove_link_remaps() {
    if (link_remapped.empty()) return ok();
    for (auto& [id, l] : link_remapped) {
        const image::FileEntry& e = files.files(static_cast<int>(id) - 1);
        drop_old_name(e, l);
        remove_link_remap(e, l);
    }
    link_remapped.clear();
    // Giving a name back and taking it again, and removing the hidden link, are IN_CREATE,
    // IN_DELETE and IN_ATTRIB events of the restored watches on the file and its folder, which
    // the tree never saw: read away before it runs (an event of a real change in this moment
    // of the restore goes too, as any between the dump and the restore does).
    for (uint64_t id : inotify_descriptions) {
        auto it = descriptions.find(id);
        if (it == descriptions.end()) continue;
        alignas(8) char buf[4096];
        int queued = 0;
        while (ioctl(it->second.get(), FIONREAD, &queued) == 0 && queued > 0)
            if (read(it->second.get(), buf, sizeof buf) <= 0) break;
    }
    return ok();
}

Result<UniqueFd> RestoreShared::open_file(uint32_t id, int flags) {
    const image::FileEntry* e = CKPT_TRY(file(id));
    if (e->proc()) return open_proc_file(*e, flags, hosts);
    if (!e->link_remap().empty()) {
        LinkRemapped* l = CKPT_TRY(link_remapped_of(id));
        return reopen_link_remapped(*e, *l, flags, skip_file_checks, true);
    }
    if (!e->deleted()) return open_recorded_file(image_dir, *e, flags, skip_file_checks);
    // Opened again through /proc with the recorded flags: a description of its own, on the
    // same object as every other fd and mapping of the file.
    int object = CKPT_TRY(saved_object(id));
    // A memfd's first O_RDWR description is the memfd_create file itself, as the process had
    // it; any other is opened again.
    constexpr int kKernelLargefile = 0100000;  // O_LARGEFILE as the kernel sets it (0 in 64-bit libc)
    if (e->memfd() && (flags & ~(O_CLOEXEC | kKernelLargefile)) == O_RDWR && memfds_given.insert(id).second) {
        UniqueFd fd(fcntl(object, F_DUPFD_CLOEXEC, 0));
        if (!fd) return sys_error("{}: fcntl(F_DUPFD_CLOEXEC)", e->path());
        return fd;
    }
    auto named = saved_names.find(id);
    return reopen_saved_file(*e, object, flags, named == saved_names.end() ? nullptr : &named->second);
}

Result<int> RestoreTask::install_fd(int engine_fd, int at_fd, bool cloexec) {
    int64_t fd = CKPT_TRY(leader->syscall_ok("pidfd_getfd", SYS_pidfd_getfd,
                                             {static_cast<uint64_t>(engine_pidfd()),
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
    UniqueFd fd = CKPT_TRY(shared->open_file(file_id, flags));
    return install_fd(fd.get(), at_fd, cloexec);
}

Result<int64_t> RestoreTask::mapping_fd(const image::Vma& v) {
    // A shared mapping keeps whether it may become writable (VM_MAYWRITE, which the kernel
    // takes from the description): a read-only description gives a mapping that mprotect
    // cannot make writable and that does not hold off F_SEAL_WRITE, as it was.
    bool writable = (v.flags() & MAP_SHARED) && (v.may_write() || (v.prot() & PROT_WRITE));
    auto key = std::make_pair(v.file_id(), writable);
    if (auto it = mapping_fds_.find(key); it != mapping_fds_.end()) return it->second;
    const image::FileEntry* e = CKPT_TRY(shared->file(v.file_id()));
    int engine_fd;
    UniqueFd opened;
    if (e->deleted() && (writable || !(v.flags() & MAP_SHARED))) {
        // One object per saved file, shared by every process that maps it or holds an fd on
        // it (a sem_open semaphore whose name was unlinked, shared anonymous memory, a memfd).
        engine_fd = CKPT_TRY(shared->saved_object(v.file_id()));
    } else {
        // A saved file's object is reopened read-only through /proc: still the one object.
        opened = CKPT_TRY(shared->open_file(v.file_id(), writable ? O_RDWR : O_RDONLY));
        engine_fd = opened.get();
    }
    // Closed again before the process runs (close_mapping_fds): its close-on-exec flag,
    // set by pidfd_getfd, may stay (one injected fcntl less).
    int fd = CKPT_TRY(install_fd(engine_fd, -1, true));
    mapping_fds_[key] = fd;
    return fd;
}

Result<void> RestoreTask::close_mapping_fds() {
    for (auto [id, fd] : mapping_fds_) CKPT_TRY(leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    mapping_fds_.clear();
    return ok();
}

namespace {

constexpr unsigned kTraceOptions = PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK;

// Every process created so far; killed unless the restore completes, and dead before the
// engine goes on (a killed process with much memory takes a while to exit, and its pid is
// in use until then): each one's end waited for, where the engine traces it or is its
// parent, for at most a few seconds in all (a process stuck in the kernel is left dying).
struct Created {
    std::vector<pid_t> pids;
    bool done = false;
    ~Created() {
        if (done) return;
        for (pid_t p : pids) kill(p, SIGKILL);
        const uint64_t deadline = monotonic_ns() + 5'000'000'000ull;
        for (pid_t p : pids) {
            for (;;) {
                int status = 0;
                const pid_t r = waitpid(p, &status, __WALL | WNOHANG);
                if (r == p && (WIFEXITED(status) || WIFSIGNALED(status))) break;
                if (r < 0 && errno != EINTR) break;  // neither traced nor a child: not ours to wait for
                if (monotonic_ns() > deadline) break;
                if (r == 0) usleep(500);
            }
        }
    }
};

Result<void> check_pid_free(pid_t pid) {
    if (access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0)
        return error_code(EEXIST, "pid {} is in use; restore it where its pids are free or with --new-pidns", pid);
    return ok();
}

// In a freshly cloned copy of the engine: maps the trampoline and places the trap code and
// the syscall batch code. Raw system calls only; exits with 120 if the address is taken.
void map_trampoline_in_child(uint64_t trampoline, std::span<const uint8_t> code, std::span<const uint8_t> batch) {
    void* p = reinterpret_cast<void*>(syscall(SYS_mmap, trampoline, RestoreTask::kTrampolineSize,
                                              PROT_READ | PROT_WRITE | PROT_EXEC,
                                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0));
    if (p != reinterpret_cast<void*>(trampoline)) syscall(SYS_exit_group, 120);
    std::memcpy(p, code.data(), code.size());
    std::memcpy(static_cast<char*>(p) + RestoreTask::kBatchCodeOffset, batch.data(), batch.size());
}

// The root process: a child of the engine with the old pid, which maps the trampoline and
// stops, traced.
Result<pid_t> create_root(pid_t pid, uint64_t trampoline) {
    auto code = arch::syscall_trap_code();
    auto batch = arch::syscall_batch_code();
    long r = sys_fork_with_pid(pid);
    if (r == 0) {
        // Only raw system calls from here: this is a copy of the engine about to be replaced.
        map_trampoline_in_child(trampoline, code, batch);
        if (syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) != 0) syscall(SYS_exit_group, 121);
        syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
        syscall(SYS_exit_group, 122);
    }
    if (r < 0) {
        if (errno == EEXIST) return pid_in_use_error(pid, "");
        return sys_error("clone3(set_tid={})", pid);
    }
    int status = CKPT_TRY(wait_stopped(static_cast<pid_t>(r)));
    if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP)
        return error("pid {}: restore helper did not stop (status {:#x})", pid, status);
    CKPT_TRY_CTX(set_trace_options(static_cast<pid_t>(r), kTraceOptions), "pid {}", pid);
    return static_cast<pid_t>(r);
}

// --new-pidns: the init of a new pid namespace (pid 1 there), made before any image is read
// (CLONE_NEWPID needs CAP_SYS_ADMIN, which a user's restore gives up first). Under
// --restore-as it becomes the user at once, keeping CAP_CHECKPOINT_RESTORE until it has made
// the tree's root. When the engine names the root's old pid and the trampoline address, it
// creates the root as its own child; the root maps the trampoline and waits to be seized.
// The init then drops every capability, reaps orphans and, once the root is gone, exits the
// way the root did, so that whoever waits for the init learns the root's status.
struct PidnsInit {
    pid_t pid = 0;      // as the engine sees it
    UniqueFd commands;  // engine -> init: InitCommand
    UniqueFd reports;   // init -> engine: "ready", "created", or what failed
};

struct InitCommand {
    pid_t root = 0;
    uint64_t trampoline = 0;
};

constexpr std::string_view kInitReady = "ready", kInitCreated = "created";

// Drops every capability of the calling thread and checks from /proc that it is exactly
// `who` with none left (the user's engine processes, once the tree exists).
Result<void> drop_capabilities(const privilege::Identity& who) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[2] = {};
    if (syscall(SYS_capset, &hdr, none) != 0) return sys_error("capset(none)");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return sys_error("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    return privilege::verify_identity(who, 0);
}

// The init's life; `who` is null when root restores as recorded.
[[noreturn]] void run_pidns_init(const privilege::Identity* who, int commands, int reports) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    auto report = [&](std::string_view msg) { (void)!write(reports, msg.data(), msg.size()); };
    auto fail = [&](const Error& e) {
        report(e.message());
        _exit(1);
    };
    if (who) {
        if (auto r = privilege::become_user(*who, privilege::cap_bit(CAP_CHECKPOINT_RESTORE)); !r) fail(r.error());
        // The identity change made it non-dumpable, and the root inherits that: the engine
        // (the user too) could not trace it. Holding a capability the user's processes lack,
        // it stays out of their reach all the same (the kernel's ptrace check).
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) fail(sys_error("prctl(PR_SET_DUMPABLE)"));
    }
    report(kInitReady);
    InitCommand cmd;
    if (read(commands, &cmd, sizeof cmd) != static_cast<ssize_t>(sizeof cmd)) _exit(0);  // the restore ended before the tree
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) fail(sys_error("pipe2"));
    auto code = arch::syscall_trap_code();
    auto batch = arch::syscall_batch_code();
    long root = sys_fork_with_pid(cmd.root);
    if (root == 0) {
        // Raw system calls only: a copy of the engine about to be replaced. The protocol's
        // pipes are closed, so that the engine sees the init's end.
        syscall(SYS_close, commands);
        syscall(SYS_close, reports);
        map_trampoline_in_child(cmd.trampoline, code, batch);
        char b = 1;
        syscall(SYS_write, ready[1], &b, 1);
        for (;;) syscall(SYS_pause);
    }
    if (root < 0) fail(errno == EEXIST ? error_code(EEXIST, "pid {} is in use", cmd.root)
                                       : sys_error("pid {}: clone3(set_tid) in the new pid namespace", cmd.root));
    close(ready[1]);
    char b;
    if (read(ready[0], &b, 1) != 1) {
        int status = 0;
        waitpid(static_cast<pid_t>(root), &status, 0);
        fail(error("pid {}: the restore trampoline cannot be mapped at {:#x} (status {:#x})", cmd.root, cmd.trampoline,
                   status));
    }
    if (who) {
        if (auto r = drop_capabilities(*who); !r) {
            kill(static_cast<pid_t>(root), SIGKILL);
            fail(r.error());
        }
        // Nothing of the user's may trace the init (nor take its fds) from here on.
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    report(kInitCreated);
    for (int fd = 0; fd < 1024; ++fd) close(fd);
    for (;;) {
        int status = 0;
        long p = syscall(SYS_wait4, -1, &status, __WALL, nullptr);
        if (p == root) {
            if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
            _exit(WEXITSTATUS(status));
        }
        if (p < 0 && errno != EINTR) _exit(122);
    }
}

Result<PidnsInit> start_pidns_init(const privilege::Identity* who) {
    int commands[2], reports[2];
    if (pipe2(commands, O_CLOEXEC) != 0) return sys_error("pipe2");
    UniqueFd commands_rd(commands[0]), commands_wr(commands[1]);
    if (pipe2(reports, O_CLOEXEC) != 0) return sys_error("pipe2");
    UniqueFd reports_rd(reports[0]), reports_wr(reports[1]);
    clone_args args{};
    args.flags = CLONE_NEWPID;
    args.exit_signal = SIGCHLD;
    long pid = sys_clone3(&args, sizeof args);
    if (pid == 0) {
        close(commands[1]);
        close(reports[0]);
        run_pidns_init(who, commands[0], reports[1]);
    }
    if (pid < 0) return sys_error("clone3(CLONE_NEWPID)");
    return PidnsInit{static_cast<pid_t>(pid), std::move(commands_wr), std::move(reports_rd)};
}

// Waits for the init's next report; anything but `want` says what failed.
Result<void> await_init(const PidnsInit& init, std::string_view want) {
    char buf[4096];
    ssize_t n;
    while ((n = read(init.reports.get(), buf, sizeof buf)) < 0 && errno == EINTR) {
    }
    if (n > 0 && std::string_view(buf, static_cast<size_t>(n)) == want) return ok();
    if (n > 0) return error_code(EPERM, "the new pid namespace's init: {}", std::string_view(buf, static_cast<size_t>(n)));
    return error("the new pid namespace's init {} ended unexpectedly", init.pid);
}

// Has the init create the root with its old pid; seizes it.
Result<pid_t> create_root_in_pidns(const PidnsInit& init, pid_t root_in_ns, uint64_t trampoline) {
    InitCommand cmd{root_in_ns, trampoline};
    CKPT_TRY(write_all(init.commands.get(), &cmd, sizeof cmd));
    CKPT_TRY_CTX(await_init(init, kInitCreated), "pid {}", root_in_ns);
    auto children = CKPT_TRY(read_children(init.pid));
    if (children.size() != 1) return error("pid {}: cannot find the new root under init {}", root_in_ns, init.pid);
    pid_t root = children[0];
    if (!seize(root, kTraceOptions)) return sys_error("ptrace(SEIZE) pid {}", root);
    if (ptrace(PTRACE_INTERRUPT, root, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) pid {}", root);
    CKPT_TRY(wait_stopped(root));
    return root;
}

Result<void> load_task_images(RestoreTask& t) {
    const std::string d = t.image_dir + "/";
    CKPT_TRY(image::read_image(d + image::names::core(t.pid), image::Kind::Core, &t.core));
    CKPT_TRY(image::read_image(d + image::names::mm(t.pid), image::Kind::Mm, &t.mm));
    CKPT_TRY(image::read_image(d + image::names::pagemap(t.pid), image::Kind::PageMap, &t.pagemap));
    CKPT_TRY(image::read_image(d + image::names::fds(t.pid), image::Kind::Fds, &t.fds));
    if (t.core.threads_size() == 0) return error_code(EINVAL, "{}{}: no threads", d, image::names::core(t.pid));
    return ok();
}

Result<void> restore_process(RestoreTask& t) {
    CKPT_TRY(restore_memory_finish(t));
    CKPT_TRY(restore_membarrier(t));
    CKPT_TRY(restore_sigactions(t));
    // Before the root changes (and while the process is as privileged as the restorer).
    CKPT_TRY(restore_proc_attrs(t));
    CKPT_TRY(restore_task_settings(t));
    if (!t.fd_owner) CKPT_TRY(restore_fds(t));  // a shared table is restored once, by its first
    return ok();
}

// The identity and seccomp state of every thread of a process, from /proc, against what the
// image records (and, under --restore-as, exactly the user).
Result<void> verify_task_identity(const RestoreTask& t) {
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        ExpectedIdentity want = expected_identity(thread_creds(t.core, t.core.threads(i)), *t.shared);
        CKPT_TRY(verify_thread_identity(t.pid, t.core.threads(i).tid(), t.host, host_tid, want));
    }
    return ok();
}

Result<void> verify_task_seccomp(const RestoreTask& t) {
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        CKPT_TRY(verify_thread_seccomp(t.pid, t.core.threads(i).tid(), t.host, host_tid, t.core,
                                       t.shared->own_seccomp_filters));
    }
    return ok();
}

}  // namespace

Result<RestoredTree> restore(const RestoreOptions& opts) {
    const uint64_t t0 = monotonic_ns();
    std::string dir = opts.image_dir;
    RestoreShared shared;
    // --stream: the metadata read into memory now (read below as the folder dir names), the
    // page data as each process is filled.
    std::unique_ptr<RestoreStream> stream;
    if (!opts.stream.empty()) {
        if (!dir.empty()) return error_code(EINVAL, "restore: --stream and an images folder (-D) together: choose one");
        stream = CKPT_TRY_CTX(RestoreStream::open(opts.stream), "restore");
        dir = stream->reader.where();
        shared.stream = stream.get();
    }
    shared.tcp_established = opts.tcp_established;
    shared.with_cpu_affinity = opts.with_cpu_affinity;
    shared.block_buffers = make_block_buffers();
    shared.own_cap_bnd = CKPT_TRY(read_status(getpid())).cap_bnd;
    shared.own_seccomp_filters = CKPT_TRY(own_seccomp_filters());
    // The engine's pidfd, inherited by every process created below (a pid namespace of
    // their own could not name the engine); opened first, so that the init has it too.
    UniqueFd engine_pidfd(sys_pidfd_open(getpid(), 0));
    if (!engine_pidfd) return sys_error("pidfd_open(self)");

    Created created;
    std::optional<privilege::Identity> user;
    if (opts.restore_as_uid >= 0) {
        if (!opts.new_pidns)
            return error_code(EINVAL, "--restore-as needs --new-pidns: a chosen pid in this pid namespace is a "
                                      "privilege the user does not have");
        if (!privilege::is_root())
            return error_code(EPERM, "--restore-as needs root (it makes a pid namespace, then becomes the user)");
        if (opts.restore_as_uid == 0) return error_code(EINVAL, "--restore-as is for users other than root");
        user = CKPT_TRY(privilege::user_identity(static_cast<uid_t>(opts.restore_as_uid),
                                                 static_cast<gid_t>(opts.restore_as_gid)));
    }
    // Before any process is made: each will start with these actions.
    CKPT_TRY(read_own_sigactions(&shared.inherited_sigactions));
    CKPT_TRY(read_own_rlimits(&shared.inherited_rlimits));
    std::optional<PidnsInit> init;
    if (opts.new_pidns) {
        init = CKPT_TRY(start_pidns_init(user ? &*user : nullptr));
        created.pids.push_back(init->pid);
    }
    if (user) {
        // From here on nothing of the restore runs as root.
        CKPT_TRY_CTX(privilege::become_user(*user, privilege::cap_bit(CAP_CHECKPOINT_RESTORE)), "becoming uid {}",
                     user->uid);
        // The restored processes take fds from the engine with pidfd_getfd, which needs it
        // dumpable (the identity change cleared that). Holding a capability the user's
        // processes lack, it stays out of their reach all the same (the kernel's ptrace check).
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_DUMPABLE)");
        shared.user = user;
    }
    if (init) CKPT_TRY(await_init(*init, kInitReady));

    struct stat sb;
    if (!stream && stat(dir.c_str(), &sb) != 0) return sys_error("image directory {}", dir);
    image::Inventory inv;
    CKPT_TRY(image::read_image(dir + "/" + image::names::kInventory, image::Kind::Inventory, &inv));
    if (inv.arch() != arch::image_arch())
        return error_code(EINVAL, "{}: images are for architecture {}, this machine is {}", dir,
                          image::Arch_Name(inv.arch()), arch::name());
    if (inv.tasks_size() == 0) return error_code(EINVAL, "{}/{}: no processes", dir, image::names::kInventory);
    if (inv.shell_job() && !opts.shell_job)
        return error_code(EINVAL, "{}: the images are of a shell job (dumped with --shell-job); restore with --shell-job", dir);

    shared.image_dir = dir;
    shared.skip_file_checks = opts.skip_file_checks;
    shared.ext_unix_sk = opts.ext_unix_sk;
    shared.inherited = opts.inherit_fds;
    CKPT_TRY(image::read_image(dir + "/" + image::names::kFiles, image::Kind::Files, &shared.files));
    // System V IPC: a tree with an IPC namespace of its own gets a new one (ipc_ns.h).
    std::optional<image::IpcNamespace> ipc;
    {
        const std::string ipc_path = dir + "/" + image::names::kIpc;
        if (CKPT_TRY(image::image_file_exists(ipc_path))) {
            if (user || !privilege::is_root())
                return error_code(EPERM,
                                  "{}: the tree has its own IPC namespace (System V IPC), which only a restore with "
                                  "CAP_SYS_ADMIN (as root, without --restore-as) can make: refused",
                                  ipc_path);
            ipc.emplace();
            CKPT_TRY(image::read_image(ipc_path, image::Kind::Ipc, &*ipc));
            CKPT_TRY(check_ipc_image(*ipc, ipc_path));
        }
    }
    CKPT_TRY(prepare_fd_restore(shared));

    // Load every image and check every pid before creating anything.
    if (user && inv.owner_uid() != user->uid)
        return error_code(EPERM, "{}: images belong to uid {}, not to uid {}: refused", dir, inv.owner_uid(), user->uid);
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
        for (const auto& v : t.mm.vmas())
            if (v.sysv_shm())
                CKPT_TRY(check_shm_attachment(ipc ? &*ipc : nullptr, v, dir + "/" + image::names::mm(t.pid)));
        if (user) CKPT_TRY_CTX(check_user_images(t.pid, t.core, shared), "{}/{}", dir, image::names::core(t.pid));
        CKPT_TRY_CTX(check_proc_attrs(t.pid, t.core, shared), "{}/{}", dir, image::names::core(t.pid));
    }
    // Every resource given with --inherit-fd must be one the images name: a wrong key is a
    // mistake (the wrong images, or a typo), not something to restore without.
    for (const auto& [key, fd] : opts.inherit_fds) {
        bool named = false;
        for (auto& [pid, t] : tasks)
            for (const auto& f : t.fds.fds()) named |= f.kind() == image::Fd::EXTERNAL && f.external_key() == key;
        if (!named) return error_code(EINVAL, "{}: --inherit-fd fd[{}]:{}: the images have no external resource {}", dir, fd, key, key);
    }
    // A table shared with the parent (format version 6) needs the parent restored with it.
    for (const auto& te : inv.tasks()) {
        if (!te.fd_table_of_parent()) continue;
        auto up = tasks.find(te.ppid());
        if (te.state() == image::TaskEntry::ZOMBIE || te.pid() == inv.root_pid() || up == tasks.end() ||
            up->second.core.threads_size() == 0)
            return error_code(EINVAL, "{}/inventory.img: pid {} shares the fd table of parent {}, which is not "
                                      "restored with it (image is corrupt)", dir, te.pid(), te.ppid());
    }
    // Pages shared with the parent (format version 6) need the parent restored with them.
    for (const auto& te : inv.tasks()) {
        if (te.state() == image::TaskEntry::ZOMBIE) continue;
        auto up = tasks.find(te.ppid());
        bool parent_here = te.pid() != inv.root_pid() && up != tasks.end() && !up->second.mm.vmas().empty();
        CKPT_TRY(check_inherited_memory(tasks[te.pid()], parent_here ? &up->second : nullptr));
    }
    image::MmCore all_layouts;
    for (auto& [pid, t] : tasks)
        for (const auto& v : t.mm.vmas()) *all_layouts.add_vmas() = v;
    // The root is a copy of the init, made before this process read the images: the
    // trampoline must be free in the init's layout as well.
    if (init) {
        for (const auto& m : CKPT_TRY(read_maps(init->pid))) {
            auto* v = all_layouts.add_vmas();
            v->set_start(m.start);
            v->set_end(m.end);
        }
    }
    uint64_t trampoline = CKPT_TRY(find_trampoline_hole(all_layouts, RestoreTask::kTrampolineSize));
    if (arch::syscall_trap_code().size() > RestoreTask::kBatchCodeOffset ||
        arch::syscall_batch_code().size() > RestoreTask::kCodeSize - RestoreTask::kBatchCodeOffset)
        return error("restore: the {} trap and batch code do not fit the trampoline's code page", arch::name());

    std::map<pid_t, const image::TaskEntry*> entry;
    for (const auto& te : inv.tasks()) entry[te.pid()] = &te;
    pid_t root = inv.root_pid();

    RestoredTree out;
    std::optional<IpcRestore> ipc_restore;

    // Page fills in the background (not under --stream, whose pages arrive in tree order),
    // while the next processes are made: each process's fill is waited for before a child
    // of it is made, all before step 2. Declared after the tasks it writes into, so that on
    // a failure it ends (waiting for running fills) before they do; then the tree is killed.
    BackgroundJobs fills(std::clamp(std::thread::hardware_concurrency(), 2u, 8u));
    // Where the time goes (-vv): the steps below, and within the first the processes'
    // creation, their layouts, the fills (summed over the fill threads) and the waits for them.
    const uint64_t t_loaded = monotonic_ns();
    uint64_t layout_ns = 0, fill_wait_ns = 0;
    std::atomic<uint64_t> fill_ns{0};

    // 1. The tree: each process created by its parent, in inventory order (parents first).
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        const image::TaskEntry& te = *entry[pid];
        CKPT_TRY(fills.failed());  // a fill that failed fails the restore at once
        if (pid == root && init) {
            t.host = CKPT_TRY(create_root_in_pidns(*init, pid, trampoline));
            out.pidns_init = init->pid;
        } else if (pid == root) {
            t.host = CKPT_TRY(create_root(pid, trampoline));
        } else {
            auto parent = tasks.find(te.ppid());
            if (parent == tasks.end() || !parent->second.leader)
                return error("pid {}: parent {} is not in the images", pid, te.ppid());
            // From inside the parent, so that it is the parent's child (and has its fd table
            // when it shared it).
            RestoreTask& up = parent->second;
            // The parent's pages complete first where the child keeps a mapping of the
            // parent's: it inherits them by fork. The others are left out of the fork.
            if (keeps_parent_mappings(t.mm)) {
                const uint64_t t_wait = monotonic_ns();
                CKPT_TRY(fills.wait(te.ppid()));
                fill_wait_ns += monotonic_ns() - t_wait;
            }
            const auto left_out = CKPT_TRY_CTX(leave_out_of_fork(up, t.mm), "restore pid {}", pid);
            NewTask kind = NewTask::Process;
            if (te.fd_table_of_parent()) {
                kind = NewTask::ProcessSharingFds;
                t.fd_owner = up.fd_owner ? up.fd_owner : &up;
            }
            t.host = CKPT_TRY_CTX(create_task(*up.leader, up.scratch, kind, pid), "parent {}", te.ppid());
            CKPT_TRY_CTX(put_back_into_fork(up, left_out), "restore pid {}", te.ppid());
        }
        created.pids.push_back(t.host);
        shared.hosts[pid] = t.host;
        t.trampoline = trampoline;
        t.scratch = RemoteScratch(t.host, trampoline + RestoreTask::kCodeSize, RestoreTask::kScratchSize);
        t.leader = std::make_unique<RemoteThread>(CKPT_TRY(RemoteThread::attach(t.host, trampoline)));
        CKPT_TRY_CTX(set_trace_options(t.host, kTraceOptions), "pid {}", pid);
        // The root enters a new IPC namespace, filled before any segment is attached; every
        // process made after it inherits it.
        if (pid == root && ipc) ipc_restore.emplace(CKPT_TRY_CTX(IpcRestore::create(*t.leader, t.host, *ipc), "restore pid {}", pid));
        CKPT_TRY_CTX(drop_inherited_rseq(*t.leader), "pid {}", pid);
        // Sessions and groups led by this process; others are inherited from the parent
        // (or, for the root, from the restorer).
        if (te.sid() == pid) CKPT_TRY(t.leader->syscall_ok("setsid", SYS_setsid));
        else if (te.pgid() == pid) CKPT_TRY(t.leader->syscall_ok("setpgid", SYS_setpgid, {0, 0}));
        // Every process is a copy of the engine (or of its parent) and so holds the
        // engine's pidfd under the same number: its way to take fds from the engine.
        t.engine_pidfd_in_target = engine_pidfd.get();
        // A session leader whose terminal is a pty of the tree takes it before any process of
        // its session is made (they inherit it).
        if (te.sid() == pid) CKPT_TRY_CTX(take_pty_terminal(t), "restore");
        // Its mappings and pages before its children are made: they inherit by fork the
        // pages they shared with it at the dump, copy-on-write as they were.
        if (te.state() != image::TaskEntry::ZOMBIE) {
            shared.made[pid] = &t;
            const uint64_t t_layout = monotonic_ns();
            CKPT_TRY_CTX(restore_memory_layout(t), "restore pid {}", pid);
            layout_ns += monotonic_ns() - t_layout;
            if (stream) {
                const uint64_t t_fill = monotonic_ns();
                CKPT_TRY_CTX(restore_memory_pages(t), "restore pid {}", pid);
                fill_ns += monotonic_ns() - t_fill;
            } else {
                fills.submit(pid, [&t, pid, &fill_ns]() -> Result<void> {
                    const uint64_t t_fill = monotonic_ns();
                    CKPT_TRY_CTX(restore_memory_pages(t), "restore pid {}", pid);
                    fill_ns += monotonic_ns() - t_fill;
                    return ok();
                });
            }
        }
    }
    const uint64_t t_wait_all = monotonic_ns();
    CKPT_TRY(fills.wait_all());
    const uint64_t t_filled = monotonic_ns();
    fill_wait_ns += t_filled - t_wait_all;
    // Every page of the stream is in place: its trailer, or it is truncated (and the tree
    // made so far killed).
    if (stream) CKPT_TRY_CTX(stream->finish(), "restore");
    CKPT_TRY_CTX(tree_made_fd_restore(shared), "restore");
    // Every segment is attached where it was: the engine lets go of those marked for
    // destruction (held until now), and the namespace's sysctls are set as recorded.
    if (ipc_restore) CKPT_TRY_CTX(ipc_restore->finish(), "restore");
    // Groups led by another process of the tree (even the parent's: the parent may have
    // joined its group only now, after this process was made in its old one).
    for (pid_t pid : order) {
        const image::TaskEntry& te = *entry[pid];
        if (te.pgid() != pid && te.sid() != pid && tasks.count(te.pgid()))
            CKPT_TRY_CTX(tasks[pid].leader->syscall_ok("setpgid", SYS_setpgid, {0, static_cast<uint64_t>(te.pgid())}),
                         "pid {}: joining process group {}", pid, te.pgid());
    }
    // Every group exists: the foreground group of each pty of the tree that is a terminal.
    CKPT_TRY_CTX(restore_pty_foreground(tasks), "restore");
    // Stopped processes enter their group stop now, groups in place (a SIGTSTP needs its
    // group not orphaned) and before any thread is made (threads join it).
    for (pid_t pid : order) {
        const image::TaskEntry& te = *entry[pid];
        if (te.state() == image::TaskEntry::ZOMBIE || te.stop_signal() == 0) continue;
        auto parent = tasks.find(te.ppid());
        RestoreTask* up = pid != root && parent != tasks.end() ? &parent->second : nullptr;
        CKPT_TRY_CTX(restore_stop(tasks[pid], te.stop_signal(), te.stop_reported(), up), "restore pid {}", pid);
    }
    // Zombies: the process exits the way it did, with its name.
    for (pid_t pid : order) {
        const image::TaskEntry& te = *entry[pid];
        if (te.state() != image::TaskEntry::ZOMBIE) continue;
        CKPT_TRY_CTX(restore_zombie(tasks[pid], te.exit_status(), te.comm()), "restore pid {}", pid);
    }
    // Their parents were sent SIGCHLD for those stops and exits, which the originals had
    // long been sent: taken back before the recorded pending signals are queued.
    for (pid_t pid : order)
        if (entry[pid]->state() != image::TaskEntry::ZOMBIE) CKPT_TRY(drain_restore_sigchld(tasks[pid]));

    // 2. Each process: memory, handlers, settings, fds (zombies have exited).
    const uint64_t t_tree = monotonic_ns();
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
    const uint64_t t_processes = monotonic_ns();
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
                t.thread_hosts.push_back(host);
            }
            CKPT_TRY_CTX(restore_thread_final(*rt, t.scratch, t.batch_code(), tc), "restore pid {}: thread {}", pid, tc.tid());
            CKPT_TRY_CTX(restore_pending(*rt, t.scratch, pid, &tc, tc.pending()), "restore pid {}: thread {}", pid,
                         tc.tid());
            if (i > 0) {
                // Capabilities are per thread: each drops its own (the leader's last, below).
                if (user) CKPT_TRY_CTX(restore_creds_as_user(*rt, t.scratch, t.batch_code(), t.core.creds()), "restore pid {}: thread {}", pid, tc.tid());
                else CKPT_TRY_CTX(restore_creds(*rt, t.scratch, t.batch_code(), thread_creds(t.core, tc)), "restore pid {}: thread {}", pid, tc.tid());
                threads.push_back({rt->tid(), &tc});
            }
        }
        // Once every thread exists (each was made from the leader and has its settings).
        CKPT_TRY_CTX(restore_sched(t), "restore");
    }
    // Every fd of every process is in place: what the fd kinds held for them goes.
    const uint64_t t_threads = monotonic_ns();
    CKPT_TRY_CTX(finish_fd_restore(shared), "restore");
    // Every thread exists now: fd owners (which may be any of them) and O_ASYNC; then each
    // fd's status flags are checked whole. Memfd seals last, once every mapping and fd of
    // each is in place (F_SEAL_WRITE refuses writable mappings, F_SEAL_FUTURE_WRITE new ones).
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (entry[pid]->state() == image::TaskEntry::ZOMBIE) continue;
        if (!t.fd_owner) CKPT_TRY_CTX(restore_fd_async(t), "restore pid {}", pid);
        CKPT_TRY_CTX(verify_fd_flags(t), "restore");
    }
    CKPT_TRY_CTX(seal_saved_files(shared.files, shared.saved_objects), "restore");
    CKPT_TRY_CTX(shared.release_saved_names(), "restore");
    // 4. Let go: threads' registers, then each leader drops its trampoline and identity.
    const uint64_t t_fds_done = monotonic_ns();
    uint64_t injected_runs = 0;
    for (const auto& th : threads) CKPT_TRY(set_thread_registers(th.host, *th.core));
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (!t.leader) continue;
        // A shared table's pidfd is closed once, by its first process (which comes first).
        if (!t.fd_owner)
            CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(t.engine_pidfd_in_target)}));
        CKPT_TRY_CTX(restore_pending(*t.leader, t.scratch, pid, nullptr, t.core.shared_pending()), "restore pid {}",
                     pid);
        // Timers after every recorded pending signal: a timer due at once must queue its
        // next signal behind the recorded one (which carries the overruns), not before it.
        CKPT_TRY_CTX(restore_timers(t), "restore pid {}", pid);
        CKPT_TRY(restore_mdwe(t));
        // A change of identity makes the process non-dumpable (it would hide it from its own
        // user's debugger and /proc) and clears its parent-death signal: both set again after
        // it, and before the filters where they come last.
        auto after_identity = [&]() -> Result<void> {
            CKPT_TRY(verify_task_identity(t));
            CKPT_TRY(t.leader->syscall_ok("prctl(PR_SET_DUMPABLE)", SYS_prctl, {PR_SET_DUMPABLE, t.core.dumpable() ? 1u : 0u}));
            if (t.core.pdeath_signal())
                CKPT_TRY(t.leader->syscall_ok("prctl(PR_SET_PDEATHSIG)", SYS_prctl,
                                              {PR_SET_PDEATHSIG, static_cast<uint64_t>(t.core.pdeath_signal())}));
            return ok();
        };
        if (user) {
            // The identity, checked from /proc for every thread, then the filters last: a
            // filter can fake success for the calls that set the identity, never undo them.
            // Only the trampoline's munmap comes after them (the filters are not suspended
            // for a user's restore: that needs CAP_SYS_ADMIN).
            CKPT_TRY_CTX(restore_creds_as_user(*t.leader, t.scratch, t.batch_code(), t.core.creds()), "restore pid {}", pid);
            CKPT_TRY(after_identity());
            CKPT_TRY(restore_seccomp(t));
        } else {
            // Root restoring as recorded: a filter needs no_new_privs or CAP_SYS_ADMIN, so it
            // comes before the identity drop unless the process has no_new_privs (then after,
            // so the filter cannot refuse the drop); the result is checked either way. The
            // filters are suspended for the engine's calls (set_trace_options).
            bool nnp = t.core.creds().no_new_privs();
            if (!nnp) CKPT_TRY(restore_seccomp(t));
            CKPT_TRY_CTX(restore_creds(*t.leader, t.scratch, t.batch_code(), t.core.creds()), "restore pid {}", pid);
            CKPT_TRY(after_identity());
            if (nnp) CKPT_TRY(restore_seccomp(t));
        }
        CKPT_TRY(verify_task_seccomp(t));
        logger()->debug("pid {}: {} injected syscalls in {} ptrace runs", pid, t.leader->injected_calls() + 1,
                        t.leader->injected_runs() + 1);
        injected_runs += t.leader->injected_runs() + 1;
        // munmap of the trampoline returns into unmapped memory: the fault stops the thread.
        CKPT_TRY_CTX(t.leader->syscall_removing_code(SYS_munmap, {trampoline, RestoreTask::kTrampolineSize}),
                     "pid {}: dropping the trampoline", pid);
        CKPT_TRY_CTX(verify_sigactions(t), "restore");
    }
    if (user) {
        // Every restored thread gave up the restore's capability: this process needs it no
        // more (letting go is ptrace of its own tracees), nor may the user trace it.
        CKPT_TRY_CTX(drop_capabilities(*user), "the restoring engine");
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_DUMPABLE, 0)");
    }
    out.root = tasks[root].host;
    // Written before the tree runs, so that a pidfile that cannot be written fails the
    // restore whole. Never through a symlink: the name may be the user's.
    if (!opts.pidfile.empty()) {
        auto fd = CKPT_TRY(open_file(opts.pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644));
        std::string s = std::to_string(out.root) + "\n";
        CKPT_TRY_CTX(write_all(fd.get(), s.data(), s.size()), "pidfile {}", opts.pidfile);
    }
    // Nothing fails from here on: the hidden links of --link-remap go (a failed restore
    // leaves them, so that the images can be restored again).
    CKPT_TRY_CTX(shared.remove_link_remaps(), "restore");
    created.done = true;
    for (const auto& th : threads) ptrace(PTRACE_DETACH, th.host, 0, 0);
    for (pid_t pid : order) {
        RestoreTask& t = tasks[pid];
        if (!t.leader) continue;
        CKPT_TRY(set_thread_registers(t.host, t.core.threads(0)));
        CKPT_TRY(requeue_stops(t));
        if (ptrace(PTRACE_DETACH, t.host, 0, 0) != 0) return sys_error("ptrace(DETACH) pid {}", pid);
    }
    auto ms = [](uint64_t ns) { return static_cast<double>(ns) / 1e6; };
    logger()->debug("tree {} restored in {:.1f} ms: images read and checked {:.1f}, processes made {:.1f} (layouts "
                    "{:.1f}, page fills {:.1f} summed over threads, waited for {:.1f}), groups, stops and zombies "
                    "{:.1f}, settings and fds {:.1f}, threads {:.1f}, fds finished {:.1f}, let go {:.1f}; {} leader "
                    "ptrace runs",
                    out.root, ms(monotonic_ns() - t0), ms(t_loaded - t0), ms(t_filled - t_loaded), ms(layout_ns),
                    ms(fill_ns), ms(fill_wait_ns), ms(t_tree - t_filled), ms(t_processes - t_tree),
                    ms(t_threads - t_processes), ms(t_fds_done - t_threads), ms(monotonic_ns() - t_fds_done),
                    injected_runs);
    logger()->info("restored {} processes of tree {} from {}", order.size(), out.root, dir);
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
