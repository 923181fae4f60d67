// membarrier(2) registrations of a process (its mm): a program registered for
// MEMBARRIER_CMD_PRIVATE_EXPEDITED (liburcu, .NET, Java runtimes) gets EPERM from it when the
// registration is lost, and a runtime that registered once never asks again. Read from inside
// the process with MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3) and registered again from
// inside the restored one.
#include <linux/membarrier.h>
#include <sys/syscall.h>

#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {
namespace {

// Linux 6.3; older headers lack it.
constexpr uint64_t kGetRegistrations = 1u << 9;
// The commands GET_REGISTRATIONS reports, each a registration made with that command.
constexpr uint32_t kRegisterCommands = MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED |
                                       MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED |
                                       MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE |
                                       MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ;

}  // namespace

Result<void> dump_membarrier(RemoteThread& rt, image::TaskCore* core) {
    int64_t mask = CKPT_TRY(rt.syscall(SYS_membarrier, {kGetRegistrations, 0, 0}));
    // A kernel without the command (or without membarrier) cannot tell; such a kernel's
    // processes are restored unregistered, as docs/engine.md says.
    if (mask < 0) return ok();
    if (static_cast<uint64_t>(mask) & ~static_cast<uint64_t>(kRegisterCommands))
        return error_code(ENOTSUP, "membarrier registrations {:#x}: unknown ones among them cannot be restored", mask);
    core->set_membarrier_registrations(static_cast<uint32_t>(mask));
    return ok();
}

Result<void> restore_membarrier(RestoreTask& t) {
    uint32_t mask = t.core.membarrier_registrations();
    if (mask & ~kRegisterCommands)
        return error_code(EINVAL, "pid {}: membarrier registrations {:#x} unknown (image is corrupt)", t.pid, mask);
    for (uint32_t bit = 1; bit != 0 && bit <= mask; bit <<= 1)
        if (mask & bit)
            CKPT_TRY_CTX(t.leader->syscall_ok("membarrier(register)", SYS_membarrier, {bit, 0, 0}), "pid {}: command {:#x}",
                         t.pid, bit);
    return ok();
}

}  // namespace ckpt::engine
