// The engine's entry points: dump a process tree into an image directory, restore one.
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::engine {

struct DumpOptions {
    pid_t root = 0;
    std::string image_dir;
    bool leave_running = false;
    bool shell_job = false;
    // Left out of the dump (milestone 2: the MPI lower half).
    std::vector<std::pair<uint64_t, uint64_t>> exclude_memory;
    std::set<int> exclude_fds;
};

Result<void> dump(const DumpOptions& opts);

struct RestoreOptions {
    std::string image_dir;
    bool detach = false;
    std::string pidfile;
    bool shell_job = false;
    bool skip_file_checks = false;
    std::map<std::string, int> inherit_fds;  // key -> fd of the restorer
};

// Restores the tree as children of the calling process. Returns the root's pid; the
// caller waits for it (or not, when detaching).
Result<pid_t> restore(const RestoreOptions& opts);

}  // namespace ckpt::engine
