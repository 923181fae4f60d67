// What a job asked of ckpt (the --checkpoint-* options) and what the site allows (the
// arguments of the plugstack.conf line), combined into the settings of one job.
//
// Pure logic without Slurm headers: spank_ckpt.so parses with it in every context (sbatch,
// srun, slurmstepd), and the agent and ckpt-job read the same settings back from the job's
// environment (CKPT_INTERVAL, CKPT_DIR, ...).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::slurm {

// The highest compress= level (zstd's strongest the engine's --compress takes).
inline constexpr uint32_t kMaxCompressLevel = 19;

// Site settings: the arguments after the plugin's path in plugstack.conf, e.g.
//   required /usr/lib/x86_64-linux-gnu/slurm/spank_ckpt.so dir=/shared/ckpt keep=3
// Each is key=value; see examples/plugstack.conf for the full list.
struct PluginConfig {
    std::string root = "/var/spool/ckpt";  // dir=: where jobs' checkpoint folders go by default
    std::string engine;                  // engine=: ckpt-engine path ("" = found on PATH)
    std::string agent;                   // agent=: ckpt-agent path ("" = found on PATH)
    uint64_t interval = 0;               // interval=: default interval, seconds (0: only on request)
    uint64_t min_interval = 0;           // min_interval=: shortest interval a job may ask for
    uint32_t keep = 2;                   // keep=: committed sets kept per job by default
    uint32_t max_keep = 100;             // max_keep=: most sets a job may keep
    uint32_t full_every = 8;             // full_every=: every Nth set of a run is full, the
                                         // others incremental (1: all full)
    uint32_t max_overhead = 25;          // max_overhead=: percent of a job's time its interval
                                         // sets may take (100: no limit)
    uint32_t compress = 0;               // compress=: zstd level of the members' page data,
                                         // 1 to kMaxCompressLevel (0: stored as is)
    bool user_dir = true;                // user_dir=yes|no: may jobs choose --checkpoint-dir
                                         // (other than the root itself)?
    std::vector<std::string> users;      // users=a,b: who may checkpoint (empty: everyone)
    std::string mpi_dir;                 // mpi=: folder of ckpt's libmpi.so.40 ("": MPI ranks
                                         // are not split, and cannot be checkpointed)
    std::string local_dir;               // local_dir=: node-local folder written first, drained
                                         // to the job's folder ("": none); %n is the node's name
    std::string drain_hold;              // drain_hold=: FOR TESTS ONLY, a drain waits while this
                                         // file exists (a node can be killed during it)
};

// local_dir= for one node: every %n replaced by the node's name (a plain name).
Result<std::string> expand_local_dir(std::string_view pattern, std::string_view node);

// The arguments are validated whole: an unknown key or a bad value is an error that names
// the argument.
Result<PluginConfig> parse_plugin_args(const std::vector<std::string_view>& args);

// --checkpoint-restore=<jobid>[:<set>]: restore the given job's newest committed set, or set N.
struct RestoreRequest {
    uint64_t job_id = 0;
    std::optional<uint64_t> set;
    std::string to_string() const;
};
Result<RestoreRequest> parse_restore(std::string_view text);

// Which tasks of a checkpointed srun step run on ckpt's libmpi (--checkpoint-mpi=, docs/mpi.md).
enum class MpiRanks {
    Linked,  // auto (the default): a task launched by the pmix plugin whose program is linked
             // with libmpi
    All,     // always: every task launched by the pmix plugin (an interpreter that loads libmpi
             // at run time: python with mpi4py)
    None,    // never: no task (its MPI ranks then cannot be checkpointed)
};
Result<MpiRanks> parse_mpi_ranks(std::string_view text);
std::string_view to_string(MpiRanks m);

// The options a job gave; unset ones take the site's defaults.
struct JobOptions {
    std::optional<uint64_t> interval;
    std::optional<std::string> dir;
    std::optional<uint32_t> keep;
    std::optional<RestoreRequest> restore;
    bool no_restart = false;
    std::optional<MpiRanks> mpi;
    bool any() const { return interval || dir || keep || restore || no_restart || mpi; }
};

enum class Option { Interval, Dir, Keep, Restore, NoRestart, Mpi };

// True when both paths name one folder: equal after lexical normalization (no trailing
// slash, no "." or ".."), or through links when the folders exist here.
bool same_folder(const std::string& a, const std::string& b);

// Records one option's value, validated against the site's limits. The error is the line
// sbatch or srun shows the user (it names the option, the value and the valid forms).
Result<void> set_option(JobOptions& opts, Option which, std::string_view value,
                        const PluginConfig& site);

// The settings a job runs with.
struct JobSettings {
    bool active = false;    // the job uses ckpt (an option given, or a site default interval)
    uint64_t interval = 0;  // seconds between checkpoints; 0: only on request
    std::string dir;        // checkpoint root; the job's sets go to <dir>/<jobid>/
    uint32_t keep = 0;
    std::optional<RestoreRequest> restore;
    bool restart = true;  // a requeued run resumes from the newest committed set
    MpiRanks mpi = MpiRanks::Linked;
};

// Options over site defaults. `user` is the job's user name, checked against users=.
Result<JobSettings> resolve(const JobOptions& opts, const PluginConfig& site, std::string_view user);

// The job environment variables that carry the settings to the job and the agent:
// CKPT_INTERVAL (seconds), CKPT_DIR, CKPT_KEEP, CKPT_RESTART (1 or 0) and, when asked,
// CKPT_RESTORE (<jobid>[:<set>]). Empty when the job does not use ckpt.
std::vector<std::pair<std::string, std::string>> job_environment(const JobSettings& settings);

// Formats seconds as the shortest exact unit form ("90s", "10m", "2h", "1d", "0").
std::string format_interval(uint64_t seconds);

}  // namespace ckpt::slurm
