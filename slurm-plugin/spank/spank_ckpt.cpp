// spank_ckpt.so: the SPANK entry points. Each one is a C symbol that Slurm looks up by name;
// each runs its C++ body behind a barrier so that no exception reaches Slurm, and reports
// failure as -1 after one slurm_error line that names what failed.
//
// Contexts (see the research note on the callback order):
//   sbatch/salloc (allocator), srun (local): init, option callbacks, init_post_opt, exit.
//     A bad option value or a refused user rejects the submission here.
//   slurmstepd (remote, one per step per node): init, option callbacks, init_post_opt,
//     user_init, task callbacks, exit. The settings are recorded in user_init.
// The per-node checkpoint agent is started from task_post_fork and stopped in exit
// (agent_launch.cpp); a restarted task becomes the engine's restore in task_init_privileged
// and the batch step's task becomes its signal relay (task_restore.cpp, batch_relay.cpp).
//
// spank.h declares the slurm_spank_* prototypes outside its own extern "C" block, hence the
// include inside one (otherwise they would be C++ declarations that clash with ours).
extern "C" {
#include <slurm/spank.h>
}

#include <exception>
#include <string_view>
#include <vector>

#include "plugin_state.h"

namespace ckpt::slurm::spank {

PluginState& state() {
    static PluginState s;
    return s;
}

namespace {

template <typename Body>
int guarded(const char* callback, Body body) {
    try {
        Result<void> r = body();
        if (r) return 0;
        slurm_error("ckpt: %s: %s", callback, r.error().message().c_str());
    } catch (const std::exception& e) {
        slurm_error("ckpt: %s: %s", callback, e.what());
    } catch (...) {
        slurm_error("ckpt: %s: unknown exception", callback);
    }
    return -1;
}

bool options_context() {
    spank_context_t ctx = spank_context();
    return ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE;
}

}  // namespace

}  // namespace ckpt::slurm::spank

using namespace ckpt::slurm::spank;

// The library is built with hidden visibility; only these symbols are Slurm's to see.
#define CKPT_SPANK_EXPORT __attribute__((visibility("default")))

extern "C" {

// SPANK_PLUGIN(ckpt, 1) spelled out: in C++ a namespace-scope const has internal linkage
// unless declared extern.
CKPT_SPANK_EXPORT extern const char plugin_name[] = "ckpt";
CKPT_SPANK_EXPORT extern const char plugin_type[] = "spank";
CKPT_SPANK_EXPORT extern const unsigned int plugin_version = SLURM_VERSION_NUMBER;
CKPT_SPANK_EXPORT extern const unsigned int spank_plugin_version = 1;

CKPT_SPANK_EXPORT int slurm_spank_init(spank_t sp, int ac, char** av) {
    return guarded("init", [&]() -> ckpt::Result<void> {
        if (!options_context()) return ckpt::ok();
        std::vector<std::string_view> args(av, av + ac);
        state().site = CKPT_TRY_CTX(ckpt::slurm::parse_plugin_args(args), "plugstack.conf");
        return register_options(sp);
    });
}

CKPT_SPANK_EXPORT int slurm_spank_init_post_opt(spank_t sp, int, char**) {
    return guarded("init_post_opt", [&]() -> ckpt::Result<void> {
        if (!options_context()) return ckpt::ok();
        std::string user = CKPT_TRY(job_user(sp));
        state().settings = CKPT_TRY(ckpt::slurm::resolve(state().options, state().site, user));
        if (!spank_remote(sp) && state().settings->active) return give_incarnation(sp);
        return ckpt::ok();
    });
}

CKPT_SPANK_EXPORT int slurm_spank_user_init(spank_t sp, int, char**) {
    return guarded("user_init", [&]() -> ckpt::Result<void> {
        if (!state().settings) return ckpt::ok();
        CKPT_TRY(export_step_settings(sp, *state().settings));
        return prepare_mpi_step(sp, *state().settings);
    });
}

CKPT_SPANK_EXPORT int slurm_spank_task_init_privileged(spank_t sp, int, char**) {
    return guarded("task_init_privileged", [&]() -> ckpt::Result<void> {
        if (!spank_remote(sp) || !state().settings || !state().settings->active) return ckpt::ok();
        return prepare_task_launch(sp, *state().settings);
    });
}

CKPT_SPANK_EXPORT int slurm_spank_task_init(spank_t sp, int, char**) {
    return guarded("task_init", [&]() -> ckpt::Result<void> {
        if (!spank_remote(sp)) return ckpt::ok();
        // First: a restored rank's restorer takes the environment as it is then.
        CKPT_TRY(put_rank_on_ckpt_mpi(sp));
        return send_stdio_to_restorer(sp);
    });
}

CKPT_SPANK_EXPORT int slurm_spank_task_post_fork(spank_t sp, int, char**) {
    return guarded("task_post_fork", [&]() -> ckpt::Result<void> {
        if (!spank_remote(sp) || !state().settings || !state().settings->active) return ckpt::ok();
        return agent_task_forked(sp, *state().settings);
    });
}

CKPT_SPANK_EXPORT int slurm_spank_task_exit(spank_t sp, int, char**) {
    return guarded("task_exit", [&]() -> ckpt::Result<void> {
        if (!spank_remote(sp) || !state().settings || !state().settings->active) return ckpt::ok();
        int status = 0;
        if (spank_get_item(sp, S_TASK_EXIT_STATUS, &status) == ESPANK_SUCCESS)
            state().task_status.push_back(status);
        return ckpt::ok();
    });
}

CKPT_SPANK_EXPORT int slurm_spank_exit(spank_t sp, int, char**) {
    return guarded("exit", [&]() -> ckpt::Result<void> {
        if (spank_context() != S_CTX_REMOTE || !state().settings || !state().settings->active)
            return ckpt::ok();
        return agent_step_exit(sp, *state().settings);
    });
}

}  // extern "C"
