// What slurmstepd records of a step's checkpoint settings: a log line in the node's slurmd
// log and CKPT_* variables in the tasks' environment (the job script sees them; the agent
// started for the step reads the same values).
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>

#include "ckpt/slurm/submit_options.h"
#include "plugin_state.h"

extern "C" {
#include <slurm/slurm.h>  // SLURM_BATCH_SCRIPT
}

namespace ckpt::slurm::spank {

Result<std::string> job_user(spank_t sp) {
    uid_t uid = getuid();
    if (spank_remote(sp)) {
        spank_err_t rc = spank_get_item(sp, S_JOB_UID, &uid);
        if (rc != ESPANK_SUCCESS) return error("spank_get_item(S_JOB_UID): {}", spank_strerror(rc));
    }
    struct passwd pw, *found = nullptr;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) != 0 || !found)
        return error("no user name for uid {}", uid);
    return std::string(found->pw_name);
}

Result<void> give_incarnation(spank_t sp) {
    // srun inside an allocation starts a step of that job, which has its incarnation.
    if (spank_context() == S_CTX_LOCAL && std::getenv("SLURM_JOB_ID")) return ok();
    // Without one the job still runs; only a reuse of its id goes unnoticed (README).
    auto id = new_incarnation();
    if (!id) {
        slurm_error("ckpt: the job gets no incarnation: %s", id.error().message().c_str());
        return ok();
    }
    // Kept by slurmctld with the job (requeues included); sbatch and salloc also put it into
    // the job's environment as SLURM_SPANK_CKPT_JOB_INCARNATION; srun's tasks get srun's.
    spank_err_t rc = spank_job_control_setenv(sp, kIncarnationName, id->c_str(), 1);
    if (rc != ESPANK_SUCCESS)
        slurm_error("ckpt: the job gets no incarnation: spank_job_control_setenv(%s): %s",
                    kIncarnationName, spank_strerror(rc));
    else if (spank_context() == S_CTX_LOCAL)
        ::setenv(kIncarnationJobEnv, id->c_str(), 1);
    return ok();
}

Result<void> export_step_settings(spank_t sp, const JobSettings& settings) {
    uint32_t job = 0, step = 0, node = 0;
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    spank_get_item(sp, S_JOB_NODEID, &node);
    std::string step_name = step == SLURM_BATCH_SCRIPT ? "batch" : std::to_string(step);

    auto env = job_environment(settings);
    if (env.empty()) {
        slurm_debug("ckpt: job %u step %s: checkpointing not requested", job, step_name.c_str());
        return ok();
    }
    std::string line;
    for (const auto& [name, value] : env) {
        spank_err_t rc = spank_setenv(sp, name.c_str(), value.c_str(), 1);
        if (rc != ESPANK_SUCCESS)
            return error("job {} step {}: spank_setenv({}): {}", job, step_name, name,
                         spank_strerror(rc));
        line += fmt::format(" {}={}", name, value);
    }
    slurm_info("ckpt: job %u step %s node %u:%s", job, step_name.c_str(), node, line.c_str());
    return ok();
}

}  // namespace ckpt::slurm::spank
