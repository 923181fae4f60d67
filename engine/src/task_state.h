// Process-wide state other than memory, threads and fds: signal handlers, credentials,
// limits, umask, personality, cwd and root, and other per-process settings.
#pragma once

#include <sys/types.h>

#include "ckpt/base/result.h"
#include "core.pb.h"
#include "dump_context.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

struct RestoreTask;

// Signal handlers (signals.cpp).
Result<void> dump_sigactions(RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core);
Result<void> restore_sigactions(RestoreTask& t);

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
// Settings that need privilege or come before the fds (limits, umask, cwd, root...).
Result<void> restore_task_settings(RestoreTask& t);
// Drops to the recorded identity: the last thing done inside each thread.
Result<void> restore_creds(RemoteThread& rt, RemoteScratch& scratch, const image::Creds& c);

}  // namespace ckpt::engine
