// Process-wide state other than memory, threads and fds: signal handlers, credentials,
// limits, umask, personality, cwd and root, and other per-process settings.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "ckpt/base/result.h"
#include "core.pb.h"
#include "dump_context.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

struct RestoreTask;

// Signal handlers (signals.cpp).
// batch_code: where arch::syscall_batch_code() is in the process (SyscallBatch).
Result<void> dump_sigactions(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, image::TaskCore* core);
Result<void> restore_sigactions(RestoreTask& t);
// Checks, once nothing more is injected, that the kernel reports each signal of the
// restored process ignored, caught or default as recorded: a forced signal that is blocked
// or ignored (a breakpoint's, a fault's) resets an action without a word.
Result<void> verify_sigactions(const RestoreTask& t);
// The engine's own signal actions (kernel layout), for restore_sigactions to compare with.
Result<void> read_own_sigactions(std::array<arch::KernelSigaction, 65>* out);

// Pending signals (signals.cpp): per thread and process-wide.
Result<void> dump_pending(pid_t pid, image::TaskCore* core);
// Queues signals again from inside the process; thread null for process-wide ones.
Result<void> restore_pending(RemoteThread& rt, RemoteScratch& scratch, pid_t tgid, const image::ThreadCore* thread,
                             const google::protobuf::RepeatedPtrField<image::SigInfo>& pending);

// Interval and POSIX timers (timers.cpp).
Result<void> dump_timers(const FrozenProcess& p, RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core);
Result<void> restore_timers(RestoreTask& t);

// Seccomp filters (seccomp.cpp).
Result<void> dump_seccomp(const FrozenProcess& p, image::TaskCore* core);
Result<void> restore_seccomp(RestoreTask& t);

// Credentials, limits and settings (creds.cpp). dump_creds needs the frozen leader.
Result<void> dump_creds(const FrozenProcess& p, RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core);
// A non-leader thread's credentials, recorded only where they differ from its process's.
Result<void> dump_thread_creds(pid_t pid, RemoteThread& rt, const image::Creds& process, image::ThreadCore* tc);
// The credentials a thread is restored with: its own if recorded, else its process's.
const image::Creds& thread_creds(const image::TaskCore& core, const image::ThreadCore& tc);
// Settings that need privilege or come before the fds (limits, umask, cwd, root...).
Result<void> restore_task_settings(RestoreTask& t);
// The engine's own resource limits (soft, hard), for restore_task_settings to compare with.
Result<void> read_own_rlimits(std::array<std::pair<uint64_t, uint64_t>, 16>* out);
// Memory-deny-write-execute (PR_SET_MDWE), once no injected call needs to map code: it
// cannot be taken back, and children made later would inherit it.
Result<void> restore_mdwe(RestoreTask& t);
// Drops to the recorded identity: the last thing done inside each thread.
Result<void> restore_creds(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, const image::Creds& c);

// Job control (jobctl.cpp): stopped processes and pending SIGSTOPs.
// The stop state of a frozen process from what its threads reported when seized; a group
// stop still being entered is let settle (pid for messages).
Result<void> settle_stop_state(FrozenProcess& p);
// The SIGSTOPs pending in a frozen process (SigPnd of each thread, ShdPnd).
struct PendingStops {
    bool shared = false;
    std::vector<pid_t> threads;
};
Result<PendingStops> read_pending_stops(const FrozenProcess& p);
// Queues again the SIGSTOPs injected syscalls held back (RemoteThread::held_stops): those
// pending before, as they were, and any sent meanwhile, to the process.
Result<void> put_back_stops(const FrozenProcess& p, const PendingStops& before, int held);
// What a wait by the parent would report of a live child: a stop not yet reported
// (recorded), a continue not yet reported (refused: a restore cannot make it). Run from
// inside the frozen parent.
Result<void> dump_child_wait_state(RemoteThread& parent, RemoteScratch& scratch, FrozenProcess& child);
// Puts a restored process, with only its leader yet, into its recorded group stop; its
// threads join it as they are made. Under parent (null for the root), the stop is then
// waited for if the original parent had already done so.
Result<void> restore_stop(RestoreTask& t, int stop_signal, bool stop_reported, RestoreTask* parent);
// Takes the SIGCHLD the restore's own stops and exits sent to a process, before its
// recorded pending signals are queued.
Result<void> drain_restore_sigchld(RestoreTask& t);
// Queues the recorded pending SIGSTOPs, from the engine, once nothing more is injected
// (restore_pending leaves them out: injected syscalls would take them).
Result<void> requeue_stops(const RestoreTask& t);

// membarrier(2) registrations (membarrier.cpp), asked from inside the frozen leader.
Result<void> dump_membarrier(RemoteThread& rt, image::TaskCore* core);
Result<void> restore_membarrier(RestoreTask& t);

// Zombies (zombie.cpp).
// Refuses an exit status a restore cannot make again (a core dump).
Result<void> check_zombie(const FrozenProcess& p);
// The zombie's process, just created (its leader only), exits the way it did.
Result<void> restore_zombie(RestoreTask& t, int exit_status, const std::string& comm);

}  // namespace ckpt::engine
