// A process's address space: mappings, mm fields and page data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/base/result.h"
#include "ckpt/image/image_file.h"
#include "dump_context.h"
#include "mm.pb.h"

namespace ckpt::engine {

class RemoteThread;
struct RestoreTask;

// One run of pages to copy from a process into its pages file.
struct PageCopy {
    uint64_t vaddr, len, file_off;
    bool readable;  // the mapping allows reads (else /proc/PID/mem, which may read more)
};

// The page data of one process: recorded, not yet copied.
struct PagePlan {
    pid_t pid = 0;
    const image::ImageDir* dir = nullptr;  // where the pages file is created
    std::string name;                       // the pages file, in dir
    std::string path;                       // dir and name, for messages
    uint64_t total = 0;
    std::vector<PageCopy> copies;  // in file order
    image::PageMap* pm = nullptr;  // gets the block checksums
};

// Records the mappings of pid into mm and the runs of pages worth saving into pm, and plans
// their copy to pages-<pid>.img in dir. brk is the process's current program break.
Result<void> dump_memory(pid_t pid, uint64_t brk, FileRegistry& files, const DumpExclusions& ex,
                         const image::ImageDir& dir, image::MmCore* mm, image::PageMap* pm, PagePlan* plan);

// The process's PR_SET_THP_DISABLE setting, asked from inside it (/proc/PID/status shows
// only whether THP is disabled entirely).
Result<void> dump_thp_disable(RemoteThread& rt, image::MmCore* mm);

// Copies the page data of every plan (all processes of a tree at once, on several
// threads) and completes their page maps. The processes must still be frozen.
Result<void> write_page_data(std::vector<PagePlan>& plans);

// Recreates the address space in a restored process whose memory holds only the
// trampoline and the vDSO: moves the vDSO, maps every recorded mapping, fills pages,
// applies protections and madvise flags, then the mm fields.
Result<void> restore_memory(RestoreTask& t);

// A new shared anonymous memory object (what mmap(MAP_SHARED|MAP_ANONYMOUS) makes) of size
// bytes, open O_RDWR: made in the engine and opened through /proc/self/map_files.
Result<UniqueFd> make_anon_shmem(uint64_t size);

// An address range free in both the recorded layout and the engine's own, for the
// trampoline of a restored process.
Result<uint64_t> find_trampoline_hole(const image::MmCore& mm, uint64_t size);

}  // namespace ckpt::engine
