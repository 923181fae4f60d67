// Signal handlers: what each signal does, recorded and set from inside the process
// (rt_sigaction is the only interface to another process's handlers).
#include <signal.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "proc.h"
#include "restore_task.h"
#include "syscall_batch.h"
#include "task_state.h"

namespace ckpt::engine {

Result<void> dump_sigactions(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, image::TaskCore* core) {
    // Every signal's action read by one batch of rt_sigaction calls (one resumption of the
    // process instead of 62: most of the injected time of a small process's dump).
    constexpr uint32_t kSignals = 64;
    std::array<arch::KernelSigaction, kSignals + 1> got{};
    {
        auto s = scratch.scope();
        const uint64_t at = CKPT_TRY(s.take(sizeof got, alignof(arch::KernelSigaction)));
        SyscallBatch batch(rt, scratch, batch_code);
        for (uint64_t sig = 1; sig <= kSignals; ++sig)
            if (sig != SIGKILL && sig != SIGSTOP)
                batch.add("rt_sigaction", SYS_rt_sigaction, {sig, 0, at + sig * sizeof(arch::KernelSigaction), 8});
        // The kernel refuses reading no action of signals 1-64 but SIGKILL's and SIGSTOP's
        // (left out): a refusal is an error, named by the batch.
        CKPT_TRY_CTX(batch.flush(), "pid {}: signal actions", rt.tid());
        CKPT_TRY(read_remote(rt.tid(), at, got.data(), sizeof got));
    }
    for (uint32_t sig = 1; sig <= kSignals; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        const arch::KernelSigaction& ka = got[sig];
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

Result<void> read_own_sigactions(std::array<arch::KernelSigaction, 65>* out) {
    for (uint32_t sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        // Signals the kernel reserves fail alike in every process: left as zeros, and set
        // (and failing, ignored) as before when an image asks for a handler.
        if (syscall(SYS_rt_sigaction, sig, nullptr, &(*out)[sig], 8) != 0 && errno != EINVAL)
            return sys_error("rt_sigaction({}) of the engine", sig);
    }
    return ok();
}

Result<void> restore_sigactions(RestoreTask& t) {
    // The process holds the engine's own actions (inherited at clone): only those that
    // differ from the recorded ones are set, one injected syscall each (a process that sets
    // few handlers costs a few instead of 62).
    const auto& had = t.shared->inherited_sigactions;
    for (uint32_t sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        arch::KernelSigaction ka{};
        for (const auto& a : t.core.sigactions())
            if (a.signo() == sig) ka = {a.handler(), a.flags(), a.restorer(), a.mask()};
        const arch::KernelSigaction& now = had[sig];
        if (!(t.sigactions_changed & (1ull << (sig - 1))) && now.handler == ka.handler && now.flags == ka.flags &&
            now.restorer == ka.restorer && now.mask == ka.mask)
            continue;
        auto s = t.scratch.scope();
        uint64_t at = CKPT_TRY(s.put(ka));
        int64_t r = CKPT_TRY(t.leader->syscall(SYS_rt_sigaction, {sig, at, 0, 8}));
        if (r < 0 && ka.handler != 0)
            return sys_error_code(static_cast<int>(-r), fmt::format("pid {}: rt_sigaction({})", t.pid, sig));
    }
    return ok();
}

Result<void> verify_sigactions(const RestoreTask& t) {
    uint64_t ignored = 0, caught = 0;
    for (const auto& a : t.core.sigactions()) {
        if (a.signo() < 1 || a.signo() > 64) continue;
        const uint64_t bit = 1ull << (a.signo() - 1);
        if (a.handler() == reinterpret_cast<uint64_t>(SIG_IGN)) ignored |= bit;
        else if (a.handler() != reinterpret_cast<uint64_t>(SIG_DFL)) caught |= bit;
    }
    const ProcStatus st = CKPT_TRY(read_status(t.host));
    const uint64_t now_ignored = st.sig_ign, now_caught = st.sig_cgt;
    for (int sig = 1; sig <= 64; ++sig) {
        const uint64_t bit = 1ull << (sig - 1);
        auto name = [&](uint64_t ign, uint64_t cgt) { return ign & bit ? "ignored" : cgt & bit ? "caught" : "default"; };
        if ((ignored & bit) != (now_ignored & bit) || (caught & bit) != (now_caught & bit))
            return error("pid {}: signal {} is {} after restore, {} at dump", t.pid, sig, name(now_ignored, now_caught),
                         name(ignored, caught));
    }
    return ok();
}

}  // namespace ckpt::engine

namespace ckpt::engine {
namespace {

constexpr size_t kSiginfoSize = 128;

// Pending signals of a thread (or of the whole process with shared), without taking them.
Result<void> peek_pending(pid_t tid, bool shared, google::protobuf::RepeatedPtrField<image::SigInfo>* out) {
    struct {
        uint64_t off;
        uint32_t flags;
        int32_t nr;
    } args{0, shared ? 1u : 0u, 16};  // PTRACE_PEEKSIGINFO_SHARED
    char buf[16 * kSiginfoSize];
    for (;;) {
        long n = ptrace(PTRACE_PEEKSIGINFO, tid, &args, buf);
        if (n < 0) return sys_error("ptrace(PEEKSIGINFO) tid {}", tid);
        if (n == 0) return ok();
        for (long i = 0; i < n; ++i) out->Add()->set_raw(buf + i * kSiginfoSize, kSiginfoSize);
        args.off += static_cast<uint64_t>(n);
    }
}

int signo_of(const image::SigInfo& si) {
    siginfo_t info;
    std::memcpy(&info, si.raw().data(), std::min(si.raw().size(), sizeof info));
    return info.si_signo;
}

}  // namespace

Result<void> dump_pending(pid_t pid, image::TaskCore* core) {
    CKPT_TRY(peek_pending(pid, true, core->mutable_shared_pending()));
    for (auto& th : *core->mutable_threads()) CKPT_TRY(peek_pending(th.tid(), false, th.mutable_pending()));
    return ok();
}

Result<void> restore_pending(RemoteThread& rt, RemoteScratch& scratch, pid_t tgid, const image::ThreadCore* thread,
                             const google::protobuf::RepeatedPtrField<image::SigInfo>& pending) {
    for (const auto& si : pending) {
        if (si.raw().size() != kSiginfoSize) return error_code(EINVAL, "tid {}: malformed pending signal", rt.tid());
        auto s = scratch.scope();
        uint64_t at = CKPT_TRY(s.put(si.raw().data(), kSiginfoSize));
        uint64_t sig = static_cast<uint64_t>(signo_of(si));
        // A SIGSTOP would be taken by the next injected syscall: the engine queues it once
        // nothing more is injected (requeue_stops, jobctl.cpp).
        if (sig == SIGSTOP) continue;
        // The injected code's breakpoint raises SIGTRAP: one pending would be taken for it
        // (a dump refuses it; a forged image).
        if (sig == SIGTRAP)
            return error_code(EINVAL, "tid {}: a pending SIGTRAP cannot be restored (image is corrupt)", rt.tid());
        // Queued by the process to itself, so any si_code is accepted.
        if (thread)
            CKPT_TRY(rt.syscall_ok("rt_tgsigqueueinfo", SYS_rt_tgsigqueueinfo,
                                   {static_cast<uint64_t>(tgid), static_cast<uint64_t>(thread->tid()), sig, at}));
        else
            CKPT_TRY(rt.syscall_ok("rt_sigqueueinfo", SYS_rt_sigqueueinfo, {static_cast<uint64_t>(tgid), sig, at}));
    }
    return ok();
}

}  // namespace ckpt::engine
