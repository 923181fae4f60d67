// Per-thread scheduling (sched.cpp) and the /proc attributes of a process (procattr.cpp).
#pragma once

#include <sys/types.h>

#include "ckpt/base/result.h"
#include "core.pb.h"

namespace ckpt::engine {

struct RestoreTask;
struct RestoreShared;

// Records a frozen thread's policy, flags, priority, nice value and utilization clamps;
// refuses what cannot be restored (SCHED_DEADLINE), naming pid and tid.
Result<void> dump_sched(pid_t pid, pid_t tid, image::ThreadCore* tc);
// Sets every thread of a process (all made) from the engine, then checks each as recorded.
Result<void> restore_sched(const RestoreTask& t);

// oom_score_adj and loginuid of a live process.
Result<void> dump_proc_attrs(pid_t pid, image::TaskCore* core);
// Before anything is created: a loginuid the restorer could not set and would not give.
Result<void> check_proc_attrs(pid_t pid, const image::TaskCore& core, const RestoreShared& sh);
// Sets and checks them; runs while the process is still privileged as the restorer is and
// before it changes root (the loginuid is written by the process itself).
Result<void> restore_proc_attrs(RestoreTask& t);

}  // namespace ckpt::engine
