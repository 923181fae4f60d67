// ckpt-agent: one per node per job step, started by spank_ckpt.so in slurmstepd (root).
//
// Every node's agent dumps its local tasks' process trees when the step's lead agent (node
// 0) asks for a set; the lead alone holds the job's JobStore writer: it begins the set,
// collects every node's report and commits it (slurm-plugin/README.md, "The agent"). The
// nodes talk through files in the job's checkpoint folder (ckpt/slurm/coordination.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::slurm::agent {

struct AgentConfig {
    uint64_t job = 0;
    uint32_t step = 0;
    uint32_t node_id = 0;
    uint32_t nodes = 1;
    std::string node_name;
    uint32_t tasks_total = 1;  // members of a set: one per task of the step
    uint32_t local_tasks = 1;
    uint64_t interval = 0;  // seconds; 0: only on request
    std::string root;
    uint32_t keep = 2;
    // Incremental sets (slurm-plugin/README.md, "Incremental sets"): every full_every-th set
    // of a run is full, the others save only the pages written since the previous set; 1: all
    // full.
    uint32_t full_every = 8;
    // Interval sets take at most this percent of the job's time (slurm-plugin/README.md,
    // "Checkpoint overhead"): a set that kept the job busy long postpones the next; 100: no
    // limit.
    uint32_t max_overhead = 25;
    // compress=: every member's page data stored zstd-compressed at this level (ckpt-engine
    // dump --compress=LEVEL); 0: as is.
    uint32_t compress = 0;
    std::string engine;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string user;
    uint32_t restart_count = 0;
    int task_fd = -1;                   // "PID GLOBAL_TASK_ID" lines from the plugin
    uint64_t set_timeout = 120;         // seconds the lead waits for every node's report
    std::vector<std::string> job_argv;  // the batch script's arguments (saved for restore)
    std::string incarnation;            // the job's (submit_options.h); "" if unknown
    int environment_fd = -1;            // the batch step's environment, to save for restore
    std::string save_files_under;       // the dumps save files open there whole (may be empty)
    std::string step_command;           // what the step runs (srun steps; see SetRecord)
    std::string site_root;              // the site's checkpoint root (dir=), "" if unknown
    // Two-level storage (local_dir= for this node, expanded): members are dumped into
    // <local_root>/<job>/set-N/member-I, the set commits there, then every node drains its
    // members to the job's folder in the background and the set commits there too.
    std::string local_root;
    std::string drain_hold;  // FOR TESTS ONLY (drain_hold=): a drain waits while this file exists
    // An srun step whose tasks may be MPI ranks split by libckpt_mpi (docs/mpi.md): where
    // the node's ranks reach this agent (an abstract socket, CKPT_MPI_CONTROL) and the folder
    // of ckpt's libmpi (a task that maps it is a rank, which is dumped only parked).
    std::string mpi_control;
    std::string mpi_dir;
    // Set by the privileged half for the unprivileged one (privileged.h):
    int channel_fd = -1;      // its end of the channel to the privileged half
    std::string folder_note;  // what the privileged half did to the job's folder, for the log
};

// Whether this agent's dumps leave write trackers, so that sets can be incremental: not with
// full_every 1 (MPI ranks included: mpi.restart.*-incremental and slurm_mpi_python).
inline bool incremental_sets(const AgentConfig& c) {
    return c.full_every > 1;
}

// The agent's unprivileged half, as the job's user (privileged.h starts it): runs until
// every local task exited or SIGTERM. Returns the exit status.
int run_agent(const AgentConfig& cfg);

// `ckpt-agent find-restore`: which images a starting task restores from.
struct RestoreQuery {
    std::string root;
    uint64_t job = 0;  // the job whose sets are searched (this one, or --checkpoint-restore's)
    uint64_t current_job = 0;  // the job being started
    uint32_t step = 0;
    int32_t member = 0;  // global task id
    uid_t uid = 0;       // the job's user, who runs the lookup: the sets must be theirs
    gid_t gid = 0;
    std::string step_command;  // what the starting step runs ("" for the batch step)
    bool explicit_set = false;
    uint64_t set = 0;
    std::string incarnation;  // the starting job's; "" if unknown
};
// Prints one line: "restore SET DIR", "fresh REASON" or (exit 1) the error.
int find_restore(const RestoreQuery& q);

// `ckpt-agent relay`: the batch step's task, passing signals on to its child (relay.cpp).
struct RelayConfig {
    pid_t child = 0;  // the script's shell, or the engine restoring it
    std::string root;
    uint64_t job = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    uint64_t take_timeout_s = 30;   // no agent took the final-set request: pass the signal on
    uint64_t set_timeout_s = 600;   // the final set did not end: pass the signal on
};
// Returns (or dies with) the child's status.
int run_relay(const RelayConfig& cfg);

// The functions below run as the job's user and work with the user's own rights.
// <jobdir>/agents, created if missing.
Result<UniqueFd> open_agents_dir(int job_fd, const std::string& job_dir);
// <jobdir>/agents, with <jobdir> created first if missing (an srun step's agent or its
// finished record may come before the lead agent created the job's store).
Result<UniqueFd> make_agents_folder(const std::string& job_dir);
// From then on the process's stdout and stderr append to agents/<name> (a regular file;
// anything else is left alone: false).
bool open_log(int agents_fd, const std::string& name);

// `ckpt-agent step-done`: records in the job's folder that a step finished well.
int record_step_done(const std::string& root, uint64_t job, uint32_t step,
                     const std::string& step_command);

}  // namespace ckpt::slurm::agent
