// One spdlog logger per component ("engine", "arch", "image", "set", "slurm", "mpi", ...).
//
// Levels: the default is "warn", so tools print nothing on success. An admin raises it
// with CKPT_LOG (a level for all components, or "component=level" pairs separated by
// commas, e.g. CKPT_LOG=info,engine=debug) or with -v (info), -vv (debug), -vvv (trace).
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

namespace ckpt::log {

// The logger of a component, created on first use with the configured level.
std::shared_ptr<spdlog::logger> get(std::string_view component);

// Applies -v counts and then CKPT_LOG (the environment wins for what it names).
// Call once at program start, before threads.
void configure(int verbosity);

// Parses a CKPT_LOG value; returns false on a malformed one (the message says why).
bool apply_spec(std::string_view spec, std::string* message);

}  // namespace ckpt::log
