// State of spank_ckpt.so within one process (sbatch, salloc, srun or one slurmstepd).
//
// SPANK loads the plugin once per process and calls it from one thread, so one instance
// per process holds what the callbacks learn: the site's settings (plugstack.conf), the
// options the job gave and, once init_post_opt ran, the job's resolved settings.
#pragma once

extern "C" {
#include <slurm/spank.h>
}

#include <optional>

#include "ckpt/base/result.h"
#include "ckpt/slurm/options.h"

namespace ckpt::slurm::spank {

struct PluginState {
    PluginConfig site;
    JobOptions options;
    std::optional<JobSettings> settings;  // set by init_post_opt
};

PluginState& state();

// Registers --checkpoint-interval, --checkpoint-dir, --checkpoint-keep,
// --checkpoint-restore and --no-checkpoint-restart (option_table.cpp).
Result<void> register_options(spank_t sp);

// The name of the user the job runs as (remote) or who submits it (sbatch, srun).
Result<std::string> job_user(spank_t sp);

// Remote context: logs the step's settings and exports them to its tasks' environment,
// where the job script and the agent read them (step_settings.cpp).
Result<void> export_step_settings(spank_t sp, const JobSettings& settings);

}  // namespace ckpt::slurm::spank
