// Scheduling, per thread: policy, SCHED_RESET_ON_FORK, real-time priority, nice value,
// utilization clamps, I/O priority and CPU affinity. Read and set from the engine
// (sched_getattr/sched_setattr, ioprio_get/ioprio_set, sched_getaffinity/sched_setaffinity on
// the tid), so nothing is injected and the kernel checks the restorer's rights against the
// thread.
//
// An I/O priority never set follows the nice value and policy (ioprio_get reports it so): it
// is set at restore only where the restored thread reports another, then read back. CPU
// affinity is recorded always and set again only with restore --with-cpu-affinity (as in
// CRIU): a job restarted elsewhere gets its CPUs from there; when asked, the mask must be
// taken whole (the kernel narrows one to the CPUs the cpuset allows: refused, naming them).
#include <linux/sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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
constexpr int kIoprioWhoProcess = 1;                            // IOPRIO_WHO_PROCESS: one thread
constexpr size_t kMaxAffinityBytes = 8192 / 8;                  // up to 8192 CPUs

std::string ioprio_name(uint32_t prio) {
    static const char* const kClass[] = {"none", "realtime", "best-effort", "idle"};
    const uint32_t cls = prio >> 13;
    return fmt::format("{}/{}", cls < 4 ? kClass[cls] : "class?", prio & 0x1fff);
}

Result<uint32_t> get_ioprio(pid_t pid, pid_t tid) {
    long v = syscall(SYS_ioprio_get, kIoprioWhoProcess, tid);
    if (v < 0) return sys_error("pid {} tid {}: ioprio_get", pid, tid);
    return static_cast<uint32_t>(v);
}

Result<std::string> get_affinity(pid_t pid, pid_t tid) {
    std::string mask(kMaxAffinityBytes, '\0');
    long n = syscall(SYS_sched_getaffinity, tid, mask.size(), mask.data());
    if (n < 0) return sys_error("pid {} tid {}: sched_getaffinity", pid, tid);
    mask.resize(static_cast<size_t>(n));
    return mask;
}

// "0-3,8" for a mask.
std::string cpu_list(const std::string& mask) {
    std::string out;
    const size_t bits = mask.size() * 8;
    for (size_t i = 0; i < bits; ++i) {
        if (!(static_cast<uint8_t>(mask[i / 8]) & (1u << (i % 8)))) continue;
        size_t j = i;
        while (j + 1 < bits && (static_cast<uint8_t>(mask[(j + 1) / 8]) & (1u << ((j + 1) % 8)))) ++j;
        out += fmt::format("{}{}", out.empty() ? "" : ",", i == j ? fmt::format("{}", i) : fmt::format("{}-{}", i, j));
        i = j;
    }
    return out.empty() ? "none" : out;
}

// Whether two masks name the same CPUs (the kernel's may be shorter or longer than the image's).
bool same_cpus(std::string a, std::string b) {
    const size_t n = std::max(a.size(), b.size());
    a.resize(n, '\0');
    b.resize(n, '\0');
    return a == b;
}

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
    tc->set_ioprio(CKPT_TRY(get_ioprio(pid, tid)));
    tc->set_cpu_affinity(CKPT_TRY(get_affinity(pid, tid)));
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
    const uint32_t ioprio = CKPT_TRY(get_ioprio(pid, host_tid));
    if (ioprio != tc.ioprio()) return differs("I/O priority", ioprio_name(ioprio), ioprio_name(tc.ioprio()));
    return ok();
}

// After policy and nice (which an I/O priority never set follows): set where the thread
// reports another than recorded.
Result<void> set_thread_ioprio(pid_t pid, pid_t tid, pid_t host_tid, const image::ThreadCore& tc) {
    if (CKPT_TRY(get_ioprio(pid, host_tid)) == tc.ioprio()) return ok();
    if (syscall(SYS_ioprio_set, kIoprioWhoProcess, host_tid, tc.ioprio()) != 0)
        return setting_refused(errno, pid, tid, fmt::format("ioprio_set({})", ioprio_name(tc.ioprio())));
    return ok();
}

// restore --with-cpu-affinity: the recorded mask, whole, or refused.
Result<void> set_thread_affinity(pid_t pid, pid_t tid, pid_t host_tid, const image::ThreadCore& tc) {
    const std::string& want = tc.cpu_affinity();
    if (want.empty() || want.size() > kMaxAffinityBytes || want.find_first_not_of('\0') == std::string::npos)
        return error_code(EINVAL, "pid {} tid {}: a CPU affinity mask of {} bytes with no CPU (image is corrupt)", pid, tid,
                          want.size());
    if (syscall(SYS_sched_setaffinity, host_tid, want.size(), want.data()) != 0) {
        if (errno == EINVAL)
            return error_code(EINVAL, "pid {} tid {}: CPU affinity {}: none of these CPUs may run it here", pid, tid,
                              cpu_list(want));
        return setting_refused(errno, pid, tid, fmt::format("sched_setaffinity({})", cpu_list(want)));
    }
    const std::string now = CKPT_TRY(get_affinity(pid, host_tid));
    if (!same_cpus(now, want))
        return error_code(EINVAL, "pid {} tid {}: CPU affinity {} recorded, only {} may run it here: refused", pid, tid,
                          cpu_list(want), cpu_list(now));
    return ok();
}

}  // namespace

Result<void> restore_sched(const RestoreTask& t) {
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        const image::ThreadCore& tc = t.core.threads(i);
        CKPT_TRY(set_thread_sched(t.pid, tc.tid(), host_tid, tc));
        CKPT_TRY(set_thread_ioprio(t.pid, tc.tid(), host_tid, tc));
        if (t.shared->with_cpu_affinity) {
            CKPT_TRY(set_thread_affinity(t.pid, tc.tid(), host_tid, tc));
        } else if (!tc.cpu_affinity().empty()) {
            const std::string now = CKPT_TRY(get_affinity(t.pid, host_tid));
            if (!same_cpus(now, tc.cpu_affinity()))
                logger()->info("pid {} tid {}: CPU affinity {} at dump, {} now (restore --with-cpu-affinity sets it again)",
                               t.pid, tc.tid(), cpu_list(tc.cpu_affinity()), cpu_list(now));
        }
    }
    // Checked once all are set: setting one thread never changes another.
    for (int i = 0; i < t.core.threads_size(); ++i) {
        pid_t host_tid = i == 0 ? t.host : t.thread_hosts.at(static_cast<size_t>(i - 1));
        CKPT_TRY(verify_thread_sched(t.pid, t.core.threads(i).tid(), t.host, host_tid, t.core.threads(i)));
    }
    return ok();
}

}  // namespace ckpt::engine
