// One spdlog logger per component ("engine", "arch", "image", "set", "slurm", "mpi", ...).
//
// Levels: the default is "warn", so tools print nothing on success. An admin raises it
// with CKPT_LOG (a level for all components, or "component=level" pairs separated by
// commas, e.g. CKPT_LOG=info,engine=debug) or with -v (info), -vv (debug), -vvv (trace).
// Lines go to stderr unless log_to_file names a file.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

#include "ckpt/base/result.h"

namespace ckpt::log {

// The logger of a component, created on first use with the configured level.
std::shared_ptr<spdlog::logger> get(std::string_view component);

// Applies -v counts and then CKPT_LOG (the environment wins for what it names).
// verbosity 1, 2, 3: info, debug, trace; 0: warn (the default); -1: error; -2 and below:
// off (CRIU's -vN is verbosity N-2). Call once at program start, before threads.
void configure(int verbosity);

// Sends every component's lines to path (created or truncated, mode 0600) instead of
// stderr. The fd is close-on-exec; restored processes close it with the engine's other fds.
Result<void> log_to_file(const std::string& path);

// Parses a CKPT_LOG value; returns false on a malformed one (the message says why).
bool apply_spec(std::string_view spec, std::string* message);

}  // namespace ckpt::log
