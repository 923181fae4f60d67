// A job's checkpoint store: <root>/<jobid>/ with index.h5, the saved batch script and one
// folder per checkpoint set (set-000042/) holding each member's image folder and the set's
// manifest. docs/index-schema.md describes the layout, the commit protocol, retention,
// fencing and repair.
//
// A writer (the agent) uses it like this:
//
//   auto store = JobStore::open_writer(root, job, restart_count);   // claims the job
//   uint64_t seq = store->begin_set({Trigger::Interval, step, nodes, members, {}});
//   for each member: dump into store->member_dir(seq, id), fsync, then
//       store->add_member(seq, {id, node, dir, scan_member_files(dir)});
//   store->commit_set(seq);          // or fail_set(seq, why)
//   store->keep_newest(keep);
//
// Readers (ckpt-job, restore) use JobStore::open, which refuses another user's job.
// One JobStore per process and thread; processes on one host serialize through a lock file.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ckpt/base/result.h"
#include "ckpt/set/model.h"

namespace ckpt::set {

inline constexpr char kIndexName[] = "index.h5";
inline constexpr char kManifestName[] = "manifest";
inline constexpr char kBatchScriptName[] = "job-script";
inline constexpr char kEnvironmentName[] = "job-environment";
// Committed sets kept when --checkpoint-keep is not given.
inline constexpr uint32_t kDefaultKeep = 2;

struct SetOptions {
    Trigger trigger = Trigger::Manual;
    uint32_t step_id = 0;
    uint32_t node_count = 1;
    uint32_t expected_members = 1;  // the set commits only when this many reported
    std::string step_command;       // see SetRecord
    // An incremental set: its members are dumped with the images of the same members in set
    // `parent` (committed, of this run) as their parents; 0: a full set. See SetRecord.
    uint64_t parent = 0;
};

struct MemberReport {
    int32_t member_id = 0;
    std::string node;
    std::string image_dir;  // absolute, or relative to the job folder; inside the set folder
    std::vector<FileRecord> files;  // from scan_member_files, run where the files are
};

// Walks an image folder (recursively) and checksums every regular file in it. Run it on
// the node that wrote the images, after they were fsynced.
Result<std::vector<FileRecord>> scan_member_files(const std::string& dir);

// The outcome of keep_newest or repair, one line per set touched, for -v and reports.
struct Report {
    std::vector<std::string> lines;
};

class JobStore {
public:
    // For the writer of run restart_count: creates <root>/<jobid>/ (mode 0700) and its index
    // if missing, and claims the job for this run.
    // A folder whose index names another incarnation than job.incarnation (both known) is
    // another job's of the same id: it is renamed to <root>/<jobid>.earlier-<incarnation>
    // (set_aside() says where) and this job starts a new folder.
    // Refused if a newer run already claimed it. There is one writer per job at a time
    // (the lead agent): sets left "writing" by an earlier writer are rolled forward (their
    // manifest says committed and every file has its size) or marked failed.
    // Runs as the job's user (refused otherwise: root never writes a user's store).
    // move_aside renames <root>/<from> to <root>/<to> (names, not paths) where the user may
    // not write the root itself (the agent asks its privileged half); empty: rename here.
    using FolderMover = std::function<Result<void>(const std::string& from, const std::string& to)>;
    static Result<JobStore> open_writer(const std::string& root, const JobInfo& job,
                                        uint32_t restart_count, const FolderMover& move_aside = {});

    // For readers: the job's folder must belong to the caller, unless the caller is root.
    // Loads the index; a damaged index is an error that says to run repair.
    static Result<JobStore> open(const std::string& root, uint64_t jobid);

    // For repair and removal when the index may be unreadable: checks ownership only.
    static Result<JobStore> open_folder(const std::string& root, uint64_t jobid);

    const std::string& dir() const { return dir_; }
    uint64_t jobid() const { return jobid_; }
    const Index& index() const { return index_; }
    Result<void> reload();
    // Where open_writer moved an earlier job's folder of this id ("" if it did not).
    const std::string& set_aside() const { return set_aside_; }

    // Save the batch script (job-script) and the job's environment (job-environment, NAME=value
    // entries each ended by a NUL) beside the index, atomically, mode 0600, owned by the job's
    // user; the index records each one's name, size and XXH3-64.
    Result<void> save_batch_script(const std::string& text);
    Result<void> save_environment(const std::string& text);
    // A saved file's content, checked against its recorded size and checksum.
    Result<std::string> read_saved_file(const std::string& name) const;

    // Starts set seq (returned): creates its folder and records it as "writing".
    Result<uint64_t> begin_set(const SetOptions& opts);
    // Absolute path of a member's image folder inside set seq (created, mode 0700).
    Result<std::string> make_member_dir(uint64_t seq, int32_t member_id);
    // Records a member whose images are written and fsynced.
    Result<void> add_member(uint64_t seq, MemberReport report);
    // The same, scanning the folder here.
    Result<void> add_member(uint64_t seq, int32_t member_id, const std::string& node,
                            const std::string& image_dir);
    // Commits set seq once every expected member reported: fsyncs every member file,
    // writes the manifest, then replaces the index atomically.
    Result<void> commit_set(uint64_t seq);
    // Two-level storage (local_dir=): every expected member reported from its node's local
    // folder; records the set complete at the local level (it stays "writing" until its
    // members are in the job folder and commit_set commits it at the shared level), and no
    // older set as complete there (each node keeps its newest local set only).
    Result<void> commit_local(uint64_t seq);
    Result<void> fail_set(uint64_t seq, const std::string& reason);

    // Retention: keeps the newest `keep` committed sets and every set their chains of
    // parents need (incremental sets, SetRecord::parent); deletes older committed sets, and
    // failed sets and leftover folders older than the newest committed one. Sets being
    // written, and the parents of sets being written, are never deleted. keep >= 1.
    Result<Report> keep_newest(uint32_t keep);
    // Removes one set (not one being written, nor the parent of a set that is kept).
    Result<void> remove_set(uint64_t seq);
    // Removes the job's whole store.
    Result<void> remove_job();

    // Checks set seq: every expected member present and done, every file present with its
    // recorded size and checksum, the manifest readable and in agreement. An incremental
    // set's whole chain too: each parent set verifies, and each member's page maps name the
    // parent member's folder, its page map's checksum and dump id as that page map has them.
    Result<void> verify_set(uint64_t seq) const;
    // The newest committed set that verifies; the error lists why each candidate failed.
    Result<uint64_t> newest_verified() const;

    // Rebuilds index.h5 from the set folders' manifests (docs/index-schema.md, "Repair").
    Result<Report> repair();

private:
    JobStore() = default;
    std::string path(const std::string& name) const { return dir_ + "/" + name; }
    Result<Index> load_locked_index() const;
    Result<void> replace_index(const Index& idx);
    Result<void> check_fence(const Index& on_disk, std::string_view action, uint64_t seq) const;
    Result<void> write_manifest(const SetRecord& s) const;
    Result<void> delete_folder(const std::string& name) const;
    Result<void> roll_forward_or_fail(SetRecord& s) const;
    Result<void> set_aside_other_incarnation(const FolderMover& move_aside);
    Result<void> save_job_file(const std::string& name, const std::string& text);

    std::string root_;
    std::string dir_;
    uint64_t jobid_ = 0;
    Index index_;
    bool writer_ = false;
    uint32_t restart_count_ = 0;
    std::map<uint64_t, SetRecord> pending_;  // sets this writer began and has not finished
    std::string set_aside_;
};

// A relative path of plain names: not empty, not absolute, no "." or ".." component, no
// empty component. What names in a node report or an index must be to stay inside a folder.
bool is_plain_relative_path(std::string_view path);

// The access rule for reading a job's store, given the owner of its folder: the owner
// and root may; anyone else is refused with a message naming the job and both users.
Result<void> check_reader(uint64_t jobid, const std::string& dir, uid_t owner, uid_t caller);

}  // namespace ckpt::set
