#include "ptrace_ctl.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"
#include "proc.h"

namespace ckpt::engine {

namespace {

// Whether thread `other` belongs to the thread group of `tid` (both this engine's tracees).
bool same_thread_group(pid_t other, pid_t tid) {
    auto a = read_status(other), b = read_status(tid);
    return a && b && a->tgid == b->tgid;
}

}  // namespace

Result<int> wait_stopped(pid_t tid) {
    int status;
    // A group killed meanwhile (SIGKILL, a seccomp filter's kill, the OOM killer): its other
    // threads, traced, stay zombies until their tracer reaps them, and a leader's end is not
    // reported before theirs. So what this thread's tracees have to report is looked at first
    // without taking it (WNOWAIT), and ended threads of tid's group are reaped.
    for (int reaped = 0; reaped < 100000; ++reaped) {
        siginfo_t info{};
        if (waitid(P_ALL, 0, &info, WEXITED | WSTOPPED | __WALL | __WNOTHREAD | WNOWAIT) < 0) {
            if (errno == EINTR) continue;
            return sys_error("waitid (for tid {})", tid);
        }
        const bool ended = info.si_code == CLD_EXITED || info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
        if (info.si_pid == tid || !ended || !same_thread_group(info.si_pid, tid)) break;
        if (waitpid(info.si_pid, &status, __WALL | WNOHANG) != info.si_pid) break;
        log::get("engine")->debug("tid {}: thread {} of its group ended (status {:#x})", tid, info.si_pid, status);
    }
    for (;;) {
        pid_t r = waitpid(tid, &status, __WALL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sys_error("waitpid tid {}", tid);
        }
        break;
    }
    if (WIFEXITED(status) || WIFSIGNALED(status))
        return error_code(ESRCH, "tid {} exited while traced (status {:#x})", tid, status);
    return status;
}

bool is_group_stop(pid_t tid, int status) {
    if (!WIFSTOPPED(status)) return false;
    int event = status >> 16;
    if (event == PTRACE_EVENT_STOP) return WSTOPSIG(status) != SIGTRAP;
    if (event != 0) return false;
    siginfo_t si{};
    return ptrace(PTRACE_GETSIGINFO, tid, 0, &si) != 0 && errno == EINVAL;
}

namespace {

// Why tid, seized and interrupted, has not stopped: its state and the kernel function it
// waits in (/proc, as root reads it), with what that usually means.
std::string not_stopping(pid_t tid, int timeout_ms) {
    std::string state = "?", wchan = "?";
    if (auto st = read_stat(tid)) state = std::string(1, st->state);
    if (auto w = read_file(fmt::format("/proc/{}/wchan", tid)); w && !w->empty() && *w != "0") wchan = *w;
    std::string why;
    if (wchan.find("clone") != std::string::npos || wchan.find("vfork") != std::string::npos)
        why = ": a vfork() parent, which waits until its child calls exec or exits (dump again after that)";
    else if (state == "D")
        why = ": an uninterruptible wait (I/O to a device or file system that does not answer?)";
    return fmt::format("tid {} did not stop within {} ms (state {}, waiting in the kernel at {}){}", tid, timeout_ms, state,
                       wchan, why);
}

// wait_stopped, for at most timeout_ms (< 0: no limit): polled, a few yields first (a thread
// interrupted in user space or in an interruptible wait stops within microseconds), then
// naps growing to 2 ms.
Result<int> wait_stopped_within(pid_t tid, int timeout_ms) {
    if (timeout_ms < 0) return wait_stopped(tid);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int yields = 0;
    useconds_t nap = 20;
    for (;;) {
        int status;
        pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sys_error("waitpid tid {}", tid);
        if (r == tid) {
            if (WIFEXITED(status) || WIFSIGNALED(status))
                return error_code(ESRCH, "tid {} exited while traced (status {:#x})", tid, status);
            return status;
        }
        if (std::chrono::steady_clock::now() >= deadline) return error_code(ETIMEDOUT, "{}", not_stopping(tid, timeout_ms));
        if (yields < 16) {
            ++yields;
            sched_yield();
        } else {
            usleep(nap);
            nap = std::min<useconds_t>(nap * 2, 2000);
        }
    }
}

// Waits for the PTRACE_EVENT_STOP that follows an interrupt; returns its signal.
Result<int> await_event_stop(pid_t tid, int timeout_ms = -1) {
    for (;;) {
        int status = CKPT_TRY(wait_stopped_within(tid, timeout_ms));
        int event = status >> 16;
        if (event == PTRACE_EVENT_STOP) return WSTOPSIG(status);
        if (WIFSTOPPED(status) && event == 0) {
            // A signal reached the thread before our interrupt: let it be delivered as it
            // would have been (a stop signal starts a group stop), then stop again.
            int sig = WSTOPSIG(status);
            if (ptrace(PTRACE_CONT, tid, 0, sig) != 0) return sys_error("ptrace(CONT) tid {}", tid);
            if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) tid {}", tid);
            continue;
        }
        if (ptrace(PTRACE_CONT, tid, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid);
        if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) tid {}", tid);
    }
}

// The process that traces tid (TracerPid in /proc), 0 if none or unknown.
pid_t tracer_of(pid_t tid) {
    auto status = read_status(tid);
    return status ? status->tracer : 0;
}

}  // namespace

Result<int> seize_and_stop(pid_t tid, int timeout_ms) {
    if (!seize(tid, PTRACE_O_TRACESYSGOOD)) {
        const int err = errno;
        if (err == EPERM)
            if (pid_t tracer = tracer_of(tid); tracer > 0)
                return error_code(EPERM, "tid {} is traced by pid {} (a debugger, strace...): a traced thread cannot be "
                                         "dumped until its tracer lets it go",
                                  tid, tracer);
        errno = err;
        return sys_error("ptrace(SEIZE) tid {}", tid);
    }
    if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) tid {}", tid);
    return await_event_stop(tid, timeout_ms);
}

// EPERM: no CAP_SYS_ADMIN (a user's restore) or the engine is filtered itself; EINVAL: a
// kernel without CONFIG_CHECKPOINT_RESTORE.
// CKPT_NO_SUSPEND_SECCOMP=1: as an engine without CAP_SYS_ADMIN (tests of that path).
bool may_suspend_seccomp() {
    static const bool may = [] {
        const char* no = std::getenv("CKPT_NO_SUSPEND_SECCOMP");
        return !no || std::string_view(no) != "1";
    }();
    return may;
}

bool seize(pid_t tid, unsigned options) {
    if (!may_suspend_seccomp()) return ptrace(PTRACE_SEIZE, tid, 0, options) == 0;
    if (ptrace(PTRACE_SEIZE, tid, 0, options | PTRACE_O_SUSPEND_SECCOMP) == 0) return true;
    if (errno != EPERM && errno != EINVAL) return false;
    return ptrace(PTRACE_SEIZE, tid, 0, options) == 0;
}

Result<void> set_trace_options(pid_t tid, unsigned options) {
    if (may_suspend_seccomp()) {
        if (ptrace(PTRACE_SETOPTIONS, tid, 0, options | PTRACE_O_SUSPEND_SECCOMP) == 0) return ok();
        if (errno != EPERM && errno != EINVAL) return sys_error("ptrace(SETOPTIONS) tid {}", tid);
    }
    if (ptrace(PTRACE_SETOPTIONS, tid, 0, options) != 0) return sys_error("ptrace(SETOPTIONS) tid {}", tid);
    return ok();
}

Result<int> restop(pid_t tid) {
    if (ptrace(PTRACE_CONT, tid, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid);
    if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) return sys_error("ptrace(INTERRUPT) tid {}", tid);
    return await_event_stop(tid);
}

namespace {
uint64_t signal_bit(int sig) { return 1ull << (sig - 1); }

// Signals pending for a thread, its own and its process's (/proc/TID/status SigPnd, ShdPnd).
Result<uint64_t> pending_signals(pid_t tid) {
    const ProcStatus st = CKPT_TRY(read_status(tid));
    return st.sig_pnd | st.shd_pnd;
}
}  // namespace

Result<RemoteThread> RemoteThread::attach(pid_t tid, uint64_t code_addr) {
    RemoteThread t;
    t.tid_ = tid;
    t.code_addr_ = code_addr;
    t.saved_ = CKPT_TRY(arch::read_thread_state(tid));
    if (ptrace(PTRACE_GETSIGMASK, tid, sizeof t.saved_sigmask_, &t.saved_sigmask_) != 0)
        return sys_error("ptrace(GETSIGMASK) tid {}", tid);
    if (CKPT_TRY(pending_signals(tid)) & signal_bit(SIGTRAP))
        return error_code(EBUSY, "tid {} has a SIGTRAP pending (blocked), which the engine's injected code would take "
                                 "for its own breakpoint: not supported (dump again once it is taken)", tid);
    t.inject_mask_ &= ~signal_bit(SIGTRAP);
    if (ptrace(PTRACE_SETSIGMASK, tid, sizeof t.inject_mask_, &t.inject_mask_) != 0)
        return sys_error("ptrace(SETSIGMASK) tid {}", tid);
    return t;
}

Result<void> RemoteThread::block_during_injection(int sig) {
    inject_mask_ |= signal_bit(sig);
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof inject_mask_, &inject_mask_) != 0)
        return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    return ok();
}

Result<arch::ThreadState> RemoteThread::run_to_trap(const arch::ThreadState& st, long nr, uint64_t batch) {
    // Named only in errors: formatted then.
    auto what = [&] { return batch ? fmt::format("batch of {} syscalls", batch) : fmt::format("syscall {}", nr); };
    CKPT_TRY(arch::write_thread_state(tid_, st));
    last_child_ = 0;
    ++injected_runs_;
    static auto log = log::get("ptrace");
    if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid_);
    for (;;) {
        int status = CKPT_TRY_CTX(wait_stopped(tid_), "injected {}", what());
        if (WIFSTOPPED(status) && WSTOPSIG(status) == SIGTRAP && (status >> 16) == 0) {
            siginfo_t si{};
            if (ptrace(PTRACE_GETSIGINFO, tid_, 0, &si) != 0) return sys_error("ptrace(GETSIGINFO) tid {}", tid_);
            if (si.si_code > 0) break;  // raised by the kernel: the breakpoint
            // Sent by a process (kill, tgkill, sigqueue) while the code ran: queued again
            // (blocked from now on, pending for the thread; its sender is then the engine)
            // and the injection given up, so that the signal is not lost.
            CKPT_TRY(block_during_injection(SIGTRAP));
            if (::syscall(SYS_tkill, tid_, SIGTRAP) != 0) return sys_error("tkill({}, SIGTRAP)", tid_);
            return error_code(EAGAIN, "tid {}: a SIGTRAP sent by pid {} arrived during injected {}: try again", tid_,
                              si.si_pid, what());
        }
        if (is_group_stop(tid_, status)) {
            // A group stop the thread joins (a thread born into a stopped process): it
            // stays stopped for the group, the injection goes on.
            if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid_);
            continue;
        }
        if (WIFSTOPPED(status) && (status >> 16) == 0 && WSTOPSIG(status) == SIGSTOP) {
            // A pending SIGSTOP cannot be blocked: held back, the caller queues it again.
            ++held_stops_;
            log->debug("tid {}: a pending SIGSTOP held back during injection", tid_);
            if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid_);
            continue;
        }
        if (WIFSTOPPED(status) && (status >> 16) == 0) {
            int sig = WSTOPSIG(status);
            auto now = arch::read_general_state(tid_);
            siginfo_t si{};
            ptrace(PTRACE_GETSIGINFO, tid_, 0, &si);
            return error_code(EFAULT, "tid {}: injected {} stopped by signal {} (code {}, address {}) at {:#x}", tid_,
                              what(), sig, si.si_code, si.si_addr, now ? arch::instruction_pointer(*now) : 0);
        }
        // Any other stop (group stop, event): keep going.
        int event = status >> 16;
        if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_VFORK) {
            unsigned long child = 0;
            if (ptrace(PTRACE_GETEVENTMSG, tid_, 0, &child) == 0) last_child_ = static_cast<pid_t>(child);
        }
        if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid_);
    }
    return arch::read_general_state(tid_);
}

Result<int64_t> RemoteThread::syscall(long nr, std::array<uint64_t, 6> args) {
    arch::ThreadState st;
    st.regs = saved_.regs;  // general registers only: the extended state is left alone
    arch::prepare_syscall(st, code_addr_, nr, args);
    static auto log = log::get("ptrace");
    log->trace("tid {}: syscall {}({:#x}, {:#x}, {:#x}, {:#x})", tid_, nr, args[0], args[1], args[2], args[3]);
    ++injected_calls_;
    auto after = CKPT_TRY(run_to_trap(st, nr, 0));
    return arch::syscall_return(after);
}

Result<void> RemoteThread::run_batch(uint64_t batch_code_addr, uint64_t table_addr, uint64_t count) {
    arch::ThreadState st;
    st.regs = saved_.regs;
    arch::prepare_syscall_batch(st, batch_code_addr, table_addr, count);
    static auto log = log::get("ptrace");
    log->trace("tid {}: batch of {} syscalls at {:#x}", tid_, count, table_addr);
    injected_calls_ += count;
    CKPT_TRY(run_to_trap(st, -1, count));
    return ok();
}

Result<int64_t> RemoteThread::syscall_ok(const char* name, long nr, std::array<uint64_t, 6> args) {
    int64_t r = CKPT_TRY(syscall(nr, args));
    if (r < 0 && r > -4096) return sys_error_code(static_cast<int>(-r), fmt::format("tid {}: {}", tid_, name));
    return r;
}

Result<void> RemoteThread::syscall_removing_code(long nr, std::array<uint64_t, 6> args) {
    arch::ThreadState st;
    st.regs = saved_.regs;
    arch::prepare_syscall(st, code_addr_, nr, args);
    CKPT_TRY(arch::write_thread_state(tid_, st));
    // The fault that ends it is forced: blocked, it would reset the process's SIGSEGV
    // action (a pending one keeps it blocked: verify_sigactions then finds the reset).
    uint64_t mask = inject_mask_;
    if (!(CKPT_TRY(pending_signals(tid_)) & signal_bit(SIGSEGV))) mask &= ~signal_bit(SIGSEGV);
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof mask, &mask) != 0) return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", tid_);
    int status = CKPT_TRY(wait_stopped(tid_));
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof inject_mask_, &inject_mask_) != 0)
        return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    if (!WIFSTOPPED(status) || (status >> 16) != 0 || (WSTOPSIG(status) != SIGSEGV && WSTOPSIG(status) != SIGTRAP))
        return error("tid {}: unexpected stop {:#x} after syscall {}", tid_, status, nr);
    siginfo_t si{};
    if (ptrace(PTRACE_GETSIGINFO, tid_, 0, &si) != 0) return sys_error("ptrace(GETSIGINFO) tid {}", tid_);
    if (si.si_code <= 0)
        return error_code(EAGAIN, "tid {}: signal {} sent by pid {} arrived as syscall {} removed the injected code",
                          tid_, WSTOPSIG(status), si.si_pid, nr);
    auto after = CKPT_TRY(arch::read_general_state(tid_));
    if (WSTOPSIG(status) == SIGTRAP && arch::syscall_return(after) < 0)
        return sys_error_code(static_cast<int>(-arch::syscall_return(after)), fmt::format("tid {}: syscall {}", tid_, nr));
    return ok();
}

Result<void> RemoteThread::enter_group_stop(int sig) {
    // Pointed at a harmless syscall first: if the kernel discards the signal instead of
    // stopping, the thread runs getpid and traps, and says so, instead of running on.
    arch::ThreadState st;
    st.regs = saved_.regs;
    arch::prepare_syscall(st, code_addr_, SYS_getpid, {});
    CKPT_TRY(arch::write_thread_state(tid_, st));
    uint64_t mask = inject_mask_ & ~signal_bit(sig);
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof mask, &mask) != 0) return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    // In the stop after the injected syscall's trap, which is a signal delivery: the
    // signal given here replaces SIGTRAP and takes its default action.
    if (ptrace(PTRACE_CONT, tid_, 0, sig) != 0) return sys_error("ptrace(CONT, {}) tid {}", sig, tid_);
    int status = CKPT_TRY_CTX(wait_stopped(tid_), "stopping it with signal {}", sig);
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof inject_mask_, &inject_mask_) != 0)
        return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    if (!is_group_stop(tid_, status) || WSTOPSIG(status) != sig)
        return error_code(EIO, "tid {}: signal {} did not stop it (stop status {:#x}; a SIGTSTP, SIGTTIN or SIGTTOU "
                               "to an orphaned process group is discarded)", tid_, sig, status);
    return ok();
}

Result<void> RemoteThread::restore_state() {
    CKPT_TRY(arch::write_thread_state(tid_, saved_));
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof saved_sigmask_, &saved_sigmask_) != 0)
        return sys_error("ptrace(SETSIGMASK) tid {}", tid_);
    return ok();
}

Result<TrapCodeSite> TrapCodeSite::install(pid_t pid, uint64_t addr) {
    const auto trap = arch::syscall_trap_code();
    const auto batch = arch::syscall_batch_code();
    static_assert(kBatchOffset % 8 == 0);
    if (trap.size() > kBatchOffset || kBatchOffset + batch.size() > kWords * 8)
        return error("the trap and batch code ({} and {} bytes) do not fit a trap site", trap.size(), batch.size());
    TrapCodeSite s;
    s.pid_ = pid;
    s.addr_ = addr;
    for (size_t i = 0; i < kWords; ++i) {
        errno = 0;
        long word = ptrace(PTRACE_PEEKDATA, pid, addr + 8 * i, 0);
        if (word == -1 && errno) return sys_error("ptrace(PEEKDATA) pid {} at {:#x}", pid, addr + 8 * i);
        s.original_[i] = static_cast<uint64_t>(word);
    }
    std::array<uint64_t, kWords> patched = s.original_;
    auto* bytes = reinterpret_cast<uint8_t*>(patched.data());
    std::memcpy(bytes, trap.data(), trap.size());
    std::memcpy(bytes + kBatchOffset, batch.data(), batch.size());
    for (size_t i = 0; i < kWords; ++i) {
        if (ptrace(PTRACE_POKEDATA, pid, addr + 8 * i, patched[i]) != 0) {
            Error e = sys_error("ptrace(POKEDATA) pid {} at {:#x}", pid, addr + 8 * i);
            (void)s.put_back(i);
            return e;
        }
    }
    s.installed_ = true;
    return s;
}

TrapCodeSite::TrapCodeSite(TrapCodeSite&& o) noexcept
    : pid_(o.pid_), addr_(o.addr_), original_(o.original_), installed_(std::exchange(o.installed_, false)) {}

Result<void> TrapCodeSite::put_back(size_t n) {
    Result<void> first = ok();
    for (size_t i = 0; i < n; ++i)
        if (ptrace(PTRACE_POKEDATA, pid_, addr_ + 8 * i, original_[i]) != 0 && first)
            first = sys_error("ptrace(POKEDATA) pid {} at {:#x}", pid_, addr_ + 8 * i);
    return first;
}

Result<void> TrapCodeSite::remove() {
    if (!installed_) return ok();
    installed_ = false;
    return put_back(kWords);
}

TrapCodeSite::~TrapCodeSite() { (void)remove(); }

namespace {

Result<void> proc_mem_io(pid_t pid, uint64_t addr, void* buf, size_t len, bool write) {
    auto fd = CKPT_TRY(open_file(proc_path(pid, "mem"), write ? O_WRONLY : O_RDONLY));
    char* p = static_cast<char*>(buf);
    while (len > 0) {
        ssize_t n = write ? pwrite(fd.get(), p, len, static_cast<off_t>(addr)) : pread(fd.get(), p, len, static_cast<off_t>(addr));
        if (n <= 0) return sys_error("{} /proc/{}/mem at {:#x}", write ? "pwrite" : "pread", pid, addr);
        p += n;
        addr += static_cast<uint64_t>(n);
        len -= static_cast<size_t>(n);
    }
    return ok();
}

}  // namespace

Result<void> read_remote(pid_t pid, uint64_t addr, void* buf, size_t len) {
    iovec local{buf, len}, remote{reinterpret_cast<void*>(addr), len};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n == static_cast<ssize_t>(len)) return ok();
    return proc_mem_io(pid, addr, buf, len, false);
}

Result<void> write_remote(pid_t pid, uint64_t addr, const void* buf, size_t len) {
    iovec local{const_cast<void*>(buf), len}, remote{reinterpret_cast<void*>(addr), len};
    ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
    if (n == static_cast<ssize_t>(len)) return ok();
    return proc_mem_io(pid, addr, const_cast<void*>(buf), len, true);
}

}  // namespace ckpt::engine
