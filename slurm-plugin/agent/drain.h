// Two-level checkpoint storage (local_dir= in plugstack.conf; slurm-plugin/README.md,
// "Two-level storage"): a node's members are dumped into its local job folder
// <local_dir>/<jobid>/set-N/member-I first, then drained (copied) into the job's folder on
// the shared checkpoint root. Everything here runs as the job's user, in the agent's
// unprivileged half: the local folder is the user's, and whatever it holds may have been
// put there by the user, so the drain copies only the files this agent recorded when it
// scanned its own dump, reached without following a link, as regular files of the recorded
// size whose bytes have the recorded XXH3-64.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/slurm/coordination.h"

namespace ckpt::slurm::agent {

// <local_root>/<job>, made by the user where the user may (a root-owned local root had it
// made by the privileged half, job_folder.h); must be the user's and not writable by group
// or others.
Result<UniqueFd> open_local_job_folder(const std::string& local_root, uint64_t job, uid_t uid);

// set-N/ with member-I/ for each id in the local job folder, empty (a leftover of that name,
// of an earlier job of the same id, is removed first).
Result<void> make_local_set(int local_fd, const std::string& local_dir, uint64_t seq,
                            const std::vector<int32_t>& ids);

// Copies the members' recorded files of set seq from the local job folder to the job's
// folder (whose member folders the lead made), checking each, and fsyncs them.
Result<void> drain_members(int local_fd, int job_fd, uint64_t seq,
                           const std::vector<NodeReport::Member>& members);

// Removes every local set folder but set keep (the newest complete local set).
void prune_local_sets(int local_fd, const std::string& local_dir, uint64_t keep);

}  // namespace ckpt::slurm::agent
