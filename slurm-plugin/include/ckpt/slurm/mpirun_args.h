#pragma once
// ckpt-mpirun (docs/mpi.md, "mpirun in a job script"): Open MPI's mpirun inside a Slurm
// allocation starts its own daemons, which would own the ranks; ckpt checkpoints ranks that
// Slurm launched itself. So an mpirun command line is turned into the srun --mpi=pmix one that
// launches the same ranks in the same allocation. Options with no exact srun meaning are
// refused by name, never approximated.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::slurm {

struct SrunCommand {
    std::vector<std::string> args;                            // srun's arguments (no "srun")
    std::vector<std::pair<std::string, std::string>> env;     // set before srun runs
};

// The srun command for mpirun's arguments (`mpirun_args` without "mpirun"). The error names
// the option that has no translation, or what is missing.
Result<SrunCommand> srun_for_mpirun(const std::vector<std::string>& mpirun_args);

}  // namespace ckpt::slurm
