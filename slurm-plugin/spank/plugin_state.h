// State of spank_ckpt.so within one process (sbatch, salloc, srun or one slurmstepd).
//
// SPANK loads the plugin once per process and calls it from one thread, so one instance
// per process holds what the callbacks learn: the site's settings (plugstack.conf), the
// options the job gave and, once init_post_opt ran, the job's resolved settings.
#pragma once

extern "C" {
#include <slurm/spank.h>
}

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "ckpt/base/result.h"
#include "ckpt/slurm/options.h"

namespace ckpt::slurm::spank {

struct PluginState {
    PluginConfig site;
    JobOptions options;
    std::optional<JobSettings> settings;  // set by init_post_opt

    // Remote context: this step's agent on this node (agent_launch.cpp).
    pid_t agent_pid = -1;
    int agent_pidfd = -1;
    int agent_feed = -1;           // write end of the pipe that tells the agent each task's pid
    std::vector<int> task_status;  // wait statuses of the local tasks that exited
    int stdio_courier = -1;        // in a restored task's helper child: where its stdio goes
    std::string task_note;         // said on the task's stderr in task_init
    std::optional<int> task_exit;  // the task exits with it in task_init (skipped, or failed)
    bool courier_sends_environment = false;  // the restorer of an MPI rank needs it
    std::string mpi_control;  // srun step with mpi=: where its ranks reach this node's agent
    MpiRanks mpi_ranks = MpiRanks::Linked;  // which of its tasks are ranks (--checkpoint-mpi)
};

PluginState& state();

// Registers --checkpoint-interval, --checkpoint-dir, --checkpoint-keep,
// --checkpoint-restore and --no-checkpoint-restart (option_table.cpp).
Result<void> register_options(spank_t sp);

// The name of the user the job runs as (remote) or who submits it (sbatch, srun).
Result<std::string> job_user(spank_t sp);

// sbatch, salloc, srun outside an allocation: gives the job being submitted a new
// incarnation (ckpt/slurm/submit_options.h), which its steps find in their environment.
Result<void> give_incarnation(spank_t sp);

// Remote context: logs the step's settings and exports them to its tasks' environment,
// where the job script and the agent read them (step_settings.cpp).
Result<void> export_step_settings(spank_t sp, const JobSettings& settings);

// Remote context, slurmstepd: starts the step's agent on this node with the first local task
// and tells it every task's pid (task_post_fork); stops it when the step ends (exit).
Result<void> agent_task_forked(spank_t sp, const JobSettings& settings);
Result<void> agent_step_exit(spank_t sp, const JobSettings& settings);

// Remote context, in the task before exec (root): when the job restarts or asks for a
// restore and the step has a usable set, execs the engine's restore of the task's images
// instead of returning; the batch step's task becomes its signal relay (task_restore.cpp).
Result<void> prepare_task_launch(spank_t sp, const JobSettings& settings);
// What the batch step's signal relay needs (batch_relay.cpp); nullopt for other steps.
struct RelaySpec {
    std::string root;
    uint64_t job = 0;
    uid_t uid = 0;
    gid_t gid = 0;
};
std::optional<RelaySpec> batch_relay_spec(spank_t sp, const JobSettings& settings);
// In the task (root, before exec): forks; the parent, the pid slurmstepd waits for and
// signals, execs `ckpt-agent relay` for the child; returns in the child, which goes on to
// be the script's shell (or the engine's restore).
Result<void> fork_behind_relay(const RelaySpec& relay);

// Remote context, user_init: an srun step that checkpoints, with the site's mpi=, gets the
// name its ranks reach their node's agent at (mpi_launch.cpp).
Result<void> prepare_mpi_step(spank_t sp, const JobSettings& settings);
// In task_init (the user): an MPI rank of such a step gets ckpt's libmpi first on its library
// path and CKPT_MPI_CONTROL; other tasks are left alone.
Result<void> put_rank_on_ckpt_mpi(spank_t sp);

// In task_init (the user, stdio set up): hands the task's stdio to the restorer, if any.
Result<void> send_stdio_to_restorer(spank_t sp);

// What this srun step runs (ckpt/slurm/submit_options.h, step_command); "" for the batch
// step, whose id alone names it.
std::string step_command_of(spank_t sp);

// The ckpt-agent and ckpt-engine to run: the plugin arguments, else found on PATH.
std::string agent_path();
// Runs a helper (ckpt-agent find-restore, step-done) and returns its stdout; a failure says
// why ("error ..." lines of the helper become the message).
Result<std::string> run_helper(const std::vector<std::string>& args);
std::string engine_path();

}  // namespace ckpt::slurm::spank
