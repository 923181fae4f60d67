// A process's fd table: every fd handed to its kind (fd_kind.h), with what all kinds share:
// the fd number, close-on-exec, status flags, offset, owner and signal (F_SETOWN/F_SETSIG).
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"
#include "fd_kind.h"
#include "files.pb.h"

namespace ckpt::engine {

// The survey of one process's fds (every kind's first pass); run for every process of the
// tree before any fd is dumped.
Result<void> survey_fds(pid_t pid, FdDumpState& state);
// Records the fds of pid.
Result<void> dump_fds(pid_t pid, FdDumpState& state, image::FdTable* table);

// Of the tree's live processes (pid and parent, as the engine sees them; parent 0 when it is
// not a live process of the tree), those that share their parent's fd table: clone with
// CLONE_FILES, not CLONE_THREAD. Refuses processes that share a table otherwise.
Result<std::set<pid_t>> find_shared_fd_tables(const std::vector<std::pair<pid_t, pid_t>>& procs);

Result<void> restore_fds(RestoreTask& t);
// Owners (F_SETOWN_EX), signals (F_SETSIG) and O_ASYNC of t's fds, from inside t once every
// process and thread of the tree exists (an owner may be any of them).
Result<void> restore_fd_async(RestoreTask& t);
// Every fd's status flags, from /proc/PID/fdinfo, exactly as recorded (close-on-exec too);
// a difference fails the restore naming pid, fd and bits.
Result<void> verify_fd_flags(const RestoreTask& t);

// Controlling terminals that are pty slaves of the tree (pty.cpp). Dump: once every fd is
// surveyed, which sessions have one and their foreground groups (refusing what cannot be made).
Result<void> record_pty_sessions(const std::vector<FrozenProcess>& processes, FdDumpState& state);
// Restore: the session leader t takes its terminal, just after setsid and before any process
// of its session is made (they inherit it); then, once every process group exists, each
// terminal's foreground group.
Result<void> take_pty_terminal(RestoreTask& t);
Result<void> restore_pty_foreground(std::map<pid_t, RestoreTask>& tasks);

}  // namespace ckpt::engine
