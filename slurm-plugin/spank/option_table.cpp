// The --checkpoint-* options. spank_option_register() in slurm_spank_init is what makes them
// reach sbatch and salloc (a static spank_options table only reaches srun and slurmstepd).
// Slurm forwards the values to slurmstepd, where the same callbacks run again.
#include <fmt/format.h>

#include <array>

#include "plugin_state.h"

namespace ckpt::slurm::spank {

namespace {

int on_option(int val, const char* optarg, int remote) {
    try {
        auto which = static_cast<Option>(val);
        auto r = set_option(state().options, which, optarg ? optarg : "", state().site);
        if (!r) {
            // In sbatch/srun this is the line the user sees before the submission is refused.
            slurm_error("%s", r.error().message().c_str());
            return -1;
        }
        if (remote) slurm_debug("ckpt: option %d = '%s'", val, optarg ? optarg : "");
        return 0;
    } catch (const std::exception& e) {
        slurm_error("ckpt: option: %s", e.what());
        return -1;
    }
}

// spank_option wants mutable strings; these live as long as the plugin.
char kInterval[] = "checkpoint-interval", kIntervalArg[] = "time";
char kIntervalUsage[] =
    "Checkpoint the job every <time>: MIN, MIN:SEC, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or a "
    "number with a unit (30s, 10m, 2h, 1d); 0 is off";
char kDir[] = "checkpoint-dir", kDirArg[] = "path";
char kDirUsage[] = "Store the job's checkpoint sets under <path>/<jobid>/";
char kKeep[] = "checkpoint-keep", kKeepArg[] = "n";
char kKeepUsage[] = "Keep the newest <n> committed checkpoint sets";
char kRestore[] = "checkpoint-restore", kRestoreArg[] = "jobid[:set]";
char kRestoreUsage[] = "Start from a checkpoint of job <jobid> (its newest set, or set <set>)";
char kNoRestart[] = "no-checkpoint-restart";
char kNoRestartUsage[] = "When requeued, start over instead of resuming from a checkpoint";
char kMpi[] = "checkpoint-mpi", kMpiArg[] = "auto|always|never";
char kMpiUsage[] =
    "Which tasks of srun --mpi=pmix steps run on ckpt's MPI library so that they can be "
    "checkpointed: auto (programs linked with libmpi), always (also interpreters that load it, "
    "e.g. python with mpi4py), never";

std::array<struct spank_option, 6> options = {{
    {kInterval, kIntervalArg, kIntervalUsage, 1, static_cast<int>(Option::Interval), on_option},
    {kDir, kDirArg, kDirUsage, 1, static_cast<int>(Option::Dir), on_option},
    {kKeep, kKeepArg, kKeepUsage, 1, static_cast<int>(Option::Keep), on_option},
    {kRestore, kRestoreArg, kRestoreUsage, 1, static_cast<int>(Option::Restore), on_option},
    {kNoRestart, nullptr, kNoRestartUsage, 0, static_cast<int>(Option::NoRestart), on_option},
    {kMpi, kMpiArg, kMpiUsage, 1, static_cast<int>(Option::Mpi), on_option},
}};

}  // namespace

Result<void> register_options(spank_t sp) {
    for (auto& opt : options) {
        spank_err_t rc = spank_option_register(sp, &opt);
        if (rc != ESPANK_SUCCESS)
            return error("spank_option_register(--{}): {}", opt.name, spank_strerror(rc));
    }
    return ok();
}

}  // namespace ckpt::slurm::spank
