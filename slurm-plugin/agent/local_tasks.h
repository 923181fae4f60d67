// The step's tasks on this node as the agent sees them: the pids the plugin reports (one
// "PID GLOBAL_ID" line per task, as each is forked) and the process trees below them, read
// from /proc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::slurm::agent {

struct Task {
    pid_t pid = 0;
    int32_t global_id = 0;
    UniqueFd pidfd;
    bool exited() const;
};

// Reads "PID GLOBAL_ID" lines from a pipe without blocking. Every line read is also kept in
// raw(), so the agent's privileged half can pass the same lines on to its unprivileged half.
class TaskFeed {
public:
    explicit TaskFeed(int fd);
    // Appends the tasks announced since the last call; false once the writer closed its end.
    bool poll(std::vector<Task>& tasks);
    int fd() const { return fd_; }
    // The bytes read by the last poll (complete lines and a possible partial one).
    const std::string& raw() const { return raw_; }

private:
    int fd_;
    std::string pending_, raw_;
};

std::string exe_of(pid_t pid);
std::vector<pid_t> children_of(pid_t pid);
std::string comm_of(pid_t pid);

// What a task launched: the task itself, or, when the task is the batch step's relay (an
// `agent_exe` process), the relay's child (the script's shell, or the engine restoring it).
Result<pid_t> launched_by(pid_t task, const std::string& agent_exe);
// The process tree a task stands for: what it launched, or, when that is a restore by the
// engine (a restarted task), the restored tree's root below the engine's processes.
Result<pid_t> tree_root(pid_t task, const std::string& agent_exe, const std::string& engine_exe);
bool tree_has(pid_t root, std::string_view comm);

}  // namespace ckpt::slurm::agent
