// Signal handlers: what each signal does, recorded and set from inside the process
// (rt_sigaction is the only interface to another process's handlers).
#include <signal.h>
#include <sys/syscall.h>

#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {

Result<void> dump_sigactions(RemoteThread& rt, uint64_t scratch, image::TaskCore* core) {
    for (uint32_t sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        int64_t r = CKPT_TRY(rt.syscall(SYS_rt_sigaction, {sig, 0, scratch, 8}));
        if (r < 0) continue;  // signals the kernel reserves
        arch::KernelSigaction ka{};
        CKPT_TRY(read_remote(rt.tid(), scratch, &ka, sizeof ka));
        if (ka.handler == reinterpret_cast<uint64_t>(SIG_DFL) && ka.flags == 0 && ka.mask == 0) continue;
        auto* a = core->add_sigactions();
        a->set_signo(sig);
        a->set_handler(ka.handler);
        a->set_flags(ka.flags);
        a->set_restorer(ka.restorer);
        a->set_mask(ka.mask);
    }
    return ok();
}

Result<void> restore_sigactions(RestoreTask& t) {
    uint64_t scratch = t.scratch();
    // Start from defaults: the engine's own handlers were inherited at clone.
    for (uint32_t sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        arch::KernelSigaction ka{};
        for (const auto& a : t.core.sigactions())
            if (a.signo() == sig) ka = {a.handler(), a.flags(), a.restorer(), a.mask()};
        CKPT_TRY(write_remote(t.pid, scratch, &ka, sizeof ka));
        int64_t r = CKPT_TRY(t.leader->syscall(SYS_rt_sigaction, {sig, scratch, 0, 8}));
        if (r < 0 && ka.handler != 0)
            return sys_error_code(static_cast<int>(-r), fmt::format("pid {}: rt_sigaction({})", t.pid, sig));
    }
    return ok();
}

}  // namespace ckpt::engine
