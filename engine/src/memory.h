// A process's address space: mappings, mm fields and page data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/result.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/stream.h"
#include "dump_context.h"
#include "mm.pb.h"

namespace ckpt::engine {

class RemoteThread;
struct MemTrack;
struct RestoreTask;

// One run of pages to copy from a process into its pages file.
struct PageCopy {
    uint64_t vaddr, len, file_off;
    bool readable;  // the mapping allows reads (else /proc/PID/mem, which may read more)
    // Shared copy-on-write with a child (which records them as inherited): read through
    // /proc/PID/mem, as process_vm_readv pins pages and so makes the process copy shared ones
    // (the tree would use more memory after a dump --leave-running).
    bool keep_shared = false;
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
    // For the snapshot: words the kernel writes when a thread exits (clear_child_tid, the
    // futexes of its robust list). A write-protected page is not written then (no fault is
    // handled for an exiting thread): their pages are copied while the tree is frozen.
    std::vector<uint64_t> exit_writes;
    // For the snapshot: the mappings registered with its userfaultfd and write-protected.
    std::vector<std::pair<uint64_t, uint64_t>> registered;
};

// The recorded parent of a process being dumped (alive, in the tree, dumped before it):
// pages the two still share copy-on-write since a fork are recorded as inherited, not copied.
struct ForkParent {
    pid_t pid = 0;                       // as the engine sees it
    const image::MmCore* mm = nullptr;   // its recorded mappings
    const image::PageMap* pm = nullptr;  // and page runs
    PagePlan* plan = nullptr;            // its copies: those of pages it shares get keep_shared
};

// Records the mappings of pid into mm and the runs of pages worth saving into pm, and plans
// their copy to pages-<pid>.img in dir. brk is the process's current program break.
// own_ipcns: the tree has an IPC namespace of its own (ipc_ns.h), whose System V segments
// are recorded as attachments; in the engine's namespace they are refused. track: the
// process's write tracker (dump --track-mem, --prev-images-dir; mem_track.h): pages not
// written since the previous dump are recorded as in it, and the tracker armed again.
Result<void> dump_memory(pid_t pid, uint64_t brk, FileRegistry& files, const DumpExclusions& ex,
                         const image::ImageDir& dir, image::MmCore* mm, image::PageMap* pm, PagePlan* plan,
                         const ForkParent* parent = nullptr, bool own_ipcns = false, MemTrack* track = nullptr);

// The process's PR_SET_THP_DISABLE setting, asked from inside it (/proc/PID/status shows
// only whether THP is disabled entirely).
Result<void> dump_thp_disable(RemoteThread& rt, image::MmCore* mm);

// Copies the page data of every plan (all processes of a tree at once, on several
// threads) and completes their page maps. The processes must still be frozen.
// compress_level (dump --compress): each block stored as a zstd frame of that level, or as
// is where it does not compress, wherever its pages file ends when it is ready
// (PageMap.blocks); 0: the pages file is the page data, block after block.
Result<void> write_page_data(std::vector<PagePlan>& plans, int compress_level = 0);

// For dump --snapshot --compress: the page data the snapshot wrote into the pages files as
// is (written, their fds), compressed in place afterwards as write_page_data would have
// stored it; each block's checksum (of its pages as written) is added to the page map as the
// block is read, the one read of the data (checksum_page_data is not needed then).
Result<void> compress_page_files(std::vector<PagePlan>& plans, const std::vector<UniqueFd>& written, int level);

// For dump --stream: the plans' page data read from the frozen processes once, in plan
// order: each plan's into a PAGES record of w, or, compressed (compress_level as for
// write_page_data), into PAGE_BLOCK records, one a block; then its block checksums (a
// PAGE_SUMS record; also added to the plan's page map, streamed before without them).
// Blocks are copied two at a time while the two before are written.
Result<void> stream_page_data(std::vector<PagePlan>& plans, image::StreamWriter& w, int compress_level = 0);

// The copy in pieces, for the copy-on-write snapshot (snapshot.cpp), which copies pages
// while the tree runs: the pages files of plans, created at their full size; the pages of
// file range [lo, hi) of a plan copied into its file; once every page is, the checksums
// of every block read back from the files.
Result<std::vector<UniqueFd>> create_pages_files(const std::vector<PagePlan>& plans, bool sized = true);
Result<void> copy_page_range(const PagePlan& plan, int fd, uint64_t lo, uint64_t hi);
Result<void> checksum_page_data(std::vector<PagePlan>& plans, const std::vector<UniqueFd>& written);

// Refuses page maps whose inherited mappings and runs (format version 6) do not match the
// parent's recorded ones: every inherited run in an inherited mapping, the parent's mapping
// the same one, and the parent holding data for every inherited page. parent is null for a
// process whose parent is not restored with it.
Result<void> check_inherited_memory(const RestoreTask& t, const RestoreTask* parent);

// Step one of a restored process's address space, right after it is created and before
// its children are (which inherit by fork what they share with it): drops what it has
// from the engine (or from its parent) but the trampoline, the vDSO and its inherited
// mappings, moves the vDSO, maps every other recorded mapping and applies madvise flags
// (so that huge pages form where the process had asked for them). Injected system calls:
// only on the thread that traces the process.
Result<void> restore_memory_layout(RestoreTask& t);
// Around the fork of a child from its restored parent (made, with its layout, pages maybe
// still being filled): the parent's mappings the child keeps none of are left out of the
// fork (MADV_DONTFORK), so that fork copies none of their page tables and the child has
// none of them to drop; put back into forks once the child exists. Whole mappings only (a
// part would split the parent's mapping in two), never one next to a mapping the process
// itself keeps out of forks (the flag could merge the two). Returns the ranges left out.
Result<std::vector<std::pair<uint64_t, uint64_t>>> leave_out_of_fork(RestoreTask& parent, const image::MmCore& child);
Result<void> put_back_into_fork(RestoreTask& parent, const std::vector<std::pair<uint64_t, uint64_t>>& left_out);
// Whether a process keeps any mapping of its parent's (and so needs the parent's pages
// filled before it is forked).
bool keeps_parent_mappings(const image::MmCore& mm);

// The buffers a restore decompresses compressed page data (dump --compress) into, block by
// block: at most a few blocks at once over the whole restore, however many processes are
// filled at once; each buffer is kept for the next block until the restore ends. One per
// restore (RestoreShared::block_buffers).
class BlockBuffers;
std::shared_ptr<BlockBuffers> make_block_buffers();

// Step one and a half: its page data, written with process_vm_writev (no ptrace request),
// so on any thread, while other processes are made. It must be complete before a child of
// the process is made (the child inherits pages by fork) and before restore_memory_finish.
// Reads only t's images, pid and host. The stream's pages arrive in its order: under
// --stream it is called in tree order, on the tracer's thread.
Result<void> restore_memory_pages(RestoreTask& t);
// Step two, once its children exist: guard pages, protections, locks, seals, mm fields.
Result<void> restore_memory_finish(RestoreTask& t);

// A new shared anonymous memory object (what mmap(MAP_SHARED|MAP_ANONYMOUS) makes) of size
// bytes, open O_RDWR: made in the engine and opened through /proc/self/map_files.
Result<UniqueFd> make_anon_shmem(uint64_t size);

// An address range free in both the recorded layout and the engine's own, for the
// trampoline of a restored process.
Result<uint64_t> find_trampoline_hole(const image::MmCore& mm, uint64_t size);

}  // namespace ckpt::engine
