// Job control: a process held by a group stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), what its
// parent has yet to learn of it by wait, and pending SIGSTOPs.
//
// Dump: a thread seized in a group stop reports the stop signal (PTRACE_EVENT_STOP), one
// merely interrupted SIGTRAP; the parent is asked from inside, with waitid(WNOWAIT), whether
// it has already been told. A SIGSTOP still pending cannot be blocked, so the first injected
// syscall would take it: it is held back and queued again afterwards.
// Restore: the process, made but not yet filled, is stopped with the recorded signal while
// traced; its threads join the stop as they are made; a detach leaves a stopped process
// stopped (the kernel puts the group stop back), so it comes back in state T.
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {
namespace {

bool is_stop_signal(int sig) { return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU; }

constexpr uint64_t bit(int sig) { return 1ull << (sig - 1); }

// The stop the threads agree on: 0 when none is stopped; -1 when they differ.
int common_stop(const FrozenProcess& p) {
    int stop = -1;
    for (int s : p.thread_stops) {
        int mine = is_stop_signal(s) ? s : 0;
        if (stop == -1) stop = mine;
        else if (stop != mine) return -1;
    }
    return stop == -1 ? 0 : stop;
}

int signo_of(const image::SigInfo& si) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    std::memcpy(&info, si.raw().data(), std::min(si.raw().size(), sizeof info));
    return info.si_signo;
}

}  // namespace

Result<void> settle_stop_state(FrozenProcess& p) {
    // A group stop begun by one thread while others were already seized: those reported
    // SIGTRAP and hold the stop pending; one pass through signal delivery reports it.
    for (int round = 0; common_stop(p) < 0 && round < 2; ++round)
        for (size_t i = 0; i < p.threads.size(); ++i)
            if (!is_stop_signal(p.thread_stops[i]))
                p.thread_stops[i] = CKPT_TRY_CTX(restop(p.threads[i]), "pid {}", p.pid);
    int stop = common_stop(p);
    if (stop < 0)
        return error_code(EAGAIN, "pid {}: a group stop is under way (some threads stopped, others not): its stop "
                                  "state cannot be recorded; try again", p.pid);
    p.stop_signal = stop;
    return ok();
}

Result<PendingStops> read_pending_stops(const FrozenProcess& p) {
    PendingStops out;
    for (pid_t tid : p.threads) {
        ProcStatus s = CKPT_TRY_CTX(read_status(p.pid, tid), "pid {} (thread {})", p.pid, tid);
        if (tid == p.pid) out.shared = s.shd_pnd & bit(SIGSTOP);
        if (s.sig_pnd & bit(SIGSTOP)) out.threads.push_back(tid);
    }
    return out;
}

Result<void> put_back_stops(const FrozenProcess& p, const PendingStops& before, int held) {
    // What a signal carries but its number is of no use for SIGSTOP (no handler, no
    // sigwait, no signalfd can take it): queued by the engine, it is the same stop.
    int n = 0;
    for (pid_t tid : before.threads) {
        if (n++ >= held) return ok();
        if (syscall(SYS_tgkill, p.pid, tid, SIGSTOP) != 0) return sys_error("pid {}: tgkill({}, SIGSTOP)", p.pid, tid);
    }
    // The shared one, and any sent to the frozen process meanwhile (only one stays pending).
    if (n < held && kill(p.pid, SIGSTOP) != 0) return sys_error("pid {}: kill(SIGSTOP)", p.pid);
    return ok();
}

Result<void> dump_child_wait_state(RemoteThread& parent, RemoteScratch& scratch, FrozenProcess& child) {
    // __WALL: a child whose exit signal is not SIGCHLD is waited for all the same.
    auto s = scratch.scope();
    siginfo_t si{};
    uint64_t at = CKPT_TRY(s.put(si));
    CKPT_TRY(parent.syscall_ok("waitid(WNOWAIT)", SYS_waitid,
                               {P_PID, static_cast<uint64_t>(child.ns_pid), at,
                                WSTOPPED | WCONTINUED | WNOHANG | WNOWAIT | __WALL, 0}));
    CKPT_TRY(read_remote(parent.tid(), at, &si, sizeof si));
    child.stop_reported = child.stop_signal != 0;
    if (si.si_pid != child.ns_pid) return ok();  // nothing to report
    if (si.si_code == CLD_CONTINUED)
        return error_code(ENOTSUP,
                          "pid {}: continued (SIGCONT) after a stop, and its parent has not yet waited for that "
                          "(WCONTINUED): a restore cannot make it so",
                          child.pid);
    if (si.si_code == CLD_STOPPED) {
        if (child.stop_signal == 0 || si.si_status != child.stop_signal)
            return error_code(EAGAIN, "pid {}: its parent would be told of a stop by signal {}, its threads report {}",
                              child.pid, si.si_status, child.stop_signal);
        child.stop_reported = false;
    }
    return ok();
}

Result<void> restore_stop(RestoreTask& t, int stop_signal, bool stop_reported, RestoreTask* parent) {
    if (!is_stop_signal(stop_signal))
        return error_code(EINVAL, "pid {}: stop signal {} is not a stop signal", t.pid, stop_signal);
    if (stop_signal != SIGSTOP) {
        // The default action, whatever the handler the copy inherited; the recorded
        // handlers come later.
        auto s = t.scratch.scope();
        uint64_t act[4] = {};  // kernel sigaction: SIG_DFL, no flags, no restorer, no mask
        uint64_t at = CKPT_TRY(s.put(act));
        CKPT_TRY(t.leader->syscall_ok("rt_sigaction(SIG_DFL)", SYS_rt_sigaction,
                                      {static_cast<uint64_t>(stop_signal), at, 0, 8}));
        t.sigactions_changed |= 1ull << (stop_signal - 1);
    }
    CKPT_TRY_CTX(t.leader->enter_group_stop(stop_signal), "pid {}", t.pid);
    if (parent && stop_reported) {
        // The original parent had waited for this stop (WUNTRACED): so does the copy.
        int64_t r = CKPT_TRY(parent->leader->syscall(SYS_wait4, {static_cast<uint64_t>(t.pid), 0, WUNTRACED | WNOHANG | __WALL, 0}));
        if (r != t.pid)
            return error_code(EIO, "pid {}: its parent {} was not told of its stop (wait4 gave {})", t.pid, parent->pid, r);
    }
    return ok();
}

Result<void> drain_restore_sigchld(RestoreTask& t) {
    auto s = t.scratch.scope();
    uint64_t set = bit(SIGCHLD);
    struct timespec zero{};
    uint64_t set_at = CKPT_TRY(s.put(set));
    uint64_t ts_at = CKPT_TRY(s.put(zero));
    int64_t r = CKPT_TRY(t.leader->syscall(SYS_rt_sigtimedwait, {set_at, 0, ts_at, 8}));
    if (r < 0 && r != -EAGAIN)
        return sys_error_code(static_cast<int>(-r), fmt::format("pid {}: rt_sigtimedwait(SIGCHLD)", t.pid));
    return ok();
}

Result<void> requeue_stops(const RestoreTask& t) {
    for (const auto& si : t.core.shared_pending())
        if (signo_of(si) == SIGSTOP && kill(t.host, SIGSTOP) != 0) return sys_error("pid {}: kill(SIGSTOP)", t.pid);
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        for (const auto& si : t.core.threads(i).pending())
            if (signo_of(si) == SIGSTOP && syscall(SYS_tgkill, t.host, host_tid, SIGSTOP) != 0)
                return sys_error("pid {}: tgkill({}, SIGSTOP)", t.pid, t.core.threads(i).tid());
    }
    return ok();
}

}  // namespace ckpt::engine
