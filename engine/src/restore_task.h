// One process being restored: what its resource kinds need from one another.
#pragma once

#include <sys/types.h>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/privilege.h"
#include "core.pb.h"
#include "files.h"
#include "files.pb.h"
#include "mm.pb.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

struct RestoreShared;

struct RestoreTask {
    pid_t pid = 0;   // in the process's own pid namespace (as recorded)
    pid_t host = 0;  // as the engine sees it (differs under --new-pidns)
    std::string image_dir;
    image::TaskCore core;
    image::MmCore mm;
    image::PageMap pagemap;
    image::FdTable fds;
    RestoreShared* shared = nullptr;

    std::unique_ptr<RemoteThread> leader;
    uint64_t trampoline = 0;  // code page, then scratch
    // Room for the largest argument the kernel takes from a restore (NGROUPS_MAX
    // supplementary groups), and a page for whatever is live beside it.
    static constexpr uint64_t kScratchSize = 65536 * 4 + 4096;
    static constexpr uint64_t kCodeSize = 4096;
    static constexpr uint64_t kTrampolineSize = kCodeSize + kScratchSize;
    // In the code page: the trap code at its start, the syscall batch code here.
    static constexpr uint64_t kBatchCodeOffset = 64;
    uint64_t batch_code() const { return trampoline + kBatchCodeOffset; }
    RemoteScratch scratch;            // in the trampoline, once the process exists
    int engine_pidfd_in_target = -1;  // the engine's pidfd, as an fd of the target
    // The process whose fd table this one shares (its parent's, or theirs in turn), which
    // alone restores the table's fds and holds the pidfd's number; null for the first.
    RestoreTask* fd_owner = nullptr;
    int engine_pidfd() const { return fd_owner ? fd_owner->engine_pidfd_in_target : engine_pidfd_in_target; }
    std::vector<pid_t> thread_hosts;  // every thread but the leader, as the engine sees them
    // Signals whose action was set in the process since it was made (bit n: signal n), which
    // restore_sigactions sets whatever the engine's own (shared.inherited_sigactions) is.
    uint64_t sigactions_changed = 0;

    // Moves an fd of the engine into the target; returns its number there (at_fd if >= 0).
    Result<int> install_fd(int engine_fd, int at_fd = -1, bool cloexec = false);
    // Opens a recorded file (verified) in the engine and installs it in the target.
    Result<int> install_file(uint32_t file_id, int flags, int at_fd = -1, bool cloexec = false);
    // The target fd to map a file-backed or shared mapping from (cached per file).
    Result<int64_t> mapping_fd(const image::Vma& v);
    Result<void> close_mapping_fds();

    std::map<std::pair<uint32_t, bool>, int> mapping_fds_;  // (file id, writable) -> fd in target
};

// What every process of one restore shares: the recorded files and pipes, options.
struct RestoreStream;
class BlockBuffers;

struct RestoreShared {
    std::string image_dir;
    // restore --stream: where the page data comes from, in process order (image_stream.h).
    RestoreStream* stream = nullptr;
    // Where compressed page data is decompressed, a few blocks at a time (memory.h).
    std::shared_ptr<BlockBuffers> block_buffers;
    image::FileTable files;
    bool skip_file_checks = false;
    // file id -> the one object remade from a saved file (deleted, memfd, shared anonymous
    // memory), O_RDWR: every fd and mapping of that file, in every process, is of it.
    std::map<uint32_t, UniqueFd> saved_objects;
    // memfds whose object itself was given as a description (memfd_create's file counts no
    // writer: one opened again does, and exec of it then fails with ETXTBSY).
    std::set<uint32_t> memfds_given;
    // file id -> the old name a deleted file was made under, until the restore is done.
    std::map<uint32_t, SavedName> saved_names;
    // file id -> a file kept by dump --link-remap, opened through its hidden link at first use.
    std::map<uint32_t, LinkRemapped> link_remapped;
    // The inotify descriptions made (description ids): drained once the hidden links are
    // removed (remove_link_remaps), whose removal is an event of their watches.
    std::set<uint64_t> inotify_descriptions;
    std::map<uint64_t, std::pair<UniqueFd, UniqueFd>> pipes;  // pipe id -> (read, write)
    std::set<std::pair<uint64_t, bool>> pipe_ends_given;      // (pipe id, read end) given a description
    // FIFO id -> the engine's open of it, holding it open until every fd of it is in place.
    std::map<uint64_t, UniqueFd> fifos;
    // unix socket pair id -> its two ends, made with their queued data before any process.
    std::map<uint64_t, std::pair<UniqueFd, UniqueFd>> unix_pairs;
    // pty pair id -> its master and the engine's open of its slave (none when the tree holds
    // no slave), made before any process and let go once every fd is in place.
    std::map<uint64_t, std::pair<UniqueFd, UniqueFd>> ptys;
    // AF_UNIX socket id -> the socket made (bound, listening, connected) before any process.
    std::map<uint64_t, UniqueFd> unix_sks;
    bool ext_unix_sk = false;  // restore --ext-unix-sk
    // The engine's own signal actions, read as the restore began: every process of the tree
    // is a copy of the engine (or of its parent, made before any action is set), so it holds
    // these until restore_sigactions; only the actions that differ are set (signals.cpp).
    std::array<arch::KernelSigaction, 65> inherited_sigactions{};
    // The same for resource limits (soft, hard; indexed by resource): what every process
    // holds until restore_task_settings (creds.cpp).
    std::array<std::pair<uint64_t, uint64_t>, 16> inherited_rlimits{};
    std::map<std::string, int> inherited;  // --inherit-fd key -> restorer fd
    // --tcp-established: established TCP connections may be restored (fds/tcp.cpp). Each is
    // made in repair mode and held here, with the bytes it had not sent yet, until every fd
    // of the tree is in place (its peer may be in the tree too); a restore that fails closes
    // them still in repair mode, silently.
    bool tcp_established = false;
    struct TcpRepairing {
        UniqueFd sock;
        std::string unsent;
        bool reuseaddr = false;          // leaving repair mode clears SO_REUSEADDR
        uint32_t sndbuf = 0, rcvbuf = 0;  // as recorded (raised meanwhile to take the queues)
        image::SocketFilter filter;       // set once the connection is out of repair mode
        google::protobuf::RepeatedPtrField<image::SocketOption> options;  // SO_BUF_LOCK: after the buffers
    };
    std::vector<TcpRepairing> tcp_repairing;
    std::map<uint64_t, UniqueFd> descriptions;  // open file descriptions of regular fds
    std::map<pid_t, pid_t> hosts;  // every process created: recorded pid -> as the engine sees it
    // Every living process (not a zombie) once step 1 of the restore has made it, by recorded
    // pid: where a kind has a process of the tree make what the kernel stamps with its maker
    // (FdKind.tree_made).
    std::map<pid_t, RestoreTask*> made;
    // --restore-as: the user the whole restore runs as (the engine, the init and every
    // restored process); empty when root restores images as recorded.
    std::optional<privilege::Identity> user;
    bool with_cpu_affinity = false;  // restore --with-cpu-affinity (sched.cpp)
    uint64_t own_cap_bnd = 0;     // the restorer's bounding set, which a user's processes keep
    int own_seccomp_filters = 0;  // filters the restorer runs under, inherited by every process

    Result<const image::FileEntry*> file(uint32_t id) const;
    // The engine's fd of the one object of saved file id, made at first use.
    Result<int> saved_object(uint32_t id);
    // A new open file description of recorded file id with the given flags: by path
    // (checked), or on the saved file's one object.
    Result<UniqueFd> open_file(uint32_t id, int flags);
    // O_PATH on the object of a file kept by dump --link-remap that an inotify watch watched
    // (its content is not checked: the watch never read it).
    Result<UniqueFd> open_watched(uint32_t id);
    // The restore has succeeded: the hidden links of dump --link-remap are removed, and the
    // events that removal (and the old names given back for the restore) queued on the
    // restored tree's inotify instances are read away.
    Result<void> remove_link_remaps();
    Result<LinkRemapped*> link_remapped_of(uint32_t id);
    // Once every fd and mapping of the saved files is in place: their temporary names
    // removed, their recorded owner and mode given. Also when a restore fails.
    Result<void> release_saved_names();
    ~RestoreShared() { (void)release_saved_names(); }
};

// Identity under --restore-as (creds.cpp, seccomp.cpp). The kernel enforces what a user may
// do because everything runs as the user; these say clearly what cannot be restored, and
// check from /proc that what was asked for happened.

// Refuses images whose process is not exactly the user: uids, gids, groups (as a set), no
// capability, the restorer's bounding set, no securebit but SECBIT_KEEP_CAPS, and seccomp
// filters only with no_new_privs.
Result<void> check_user_images(pid_t pid, const image::TaskCore& core, const RestoreShared& sh);
// The end of a thread's restore as the user: the restore's capability dropped, the recorded
// KEEPCAPS and no_new_privs (per thread, as the kernel keeps them).
Result<void> restore_creds_as_user(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, const image::Creds& c);
// What /proc/PID/task/TID/status must show once a thread's identity is restored.
struct ExpectedIdentity {
    uint32_t uid[4]{}, gid[4]{};  // real, effective, saved, fs
    std::vector<uint32_t> groups;  // sorted, unique
    uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_amb = 0, cap_bnd = 0;
    bool no_new_privs = false;
};
ExpectedIdentity expected_identity(const image::Creds& c, const RestoreShared& sh);
// Reads the thread's status and names the first field that differs (pid and tid as recorded).
Result<void> verify_thread_identity(pid_t pid, pid_t tid, pid_t host_tgid, pid_t host_tid, const ExpectedIdentity& want);
// The thread's seccomp mode and filter count are the restorer's plus what the image records.
Result<void> verify_thread_seccomp(pid_t pid, pid_t tid, pid_t host_tgid, pid_t host_tid, const image::TaskCore& core,
                                   int own_filters);
// The number of seccomp filters the calling thread runs under.
Result<int> own_seccomp_filters();

}  // namespace ckpt::engine
