// Incremental dumps, the dump's side: the write tracker that dump --track-mem leaves in each
// process (a userfaultfd in asynchronous write-protect mode, made inside the process, kept at
// a high fd) and what a later dump --prev-images-dir asks it: which pages were written since.
// The restore's side (reading the pages not written from the parent dump) is in memory.cpp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "mm.pb.h"

namespace ckpt::engine {

class RemoteThread;

// The longest chain of parents a restore follows (and a dump makes: beyond it, a process is
// dumped whole).
inline constexpr uint32_t kMaxParentChain = 64;

// A process's images in the previous dump (dump --prev-images-dir).
struct PrevImages {
    image::MmCore mm;
    image::PageMap pm;
    uint64_t pagemap_xxh3 = 0;  // of its pagemap image, whole (PageMap.parent_pagemap_xxh3)
};

// The write tracker of one process during a dump.
struct MemTrack {
    const PrevImages* prev = nullptr;  // the process's previous dump, if any
    // The engine's copy of the tracker recorded in prev, still the process's (since_prev: its
    // write-protection holds since that dump), or a new one.
    UniqueFd uffd;
    bool since_prev = false;
    // The previous dump is the tracker's, but this one saves every page whole (its chain of
    // parents is at --max-chain): the tracker is still asked, only to be re-armed, so a full
    // dump keeps it rather than making a new one.
    bool whole = false;
    bool rearm = false;  // dump --track-mem: armed again for the next dump
    // With rearm, when the old tracker has no lower fd number left to move to: a new one,
    // armed once the old one has told what was written.
    UniqueFd next;
    int fd = -1;  // where the tracker is left in the process (rearm), and its inode
    uint64_t ino = 0;
    bool made = false;  // the tracker at fd is a new one, made by this dump
    // The tracker that the next dump will ask.
    int arm_fd() const { return next ? next.get() : uffd.get(); }
};

// The fds of pid holding a write tracker of the engine's: a userfaultfd with exactly the
// tracker's features whose inode is in tracker_inos (recorded by the dump named with
// --prev-images-dir). Never recorded, never restored. Any other userfaultfd with those
// features is refused: it may be the application's own, and a dump must not drop it.
Result<std::set<int>> find_trackers(pid_t pid, const std::set<uint64_t>& tracker_inos);

// In the frozen process, through injected system calls: takes the tracker recorded in
// t->prev if the process still has it (same fd, same inode). With t->rearm: moves it to a
// lower free fd (a tracker's fd number only ever goes down, so that an older dump's record
// of it can never match again once it was re-armed), or makes a new one at the highest free
// fd; other trackers of the engine's are closed. *engine_fds gets the fds of trackers left.
Result<void> prepare_tracker(pid_t pid, RemoteThread& leader, const std::set<int>& trackers, bool seccomp,
                             MemTrack* t, std::set<int>* engine_fds);

// For mapping [start, end) of kind and name (and file offset pgoff), registered with some
// userfaultfd (smaps "uw"): whether it is tracked since the previous dump (registered with
// t's tracker, and inside a mapping of the same kind and name there). If so, the flags of the
// PAGEMAP_SCAN that finds its pages (memory.cpp) and tells which were written since: it fails
// with EPERM on a mapping not write-protected asynchronously (then saved whole), and with
// t->rearm it write-protects the written pages again in the same walk; if not, 0.
Result<uint64_t> written_scan_flags(MemTrack& t, pid_t pid, uint64_t start, uint64_t end,
                                    image::Vma::Kind kind, const std::string& name, uint64_t pgoff);

// With t.rearm, once the mapping's pages are recorded: registers it with the tracker and
// write-protects its populated pages (tracked: it is, already). Where the kernel refuses,
// the mapping is left untracked (its pages are saved whole by the next dump; -v says why).
Result<void> arm_mapping(MemTrack& t, pid_t pid, uint64_t start, uint64_t end, bool tracked,
                         const std::vector<std::pair<uint64_t, uint64_t>>& populated);

}  // namespace ckpt::engine
