// The copy-on-write snapshot of a dump --leave-running: the tree is frozen only while its
// state is recorded and its private anonymous memory write-protected with userfaultfd;
// then it runs again while the engine copies the pages. A write to a page not yet copied
// waits until the engine has copied it (and the pages around it), then proceeds, so the
// pages files hold the memory of the instant of the freeze.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "memory.h"

namespace ckpt::engine {

class RemoteThread;
class RemoteScratch;

// A userfaultfd made inside a frozen process (an injected syscall: one belongs to the mm
// of its maker), taken into the engine with pidfd_getfd and closed again in the process at
// once (the registration lives with the file, not with the fd number), its API set up.
// Where the process's user may not make one (vm.unprivileged_userfaultfd=0: EPERM), the
// engine, as root, makes it there from /dev/userfaultfd (put into the process for one
// ioctl and closed at once). An empty fd, with a debug line saying why, where the kernel or
// the process does not allow one (no write-protect mode or events, userfaultfd refused and
// /dev/userfaultfd out of reach, a seccomp filter): the dump then copies the pages frozen.
// arena: scratch memory in the process.
Result<UniqueFd> make_snapshot_uffd(pid_t pid, RemoteThread& leader, RemoteScratch& arena, bool seccomp);

// The tree frozen, before its memory is recorded (a registration may merge mappings):
// registers every private anonymous mapping of pid with uffd in write-protect mode, whole;
// registered gets them, in address order. What cannot be registered is copied frozen
// (Snapshot::arm).
Result<void> register_private_memory(pid_t pid, int uffd, std::vector<std::pair<uint64_t, uint64_t>>* registered);
// Then, on a thread of its own while the process is recorded: write-protects every page of
// those mappings. Pages the dump does not copy (zero pages, excluded ranges) are let
// through at their first write.
Result<void> protect_registered(pid_t pid, int uffd, const std::vector<std::pair<uint64_t, uint64_t>>& registered);

struct SnapshotStats {
    uint64_t faults = 0;        // writes that waited for their page
    uint64_t frozen_bytes = 0;  // copied before the tree ran again (not write-protectable)
};

class Snapshot {
public:
    // The tree still frozen, its private memory write-protected (protect_private_memory,
    // plans[i].registered with uffds[i]): creates the pages files, copies what is not
    // protected or must stay writable (exit_writes) and lifts their protection. The tree may
    // run once this returns.
    static Result<std::unique_ptr<Snapshot>> arm(std::vector<PagePlan>& plans, std::vector<UniqueFd> uffds);
    ~Snapshot();
    // The tree running: copies every page left (those written first, on a fault thread),
    // then the checksums, or (compress_level, dump --compress) compresses the pages files in
    // place, taking the checksums as it reads them. An error (the tree unmapped, moved or
    // dropped pages not yet copied, a process exited; or the compression failed: no memory, a
    // zstd error) means the pages files are not the instant's or not whole: the caller dumps
    // again, frozen (and compressing as it copies).
    Result<SnapshotStats> finish(int compress_level = 0);

    struct State;

private:
    std::unique_ptr<State> s_;
};

}  // namespace ckpt::engine
