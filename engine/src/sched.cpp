// Scheduling, per thread: policy, SCHED_RESET_ON_FORK, real-time priority, nice value and
// utilization clamps. Read and set from the engine (sched_getattr/sched_setattr on the tid),
// so nothing is injected and the kernel checks the restorer's rights against the thread.
#include <linux/sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "proc.h"
#include "restore_task.h"
#include "sched_state.h"

namespace ckpt::engine {
namespace {

// struct sched_attr of linux/sched/types.h (that header clashes with glibc's sched.h).
struct KSchedAttr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};
constexpr uint64_t kFlagResetOnFork = 0x01;
constexpr uint64_t kFlagKeepAll = 0x08 | 0x10;                  // KEEP_POLICY | KEEP_PARAMS
constexpr uint64_t kFlagUtilClamp = 0x20 | 0x40;                // UTIL_CLAMP_MIN | UTIL_CLAMP_MAX

std::string policy_name(uint32_t policy) {
    switch (policy) {
        case SCHED_NORMAL: return "SCHED_OTHER";
        case SCHED_FIFO: return "SCHED_FIFO";
        case SCHED_RR: return "SCHED_RR";
        case SCHED_BATCH: return "SCHED_BATCH";
        case SCHED_IDLE: return "SCHED_IDLE";
        case SCHED_DEADLINE: return "SCHED_DEADLINE";
        default: return fmt::format("policy {}", policy);
    }
}

bool is_rt(uint32_t policy) { return policy == SCHED_FIFO || policy == SCHED_RR; }

Result<KSchedAttr> get_attr(pid_t pid, pid_t tid) {
    KSchedAttr a{};
    if (syscall(SYS_sched_getattr, tid, &a, sizeof a, 0) != 0) return sys_error("pid {} tid {}: sched_getattr", pid, tid);
    return a;
}

// A scheduling setting the kernel refused the restorer (as the user: what the user may not do).
Error setting_refused(int err, pid_t pid, pid_t tid, const std::string& what) {
    bool denied = err == EPERM || err == EACCES;
    return error_code(err, "pid {} tid {}: {}: {}{}", pid, tid, what, std::strerror(err),
                      denied ? ": the user may not set it" : "");
}

}  // namespace

Result<void> dump_sched(pid_t pid, pid_t tid, image::ThreadCore* tc) {
    KSchedAttr a = CKPT_TRY(get_attr(pid, tid));
    // A deadline reservation is admitted against the CPUs' bandwidth: a restore could not
    // promise it, and a thread without it would run on silently with another policy.
    if (a.sched_policy == SCHED_DEADLINE)
        return error_code(ENOTSUP, "pid {} tid {}: SCHED_DEADLINE cannot be restored: refused", pid, tid);
    if (a.sched_flags & ~kFlagResetOnFork)
        return error_code(ENOTSUP, "pid {} tid {}: scheduling flags {:#x} cannot be restored: refused", pid, tid,
                          a.sched_flags);
    // sched_getattr reports the nice value of fair policies only; /proc has it for all (a
    // real-time thread keeps one, used again if it goes back to a fair policy).
    auto st = CKPT_TRY(read_stat(pid, tid));
    tc->set_nice(static_cast<int32_t>(st.nice));
    tc->set_sched_policy(static_cast<int32_t>(a.sched_policy));
    tc->set_sched_priority(static_cast<int32_t>(a.sched_priority));
    tc->set_sched_flags(static_cast<uint32_t>(a.sched_flags));
    tc->set_sched_util_min(a.sched_util_min);
    tc->set_sched_util_max(a.sched_util_max);
    return ok();
}

namespace {

Result<void> set_thread_sched(pid_t pid, pid_t tid, pid_t host_tid, const image::ThreadCore& tc) {
    const auto policy = static_cast<uint32_t>(tc.sched_policy());
    if (policy == SCHED_DEADLINE || (tc.sched_flags() & ~kFlagResetOnFork))
        return error_code(EINVAL, "pid {} tid {}: {} with flags {:#x} cannot be restored", pid, tid, policy_name(policy),
                          tc.sched_flags());
    // The nice value first (every thread has one, a real-time one too), then the policy with
    // the same value. Always set, even when 0: a thread is made from its leader or parent and
    // would otherwise keep what they have.
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(host_tid), tc.nice()) != 0)
        return setting_refused(errno, pid, tid, fmt::format("setpriority(nice {})", tc.nice()));
    KSchedAttr a{};
    a.size = sizeof a;
    a.sched_policy = policy;
    a.sched_flags = tc.sched_flags();
    a.sched_nice = tc.nice();
    a.sched_priority = static_cast<uint32_t>(tc.sched_priority());
    if (syscall(SYS_sched_setattr, host_tid, &a, 0) != 0)
        return setting_refused(errno, pid, tid, fmt::format("sched_setattr({}, {})", policy_name(policy), tc.sched_priority()));
    // Utilization clamps follow the policy unless set: set only when they differ from what
    // the policy gave (a clamp the kernel has no support for reads 0 on both sides).
    KSchedAttr now = CKPT_TRY(get_attr(pid, host_tid));
    if (now.sched_util_min != tc.sched_util_min() || now.sched_util_max != tc.sched_util_max()) {
        KSchedAttr u{};
        u.size = sizeof u;
        u.sched_flags = kFlagKeepAll | kFlagUtilClamp | tc.sched_flags();
        u.sched_util_min = tc.sched_util_min();
        u.sched_util_max = tc.sched_util_max();
        if (syscall(SYS_sched_setattr, host_tid, &u, 0) != 0)
            return setting_refused(errno, pid, tid,
                                   fmt::format("sched_setattr(util clamp {}..{})", tc.sched_util_min(), tc.sched_util_max()));
    }
    return ok();
}

// What the restored thread reports, field by field, against the image.
Result<void> verify_thread_sched(pid_t pid, pid_t tid, pid_t host_tgid, pid_t host_tid, const image::ThreadCore& tc) {
    KSchedAttr a = CKPT_TRY(get_attr(pid, host_tid));
    auto st = CKPT_TRY(read_stat(host_tgid, host_tid));
    auto differs = [&](const char* what, auto have, auto want) {
        return error_code(EINVAL, "pid {} tid {}: {} is {} after the restore, expected {}", pid, tid, what, have, want);
    };
    if (a.sched_policy != static_cast<uint32_t>(tc.sched_policy()))
        return differs("scheduling policy", policy_name(a.sched_policy), policy_name(static_cast<uint32_t>(tc.sched_policy())));
    if ((a.sched_flags & kFlagResetOnFork) != tc.sched_flags())
        return differs("SCHED_RESET_ON_FORK", a.sched_flags & kFlagResetOnFork, tc.sched_flags());
    if (is_rt(a.sched_policy) && a.sched_priority != static_cast<uint32_t>(tc.sched_priority()))
        return differs("real-time priority", a.sched_priority, tc.sched_priority());
    if (st.nice != tc.nice()) return differs("nice", st.nice, tc.nice());
    if (a.sched_util_min != tc.sched_util_min() || a.sched_util_max != tc.sched_util_max())
        return differs("utilization clamp", fmt::format("{}..{}", a.sched_util_min, a.sched_util_max),
                       fmt::format("{}..{}", tc.sched_util_min(), tc.sched_util_max()));
    return ok();
}

}  // namespace

Result<void> restore_sched(const RestoreTask& t) {
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        CKPT_TRY(set_thread_sched(t.pid, t.core.threads(i).tid(), host_tid, t.core.threads(i)));
    }
    // Checked once all are set: setting one thread never changes another.
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        CKPT_TRY(verify_thread_sched(t.pid, t.core.threads(i).tid(), t.host, host_tid, t.core.threads(i)));
    }
    return ok();
}

}  // namespace ckpt::engine
