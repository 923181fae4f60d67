// What a job's checkpoint store holds, in memory: the job, its sets, their members and
// the members' image files. index.h5 (index_h5.h) and the per-set manifests are two
// encodings of this model; docs/index-schema.md describes both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/result.h"

namespace ckpt::set {

// The index schema version this build writes; it also reads version 1 (without the job's
// environment, incarnation and saved-file checksums) to 3 (without the sets' levels) and 4
// (without the sets' parents: every set full).
inline constexpr uint32_t kIndexFormatVersion = 5;
inline constexpr uint32_t kOldestIndexFormatVersion = 1;

enum class SetState { Writing, Committed, Failed };
enum class Trigger { Interval, Manual, Preempt, TimeLimit };
enum class MemberState { Writing, Done, Failed };

std::string_view to_string(SetState s);
std::string_view to_string(Trigger t);
std::string_view to_string(MemberState s);
Result<SetState> parse_set_state(std::string_view s);
Result<Trigger> parse_trigger(std::string_view s);
Result<MemberState> parse_member_state(std::string_view s);

struct FileRecord {
    std::string name;  // relative to the member's image folder (or the job folder)
    uint64_t bytes = 0;
    uint64_t checksum = 0;  // XXH3-64 of the file's bytes
};

struct JobInfo {
    uint64_t jobid = 0;
    std::string user;
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::string name;
    std::string cluster;
    std::string submit_options;
    std::string batch_script;  // file name of the saved batch script beside the index; "" if none
    std::string environment;   // file name of the saved job environment beside the index; "" if none
    // Which job of this id: a random id given at submission that survives requeue; a reused
    // job id has another. "" when unknown (then the job is assumed to be the same).
    std::string incarnation;
    std::vector<FileRecord> saved_files;  // the batch script and environment: size, XXH3-64
};

struct MemberRecord {
    int32_t member_id = 0;  // rank or task id
    std::string node;
    std::string image_dir;  // relative to the job folder
    uint64_t bytes = 0;
    uint64_t checksum = 0;  // member_digest(files)
    uint64_t dump_ns = 0;   // when the member reported, CLOCK_REALTIME
    MemberState state = MemberState::Writing;
    std::vector<FileRecord> files;
};

struct SetRecord {
    uint64_t seq = 0;
    SetState state = SetState::Writing;
    Trigger trigger = Trigger::Manual;
    uint64_t start_ns = 0;
    uint64_t end_ns = 0;
    uint32_t step_id = 0;
    // What the step runs (a hash of its argv, format 3; "" if unknown): a re-run script may
    // number its steps differently, so a restart matches steps by it.
    std::string step_command;
    uint32_t node_count = 0;
    uint32_t expected_members = 0;
    uint32_t restart_count = 0;  // the run that wrote it (fencing)
    std::string failure;         // why a failed set failed
    // A complete copy of every member is in its node's local folder (local_dir=, format 4).
    // The shared level is the state: committed means complete in the job folder.
    bool local_complete = false;
    // An incremental set (format 5): its members' images refer to the images of the member
    // of the same id in set `parent` (their pages not written since are read from there), so
    // that set must stay as long as this one does. 0: a full set.
    uint64_t parent = 0;
    std::vector<MemberRecord> members;

    uint64_t bytes() const;
    // The levels holding a complete copy, as recorded: "local", "shared", "local shared", "".
    std::string levels() const;
    std::string folder() const;  // relative to the job folder: "set-000042"
};

struct Index {
    uint32_t format_version = kIndexFormatVersion;
    JobInfo job;
    // The newest run that claimed the job; writers of older runs are refused.
    uint32_t restart_count = 0;
    std::vector<SetRecord> sets;  // ascending seq

    // The newest restart count recorded anywhere (job claim or sets).
    uint32_t fence() const;
    const SetRecord* find(uint64_t seq) const;
    SetRecord* find(uint64_t seq);
    const SetRecord* newest_committed() const;
    uint64_t max_seq() const;
};

// Parses a set's recorded levels (SetRecord::levels) into its local_complete, refusing an
// unknown word or a "shared" that disagrees with its state.
Result<void> parse_levels(std::string_view text, SetRecord& s);

// Folder name of set seq, relative to the job folder.
std::string set_folder_name(uint64_t seq);
// Parses "set-000042" into 42; nullopt for any other name.
std::optional<uint64_t> parse_set_folder_name(std::string_view name);

// The digest that stands for a member's files in the index: XXH3-64 over, for each file
// in name order, the name, a NUL, then its size and XXH3-64 as little-endian uint64.
uint64_t member_digest(const std::vector<FileRecord>& files);

}  // namespace ckpt::set
