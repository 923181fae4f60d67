// What the agent saves of a job's submission so that `ckpt-job restore` can submit it again
// after Slurm forgot it: the batch script and the sbatch options, from slurmctld's record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/set/store.h"

namespace ckpt::slurm::agent {

struct JobRecord {
    std::string name;
    std::string cluster;
    // sbatch options, one per word, each word with '%' and ' ' escaped as %25 and %20; the
    // script's arguments follow a "--" word (ckpt-job restore reads them back).
    std::string submit_options;
    std::string script;  // the batch script's text ("" if slurmctld did not give it)
};

// Asks slurmctld (libslurm); what it cannot learn stays empty, with a warning in the log.
// checkpoint_options (the job's --checkpoint-interval and --checkpoint-keep, which
// slurmctld does not know) are saved among the sbatch options.
JobRecord load_job_record(uint64_t job, const std::vector<std::string>& script_args,
                          const std::vector<std::string>& checkpoint_options);

// The batch step's lead saves the script and the job's environment (read from
// environment_fd, NUL-separated, as the plugin got it from slurmstepd; closed here) into the
// job's store. What fails is logged: the job runs on, only `ckpt-job restore` will lack it.
void save_submission(set::JobStore& store, const std::string& script, int environment_fd);

}  // namespace ckpt::slurm::agent
