// The batch step's task becomes `ckpt-agent relay` with the script's shell (or, on a restart,
// the engine's restore) as its child. Slurm sends the batch warning (--signal=B:SIG@SECS) to
// the task's pid alone; as the relay, that pid can ask the agents for a final checkpoint
// before the script sees the signal (slurm-plugin/agent/relay.cpp).
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "plugin_state.h"

extern "C" {
#include <slurm/slurm.h>
}

namespace ckpt::slurm::spank {

std::optional<RelaySpec> batch_relay_spec(spank_t sp, const JobSettings& settings) {
    uint32_t job = 0, step = 0;
    RelaySpec r;
    if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS || step != SLURM_BATCH_SCRIPT)
        return std::nullopt;
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_UID, &r.uid);
    spank_get_item(sp, S_JOB_GID, &r.gid);
    r.job = job;
    r.root = settings.dir;
    return r;
}

Result<void> fork_behind_relay(const RelaySpec& relay) {
    pid_t child = ::fork();
    if (child < 0) return sys_error("fork");
    if (child == 0) return ok();  // on to the script (or the engine's restore)
    std::string agent = agent_path(), pid = std::to_string(child), job = std::to_string(relay.job),
                uid = std::to_string(relay.uid), gid = std::to_string(relay.gid);
    const char* argv[] = {agent.c_str(), "relay",        "--child", pid.c_str(),
                          "--root",      relay.root.c_str(), "--job", job.c_str(),
                          "--uid",       uid.c_str(),        "--gid", gid.c_str(),
                          nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    // Without the relay the task still has to be the script to Slurm: wait and mirror.
    slurm_error("ckpt: exec %s: %s: the batch script runs without its signal relay",
                agent.c_str(), strerror(errno));
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace ckpt::slurm::spank
