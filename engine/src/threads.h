#pragma once

#include <sys/types.h>

#include "ckpt/base/result.h"
#include "core.pb.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

// Records a stopped thread, attached for injection (rt); scratch is in its process.
Result<void> dump_thread(pid_t pid, RemoteThread& rt, RemoteScratch& scratch, image::ThreadCore* tc);
// Drops an rseq registration inherited from the engine (a forked copy has the engine's,
// pointing into memory about to be replaced; the kernel would fault the thread).
Result<void> drop_inherited_rseq(RemoteThread& rt);
// Creates, from inside creator's process, a child process or a thread of that process with
// the given pid (as its pid namespace sees it), traced from birth and stopped; returns its
// pid as the engine sees it.
// ProcessSharingFds: a process with its creator's fd table (CLONE_FILES).
enum class NewTask { Process, ProcessSharingFds, Thread };
Result<pid_t> create_task(RemoteThread& creator, RemoteScratch& scratch, NewTask kind, pid_t pid);
// Per-thread kernel state set from inside the thread (after memory is back).
Result<void> restore_thread_final(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code,
                                  const image::ThreadCore& tc);
// The last step: the thread's own registers and signal mask.
Result<void> set_thread_registers(pid_t tid, const image::ThreadCore& tc);

}  // namespace ckpt::engine
