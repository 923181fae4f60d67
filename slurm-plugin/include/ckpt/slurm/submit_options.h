// What is saved of a job's submission for `ckpt-job restore`, and the job's incarnation.
//
// The sbatch options (index attribute submit_options): words joined by spaces, each with '%'
// and ' ' escaped as %25 and %20, the script's arguments after "--".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::slurm {

std::string join_submit_words(const std::vector<std::string>& words);
std::vector<std::string> split_submit_words(std::string_view text);

// The job environment to save (file job-environment, given to sbatch --export-file by
// ckpt-job restore): the batch step's environment as Slurm built it, NAME=value entries each
// ended by a NUL, without what Slurm and the plugin set anew for every job (SLURM_*,
// SLURMD_*, the SPANK option values _SLURM_SPANK_OPTION_*, the plugin's CKPT_* settings),
// so the restored job gets its own. Entries without a name are dropped.
std::string environment_to_save(const std::vector<std::string>& env);

// The variable in which sbatch hands the value of one of the plugin's options (the name
// without "--") to the batch step: _SLURM_SPANK_OPTION_ckpt_<name, '-' as '_'>. sbatch
// --export-file clears sbatch's environment after the plugin's options were put there, so
// whoever submits with it must put them into the file (checked on Slurm 22.05).
std::string option_variable(std::string_view option);

// What an srun step runs, as recorded with its sets and its "finished" record: XXH3-64 (hex)
// of its argv, each word ended by a NUL. A script re-run after a requeue may number its
// steps differently (a step skipped by a test in the script, concurrent sruns), so a restart
// matches a step to its sets by this as well as by step id.
std::string step_command(const std::vector<std::string>& argv);

// A job's incarnation: a random id spank_ckpt.so gives a job when it is submitted (job
// control variable CKPT_JOB_INCARNATION, which sbatch also puts into the job's environment
// as SLURM_SPANK_CKPT_JOB_INCARNATION). Slurm keeps a job's environment across requeues; a
// job id reused by a new job (slurmctld's state reset) comes with a new incarnation.
inline constexpr char kIncarnationName[] = "CKPT_JOB_INCARNATION";
inline constexpr char kIncarnationJobEnv[] = "SLURM_SPANK_CKPT_JOB_INCARNATION";
Result<std::string> new_incarnation();  // 32 hex digits from getrandom

}  // namespace ckpt::slurm
