// State shared by the resource kinds during one dump or one restore.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"
#include "ckpt/image/image_file.h"
#include "files.pb.h"
#include "proc.h"

namespace ckpt::engine {

inline std::shared_ptr<spdlog::logger> logger() {
    static auto l = log::get("engine");
    return l;
}

// Files referred to by mappings, fds and links, each recorded once per dump.
class FileRegistry {
public:
    // Saved copies are created in dir, which must outlive the registry.
    FileRegistry(const image::ImageDir& dir, std::vector<std::string> save_whole_under = {})
        : dir_(dir), save_whole_under_(std::move(save_whole_under)) {}
    // Registers the file open at fd_path (a /proc/PID/map_files or /proc/PID/fd link);
    // path is what the kernel reports for it. Returns its id. reader, when not -1, is the
    // tree's own open description of it (pidfd_getfd), read with pread only: a new open would
    // break a lease the tree holds, be an event of the tree's inotify and fanotify marks and
    // touch the access time.
    Result<uint32_t> add(const std::string& fd_path, const std::string& path, int reader = -1);
    // File id (a regular file, not saved whole) is open for writing by the tree: records what
    // lets a restore roll it back to its size now (FileEntry.written). Once per file.
    Result<void> mark_written(uint32_t id, const std::string& fd_path, int reader = -1);
    image::FileTable& table() { return table_; }
    // dump --link-remap: a file whose name was removed while another link to it remains is
    // recorded with FileEntry.link_remap (not saved whole); its hidden link is made by
    // make_link_remaps, once every resource of the tree is recorded.
    void set_link_remap(bool on) { link_remap_ = on; }
    bool link_remap() const { return link_remap_; }
    // Makes (or finds, from an earlier dump of the same inode) the hidden hard link of every
    // file recorded for --link-remap, in the folder of its old name, and records its name.
    // Made last: the link is an IN_ATTRIB event for the tree's watches on the file (and
    // IN_CREATE for its folder's), which must not be queued while the tree's inotify fds are
    // checked for queued events.
    Result<void> make_link_remaps();
    // The dump is complete: the links it made stay (for the restore). Otherwise the
    // destructor removes them again (a dump that fails leaves nothing behind).
    void keep_link_remaps() { keep_links_ = true; }
    FileRegistry(const FileRegistry&) = delete;
    FileRegistry& operator=(const FileRegistry&) = delete;
    ~FileRegistry();
    // The tree's processes (the engine's pid -> the tree's) and other threads (the engine's
    // tids), for files of /proc naming them.
    void set_tree_pids(std::map<pid_t, pid_t> processes, std::set<pid_t> threads) {
        processes_ = std::move(processes);
        threads_ = std::move(threads);
    }

private:
    bool saved_whole(const std::string& path) const;
    Result<void> record_proc_file(image::FileEntry* e, const std::string& path) const;

    const image::ImageDir& dir_;
    std::vector<std::string> save_whole_under_;  // folders whose files are saved whole
    image::FileTable table_;
    std::map<std::pair<uint64_t, uint64_t>, uint32_t> by_inode_;  // (dev, ino) -> id
    std::map<pid_t, pid_t> processes_;
    std::set<pid_t> threads_;
    bool link_remap_ = false;
    bool keep_links_ = false;
    struct PendingRemap {
        uint32_t id;
        UniqueFd object;  // O_PATH, the very inode
    };
    std::vector<PendingRemap> remaps_;
    struct MadeLink {
        UniqueFd dir;
        std::string name;
        dev_t dev;
        ino_t ino;
    };
    std::vector<MadeLink> made_;
};

// One process of a frozen tree, as the dump read it from /proc once for every resource
// kind to consult.
// Its pid and tids are the engine's view (ptrace, /proc); the images record the tree's
// own: ns_pid, ns_threads, and ids.
struct FrozenProcess {
    pid_t pid = 0;
    ProcStat stat;
    std::vector<pid_t> threads;  // leader first
    bool zombie = false;
    ProcStatus status;  // read when the process's turn comes (not for zombies)
    // As the tree's pid namespace (the root's) sees them: what the process sees itself.
    pid_t ns_pid = 0;
    std::vector<pid_t> ns_threads;  // threads[i] there
    pid_t ns_ppid = 0, ns_pgid = 0, ns_sid = 0;  // 0: outside the tree's namespace (or the root's parent)
    // Job control (jobctl.cpp): the signal of the group stop holding it (0: it runs), and
    // whether its parent has already learnt of that stop by wait.
    int stop_signal = 0;
    bool stop_reported = false;
    std::vector<int> thread_stops;  // threads[i]'s stop when seized: SIGTRAP, or a stop signal
    std::vector<int> thread_seccomp_modes;  // threads[i]'s "Seccomp:" (0 none, 2 filters)
};

// What a dump may leave out (for the MPI split rank: the lower half's memory, threads
// and fds are not the application's).
struct DumpExclusions {
    std::vector<std::pair<uint64_t, uint64_t>> memory;  // [start, end) ranges
    std::set<pid_t> threads;
    std::set<int> fds;
    // The root's fds recorded as external resources under these keys (DumpOptions::external_fds).
    pid_t root = 0;
    std::map<int, std::string> external_fds;
};

}  // namespace ckpt::engine
