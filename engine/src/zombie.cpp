// Zombies: a child that has exited and that its parent has not yet waited for. Nothing of
// it is left but its pid, groups, name and wait status; a restore makes the process and has
// it exit the same way, so that the parent's wait reports exactly what it would have.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/arch/arch.h"
#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {
namespace {

// Resumes the thread at the injection site with nr(args) and the signal sig delivered (0:
// none), expecting it to end; returns the wait status the engine (its tracer) gets.
Result<int> run_to_exit(RemoteThread& rt, long nr, std::array<uint64_t, 6> args, int sig) {
    arch::ThreadState st;
    st.regs = rt.saved_state().regs;
    arch::prepare_syscall(st, rt.code_addr(), nr, args);
    CKPT_TRY(arch::write_thread_state(rt.tid(), st));
    if (sig) {
        uint64_t mask = ~0ull & ~(1ull << (sig - 1));
        if (ptrace(PTRACE_SETSIGMASK, rt.tid(), sizeof mask, &mask) != 0)
            return sys_error("ptrace(SETSIGMASK) tid {}", rt.tid());
    }
    // In the stop after an injected syscall's trap, a signal delivery: sig replaces SIGTRAP.
    if (ptrace(PTRACE_CONT, rt.tid(), 0, sig) != 0) return sys_error("ptrace(CONT) tid {}", rt.tid());
    for (;;) {
        int status = 0;
        if (waitpid(rt.tid(), &status, __WALL) < 0) {
            if (errno == EINTR) continue;
            return sys_error("waitpid tid {}", rt.tid());
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) return status;
        // The exit event or a stop on the way out: let it go on.
        if (ptrace(PTRACE_CONT, rt.tid(), 0, 0) != 0) return sys_error("ptrace(CONT) tid {}", rt.tid());
    }
}

}  // namespace

Result<void> check_zombie(const FrozenProcess& p) {
    int status = p.stat.exit_code;
    // The core flag is set only by a core dump actually written: a restore would have to
    // write one again (where the core pattern says, for the engine's copy) to set it.
    if (WIFSIGNALED(status) && WCOREDUMP(status))
        return error_code(ENOTSUP, "pid {}: a zombie killed by signal {} with a core dump: its wait status (core "
                                   "dumped) cannot be made again without dumping core",
                          p.pid, WTERMSIG(status));
    if (!WIFSIGNALED(status) && !WIFEXITED(status))
        return error_code(EINVAL, "pid {}: a zombie with wait status {:#x}", p.pid, status);
    return ok();
}

Result<void> restore_zombie(RestoreTask& t, int exit_status, const std::string& comm) {
    RemoteThread& rt = *t.leader;
    if (!comm.empty()) {
        auto s = t.scratch.scope();
        char name[16] = {};
        std::memcpy(name, comm.data(), std::min(comm.size(), sizeof name - 1));
        uint64_t at = CKPT_TRY(s.put(name));
        CKPT_TRY(rt.syscall_ok("prctl(PR_SET_NAME)", SYS_prctl, {PR_SET_NAME, at}));
    }
    int status;
    if (WIFSIGNALED(exit_status)) {
        int sig = WTERMSIG(exit_status);
        if (WCOREDUMP(exit_status) || sig <= 0 || sig >= 65)
            return error_code(EINVAL, "pid {}: zombie wait status {:#x} cannot be made", t.pid, exit_status);
        // Killed by the signal's default action: no core file for the engine's copy (the
        // original dumped none), the default action whatever the copy inherited.
        CKPT_TRY(rt.syscall_ok("prctl(PR_SET_DUMPABLE, 0)", SYS_prctl, {PR_SET_DUMPABLE, 0}));
        auto s = t.scratch.scope();
        uint64_t act[4] = {};  // kernel sigaction: SIG_DFL
        uint64_t at = CKPT_TRY(s.put(act));
        if (sig != SIGKILL && sig != SIGSTOP)
            CKPT_TRY(rt.syscall_ok("rt_sigaction(SIG_DFL)", SYS_rt_sigaction, {static_cast<uint64_t>(sig), at, 0, 8}));
        status = CKPT_TRY_CTX(run_to_exit(rt, SYS_getpid, {}, sig), "pid {}: killing it with signal {}", t.pid, sig);
    } else {
        status = CKPT_TRY_CTX(run_to_exit(rt, SYS_exit_group, {static_cast<uint64_t>(WEXITSTATUS(exit_status))}, 0),
                              "pid {}: exit", t.pid);
    }
    // The engine's wait was a tracer's: the parent still sees the zombie, with this status.
    if ((status & 0xffff) != (exit_status & 0xffff))
        return error_code(EIO, "pid {}: the zombie ended with wait status {:#x}, not {:#x}", t.pid, status, exit_status);
    t.leader.reset();
    return ok();
}

}  // namespace ckpt::engine
