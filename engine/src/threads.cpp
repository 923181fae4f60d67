// Threads: registers and extended state, signal mask, TLS (in the registers),
// clear_child_tid, robust futex list, rseq registration and sigaltstack (scheduling: sched.cpp).
#include "threads.h"

#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cstring>
#include <string>

#include "ckpt/engine/syscalls.h"
#include "proc.h"
#include "sched_state.h"
#include "syscall_batch.h"

namespace ckpt::engine {
namespace {

struct RseqConfiguration {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size, signature, flags, pad;
};

}  // namespace

Result<void> dump_thread(pid_t pid, RemoteThread& rt, RemoteScratch& scratch, image::ThreadCore* tc) {
    pid_t tid = rt.tid();
    tc->set_tid(tid);
    arch::save_thread_state(rt.saved_state(), tc);
    tc->set_blocked(rt.saved_sigmask());

    RseqConfiguration rc{};
    if (ptrace(static_cast<__ptrace_request>(kPtraceGetRseqConfiguration), tid, sizeof rc, &rc) > 0 &&
        rc.rseq_abi_pointer) {
        tc->set_rseq_addr(rc.rseq_abi_pointer);
        tc->set_rseq_len(rc.rseq_abi_size);
        tc->set_rseq_sig(rc.signature);
        tc->set_rseq_flags(rc.flags);
    }

    uint64_t head = 0;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, tid, &head, &len) == 0) {
        tc->set_robust_list(head);
        tc->set_robust_list_len(len);
    }

    // What only the thread itself can tell.
    auto s = scratch.scope();
    uint64_t tid_address = 0;
    uint64_t at = CKPT_TRY(s.take(sizeof tid_address));
    CKPT_TRY(rt.syscall_ok("prctl(PR_GET_TID_ADDRESS)", SYS_prctl, {PR_GET_TID_ADDRESS, at}));
    CKPT_TRY(read_remote(pid, at, &tid_address, sizeof tid_address));
    tc->set_clear_child_tid(tid_address);

    stack_t ss{};
    at = CKPT_TRY(s.take(sizeof ss, alignof(stack_t)));
    CKPT_TRY(rt.syscall_ok("sigaltstack", SYS_sigaltstack, {0, at}));
    CKPT_TRY(read_remote(pid, at, &ss, sizeof ss));
    tc->set_altstack_sp(reinterpret_cast<uint64_t>(ss.ss_sp));
    tc->set_altstack_size(ss.ss_size);
    tc->set_altstack_flags(ss.ss_flags);

    auto st = CKPT_TRY(read_stat(pid, tid));
    tc->set_comm(st.comm);
    CKPT_TRY(dump_sched(pid, tid, tc));
    return ok();
}

Result<void> drop_inherited_rseq(RemoteThread& rt) {
    RseqConfiguration rc{};
    if (ptrace(static_cast<__ptrace_request>(kPtraceGetRseqConfiguration), rt.tid(), sizeof rc, &rc) <= 0)
        return sys_error("ptrace(GET_RSEQ_CONFIGURATION) tid {}", rt.tid());
    if (!rc.rseq_abi_pointer) return ok();
    constexpr uint64_t kRseqFlagUnregister = 1;
    CKPT_TRY(rt.syscall_ok("rseq(unregister)", SYS_rseq, {rc.rseq_abi_pointer, rc.rseq_abi_size, kRseqFlagUnregister, rc.signature}));
    return ok();
}

Result<pid_t> create_task(RemoteThread& creator, RemoteScratch& scratch, NewTask kind, pid_t pid) {
    const char* what = kind == NewTask::Thread ? "thread" : "process";
    auto s = scratch.scope();
    clone_args args{};
    if (kind == NewTask::Thread)
        args.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    else
        args.exit_signal = SIGCHLD;
    if (kind == NewTask::ProcessSharingFds) args.flags = CLONE_FILES;
    args.set_tid = CKPT_TRY(s.put(pid));
    args.set_tid_size = 1;
    uint64_t at = CKPT_TRY(s.put(args));
    int64_t r = CKPT_TRY(creator.syscall(SYS_clone3, {at, sizeof args}));
    if (r == -EEXIST) return pid_in_use_error(pid, fmt::format("{} {}: ", what, pid));
    if (r < 0) return sys_error_code(static_cast<int>(-r), fmt::format("{} {}: clone3", what, pid));
    // Traced from birth (PTRACE_O_TRACECLONE / TRACEFORK), it stops at once.
    pid_t host = creator.last_child();
    if (host <= 0) return error("{} {}: created, but the engine was not told its pid", what, pid);
    CKPT_TRY(wait_stopped(host));
    return host;
}

Result<void> restore_thread_final(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code,
                                  const image::ThreadCore& tc) {
    // One batch (syscall_batch.h); what the calls point to stays in the scope until it ran.
    SyscallBatch batch(rt, scratch, batch_code);
    const std::string ctx = fmt::format("tid {}", tc.tid());
    auto s = scratch.scope();
    if (tc.clear_child_tid()) batch.add("set_tid_address", SYS_set_tid_address, {tc.clear_child_tid()}, ctx);
    if (tc.robust_list())
        batch.add("set_robust_list", SYS_set_robust_list, {tc.robust_list(), tc.robust_list_len()}, ctx);
    if (tc.altstack_sp() || tc.altstack_size() || (tc.altstack_flags() & ~SS_DISABLE)) {
        stack_t ss{};
        ss.ss_sp = reinterpret_cast<void*>(tc.altstack_sp());
        ss.ss_size = tc.altstack_size();
        ss.ss_flags = tc.altstack_flags() & (1 << 31);  // SS_AUTODISARM
        if (!(tc.altstack_flags() & SS_DISABLE)) {
            uint64_t at = CKPT_TRY(s.put(ss));
            batch.add("sigaltstack", SYS_sigaltstack, {at, 0}, ctx);
        }
    }
    if (tc.rseq_addr()) batch.add("rseq", SYS_rseq, {tc.rseq_addr(), tc.rseq_len(), 0, tc.rseq_sig()}, ctx);
    if (!tc.comm().empty()) {
        char name[16] = {};
        tc.comm().copy(name, sizeof name - 1);
        uint64_t at = CKPT_TRY(s.put(name));
        batch.add("prctl(PR_SET_NAME)", SYS_prctl, {PR_SET_NAME, at}, ctx);
    }
    return batch.flush();
}

Result<void> set_thread_registers(pid_t tid, const image::ThreadCore& tc) {
    auto st = CKPT_TRY(arch::load_thread_state(tc));
    arch::prepare_restart(st);
    CKPT_TRY(arch::write_thread_state(tid, st));
    uint64_t mask = tc.blocked();
    if (ptrace(PTRACE_SETSIGMASK, tid, sizeof mask, &mask) != 0) return sys_error("ptrace(SETSIGMASK) tid {}", tid);
    return ok();
}

}  // namespace ckpt::engine
