// One process being restored: what its resource kinds need from one another.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "core.pb.h"
#include "files.pb.h"
#include "mm.pb.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"

namespace ckpt::engine {

struct RestoreShared;

// While alive, the engine's fsuid and fsgid are the given ones (no-op for -1).
class FsIdentity {
public:
    FsIdentity(uid_t uid, gid_t gid);
    ~FsIdentity();
    FsIdentity(const FsIdentity&) = delete;
    FsIdentity& operator=(const FsIdentity&) = delete;

private:
    bool active_ = false;
};

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
    RemoteScratch scratch;            // in the trampoline, once the process exists
    int engine_pidfd_in_target = -1;  // the engine's pidfd, as an fd of the target

    // Moves an fd of the engine into the target; returns its number there (at_fd if >= 0).
    Result<int> install_fd(int engine_fd, int at_fd = -1, bool cloexec = false);
    // Opens a recorded file (verified) in the engine and installs it in the target.
    Result<int> install_file(uint32_t file_id, int flags, int at_fd = -1, bool cloexec = false);
    // The target fd to map a file-backed or shared mapping from (cached per file).
    Result<int64_t> mapping_fd(const image::Vma& v);
    Result<void> close_mapping_fds();

    std::map<uint32_t, int> mapping_fds_;  // file id -> fd in target
};

// What every process of one restore shares: the recorded files and pipes, options.
struct RestoreShared {
    std::string image_dir;
    image::FileTable files;
    bool skip_file_checks = false;
    std::map<uint32_t, UniqueFd> shm_objects;  // file id -> memfd, shared by all its mappers
    std::map<uint64_t, std::pair<UniqueFd, UniqueFd>> pipes;  // pipe id -> (read, write)
    std::map<std::string, int> inherited;  // --inherit-fd key -> restorer fd
    std::map<uint64_t, UniqueFd> descriptions;  // open file descriptions of regular fds
    // The identity files are opened with (--restore-as); -1: the engine's own.
    uid_t fs_uid = static_cast<uid_t>(-1);
    gid_t fs_gid = static_cast<gid_t>(-1);

    Result<const image::FileEntry*> file(uint32_t id) const;
};

}  // namespace ckpt::engine
