// How the agents of one job step, ckpt-job and the plugin talk: small files in the job's
// checkpoint folder (<root>/<jobid>/, on storage every node sees), under agents/.
//
//   agents/step-S.request            the lead agent asks every node to dump set N
//   agents/step-S.set-N.node-K       node K's report for set N: its members and their files
//   agents/step-S.drain              the lead asks every node to drain set N from its local
//                                    folder to the job's folder (local_dir=)
//   agents/step-S.set-N.node-K.drained   node K drained its members of set N, or why not
//   agents/step-S.node-K.status      node K's agent state (for ckpt-job status)
//   agents/step-S.done               step S finished (its tasks exited 0) in run R
//   agents/step-S.mpi-lead           where the nodes' MPI relays reach the lead's (an MPI step)
//   agents/steps.lock                flock of the lead of the srun step being checkpointed
//   checkpoint-request               written by the job's user (ckpt-job checkpoint): take a
//                                    set now
//   preempt-request                  written by the batch step's signal relay when Slurm
//                                    warns the batch shell (--signal=B:...): final set now
//
// Every file the agents write is text and ends with a "sum <xxh3>" line over everything
// before it: a torn file is refused. The sum detects damage; it does not prove who wrote a
// file (anyone can compute it). It need not: everything here is written and read by the
// job's user's own processes (the agents' unprivileged halves, ckpt-job, the relay), never
// by root, so a forged file can only mislead the user's own agents (docs/security.md).
// Files are written as a fresh temporary file of an unpredictable name (O_EXCL, no link
// followed), renamed into place.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/set/model.h"
#include "ckpt/set/store.h"

namespace ckpt::slurm {

inline constexpr char kAgentsDir[] = "agents";
inline constexpr char kCheckpointRequest[] = "checkpoint-request";
inline constexpr char kPreemptRequest[] = "preempt-request";
// agents/steps.lock: flock held by the lead agent of the srun step being checkpointed.
inline constexpr char kStepsLock[] = "steps.lock";
// In a member's image folder: the member is an MPI rank ("rank R"), restored with a new
// control channel and the new launch's environment (docs/mpi.md, "Under Slurm").
inline constexpr char kMpiRankMarker[] = "mpi-rank";
// Slurm's id of the batch step (SLURM_BATCH_SCRIPT).
inline constexpr uint32_t kBatchStep = 0xfffffffb;

std::string step_name(uint32_t step);  // "batch" or the number
std::string request_name(uint32_t step);
std::string report_name(uint32_t step, uint64_t seq, uint32_t node);
// Two-level storage (local_dir=): the lead asks every node to drain set N (a SetRequest),
// and node K says it did (a NodeReport without members) or why not.
std::string drain_name(uint32_t step);
std::string drained_name(uint32_t step, uint64_t seq, uint32_t node);
std::string status_name(uint32_t step, uint32_t node);
std::string step_done_name(uint32_t step);
std::string mpi_lead_name(uint32_t step);

// Text with a trailing checksum line, and back.
std::string seal(std::string body);
Result<std::string> unseal(std::string_view text, std::string_view what);

// key value lines (the value is the rest of the line).
using Fields = std::multimap<std::string, std::string>;
Fields parse_fields(std::string_view body);
std::optional<std::string> field(const Fields& f, const std::string& key);
Result<uint64_t> uint_field(const Fields& f, const std::string& key, std::string_view what);

// A folder opened without following links; `owner` (if given) must own it.
Result<UniqueFd> open_folder(const std::string& path, std::optional<uid_t> owner);
// Writes name in dir atomically: a fresh temporary file of an unpredictable name (O_EXCL, no
// link followed), fsynced, mode 0600, renamed over name.
Result<void> write_file_at(int dir, const std::string& name, std::string_view content);
// Reads name in dir, refusing links and anything but a regular file. ENOENT when missing.
Result<std::string> read_file_at(int dir, const std::string& name);

// What the lead asks of every node for one set.
struct SetRequest {
    uint64_t seq = 0;
    set::Trigger trigger = set::Trigger::Interval;
    uint32_t restart_count = 0;
    // An incremental set: each member's images refer to its images in this set (same node,
    // same run); 0: full.
    uint64_t parent = 0;
    // The newest set of this run whose dumps left the write trackers (the parent, for an
    // incremental set): a full set's dumps name it too, so that the engine recognises the
    // trackers it recorded (dump --prev-images-dir ... --max-chain 0); 0: none.
    uint64_t tracked = 0;
};
std::string encode(const SetRequest& r);
Result<SetRequest> decode_request(std::string_view text);

// One node's answer for one set: its members (written, fsynced and scanned), or why not.
struct NodeReport {
    uint64_t seq = 0;
    uint32_t node_id = 0;
    std::string node;
    std::string failure;  // empty: success
    struct Member {
        int32_t member_id = 0;
        std::string image_dir;  // relative to the job folder
        std::vector<set::FileRecord> files;
    };
    std::vector<Member> members;
};
std::string encode(const NodeReport& r);
Result<NodeReport> decode_report(std::string_view text);

// The first set numbered above `before` that ended (committed or failed), after reloading
// the index; nullopt while none has. How ckpt-job checkpoint --wait and the batch relay
// learn the fate of the set they asked for.
std::optional<set::SetRecord> set_ended_after(set::JobStore& store, uint64_t before);

}  // namespace ckpt::slurm
