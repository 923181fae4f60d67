// A process's address space: mappings, mm fields and page data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "ckpt/base/result.h"
#include "dump_context.h"
#include "mm.pb.h"

namespace ckpt::engine {

class RemoteThread;
struct RestoreTask;

// Records the mappings of pid into mm and writes the pages worth saving to
// <dir>/pages-<pid>.img, described by pm. brk is the process's current program break.
Result<void> dump_memory(pid_t pid, uint64_t brk, FileRegistry& files, const DumpExclusions& ex,
                         const std::string& dir, image::MmCore* mm, image::PageMap* pm);

// Recreates the address space in a restored process whose memory holds only the
// trampoline and the vDSO: moves the vDSO, maps every recorded mapping, fills pages,
// applies protections and madvise flags, then the mm fields.
Result<void> restore_memory(RestoreTask& t);

// An address range free in both the recorded layout and the engine's own, for the
// trampoline of a restored process.
Result<uint64_t> find_trampoline_hole(const image::MmCore& mm, uint64_t size);

}  // namespace ckpt::engine
