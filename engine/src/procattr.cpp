// Attributes a process has in /proc only: oom_score_adj and the audit loginuid.
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "proc.h"
#include "restore_task.h"
#include "sched_state.h"

namespace ckpt::engine {
namespace {

Result<int64_t> read_number(const std::string& path) {
    std::string text = CKPT_TRY(read_file(path));
    auto n = parse_int(trim(text));
    if (!n) return error_code(EINVAL, "{}: not a number: '{}'", path, trim(text));
    return *n;
}

bool has_loginuid(pid_t pid) { return access(proc_path(pid, "loginuid").c_str(), F_OK) == 0; }

Result<uint32_t> read_loginuid(pid_t pid) {
    return static_cast<uint32_t>(CKPT_TRY(read_number(proc_path(pid, "loginuid"))));
}

// Whether this engine may set a loginuid: root restoring as recorded, with CAP_AUDIT_CONTROL.
Result<bool> may_set_loginuid(const RestoreShared& sh) {
    if (sh.user) return false;
    auto st = CKPT_TRY(read_status(getpid()));
    return (st.cap_eff & (1ull << CAP_AUDIT_CONTROL)) != 0;
}

}  // namespace

Result<void> dump_proc_attrs(pid_t pid, image::TaskCore* core) {
    core->set_oom_score_adj(static_cast<int32_t>(CKPT_TRY_CTX(read_number(proc_path(pid, "oom_score_adj")), "pid {}", pid)));
    if (has_loginuid(pid)) {
        core->set_has_loginuid(true);
        core->set_loginuid(CKPT_TRY_CTX(read_loginuid(pid), "pid {}", pid));
    }
    return ok();
}

Result<void> check_proc_attrs(pid_t pid, const image::TaskCore& core, const RestoreShared& sh) {
    if (!core.has_loginuid()) return ok();
    // Every process the restore makes is a copy of the engine: it has the engine's loginuid
    // unless it is set, which only root can do.
    if (!has_loginuid(getpid()))
        return error_code(ENOTSUP, "pid {}: loginuid {} recorded, but this kernel has no loginuid: refused", pid,
                          core.loginuid());
    uint32_t own = CKPT_TRY(read_loginuid(getpid()));
    if (own == core.loginuid() || CKPT_TRY(may_set_loginuid(sh))) return ok();
    return error_code(EPERM, "pid {}: loginuid {} differs from the restorer's {} and only root may set it: refused", pid,
                      core.loginuid(), own);
}

Result<void> restore_proc_attrs(RestoreTask& t) {
    // oom_score_adj: written by the engine (the kernel checks the writer's CAP_SYS_RESOURCE
    // for a value below the process's minimum) and read back.
    std::string oom = proc_path(t.host, "oom_score_adj");
    if (CKPT_TRY(read_number(oom)) != t.core.oom_score_adj()) {
        auto fd = CKPT_TRY(open_file(oom, O_WRONLY | O_CLOEXEC));
        std::string text = std::to_string(t.core.oom_score_adj());
        if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
            int err = errno;
            return error_code(err, "pid {}: oom_score_adj {}: {}{}", t.pid, t.core.oom_score_adj(), std::strerror(err),
                              err == EACCES || err == EPERM ? ": the restorer may not set it" : "");
        }
        int64_t now = CKPT_TRY(read_number(oom));
        if (now != t.core.oom_score_adj())
            return error_code(EINVAL, "pid {}: oom_score_adj is {} after the restore, expected {}", t.pid, now,
                              t.core.oom_score_adj());
    }
    // loginuid: the kernel takes it only from the process itself, through its own file.
    if (!t.core.has_loginuid() || CKPT_TRY(read_loginuid(t.host)) == t.core.loginuid()) return ok();
    auto fd = CKPT_TRY(open_file(proc_path(t.host, "loginuid"), O_WRONLY | O_CLOEXEC));
    int target_fd = CKPT_TRY(t.install_fd(fd.get(), -1, true));
    std::string text = std::to_string(t.core.loginuid());
    auto s = t.scratch.scope();
    uint64_t at = CKPT_TRY(s.put(text.data(), text.size(), 1));
    int64_t r = CKPT_TRY(t.leader->syscall(SYS_write, {static_cast<uint64_t>(target_fd), at, text.size()}));
    CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(target_fd)}));
    if (r < 0)
        return error_code(static_cast<int>(-r), "pid {}: loginuid {}: {}", t.pid, t.core.loginuid(),
                          std::strerror(static_cast<int>(-r)));
    uint32_t now = CKPT_TRY(read_loginuid(t.host));
    if (now != t.core.loginuid())
        return error_code(EINVAL, "pid {}: loginuid is {} after the restore, expected {}", t.pid, now, t.core.loginuid());
    return ok();
}

}  // namespace ckpt::engine
