// Memory: dump and restore of a process's mappings and pages, side by side.
#include "memory.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/prctl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <utility>

#include "ckpt/base/fd.h"
#include "ckpt/base/page_buffer.h"
#include "ckpt/base/strings.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/image_names.h"
#include "files.h"
#include "image_stream.h"
#include "mem_track.h"
#include "parallel.h"
#include "ckpt/engine/syscalls.h"
#include "proc.h"
#include "ptrace_ctl.h"
#include "restore_task.h"
#include "syscall_batch.h"

namespace ckpt::engine {
namespace {

// How errors and batched calls name a mapping of the images.
std::string mapping_context(pid_t pid, const image::Vma& v) {
    return fmt::format("pid {}: mapping {:#x}-{:#x}", pid, v.start(), v.end());
}

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmSwapped = 1ull << 62;
constexpr uint64_t kPmFile = 1ull << 61;
constexpr uint64_t kPmGuard = 1ull << 58;  // PM_GUARD_REGION (linux 6.14)
constexpr uint64_t kPageIsGuard = 1ull << 8;  // PAGE_IS_GUARD of PAGEMAP_SCAN (linux 6.14)
constexpr int kMadvGuardInstall = 102;  // MADV_GUARD_INSTALL (linux 6.13)
constexpr uint64_t kPmPfnMask = (1ull << 55) - 1;
constexpr size_t kCopyBatch = 4u << 20;
constexpr uint64_t kPageBlock = 64ull << 20;  // checksum and work unit of page data
constexpr unsigned kCopyThreads = 4;

// madvise flags worth replaying, as smaps VmFlags spells them.
constexpr uint32_t kHugepage = 1, kNoHugepage = 2, kDontFork = 4, kWipeOnFork = 8, kDontDump = 16;
// Format version 4: attributes replayed last, in the same field: mlock ("lo") and mseal ("sl").
constexpr uint32_t kLocked = 32, kSealed = 64;
// Format version 15: read-ahead advice ("sr", "rr"), KSM's MADV_MERGEABLE ("mg"), and a lock
// taken with MLOCK_ONFAULT ("lf", with "lo": locked as pages are touched, not populated).
constexpr uint32_t kSequential = 128, kRandom = 256, kMergeable = 512, kLockOnFault = 1024;
constexpr uint32_t kMapDroppable = 0x08;  // MAP_DROPPABLE (linux 6.11): its own mapping type
constexpr long kMlockOnFault = 1;          // MLOCK_ONFAULT of mlock2
constexpr long kSysMseal = 462;  // mseal (linux 6.10)
constexpr uint64_t kThpDisableExceptAdvised = 1 << 1;  // PR_THP_DISABLE_EXCEPT_ADVISED, linux 6.18

// The PFN of the kernel's shared zero page: pages mapped to it were only ever read.
uint64_t zero_pfn() {
    static uint64_t pfn = [] {
        void* p = mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return ~0ull;
        volatile char c = *static_cast<volatile char*>(p);
        (void)c;
        uint64_t e = 0;
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (pread(fd, &e, sizeof e, static_cast<off_t>(reinterpret_cast<uint64_t>(p) / kPage * 8)) != 8) e = 0;
            close(fd);
        }
        munmap(p, kPage);
        return (e & kPmPresent) && (e & kPmPfnMask) ? (e & kPmPfnMask) : ~0ull;
    }();
    return pfn;
}

// What smaps says of every mapping, by start address: VmFlags, and whether any of its
// pages is resident or swapped.
struct SmapsEntry {
    std::string flags;
    bool has_pages = false;
};

Result<std::map<uint64_t, SmapsEntry>> read_smaps(pid_t pid) {
    // Small reads: the kernel makes each mapping's entry (walking its page table) in a
    // buffer of one page, and a read asking for more than the entries there goes on making
    // the next one; when that one does not fit, it is thrown away and made again by the
    // next read: a large mapping's walk done twice (a third of reads end so). A read of
    // 1 KiB stops after the entry that reaches it, which always fits (entries are 0.7 to
    // 1.5 KiB): 1 GiB of small pages read in 11 ms instead of 22.
    std::string text = CKPT_TRY(read_file(proc_path(pid, "smaps"), 1024));
    std::map<uint64_t, SmapsEntry> out;
    uint64_t current = 0;
    for (auto line : split(text, '\n')) {
        if (line.empty()) continue;
        if (std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string_view::npos &&
            line.find(':') > line.find('-')) {
            auto start = parse_uint(line.substr(0, line.find('-')), 16);
            if (start) current = *start;
        } else if (starts_with(line, "VmFlags:")) {
            out[current].flags = std::string(line.substr(8));
        } else if (starts_with(line, "Rss:") || starts_with(line, "Swap:")) {
            auto kb = split(trim(line.substr(line.find(':') + 1)), ' ');
            if (!kb.empty() && kb[0] != "0") out[current].has_pages = true;
        }
    }
    return out;
}

// Calls add(addr, npages, zero, written) for the pages of [start, end) worth saving (when
// want_pages) and guard(addr, npages) for its guard pages (MADV_GUARD_INSTALL), in address
// order: with the PAGEMAP_SCAN ioctl (linux 6.7) a region of like pages at a time, so that huge
// sparse mappings cost nothing; otherwise from /proc/PID/pagemap entries. A guard page shows as
// swapped too (a PTE marker): it is never taken for page data.
// With track_flags (written_scan_flags, mem_track.h) the same walk tells which pages were
// written since the tracker protected them (and re-protects them): one walk of the page table
// instead of two. Returns false, having added nothing, when the mapping is not write-protected
// asynchronously (then to be scanned again without); `written` is true when not tracking.
template <typename Add, typename Guard>
Result<bool> scan_pages(int pagemap, uint64_t start, uint64_t end, bool file_backed, bool want_pages, uint64_t zpfn,
                        uint64_t track_flags, std::vector<uint64_t>& entries, Add&& add, Guard&& guard) {
    // CKPT_NO_PAGEMAP_SCAN=1 takes the older path (for tests of it on newer kernels); a
    // tracked mapping always takes the ioctl (tracking needs it).
    static std::atomic<bool> have_scan{std::getenv("CKPT_NO_PAGEMAP_SCAN") == nullptr};
    // PAGE_IS_GUARD (linux 6.14); a kernel without it refuses the bit in a mask.
    static std::atomic<bool> have_guard_bit{true};
    while (have_scan || track_flags) {
        PageRegion regions[512];
        PmScanArg arg{};
        const uint64_t guard_bit = have_guard_bit ? kPageIsGuard : 0;
        arg.size = sizeof arg;
        arg.flags = track_flags;
        arg.start = start;
        arg.end = end;
        arg.vec = reinterpret_cast<uint64_t>(regions);
        arg.vec_len = std::size(regions);
        arg.category_anyof_mask = kPageIsPresent | kPageIsSwapped | guard_bit;
        // PAGE_IS_FILE costs a look at every present page's struct page: asked only where it
        // tells something (a private file mapping's page cache pages, not its copies).
        arg.return_mask = kPageIsPresent | kPageIsSwapped | kPageIsPfnZero | guard_bit |
                          (file_backed ? kPageIsFile : 0) | (track_flags ? kPageIsWritten : 0);
        bool retry = false;
        for (;;) {
            long n = ioctl(pagemap, kPagemapScan, &arg);
            if (n < 0) {
                if (track_flags && errno == EPERM && arg.start == start) return false;
                if ((errno == EINVAL || errno == ENOTTY) && arg.start == start) {
                    if (guard_bit) {
                        have_guard_bit = false;  // an older kernel: ask again without the bit
                        retry = true;
                        break;
                    }
                    if (!track_flags) {
                        have_scan = false;  // an older kernel: read the entries below
                        break;
                    }
                }
                return sys_error("ioctl(PAGEMAP_SCAN{}) at {:#x}", track_flags ? ", written pages" : "", arg.start);
            }
            for (long i = 0; i < n; ++i) {
                uint64_t c = regions[i].categories;
                uint64_t pages = (regions[i].end - regions[i].start) / kPage;
                if (c & guard_bit) {
                    guard(regions[i].start, pages);
                    continue;
                }
                bool wanted = (c & kPageIsSwapped) || ((c & kPageIsPresent) && !(file_backed && (c & kPageIsFile)));
                // Not present in a private file mapping may be the tracker's own mark (a PTE
                // marker the kernel leaves where MADV_DONTNEED dropped a protected private
                // copy: the file shows through again), not a swapped copy: taken as written,
                // copied as it reads now.
                bool written = !track_flags || (c & kPageIsWritten) || (file_backed && !(c & kPageIsPresent));
                if (wanted && want_pages)
                    add(regions[i].start, pages, (c & kPageIsPresent) && (c & kPageIsPfnZero), written);
            }
            if (arg.walk_end >= end || n < static_cast<long>(std::size(regions))) return true;
            arg.start = arg.walk_end;
        }
        if (!retry) break;
    }
    constexpr uint64_t kChunk = 1 << 16;  // page map entries read at once
    entries.resize(kChunk);
    for (uint64_t at = start; at < end; at += kChunk * kPage) {
        uint64_t n = std::min(kChunk, (end - at) / kPage);
        ssize_t want = static_cast<ssize_t>(n * 8);
        ssize_t got = pread(pagemap, entries.data(), static_cast<size_t>(want), static_cast<off_t>(at / kPage * 8));
        if (got != want)
            return got < 0 ? sys_error("pread pagemap at {:#x}", at)
                           : error_code(EIO, "short read of the page map at {:#x}", at);
        for (uint64_t k = 0; k < n; ++k) {
            uint64_t e = entries[k];
            if (e & kPmGuard) {
                guard(at + k * kPage, 1);
                continue;
            }
            bool wanted = (e & kPmSwapped) || ((e & kPmPresent) && !(file_backed && (e & kPmFile)));
            if (wanted && want_pages) add(at + k * kPage, 1, (e & kPmPresent) && (e & kPmPfnMask) == zpfn, true);
        }
    }
    return true;
}

// Whether this kernel may have guard pages (MADV_GUARD_INSTALL, linux 6.13) in a mapping
// whose VmFlags do not say so ("gu", newer kernels): then every private mapping is scanned
// for them, even one without a resident page.
bool guards_may_hide() {
    static const bool hide = [] {
        utsname u{};
        if (uname(&u) != 0) return true;
        unsigned major = 0, minor = 0;
        if (std::sscanf(u.release, "%u.%u", &major, &minor) != 2) return true;
        auto v = std::make_pair(major, minor);
        return v >= std::make_pair(6u, 13u) && v < std::make_pair(6u, 19u);
    }();
    return hide;
}

bool has_flag(const std::string& flags, const char* f) {
    for (auto w : split(flags, ' '))
        if (w == f) return true;
    return false;
}

// The vDSO and its data pages: moved to their recorded place at restore, never mapped anew.
bool is_vdso_part(image::Vma::Kind k) {
    return k == image::Vma::VDSO || k == image::Vma::VVAR || k == image::Vma::VVAR_VCLOCK;
}
// What the kernel maps by itself (the vDSO's parts and vsyscall): no page data, no mmap.
bool kernel_mapped(image::Vma::Kind k) { return k == image::Vma::VSYSCALL || is_vdso_part(k); }

image::Vma::Kind classify(const ProcMapping& m) {
    if (m.path == "[vsyscall]") return image::Vma::VSYSCALL;
    if (m.path == "[vdso]") return image::Vma::VDSO;
    if (m.path == "[vvar]") return image::Vma::VVAR;
    if (m.path == "[vvar_vclock]") return image::Vma::VVAR_VCLOCK;
    bool anon_name = m.path.empty() || m.path == "[heap]" || starts_with(m.path, "[stack") ||
                     starts_with(m.path, "[anon:");
    if (anon_name && m.inode == 0) return m.shared ? image::Vma::SHARED_ANON : image::Vma::ANON;
    if (m.shared && m.path == "/dev/zero (deleted)") return image::Vma::SHARED_ANON;
    return image::Vma::FILE;
}

// Mappings of kernel objects shown as deleted files, refused by name (told by their file
// system: a file of that name is let through).
// - The ring of a Linux AIO context (io_setup), "/[aio] (deleted)"; its address is the
//   context's id. The ring shows the completions not yet reaped, but nothing the kernel
//   offers (fs/aio.c: no /proc or fdinfo entry, and io_submit's -EAGAIN, the only sign of how
//   many requests a context holds, is blurred by per-CPU batches of free slots) tells whether
//   requests are still in flight, and one in flight at the dump would never complete after a
//   restore: the process would wait for it forever.
// - memfd_secret memory, "/secretmem (deleted)": unmapped from the kernel's own view of
//   memory, so no other process (the engine neither) can read its pages.
Result<void> refuse_kernel_object_mapping(pid_t pid, const ProcMapping& m) {
    const bool aio = m.path == "/[aio] (deleted)", secret = m.path == "/secretmem (deleted)";
    if (!m.shared || (!aio && !secret)) return ok();
    std::string link = proc_path(pid, "map_files/") + fmt::format("{:x}-{:x}", m.start, m.end);
    struct statfs fs;
    if (statfs(link.c_str(), &fs) != 0) return sys_error("pid {}: mapping {:#x}-{:#x}: statfs {}", pid, m.start, m.end, link);
    const auto type = static_cast<uint32_t>(fs.f_type);
    if (aio && type == kAioFsMagic)
        return error_code(ENOTSUP,
                          "pid {}: mapping {:#x}-{:#x} is the ring of an AIO context (io_setup, context id {:#x}): not "
                          "supported: the kernel does not show whether requests of it are in flight, and one in flight "
                          "would never complete after a restore",
                          pid, m.start, m.end, m.start);
    if (secret && type == kSecretmemMagic)
        return error_code(ENOTSUP,
                          "pid {}: mapping {:#x}-{:#x} is memfd_secret memory, whose pages no other process can read: "
                          "not supported",
                          pid, m.start, m.end);
    return ok();
}

// Copies the pages of file range [lo, hi) of a plan's pages file in file order, through
// sink(data, bytes, file offset), hashing them into st when given. into: the pages read
// straight to into + (file offset - lo) instead of through a buffer of the engine's (a
// stream's room; sink then sees them there).
template <typename Sink>
Result<void> copy_pages_to(const PagePlan& plan, uint64_t lo, uint64_t hi, XXH3_state_t* st, Sink&& sink,
                           char* into = nullptr) {
    thread_local PageBuffer scratch(kCopyBatch);
    if (!into && !scratch)
        return error_code(ENOMEM, "pid {}: a buffer of {} bytes to copy pages through", plan.pid, kCopyBatch);
    char* buf = nullptr;
    // Copies overlapping [lo, hi), in file order.
    auto it = std::upper_bound(plan.copies.begin(), plan.copies.end(), lo,
                               [](uint64_t off, const PageCopy& c) { return off < c.file_off + c.len; });
    UniqueFd mem;  // /proc/PID/mem, for pages to keep shared
    const auto end = plan.copies.end();
    // (it, from): the next byte of the file to copy, in copy *it.
    uint64_t from = it != end ? std::max(lo, it->file_off) : hi;
    auto plain = [&](decltype(it) c) { return c->readable && !c->keep_shared && c->file_off < hi; };
    uint64_t slow_until = 0;  // after a gathered read failed: its pieces one by one
    while (it != end && it->file_off < hi) {
        buf = into ? into + (from - lo) : scratch.data();
        const uint64_t to = std::min(hi, it->file_off + it->len);
        if (from >= to) {
            if (++it != end) from = std::max(lo, it->file_off);
            continue;
        }
        if (plain(it) && from >= slow_until) {
            // Scattered pages (an incremental dump's, a fragmented heap's) gathered: copies
            // that follow each other in the file, read with one process_vm_readv of up to
            // IOV_MAX ranges and passed on as one piece.
            static constexpr size_t kMaxRanges = 1024;
            iovec remote[kMaxRanges];
            size_t ranges = 0, filled = 0;
            auto jt = it;
            uint64_t jfrom = from;
            while (jt != end && plain(jt) && ranges < kMaxRanges && filled < kCopyBatch && jfrom == from + filled) {
                const uint64_t jto = std::min(hi, jt->file_off + jt->len);
                const size_t n = static_cast<size_t>(std::min<uint64_t>(jto - jfrom, kCopyBatch - filled));
                remote[ranges++] = {reinterpret_cast<void*>(jt->vaddr + (jfrom - jt->file_off)), n};
                filled += n;
                jfrom += n;
                if (jfrom < jto) break;  // the buffer is full inside this copy
                if (++jt != end) jfrom = std::max(lo, jt->file_off);
            }
            iovec local{buf, filled};
            if (process_vm_readv(plan.pid, &local, 1, remote, ranges, 0) == static_cast<ssize_t>(filled)) {
                if (st) XXH3_64bits_update(st, buf, filled);
                CKPT_TRY(sink(buf, filled, from));
                it = jt;
                from = jfrom;
                continue;
            }
            // A range that cannot be read so: these pieces the slow way, below.
            slow_until = from + filled;
        }
        const size_t n = static_cast<size_t>(std::min<uint64_t>(to - from, kCopyBatch));
        const uint64_t addr = it->vaddr + (from - it->file_off);
        bool done = false;
        if (it->keep_shared) {
            if (!mem) mem = CKPT_TRY(open_file(proc_path(plan.pid, "mem"), O_RDONLY));
            done = pread(mem.get(), buf, n, static_cast<off_t>(addr)) == static_cast<ssize_t>(n);
        }
        if (!done) CKPT_TRY_CTX(read_remote(plan.pid, addr, buf, n), "pid {}", plan.pid);
        if (st) XXH3_64bits_update(st, buf, n);
        CKPT_TRY(sink(buf, n, from));
        from += n;
    }
    return ok();
}

// The same to their offsets in fd; fd -1: hashed only.
Result<void> copy_pages(const PagePlan& plan, int fd, uint64_t lo, uint64_t hi, XXH3_state_t* st) {
    return copy_pages_to(plan, lo, hi, st, [&](const char* buf, size_t n, uint64_t from) -> Result<void> {
        if (fd >= 0 && pwrite(fd, buf, n, static_cast<off_t>(from)) != static_cast<ssize_t>(n))
            return sys_error("pwrite {} at {}", plan.path, from);
        return ok();
    });
}

// Copies one block of a plan's pages file (block b covers [b*kPageBlock, (b+1)*kPageBlock)
// of the file) and returns its checksum.
Result<uint64_t> copy_block(const PagePlan& plan, int fd, size_t b) {
    thread_local std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    uint64_t lo = b * kPageBlock, hi = std::min(plan.total, lo + kPageBlock);
    XXH3_64bits_reset(st.get());
    CKPT_TRY(copy_pages(plan, fd, lo, hi, st.get()));
    return XXH3_64bits_digest(st.get());
}

// The checksum of block b of a pages file already written (readable through fd).
Result<uint64_t> checksum_block(const PagePlan& plan, int fd, size_t b) {
    thread_local std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    thread_local PageBuffer buf(kCopyBatch);
    if (!buf) return error_code(ENOMEM, "{}: a buffer of {} bytes to read back", plan.path, kCopyBatch);
    uint64_t lo = b * kPageBlock, hi = std::min(plan.total, lo + kPageBlock);
    XXH3_64bits_reset(st.get());
    while (lo < hi) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(hi - lo, kCopyBatch));
        if (pread(fd, buf.data(), n, static_cast<off_t>(lo)) != static_cast<ssize_t>(n))
            return sys_error("read back {} at {}", plan.path, lo);
        XXH3_64bits_update(st.get(), buf.data(), n);
        lo += n;
    }
    return XXH3_64bits_digest(st.get());
}

// What a run of pages holds: data in the pages file, zeros, or the parent's pages.
// (InParent: not written since the previous dump, which has them: dump --prev-images-dir.)
enum class RunKind { Data, Zero, Inherited, InParent };

// Madvise flags under which fork does not hand a mapping's pages to the child.
bool fork_drops_pages(const image::Vma& v) { return v.madvise() & (kDontFork | kWipeOnFork); }

// The recorded mapping of mm that starts at start, or null.
const image::Vma* vma_at(const image::MmCore& mm, uint64_t start) {
    auto it = std::lower_bound(mm.vmas().begin(), mm.vmas().end(), start,
                               [](const image::Vma& v, uint64_t at) { return v.start() < at; });
    return it != mm.vmas().end() && it->start() == start ? &*it : nullptr;
}

// Whether the private mapping v may share pages with the parent's mapping at the same place
// and be inherited whole at restore: the same range of the same object, flags and advice
// (which the restored child keeps from its parent), and fork hands its pages on.
bool same_inheritable(const image::Vma& v, const image::Vma* p) {
    if (v.kind() != image::Vma::ANON && v.kind() != image::Vma::FILE) return false;
    if ((v.flags() & MAP_SHARED) || fork_drops_pages(v)) return false;
    return p && p->start() == v.start() && p->end() == v.end() && p->kind() == v.kind() && p->flags() == v.flags() &&
           p->pgoff() == v.pgoff() && p->file_id() == v.file_id() && p->madvise() == v.madvise() && p->has_pages() &&
           p->guards_size() == 0;  // guard markers are inherited too: only where the parent has none
}
bool shares_with_parent(const image::Vma& v, const ForkParent& parent) {
    return same_inheritable(v, vma_at(*parent.mm, v.start()));
}

// Splits present pages [addr, addr + n pages) of a child into runs of its own data and runs
// of the parent's pages (the same frame at the same address in both, not the zero page).
// Frame numbers are visible only with CAP_SYS_ADMIN; without it they read 0 and nothing is
// taken for the parent's.
template <typename AddRun>
Result<void> split_inherited(int pagemap, int parent_pagemap, uint64_t addr, uint64_t n, uint64_t zpfn,
                             std::vector<uint64_t>& mine, std::vector<uint64_t>& theirs, AddRun&& add_run) {
    constexpr uint64_t kChunk = 1 << 16;
    for (uint64_t done = 0; done < n;) {
        uint64_t k = std::min(kChunk, n - done), at = addr + done * kPage;
        mine.resize(k);
        theirs.resize(k);
        auto want = static_cast<ssize_t>(k * 8);
        auto off = static_cast<off_t>(at / kPage * 8);
        if (pread(pagemap, mine.data(), static_cast<size_t>(want), off) != want)
            return sys_error("pread pagemap at {:#x}", at);
        if (pread(parent_pagemap, theirs.data(), static_cast<size_t>(want), off) != want)
            return sys_error("pread the parent's pagemap at {:#x}", at);
        for (uint64_t i = 0; i < k; ++i) {
            uint64_t pfn = mine[i] & kPmPfnMask;
            bool shared = (mine[i] & kPmPresent) && !(mine[i] & kPmFile) && pfn != 0 && pfn != zpfn &&
                          (theirs[i] & kPmPresent) && !(theirs[i] & kPmFile) && (theirs[i] & kPmPfnMask) == pfn;
            add_run(at + i * kPage, 1, shared ? RunKind::Inherited : RunKind::Data);
        }
        done += k;
    }
    return ok();
}

bool excluded(const DumpExclusions& ex, uint64_t start, uint64_t end) {
    for (auto [s, e] : ex.memory)
        if (start >= s && end <= e) return true;
    return false;
}

}  // namespace

Result<void> dump_memory(pid_t pid, uint64_t brk, FileRegistry& files, const DumpExclusions& ex,
                         const image::ImageDir& dir, image::MmCore* mm, image::PageMap* pm, PagePlan* plan,
                         const ForkParent* parent, bool own_ipcns, MemTrack* track) {
    auto maps = CKPT_TRY(read_maps(pid));
    auto smaps = CKPT_TRY(read_smaps(pid));
    auto st = CKPT_TRY(read_stat(pid));
    mm->set_start_code(st.start_code);
    mm->set_end_code(st.end_code);
    mm->set_start_data(st.start_data);
    mm->set_end_data(st.end_data);
    mm->set_start_brk(st.start_brk);
    mm->set_brk(brk);
    mm->set_start_stack(st.start_stack);
    mm->set_arg_start(st.arg_start);
    mm->set_arg_end(st.arg_end);
    mm->set_env_start(st.env_start);
    mm->set_env_end(st.env_end);
    mm->set_auxv(CKPT_TRY(read_file(proc_path(pid, "auxv"))));
    std::string exe_path = CKPT_TRY(read_link(proc_path(pid, "exe")));
    mm->set_exe_file_id(CKPT_TRY_CTX(files.add(proc_path(pid, "exe"), exe_path), "pid {}: exe", pid));

    std::string pages_name = image::names::pages(pid);
    std::vector<PageCopy> copies;
    uint64_t file_off = 0;
    auto pagemap = CKPT_TRY(open_file(proc_path(pid, "pagemap"), O_RDONLY));
    const uint64_t zpfn = zero_pfn();
    std::vector<uint64_t> entries;
    UniqueFd parent_pagemap;  // opened at the first mapping the parent has too
    std::vector<std::pair<uint64_t, uint64_t>> inherited;  // [start, end) of inherited runs
    std::vector<uint64_t> mine, theirs;
    // The previous dump's runs (dump --prev-images-dir), walked once in address order.
    static const image::PageMap kNoRuns;
    const auto& prev_runs = (track && track->since_prev && !track->whole ? track->prev->pm : kNoRuns).runs();
    int prev_at = 0;

    for (const auto& m : maps) {
        if (excluded(ex, m.start, m.end)) continue;
        auto kind = classify(m);
        CKPT_TRY(refuse_kernel_object_mapping(pid, m));
        image::Vma* v = mm->add_vmas();
        v->set_start(m.start);
        v->set_end(m.end);
        v->set_prot((m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0));
        const std::string& flags = smaps[m.start].flags;
        // Format version 15: MAP_NORESERVE ("nr") of a private mapping (not charged to the
        // commit limit) and MAP_DROPPABLE ("dp", in place of MAP_PRIVATE).
        const uint32_t type = m.shared ? MAP_SHARED : has_flag(flags, "dp") ? kMapDroppable : MAP_PRIVATE;
        v->set_flags(type | (has_flag(flags, "gd") ? MAP_GROWSDOWN : 0) |
                     (!m.shared && has_flag(flags, "nr") ? MAP_NORESERVE : 0) |
                     (kind == image::Vma::ANON || kind == image::Vma::SHARED_ANON ? MAP_ANONYMOUS : 0));
        v->set_pgoff(m.offset);
        v->set_may_write(m.shared && has_flag(flags, "mw"));
        v->set_kind(kind);
        v->set_name(m.path);
        v->set_madvise((has_flag(flags, "hg") ? kHugepage : 0) | (has_flag(flags, "nh") ? kNoHugepage : 0) |
                       (has_flag(flags, "dc") ? kDontFork : 0) | (has_flag(flags, "wf") ? kWipeOnFork : 0) |
                       (has_flag(flags, "dd") ? kDontDump : 0) | (has_flag(flags, "lo") ? kLocked : 0) |
                       (has_flag(flags, "sl") ? kSealed : 0) | (has_flag(flags, "sr") ? kSequential : 0) |
                       (has_flag(flags, "rr") ? kRandom : 0) | (has_flag(flags, "mg") ? kMergeable : 0) |
                       (has_flag(flags, "lf") ? kLockOnFault : 0));
        if (!kernel_mapped(kind) && (has_flag(flags, "io") || has_flag(flags, "pf")))
            return error("pid {}: mapping {:#x}-{:#x} ({}) is device or PFN memory, which cannot be dumped", pid,
                         m.start, m.end, m.path);

        if (!kernel_mapped(kind) && has_flag(flags, "ht"))
            return error("pid {}: mapping {:#x}-{:#x} ({}) is hugetlb memory, which is not supported yet", pid, m.start,
                         m.end, m.path);
        if (kind == image::Vma::FILE || kind == image::Vma::SHARED_ANON) {
            std::string link = proc_path(pid, "map_files/") + fmt::format("{:x}-{:x}", m.start, m.end);
            if (starts_with(m.path, "/SYSV") && !own_ipcns)
                return error_code(ENOTSUP,
                                  "pid {}: System V shared memory mapping {:#x}-{:#x} (shmid {}) is in the host's IPC "
                                  "namespace, shared with others, its id not choosable at restore: not supported; the "
                                  "tree needs its own IPC namespace (unshare -i)",
                                  pid, m.start, m.end, m.inode);
            if (starts_with(m.path, "/SYSV")) {
                // Whole and the tree's (checked by ipc_ns.cpp): attached again by shmat.
                v->set_sysv_shm(true);
                v->set_shm_id(static_cast<int32_t>(m.inode));
                v->set_shm_rdonly(!has_flag(flags, "mw"));
                v->set_kind(image::Vma::SHARED_ANON);
                continue;
            }
            // A deleted name of a file still linked elsewhere: the file is restored as a copy
            // of its content, which writes through the mapping would no longer reach (nor
            // would others' writes reach the mapping). With --link-remap the file itself is
            // kept through a hidden link (files.cpp) and mapped again.
            if (kind == image::Vma::FILE && m.shared && m.path.ends_with(" (deleted)") && !starts_with(m.path, "/memfd:") &&
                !files.link_remap()) {
                struct stat st;
                if (stat(link.c_str(), &st) != 0)
                    return sys_error("pid {}: mapping {:#x}-{:#x}: stat {}", pid, m.start, m.end, link);
                if (st.st_nlink > 0)
                    return error("pid {}: shared mapping {:#x}-{:#x} of {} whose file still has {} other link(s): "
                                 "a restored copy would not share its writes; refused (dump with --link-remap to "
                                 "keep the file through a hidden link)",
                                 pid, m.start, m.end, m.path, st.st_nlink);
            }
            v->set_file_id(CKPT_TRY_CTX(files.add(link, m.path), "pid {}: mapping {:#x}", pid, m.start));
        }
        if (kernel_mapped(kind)) continue;
        // Guard pages (MADV_GUARD_INSTALL): recorded in runs, installed again at restore.
        auto add_guard = [&](uint64_t addr, uint64_t n) {
            int k = v->guards_size();
            if (k && v->guards(k - 1).vaddr() + v->guards(k - 1).nr_pages() * kPage == addr) {
                v->mutable_guards(k - 1)->set_nr_pages(v->guards(k - 1).nr_pages() + n);
                return;
            }
            image::PageRange* g = v->add_guards();
            g->set_vaddr(addr);
            g->set_nr_pages(n);
        };
        const bool guards_possible = has_flag(flags, "gu") || guards_may_hide();
        // Page data: private memory only. Shared mappings live in their file or object. A
        // MAP_DROPPABLE mapping's pages may be dropped by the kernel at any time, which its
        // user must expect at every read: they are not saved and come back empty (as with
        // CRIU). That also keeps state such as the vDSO getrandom's out of images: a restore
        // must not replay another's random stream.
        if (m.shared || type == kMapDroppable) {
            if (guards_possible)
                CKPT_TRY_CTX(scan_pages(pagemap.get(), m.start, m.end, true, false, zpfn, 0, entries,
                                        [](uint64_t, uint64_t, bool, bool) {}, add_guard),
                             "pid {}: page map of {:#x}-{:#x}", pid, m.start, m.end);
            continue;
        }

        // Writable private memory gets the write tracker (dump --track-mem).
        const bool trackable = track && m.write && !v->sysv_shm() &&
                               (kind == image::Vma::ANON || kind == image::Vma::FILE);
        // Nothing resident or swapped (smaps says): no page to look for. This keeps huge
        // reserved ranges (sanitizer shadows, runtimes' heaps) cheap.
        if (!smaps[m.start].has_pages && !guards_possible) {
            if (trackable) CKPT_TRY(arm_mapping(*track, pid, m.start, m.end, false, {}));
            continue;
        }

        // Runs of pages to save: anonymous pages that are present or swapped; for file
        // mappings only the private copies (not page cache pages of the file itself).
        bool file_backed = kind == image::Vma::FILE;
        bool any = false;
        uint64_t run_start = 0, run_pages = 0;
        RunKind run_kind = RunKind::Data;
        auto end_run = [&] {
            if (!run_pages) return;
            image::PageRun* run = pm->add_runs();
            run->set_vaddr(run_start);
            run->set_nr_pages(run_pages);
            run->set_zero(run_kind == RunKind::Zero);
            run->set_inherited(run_kind == RunKind::Inherited);
            run->set_in_parent(run_kind == RunKind::InParent);
            if (run_kind == RunKind::Data) {
                copies.push_back({run_start, run_pages * kPage, file_off, m.read});
                file_off += run_pages * kPage;
            }
            if (run_kind == RunKind::Inherited) {
                v->set_inherited(true);
                inherited.emplace_back(run_start, run_start + run_pages * kPage);
            }
            any = true;
            run_pages = 0;
        };
        // Pages [addr, addr + n pages) are to be saved: extend the run or start a new one.
        auto add_run_as = [&](uint64_t addr, uint64_t n, RunKind k) {
            if (run_pages && k == run_kind && addr == run_start + run_pages * kPage) {
                run_pages += n;
                return;
            }
            end_run();
            run_start = addr;
            run_pages = n;
            run_kind = k;
        };
        // Tracked since the previous dump (mem_track.h): pages of data not written since,
        // which that dump holds as data (its own or its parent's), are recorded as in it.
        bool tracked = false;
        std::vector<std::pair<uint64_t, uint64_t>> written;
        size_t wi = 0;
        auto add_run = [&](uint64_t addr, uint64_t n, RunKind k) {
            if (!tracked || k != RunKind::Data) return add_run_as(addr, n, k);
            const uint64_t end = addr + n * kPage;
            for (uint64_t at = addr; at < end;) {
                while (wi < written.size() && written[wi].second <= at) ++wi;
                if (wi < written.size() && written[wi].first <= at) {
                    uint64_t to = std::min(end, written[wi].second);
                    add_run_as(at, (to - at) / kPage, RunKind::Data);
                    at = to;
                    continue;
                }
                const uint64_t stop = wi < written.size() ? std::min(end, written[wi].first) : end;
                auto run_end = [](const image::PageRun& r) { return r.vaddr() + r.nr_pages() * kPage; };
                while (prev_at < prev_runs.size() && run_end(prev_runs[prev_at]) <= at) ++prev_at;
                uint64_t to = stop;
                RunKind as = RunKind::Data;  // what the previous dump does not hold as data is copied
                if (prev_at < prev_runs.size()) {
                    const image::PageRun& r = prev_runs[prev_at];
                    if (r.vaddr() <= at) {
                        to = std::min(stop, run_end(r));
                        if (!r.zero() && !r.inherited()) as = RunKind::InParent;
                    } else {
                        to = std::min(stop, r.vaddr());
                    }
                }
                add_run_as(at, (to - at) / kPage, as);
                at = to;
            }
        };
        // The parent's mapping here, if the child may still share its pages (same mapping,
        // inherited by fork: see shares_with_parent).
        const bool from_parent = parent && shares_with_parent(*v, *parent);
        if (from_parent && !parent_pagemap)
            parent_pagemap = CKPT_TRY_CTX(open_file(proc_path(parent->pid, "pagemap"), O_RDONLY), "pid {}: parent", pid);
        Result<void> split = ok();
        auto add_pages = [&](uint64_t addr, uint64_t n, bool zero) {
            if (zero || !from_parent || !split) return add_run(addr, n, zero ? RunKind::Zero : RunKind::Data);
            // Present pages whose frame is the parent's at the same address: shared since the
            // fork. (Swapped pages are copied: their swap entries are not compared.)
            split = split_inherited(pagemap.get(), parent_pagemap.get(), addr, n, zpfn, mine, theirs, add_run);
        };
        // The pages there first (tracked: with which of them were written), then their runs.
        struct Found {
            uint64_t addr, n;
            bool zero;
        };
        std::vector<Found> found;
        std::vector<std::pair<uint64_t, uint64_t>> populated;
        uint64_t track_flags = 0;
        if (trackable && track->since_prev && has_flag(flags, "uw"))
            track_flags = CKPT_TRY(written_scan_flags(*track, pid, m.start, m.end, kind, m.path, m.offset));
        auto append = [](std::vector<std::pair<uint64_t, uint64_t>>& to, uint64_t lo, uint64_t hi) {
            if (!to.empty() && to.back().second == lo) to.back().second = hi;
            else to.emplace_back(lo, hi);
        };
        auto add_found = [&](uint64_t addr, uint64_t n, bool zero, bool written_since) {
            found.push_back({addr, n, zero});
            append(populated, addr, addr + n * kPage);
            if (track_flags && written_since) append(written, addr, addr + n * kPage);
        };
        auto scan = [&](uint64_t with) {
            return scan_pages(pagemap.get(), m.start, m.end, file_backed, true, zpfn, with, entries, add_found,
                              add_guard);
        };
        if (track_flags) {
            tracked = CKPT_TRY_CTX(scan(track_flags), "pid {}: page map of {:#x}-{:#x}", pid, m.start, m.end);
            if (!tracked) {
                logger()->debug("pid {}: mapping {:#x}-{:#x} is not write-protected asynchronously: saved whole", pid,
                                m.start, m.end);
                track_flags = 0;
            }
        }
        if (!tracked) CKPT_TRY_CTX(scan(0), "pid {}: page map of {:#x}-{:#x}", pid, m.start, m.end);
        // Saved whole (track->whole): the scan above only re-armed what was written.
        const bool rearmed = tracked;
        if (track && track->whole) tracked = false;
        for (const Found& f : found) add_pages(f.addr, f.n, f.zero);
        CKPT_TRY_CTX(std::move(split), "pid {}: page maps of {:#x}-{:#x} and of parent {}", pid, m.start, m.end,
                     parent->pid);
        end_run();
        v->set_has_pages(any);
        if (trackable) CKPT_TRY(arm_mapping(*track, pid, m.start, m.end, rearmed, populated));
    }
    // The parent's copies of pages it shares with this process read them without unsharing.
    if (parent && parent->plan) {
        auto& theirs = parent->plan->copies;  // in address order
        for (auto [lo, hi] : inherited) {
            auto c = std::upper_bound(theirs.begin(), theirs.end(), lo,
                                      [](uint64_t at, const PageCopy& x) { return at < x.vaddr + x.len; });
            for (; c != theirs.end() && c->vaddr < hi; ++c) c->keep_shared = true;
        }
    }
    pm->set_pages_file(pages_name);
    pm->set_pages_bytes(file_off);
    pm->set_block_size(kPageBlock);
    pm->set_page_size(kPage);
    *plan = PagePlan{pid, &dir, pages_name, dir.path() + "/" + pages_name, file_off, std::move(copies), pm, {}, {}};
    return ok();
}

Result<std::vector<UniqueFd>> create_pages_files(const std::vector<PagePlan>& plans, bool sized) {
    std::vector<UniqueFd> fds;
    for (const PagePlan& p : plans) {
        fds.push_back(CKPT_TRY(p.dir->create(p.name)));
        if (sized && p.total && ftruncate(fds.back().get(), static_cast<off_t>(p.total)) != 0)
            return sys_error("ftruncate {}", p.path);
    }
    return fds;
}

Result<void> copy_page_range(const PagePlan& plan, int fd, uint64_t lo, uint64_t hi) {
    return copy_pages(plan, fd, lo, std::min(hi, plan.total), nullptr);
}

namespace {
// Every block of every plan through block(plan, block): on several threads; the checksums
// go into the plans' page maps.
template <typename Block>
Result<void> for_every_block(std::vector<PagePlan>& plans, Block&& block) {
    std::vector<std::pair<size_t, size_t>> work;  // (plan, block)
    std::vector<std::vector<uint64_t>> sums(plans.size());
    for (size_t i = 0; i < plans.size(); ++i) {
        size_t blocks = static_cast<size_t>((plans[i].total + kPageBlock - 1) / kPageBlock);
        sums[i].resize(blocks);
        for (size_t b = 0; b < blocks; ++b) work.emplace_back(i, b);
    }
    CKPT_TRY(parallel_for(work.size(), kCopyThreads, [&](size_t w) -> Result<void> {
        auto [i, b] = work[w];
        sums[i][b] = CKPT_TRY(block(i, b));
        return ok();
    }));
    for (size_t i = 0; i < plans.size(); ++i)
        for (uint64_t sum : sums[i]) plans[i].pm->add_block_xxh3(sum);
    return ok();
}
}  // namespace

namespace {
// A worker's means to compress one block (dump --compress): a zstd context and room for a
// block's frame, no larger than the block (a frame that would not fit is not kept). A
// stream's plain page data uses only the room.
struct Compressor {
    explicit Compressor(bool zstd) : cctx(zstd ? ZSTD_createCCtx() : nullptr, &ZSTD_freeCCtx) {}
    std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx;
    PageBuffer out{kPageBlock};
};

// The compressors of one dump, handed to one block at a time, freed with it; with zstd
// contexts unless made for plain page data.
class Compressors {
public:
    explicit Compressors(bool zstd = true) : zstd_(zstd) {}
    Result<std::unique_ptr<Compressor>> take() {
        {
            std::lock_guard lock(mu_);
            if (!idle_.empty()) {
                auto c = std::move(idle_.back());
                idle_.pop_back();
                return c;
            }
        }
        auto c = std::make_unique<Compressor>(zstd_);
        if ((zstd_ && !c->cctx) || !c->out)
            return error_code(ENOMEM, "a zstd context and {} bytes to compress page data into", kPageBlock);
        return c;
    }
    void give_back(std::unique_ptr<Compressor> c) {
        std::lock_guard lock(mu_);
        idle_.push_back(std::move(c));
    }

private:
    const bool zstd_;
    std::mutex mu_;
    std::vector<std::unique_ptr<Compressor>> idle_;
};

// Block b of a plan compressed (dump --compress): copied from the frozen process and
// compressed as it comes (zstd at level, its frame declaring the block's length) into c's
// room, or, where it does not compress, copied again as is into the same room.
struct CompressedBlock {
    uint64_t sum = 0;     // XXH3-64 of the block's pages, uncompressed
    uint64_t stored = 0;  // bytes in the compressor's room
    bool zstd = false;
};

// Block b of a plan's page data compressed into c's room, its bytes given in order by
// source(st, sink) (hashed into st, passed to sink(buf, n, file offset)): at most twice, the
// second time (a block that does not compress) copied as is and checked to be the same.
template <typename Source>
Result<CompressedBlock> compress_from(const PagePlan& plan, size_t b, int level, Compressor& c, Source&& source) {
    thread_local std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    const uint64_t lo = b * kPageBlock, hi = std::min(plan.total, lo + kPageBlock), len = hi - lo;
    ZSTD_CCtx* cctx = c.cctx.get();
    auto zstd_ok = [&](size_t r) -> Result<void> {
        if (ZSTD_isError(r)) return error_code(EIO, "pid {}: zstd: {} (block {} of {})", plan.pid, ZSTD_getErrorName(r), b, plan.path);
        return ok();
    };
    CKPT_TRY(zstd_ok(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only)));
    CKPT_TRY(zstd_ok(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)));
    CKPT_TRY(zstd_ok(ZSTD_CCtx_setPledgedSrcSize(cctx, len)));
    ZSTD_outBuffer out{c.out.data(), len, 0};
    bool fits = true;  // the frame so far is shorter than the block
    XXH3_64bits_reset(st.get());
    CKPT_TRY(source(st.get(), [&](const char* buf, size_t n, uint64_t) -> Result<void> {
        ZSTD_inBuffer in{buf, n, 0};
        while (fits && in.pos < in.size) {
            CKPT_TRY(zstd_ok(ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_continue)));
            if (out.pos == out.size) fits = false;
        }
        return ok();
    }));
    const uint64_t sum = XXH3_64bits_digest(st.get());
    while (fits) {
        ZSTD_inBuffer none{nullptr, 0, 0};
        const size_t left = ZSTD_compressStream2(cctx, &out, &none, ZSTD_e_end);
        CKPT_TRY(zstd_ok(left));
        if (left == 0) break;
        if (out.pos == out.size) fits = false;
    }
    fits = fits && out.pos < len;
    if (fits) return CompressedBlock{sum, out.pos, true};
    // It does not compress: the block as is (the same bytes: the tree is still frozen, or
    // they are the engine's own file).
    XXH3_64bits_reset(st.get());
    CKPT_TRY(source(st.get(), [&](const char* buf, size_t n, uint64_t from) -> Result<void> {
        std::memcpy(c.out.data() + (from - lo), buf, n);
        return ok();
    }));
    if (XXH3_64bits_digest(st.get()) != sum)
        return error("pid {}: block {} of {} changed while it was copied", plan.pid, b, plan.path);
    return CompressedBlock{sum, len, false};
}

// Reads exactly n bytes at off (declared here, defined with the restore's readers).
Result<void> read_stored(int fd, char* buf, uint64_t n, uint64_t off, const std::string& path);

// Block b of a plan compressed from the frozen process.
Result<CompressedBlock> compress_block(const PagePlan& plan, size_t b, int level, Compressor& c) {
    const uint64_t lo = b * kPageBlock, hi = std::min(plan.total, lo + kPageBlock);
    return compress_from(plan, b, level, c, [&](XXH3_state_t* st, auto&& sink) {
        return copy_pages_to(plan, lo, hi, st, sink);
    });
}

// A block's stored bytes (data, as compress_from left them) written into a pages file at
// `at`, and where they are recorded in the page map.
Result<void> store_block(const PagePlan& plan, int fd, const char* data, const CompressedBlock& blk, uint64_t at,
                         image::PageBlock* where) {
    if (pwrite(fd, data, blk.stored, static_cast<off_t>(at)) != static_cast<ssize_t>(blk.stored))
        return sys_error("pwrite {} at {}", plan.path, at);
    where->set_offset(at);
    where->set_length(blk.stored);
    where->set_zstd(blk.zstd);
    where->set_stored_xxh3(XXH3_64bits(data, blk.stored));
    return ok();
}

// Block b of a plan compressed and appended to its pages file at *end, where it is
// recorded in *where. Returns the block's checksum (of its pages, uncompressed).
Result<uint64_t> compress_block_to_file(const PagePlan& plan, int fd, size_t b, int level, Compressors& pool,
                                        std::atomic<uint64_t>* end, image::PageBlock* where) {
    auto c = CKPT_TRY(pool.take());
    const CompressedBlock blk = CKPT_TRY(compress_block(plan, b, level, *c));
    CKPT_TRY(store_block(plan, fd, c->out.data(), blk, end->fetch_add(blk.stored), where));
    pool.give_back(std::move(c));
    return blk.sum;
}
}  // namespace

Result<void> write_page_data(std::vector<PagePlan>& plans, int compress_level) {
    auto fds = CKPT_TRY(create_pages_files(plans, compress_level == 0));
    if (!compress_level)
        return for_every_block(plans, [&](size_t i, size_t b) { return copy_block(plans[i], fds[i].get(), b); });
    // Compressed: each block's frame appended where its file ends when it is ready, the
    // blocks' places recorded in the page map.
    Compressors pool;
    std::unique_ptr<std::atomic<uint64_t>[]> ends(new std::atomic<uint64_t>[plans.size()]);
    std::vector<std::vector<image::PageBlock>> stored(plans.size());
    for (size_t i = 0; i < plans.size(); ++i) {
        ends[i] = 0;
        stored[i].resize(static_cast<size_t>((plans[i].total + kPageBlock - 1) / kPageBlock));
    }
    CKPT_TRY(for_every_block(plans, [&](size_t i, size_t b) {
        return compress_block_to_file(plans[i], fds[i].get(), b, compress_level, pool, &ends[i], &stored[i][b]);
    }));
    for (size_t i = 0; i < plans.size(); ++i) {
        for (auto& blk : stored[i]) *plans[i].pm->add_blocks() = std::move(blk);
        plans[i].pm->set_stored_bytes(ends[i]);
    }
    return ok();
}

Result<void> compress_page_files(std::vector<PagePlan>& plans, const std::vector<UniqueFd>& written, int level) {
    std::vector<UniqueFd> fds;
    for (size_t i = 0; i < plans.size(); ++i)
        fds.push_back(CKPT_TRY(open_file("/proc/self/fd/" + std::to_string(written[i].get()), O_RDWR | O_CLOEXEC)));
    std::vector<std::pair<size_t, size_t>> work;  // (plan, block), in file order
    for (size_t i = 0; i < plans.size(); ++i)
        for (size_t b = 0; b * kPageBlock < plans[i].total; ++b) work.emplace_back(i, b);
    // In place: block b's frame is written where the blocks before it end, at or before b's own
    // offset, and only once every block of its window has been read whole: no block is
    // overwritten before it is read.
    std::vector<uint64_t> ends(plans.size(), 0);
    Compressors pool;
    std::vector<std::unique_ptr<Compressor>> rooms(kCopyThreads);
    std::vector<CompressedBlock> done(kCopyThreads);
    for (size_t lo = 0; lo < work.size(); lo += kCopyThreads) {
        const size_t n = std::min<size_t>(kCopyThreads, work.size() - lo);
        for (size_t k = 0; k < n; ++k)
            if (!rooms[k]) rooms[k] = CKPT_TRY(pool.take());
        CKPT_TRY(parallel_for(n, kCopyThreads, [&](size_t k) -> Result<void> {
            auto [i, b] = work[lo + k];
            const PagePlan& plan = plans[i];
            const int fd = fds[i].get();
            const uint64_t from = b * kPageBlock, to = std::min(plan.total, from + kPageBlock);
            thread_local PageBuffer piece(kCopyBatch);
            if (!piece) return error_code(ENOMEM, "a buffer of {} bytes to read {} through", kCopyBatch, plan.path);
            done[k] = CKPT_TRY(compress_from(plan, b, level, *rooms[k], [&](XXH3_state_t* st, auto&& sink) -> Result<void> {
                for (uint64_t at = from; at < to;) {
                    const uint64_t m = std::min<uint64_t>(kCopyBatch, to - at);
                    CKPT_TRY(read_stored(fd, piece.data(), m, at, plan.path));
                    XXH3_64bits_update(st, piece.data(), m);
                    CKPT_TRY(sink(piece.data(), static_cast<size_t>(m), at));
                    at += m;
                }
                return ok();
            }));
            return ok();
        }));
        for (size_t k = 0; k < n; ++k) {
            auto [i, b] = work[lo + k];
            const PagePlan& plan = plans[i];
            const CompressedBlock& blk = done[k];
            if (plan.pm->block_xxh3_size() != static_cast<int>(b))
                return error("pid {}: block {} of {} compressed out of order", plan.pid, b, plan.path);
            plan.pm->add_block_xxh3(blk.sum);
            CKPT_TRY(store_block(plan, fds[i].get(), rooms[k]->out.data(), blk, ends[i], plan.pm->add_blocks()));
            ends[i] += blk.stored;
        }
    }
    for (size_t i = 0; i < plans.size(); ++i) {
        if (ftruncate(fds[i].get(), static_cast<off_t>(ends[i])) != 0) return sys_error("ftruncate {}", plans[i].path);
        plans[i].pm->set_stored_bytes(ends[i]);
    }
    return ok();
}

namespace {
// Block b of a plan copied from the frozen process as it is into c's room (the stream's
// page data not compressed).
Result<CompressedBlock> copy_block_whole(const PagePlan& plan, size_t b, Compressor& c) {
    thread_local std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    const uint64_t lo = b * kPageBlock, hi = std::min(plan.total, lo + kPageBlock);
    uint64_t at = lo;
    XXH3_64bits_reset(st.get());
    CKPT_TRY(copy_pages_to(
        plan, lo, hi, st.get(),
        [&](const char*, size_t n, uint64_t from) -> Result<void> {
            if (from != at) return error("pid {}: page data not contiguous at {} of {}", plan.pid, from, plan.path);
            at += n;
            return ok();
        },
        c.out.data()));
    if (at != hi) return error("pid {}: {} of {} bytes of block {} of {} copied", plan.pid, at - lo, hi - lo, b, plan.path);
    return CompressedBlock{XXH3_64bits_digest(st.get()), hi - lo, false};
}
}  // namespace

// The blocks of all plans in order, kStreamWindow of them copied (and compressed) at once
// while the window before is written, in order: into each plan's PAGES record, or
// (compressed) each a PAGE_BLOCK record; each plan's followed by its block checksums. A plan
// with no page data is an empty PAGES record. The stream is one writer's, the frozen tree is
// read by several: two sets of rooms, one filled while the other is written.
Result<void> stream_page_data(std::vector<PagePlan>& plans, image::StreamWriter& w, int compress_level) {
    constexpr size_t kStreamWindow = 2;
    std::vector<std::pair<size_t, size_t>> work;  // (plan, block)
    std::vector<std::vector<uint64_t>> sums(plans.size());
    for (size_t i = 0; i < plans.size(); ++i)
        for (size_t b = 0; b * kPageBlock < plans[i].total; ++b) work.emplace_back(i, b);
    size_t next_plan = 0;  // the first plan whose records are not all written
    auto finish_plans_before = [&](size_t end) -> Result<void> {
        for (; next_plan < end; ++next_plan) {
            PagePlan& p = plans[next_plan];
            if (!p.total) CKPT_TRY(w.record(p.name, image::StreamRecord::PAGES, {}));
            CKPT_TRY(w.block_sums(p.name, sums[next_plan]));
            for (uint64_t sum : sums[next_plan]) p.pm->add_block_xxh3(sum);
        }
        return ok();
    };
    struct Window {
        std::unique_ptr<Compressor> room[kStreamWindow];
        CompressedBlock done[kStreamWindow];
    };
    Compressors pool(compress_level != 0);
    Window windows[2];
    auto write_window = [&](const Window& win, size_t lo, size_t n) -> Result<void> {
        for (size_t k = 0; k < n; ++k) {
            auto [i, b] = work[lo + k];
            CKPT_TRY(finish_plans_before(i));
            const PagePlan& p = plans[i];
            const CompressedBlock& blk = win.done[k];
            const char* data = win.room[k]->out.data();
            if (compress_level) {
                CKPT_TRY(w.page_block(p.name, b, blk.zstd, data, blk.stored));
            } else {
                if (b == 0) CKPT_TRY(w.begin_record(p.name, image::StreamRecord::PAGES, p.total));
                CKPT_TRY(w.data(data, blk.stored));
                if ((b + 1) * kPageBlock >= p.total) CKPT_TRY(w.end_record());
            }
            sums[i].push_back(blk.sum);
        }
        return ok();
    };
    std::future<Result<void>> writing;  // declared last: joined first when this returns early
    for (size_t lo = 0, turn = 0; lo < work.size(); lo += kStreamWindow, turn ^= 1) {
        Window& win = windows[turn];
        const size_t n = std::min(kStreamWindow, work.size() - lo);
        for (size_t k = 0; k < n; ++k)
            if (!win.room[k]) win.room[k] = CKPT_TRY(pool.take());
        CKPT_TRY(parallel_for(n, kStreamWindow, [&](size_t k) -> Result<void> {
            auto [i, b] = work[lo + k];
            win.done[k] = compress_level ? CKPT_TRY(compress_block(plans[i], b, compress_level, *win.room[k]))
                                         : CKPT_TRY(copy_block_whole(plans[i], b, *win.room[k]));
            return ok();
        }));
        if (writing.valid()) CKPT_TRY(writing.get());
        writing = std::async(std::launch::async, [&write_window, &win, lo, n] { return write_window(win, lo, n); });
    }
    if (writing.valid()) CKPT_TRY(writing.get());
    return finish_plans_before(plans.size());
}

Result<void> checksum_page_data(std::vector<PagePlan>& plans, const std::vector<UniqueFd>& written) {
    std::vector<UniqueFd> fds;
    for (size_t i = 0; i < plans.size(); ++i)
        fds.push_back(CKPT_TRY(open_file("/proc/self/fd/" + std::to_string(written[i].get()), O_RDONLY)));
    return for_every_block(plans, [&](size_t i, size_t b) { return checksum_block(plans[i], fds[i].get(), b); });
}

Result<void> dump_thp_disable(RemoteThread& rt, image::MmCore* mm) {
    auto v = static_cast<uint64_t>(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_THP_DISABLE)", SYS_prctl, {PR_GET_THP_DISABLE})));
    mm->set_thp_disabled(v & 1);
    mm->set_thp_disabled_except_advised((v & 1) && (v & kThpDisableExceptAdvised));
    return ok();
}

Result<UniqueFd> make_anon_shmem(uint64_t size) {
    if (size == 0 || size % kPage) return error_code(EINVAL, "shared anonymous memory of {} bytes", size);
    void* p = mmap(nullptr, size, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return sys_error("mmap(MAP_SHARED|MAP_ANONYMOUS, {} bytes)", size);
    auto at = reinterpret_cast<uint64_t>(p);
    auto fd = open_file(fmt::format("/proc/self/map_files/{:x}-{:x}", at, at + size), O_RDWR);
    munmap(p, size);
    if (!fd) return fd.error();
    return std::move(*fd);
}

namespace {

// The highest free range of size bytes below the usual mmap base, apart from every range in
// used, with a page of gap on each side; 0 if there is none.
uint64_t find_hole(std::vector<std::pair<uint64_t, uint64_t>> used, uint64_t size) {
    std::sort(used.begin(), used.end());
    // Search downward from below the usual mmap base, keeping a page of gap on each side.
    uint64_t top = 0x7f0000000000ull;
    for (auto it = used.rbegin(); it != used.rend(); ++it) {
        if (it->first >= top) {
            top = std::min(top, it->first);
            continue;
        }
        if (it->second + kPage + size + kPage <= top) return top - kPage - size;
        top = std::min(top, it->first);
    }
    if (top > 0x100000 + size + kPage) return top - kPage - size;
    return 0;
}

}  // namespace

Result<uint64_t> find_trampoline_hole(const image::MmCore& mm, uint64_t size) {
    std::vector<std::pair<uint64_t, uint64_t>> used;
    for (const auto& v : mm.vmas()) used.emplace_back(v.start(), v.end());
    for (const auto& m : CKPT_TRY(read_maps(getpid()))) used.emplace_back(m.start, m.end);
    uint64_t at = find_hole(std::move(used), size);
    if (!at) return error("no free address range for the restore trampoline");
    return at;
}

namespace {

// The block size and checksums of a page map, checked against its data's size.
Result<size_t> page_blocks(const image::PageMap& pm, const std::string& path) {
    uint64_t bs = pm.block_size();
    size_t blocks = bs ? static_cast<size_t>((pm.pages_bytes() + bs - 1) / bs) : 0;
    if (pm.pages_bytes() && (!bs || static_cast<size_t>(pm.block_xxh3_size()) != blocks))
        return error_code(EINVAL, "{}: malformed block checksums (image is corrupt)", path);
    return blocks;
}

// The largest block a compressed page map may have (dump --compress writes kPageBlock).
constexpr uint64_t kMaxCompressedBlock = 256ull << 20;

// Blocks of compressed page data decompressed at once by one restore, over all its processes
// (BlockBuffers): the restore's memory beyond its own is at most this many blocks.
constexpr unsigned kBlocksInFlight = 3;

}  // namespace

// One block's zstd frame decompressed as its stored bytes come, in pieces, into exactly
// want bytes at out. The first thing wrong with the frame (a declared length not the
// block's, an error, more output than the block, bytes after the frame's end) stops the
// decompression and is kept for finish(): the caller checks the stored bytes' checksum
// first, so that damaged bytes are refused as that. corrupt ends each message.
class FrameDecoder {
public:
    FrameDecoder(ZSTD_DCtx* dctx, char* out, uint64_t want, uint64_t stored, const std::string& path, size_t b,
                 const char* corrupt)
        : dctx_(dctx), dst_{out, want, 0}, want_(want), stored_(stored), path_(path), b_(b), corrupt_(corrupt) {}

    Result<void> reset() {
        if (size_t r = ZSTD_DCtx_reset(dctx_, ZSTD_reset_session_only); ZSTD_isError(r))
            return error_code(EINVAL, "{}: block {}: zstd: {}", path_, b_, ZSTD_getErrorName(r));
        return ok();
    }

    void feed(const char* piece, size_t n) {
        if (first_) {
            first_ = false;
            // The frame must declare exactly the block's length, before it is decompressed.
            const unsigned long long declared = ZSTD_getFrameContentSize(piece, n);
            if (declared != want_)
                bad_ = error_code(EINVAL, "{}: block {} is a zstd frame of {} bytes, not of the block's {} {}", path_, b_,
                                  declared == ZSTD_CONTENTSIZE_UNKNOWN ? std::string("undeclared length")
                                  : declared == ZSTD_CONTENTSIZE_ERROR ? std::string("no valid header")
                                                                       : std::to_string(declared),
                                  want_, corrupt_);
        }
        ZSTD_inBuffer src{piece, n, 0};
        while (!bad_ && src.pos < src.size) {
            if (ended_) {
                bad_ = not_one_frame();
                break;
            }
            const size_t in_before = src.pos, out_before = dst_.pos;
            const size_t r = ZSTD_decompressStream(dctx_, &dst_, &src);
            if (ZSTD_isError(r))
                bad_ = error_code(EINVAL, "{}: block {}: zstd: {} {}", path_, b_, ZSTD_getErrorName(r), corrupt_);
            else if (r == 0)
                ended_ = true;
            else if (src.pos == in_before && dst_.pos == out_before)  // output full, more to come
                bad_ = error_code(EINVAL, "{}: block {} decompresses to more than its {} bytes {}", path_, b_, want_,
                                  corrupt_);
        }
    }

    // Every stored byte fed: the block is whole.
    Result<void> finish() {
        if (bad_) return std::move(*bad_);
        if (!ended_) return not_one_frame();
        if (dst_.pos != want_)
            return error_code(EINVAL, "{}: block {} decompressed to {} bytes, not {} {}", path_, b_, dst_.pos, want_,
                              corrupt_);
        return ok();
    }

private:
    Error not_one_frame() const {
        return error_code(EINVAL, "{}: block {} is not one whole zstd frame of {} bytes {}", path_, b_, stored_, corrupt_);
    }

    ZSTD_DCtx* dctx_;
    ZSTD_outBuffer dst_;
    uint64_t want_, stored_;
    const std::string& path_;
    size_t b_;
    const char* corrupt_;
    bool first_ = true;
    bool ended_ = false;  // the frame is whole, and flushed
    std::optional<Error> bad_;
};

// Room for one block of page data (decompressed): the block, a piece of its stored bytes (a zstd
// frame is decompressed as it is read), a zstd context and a checksum state. Kept for the next
// block: the pages the block touched stay faulted in.
struct BlockBuffer {
    // Room for size bytes at data; a buffer too small is made anew.
    Result<void> reserve(uint64_t size, const std::string& path) {
        if (!piece || !dctx || !st) return error_code(ENOMEM, "{}: a zstd context and a buffer of {} bytes", path, kCopyBatch);
        if (cap >= size) return ok();
        block = PageBuffer(static_cast<size_t>(size));
        if (!block) return error_code(ENOMEM, "{}: {} bytes to read a block of page data into", path, size);
        data = block.data();
        cap = size;
        return ok();
    }

    PageBuffer block;
    char* data = nullptr;
    uint64_t cap = 0;
    PageBuffer piece{kCopyBatch};
    std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx{ZSTD_createDCtx(), &ZSTD_freeDCtx};
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
};

class BlockBuffers {
public:
    // A buffer, handed back when the lease ends; waits while kBlocksInFlight are out.
    class Lease {
    public:
        Lease(BlockBuffers& pool, std::unique_ptr<BlockBuffer> b) : pool_(pool), b_(std::move(b)) {}
        Lease(Lease&& o) noexcept : pool_(o.pool_), b_(std::move(o.b_)) {}
        Lease& operator=(Lease&&) = delete;
        ~Lease() {
            if (b_) pool_.give_back(std::move(b_));
        }
        BlockBuffer& operator*() const { return *b_; }

    private:
        BlockBuffers& pool_;
        std::unique_ptr<BlockBuffer> b_;
    };

    Lease take() {
        std::unique_lock lock(mu_);
        freed_.wait(lock, [&] { return out_ < kBlocksInFlight; });
        ++out_;
        if (idle_.empty()) return Lease(*this, std::make_unique<BlockBuffer>());
        auto b = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(b));
    }

private:
    void give_back(std::unique_ptr<BlockBuffer> b) {
        {
            std::lock_guard lock(mu_);
            idle_.push_back(std::move(b));
            --out_;
        }
        freed_.notify_one();
    }

    std::mutex mu_;
    std::condition_variable freed_;
    std::vector<std::unique_ptr<BlockBuffer>> idle_;
    unsigned out_ = 0;
};

std::shared_ptr<BlockBuffers> make_block_buffers() { return std::make_shared<BlockBuffers>(); }

namespace {

// Reads exactly n bytes at off of fd (a pages file of the size its page map records).
Result<void> read_stored(int fd, char* buf, uint64_t n, uint64_t off, const std::string& path) {
    while (n) {
        const ssize_t got = pread(fd, buf, static_cast<size_t>(n), static_cast<off_t>(off));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return sys_error("read {} at {}", path, off);
        if (got == 0) return error_code(EINVAL, "{}: ends at {}, before the page data its page map records", path, off);
        buf += got;
        off += static_cast<uint64_t>(got);
        n -= static_cast<uint64_t>(got);
    }
    return ok();
}

// The page data of a page map, verified block by block against its checksums: its pages file
// read block by block, each block (decompressed: dump --compress) into a buffer of the
// restore's and checked there, before any of it is used.
class PageData {
public:
    // The page data of pm (in dir, recorded by image), path naming its pages file in messages.
    // pm must outlive this.
    Result<void> load(const std::string& dir, const std::string& image, const image::PageMap& pm, const std::string& path) {
        pm_ = &pm;
        path_ = path;
        const size_t blocks = CKPT_TRY(page_blocks(pm, path));
        if (pm.blocks_size() == 0) {
            if (pm.stored_bytes() != 0)
                return error_code(EINVAL, "{}: {} bytes stored without their blocks (image is corrupt)", path, pm.stored_bytes());
            // Read block by block too, not mapped: a mapping of the file gets a page table
            // entry per 4 KiB page, which costs more than copying the page where entries are
            // dear (a VM with shadow page tables: 1 GiB mapped and read in 470 ms, read into
            // a buffer of huge pages in 130 ms); and each block is checked in the buffer its
            // pages are written from.
            stored_ = CKPT_TRY(image::open_recorded_data(dir, image, pm.pages_file(), pm.pages_bytes()));
            return ok();
        }
        // Compressed: every size bounded before anything is allocated. The page data is what
        // the page map's runs of data hold, no more (so no more than the process had).
        const uint64_t bs = pm.block_size(), stored = pm.stored_bytes();
        if (static_cast<size_t>(pm.blocks_size()) != blocks || bs % kPage || bs > kMaxCompressedBlock)
            return error_code(EINVAL, "{}: {} stored blocks of {} bytes for {} bytes of page data (image is corrupt)", path,
                              pm.blocks_size(), bs, pm.pages_bytes());
        uint64_t in_runs = 0;
        for (const auto& r : pm.runs()) {
            if (r.zero() || r.inherited() || r.in_parent()) continue;
            if (r.nr_pages() > (~0ull >> 13) || in_runs + r.nr_pages() * kPage < in_runs)
                return error_code(EINVAL, "{}: malformed page run at {:#x} (image is corrupt)", path, r.vaddr());
            in_runs += r.nr_pages() * kPage;
        }
        if (in_runs != pm.pages_bytes())
            return error_code(EINVAL, "{}: {} bytes of page data for runs of {} bytes (image is corrupt)", path,
                              pm.pages_bytes(), in_runs);
        for (size_t b = 0; b < blocks; ++b) {
            const auto& blk = pm.blocks(static_cast<int>(b));
            const uint64_t want = std::min(bs, pm.pages_bytes() - b * bs);
            if (blk.length() == 0 || blk.length() > stored || blk.offset() > stored - blk.length() ||
                (!blk.zstd() && blk.length() != want))
                return error_code(EINVAL, "{}: block {} stored at {} ({} bytes) outside the {} bytes of the file, or of "
                                          "the wrong size (image is corrupt)",
                                  path, b, blk.offset(), blk.length(), stored);
        }
        stored_ = CKPT_TRY(image::open_recorded_data(dir, image, pm.pages_file(), stored));
        return ok();
    }

    const image::PageMap& pagemap() const { return *pm_; }

    // Block b into out->data, checked. Compressed page data: the stored bytes against their
    // checksum, then a zstd frame decompressed to exactly the block's length as it is read, or
    // the bytes as stored; then (also for page data not compressed) the block against its
    // checksum. Nothing of a block is used before all of this has passed.
    Result<void> decode(size_t b, BlockBuffer* out) const {
        const image::PageMap& pm = *pm_;
        const uint64_t lo = b * pm.block_size(), want = std::min(pm.block_size(), pm.pages_bytes() - lo);
        CKPT_TRY(out->reserve(want, path_));
        if (pm.blocks_size() == 0) {  // not compressed: the block as it is in the file
            CKPT_TRY(read_stored(stored_.get(), out->data, want, lo, path_));
            return verify_block(b, out->data);
        }
        const auto& blk = pm.blocks(static_cast<int>(b));
        auto stored_mismatch = [&] {
            return error_code(EINVAL, "{}: checksum mismatch in stored block {} (image is corrupt)", path_, b);
        };
        if (!blk.zstd()) {
            CKPT_TRY(read_stored(stored_.get(), out->data, want, blk.offset(), path_));
            if (XXH3_64bits(out->data, want) != blk.stored_xxh3()) return stored_mismatch();
            return verify_block(b, out->data);
        }
        // A frame: read in pieces, each hashed and decompressed. The first thing wrong with the
        // frame stops its decompression, but the stored bytes are all read: a block whose
        // bytes do not match their checksum is refused as that.
        XXH3_state_t* st = out->st.get();
        XXH3_64bits_reset(st);
        FrameDecoder frame(out->dctx.get(), out->data, want, blk.length(), path_, b, "(image is corrupt)");
        CKPT_TRY(frame.reset());
        char* piece = out->piece.data();
        for (uint64_t at = 0; at < blk.length();) {
            const uint64_t n = std::min<uint64_t>(kCopyBatch, blk.length() - at);
            CKPT_TRY(read_stored(stored_.get(), piece, n, blk.offset() + at, path_));
            XXH3_64bits_update(st, piece, n);
            frame.feed(piece, n);
            at += n;
        }
        if (XXH3_64bits_digest(st) != blk.stored_xxh3()) return stored_mismatch();
        CKPT_TRY(frame.finish());
        return verify_block(b, out->data);
    }

private:
    // Block b of the page data, at at, against its checksum in the page map: of the pages,
    // uncompressed, whichever way they are stored.
    Result<void> verify_block(size_t b, const char* at) const {
        const uint64_t bs = pm_->block_size(), len = std::min(bs, pm_->pages_bytes() - b * bs);
        if (XXH3_64bits(at, len) != pm_->block_xxh3(static_cast<int>(b)))
            return error_code(EINVAL, "{}: checksum mismatch in block {} (image is corrupt)", path_, b);
        return ok();
    }

    const image::PageMap* pm_ = nullptr;
    std::string path_;
    UniqueFd stored_;  // the pages file, read block by block
};

// The earlier dumps that the in_parent runs of a page map are read from (PageMap.parent_dir,
// and theirs in turn): a plain folder name beside the images folder that names it, or
// "FOLDER/NAME" beside that folder (a "cousin": set-000041/member-3 for set-000042/member-3,
// dump --prev-images-dir), opened beneath the top images folder's parent or grandparent
// without following any link and never above it; each page map the one its child was made
// from (its checksum and dump id as the child records them), each pages file verified block
// by block; no longer than kMaxParentChain, no dump twice.
class ParentChain {
public:
    Result<void> open(const std::string& image_dir, pid_t pid, const image::PageMap& child) {
        auto dirname = [](std::string d) {
            while (d.size() > 1 && d.back() == '/') d.pop_back();
            size_t slash = d.rfind('/');
            return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : d.substr(0, slash);
        };
        const std::string base = dirname(image_dir);
        base_ = CKPT_TRY(open_file(base, O_PATH | O_DIRECTORY));
        // Where the current link's sibling names resolve: the top's parent, or (after a
        // cousin link) the cousin's folder beneath the top's grandparent.
        int holder = base_.get();
        std::string holder_path = base;
        UniqueFd cousin_folder;
        const std::string name = image::names::pagemap(pid);
        const image::PageMap* cur = &child;
        std::string cur_where = image_dir + "/" + name;
        std::set<uint64_t> seen{child.dump_id()};
        open_how how{};
        how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
        how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
        auto open_beneath = [&](int at, const std::string& rel) {
            return UniqueFd(static_cast<int>(syscall(SYS_openat2, at, rel.c_str(), &how, sizeof how)));
        };
        while (std::any_of(cur->runs().begin(), cur->runs().end(), [](const auto& r) { return r.in_parent(); })) {
            if (links_.size() >= kMaxParentChain)
                return error_code(ELOOP, "{}: more than {} parent dumps in the chain: refused", image_dir, kMaxParentChain);
            const std::string& ref = cur->parent_dir();
            const size_t slash = ref.find('/');
            auto link = std::make_unique<Link>();
            if (slash == std::string::npos) {
                CKPT_TRY(image::check_plain_name(cur_where, ref));
                link->where = holder_path + "/" + ref + "/" + name;
                link->dir = open_beneath(holder, ref);
                if (!link->dir)
                    return sys_error("{}: its parent dump {}/{} cannot be opened (a plain folder beside it, no link)",
                                     cur_where, holder_path, ref);
            } else {
                const std::string folder = ref.substr(0, slash), leaf = ref.substr(slash + 1);
                CKPT_TRY(image::check_plain_name(cur_where, folder));
                CKPT_TRY(image::check_plain_name(cur_where, leaf));
                const std::string grand_path =
                    base == "." || base.find('/') == std::string::npos ? base + "/.." : dirname(base);
                if (!grand_) grand_ = CKPT_TRY(open_file(grand_path, O_PATH | O_DIRECTORY));
                cousin_folder = open_beneath(grand_.get(), folder);
                if (!cousin_folder)
                    return sys_error("{}: its parent dump's folder {}/{} cannot be opened (a plain folder, no link)",
                                     cur_where, grand_path, folder);
                holder = cousin_folder.get();
                holder_path = grand_path + "/" + folder;
                link->where = holder_path + "/" + leaf + "/" + name;
                link->dir = open_beneath(holder, leaf);
                if (!link->dir)
                    return sys_error("{}: its parent dump {}/{} cannot be opened (a plain folder, no link)", cur_where,
                                     holder_path, leaf);
                link->holder = std::move(cousin_folder);
            }
            const std::string at = "/proc/self/fd/" + std::to_string(link->dir.get());
            uint64_t sum = 0;
            CKPT_TRY_CTX(image::read_image(at + "/" + name, image::Kind::PageMap, &link->pm, &sum), "parent dump of {}: {}",
                         cur_where, link->where);
            if (sum != cur->parent_pagemap_xxh3() || link->pm.dump_id() != cur->parent_dump_id())
                return error_code(EINVAL, "{}: is not the page map {} was dumped after (replaced or changed since): refused",
                                  link->where, cur_where);
            if (!seen.insert(link->pm.dump_id()).second)
                return error_code(ELOOP, "{}: the chain of parent dumps loops back to dump {:#x}: refused", link->where,
                                  link->pm.dump_id());
            const image::PageMap& pm = link->pm;
            if (pm.page_size() != kPage) return error_code(EINVAL, "{}: page size {} (image is corrupt)", link->where, pm.page_size());
            CKPT_TRY(link->pages.load(at, name, pm, link->where + " (" + pm.pages_file() + ")"));
            // Where each run's data is, runs in address order, none past the data.
            uint64_t off = 0, prev_end = 0;
            for (const auto& r : pm.runs()) {
                if (r.nr_pages() == 0 || r.nr_pages() > (~0ull - r.vaddr()) / kPage || r.vaddr() < prev_end ||
                    r.vaddr() % kPage || (r.in_parent() && (r.zero() || r.inherited())))
                    return error_code(EINVAL, "{}: malformed page run at {:#x} (image is corrupt)", link->where, r.vaddr());
                prev_end = r.vaddr() + r.nr_pages() * kPage;
                link->off.push_back(off);
                if (r.zero() || r.inherited() || r.in_parent()) continue;
                if (r.nr_pages() * kPage > pm.pages_bytes() - off)
                    return error_code(EINVAL, "{}: page runs exceed the data (image is corrupt)", link->where);
                off += r.nr_pages() * kPage;
            }
            cur = &link->pm;
            cur_where = link->where;
            links_.push_back(std::move(link));
        }
        return ok();
    }

    // emit(vaddr, page data and offset in it, or null for zeros, len) for pages [lo, hi) as
    // link level holds them.
    template <typename Emit>
    Result<void> resolve(size_t level, uint64_t lo, uint64_t hi, Emit&& emit) const {
        if (level >= links_.size()) return error_code(EINVAL, "pages {:#x}-{:#x} in a parent dump that is not named", lo, hi);
        const Link& l = *links_[level];
        const auto& runs = l.pm.runs();
        auto it = std::upper_bound(runs.begin(), runs.end(), lo,
                                   [](uint64_t at, const image::PageRun& r) { return at < r.vaddr(); });
        if (it != runs.begin()) --it;
        for (uint64_t at = lo; at < hi; ++it) {
            if (it == runs.end() || it->vaddr() > at || it->vaddr() + it->nr_pages() * kPage <= at)
                return error_code(EINVAL, "{}: has no data for page {:#x}, which its child reads from it (image is corrupt)",
                                  l.where, at);
            const uint64_t to = std::min(hi, it->vaddr() + it->nr_pages() * kPage);
            const size_t k = static_cast<size_t>(it - runs.begin());
            if (it->in_parent()) CKPT_TRY(resolve(level + 1, at, to, emit));
            else if (it->inherited())
                return error_code(EINVAL, "{}: page {:#x} is its fork parent's (image is corrupt)", l.where, at);
            else if (it->zero()) emit(at, nullptr, 0, to - at);
            else emit(at, &l.pages, l.off[k] + (at - it->vaddr()), to - at);
            at = to;
        }
        return ok();
    }

private:
    struct Link {
        UniqueFd dir;
        UniqueFd holder;  // a cousin link's folder (its own sibling names resolve there)
        image::PageMap pm;
        PageData pages;
        std::vector<uint64_t> off;  // per run, where its data is in the pages file
        std::string where;          // the page map's path, for messages
    };
    UniqueFd base_, grand_;
    std::vector<std::unique_ptr<Link>> links_;
};

// A piece of at most kCopyBatch bytes of a run to write into a restored process: page data
// at offset off of its pages file, or zeros.
struct PagePiece {
    uint64_t off, vaddr, len;
    bool zero;
};

// The pieces of t's page map in address order (the data ones in file order too).
Result<std::vector<PagePiece>> page_pieces(const RestoreTask& t, const std::string& path) {
    const image::PageMap& pm = t.pagemap;
    const image::MmCore& mm = t.mm;
    std::vector<PagePiece> pieces;
    // Runs and mappings are both in address order: one walk finds each run's mapping.
    auto vma = mm.vmas().begin();
    auto in_file_vma = [&](uint64_t addr) {
        while (vma != mm.vmas().end() && vma->end() <= addr) ++vma;
        return vma != mm.vmas().end() && addr >= vma->start() && vma->kind() == image::Vma::FILE;
    };
    uint64_t off = 0;
    for (const auto& run : pm.runs()) {
        uint64_t len = run.nr_pages() * pm.page_size();
        // Zero runs of anonymous memory need nothing: fresh memory reads as zero. In file
        // mappings the file's content must be overwritten with zeros.
        if (run.zero() && !in_file_vma(run.vaddr())) continue;
        if (run.inherited()) continue;  // the parent's pages, kept from the fork
        if (run.in_parent()) continue;  // the parent dumps' (ParentChain, fill_pages_from_file)
        if (!run.zero() && off + len > pm.pages_bytes())
            return error_code(EINVAL, "{}: page runs exceed the data (image is corrupt)", path);
        // Segments of at most kCopyBatch bytes, so that the threads share the work evenly.
        for (uint64_t done = 0; done < len;) {
            uint64_t n = std::min<uint64_t>(len - done, kCopyBatch);
            pieces.push_back({off + done, run.vaddr() + done, n, run.zero()});
            done += n;
        }
        if (!run.zero()) off += len;
    }
    return pieces;
}

// Writes local[i] to remote[i], i < n (at most IOV_MAX), in process host: one
// process_vm_writev, or /proc/PID/mem for pages the process may not write (read-only shared
// mappings).
Result<void> write_iovecs(pid_t host, const iovec* local, const iovec* remote, size_t n) {
    ssize_t want = 0;
    for (size_t i = 0; i < n; ++i) want += static_cast<ssize_t>(local[i].iov_len);
    if (process_vm_writev(host, local, n, remote, n, 0) == want) return ok();
    for (size_t i = 0; i < n; ++i)
        CKPT_TRY(write_remote(host, reinterpret_cast<uint64_t>(remote[i].iov_base), local[i].iov_base, local[i].iov_len));
    return ok();
}

// Pieces written by one system call.
constexpr size_t kPiecesPerCall = 64;

// Writes local[i] to remote[i] in process host, on several threads.
Result<void> write_pieces(pid_t host, std::vector<iovec>& local, std::vector<iovec>& remote) {
    size_t calls = (local.size() + kPiecesPerCall - 1) / kPiecesPerCall;
    return parallel_for(calls, kCopyThreads, [&](size_t c) -> Result<void> {
        size_t lo = c * kPiecesPerCall;
        return write_iovecs(host, &local[lo], &remote[lo], std::min(kPiecesPerCall, local.size() - lo));
    });
}

const std::vector<char>& zero_batch() {
    static const std::vector<char> zeros(kCopyBatch, 0);
    return zeros;
}

// Page data from the pages files: the process's own and its parent dumps'. Zeros (over files
// mapped) are written at once; page data block by block, each block read (decompressed) and
// checked into a buffer of the restore's (at most kBlocksInFlight at once) and its pages
// written into the process from there, on several threads.
Result<void> fill_pages_from_file(RestoreTask& t) {
    const image::PageMap& pm = t.pagemap;
    std::string path = t.image_dir + "/" + pm.pages_file();
    PageData pages;
    CKPT_TRY(pages.load(t.image_dir, image::names::pagemap(t.pid), pm, path));
    ParentChain chain;
    CKPT_TRY_CTX(chain.open(t.image_dir, t.pid, pm), "pid {}", t.pid);

    std::vector<iovec> local, remote;  // written at once
    // Pieces of a block: (offset in the block, address, length), by page data and block.
    struct InBlock {
        uint64_t off, vaddr, len;
    };
    std::map<std::pair<const PageData*, size_t>, std::vector<InBlock>> blocks;
    // n bytes at vaddr: of src's page data at off, or zeros (src null); at most kCopyBatch.
    auto add = [&](const PageData* src, uint64_t off, uint64_t vaddr, uint64_t n) {
        if (!src) {
            local.push_back({const_cast<char*>(zero_batch().data()), n});
            remote.push_back({reinterpret_cast<void*>(vaddr), n});
            return;
        }
        const uint64_t bs = src->pagemap().block_size();
        while (n) {
            const size_t b = static_cast<size_t>(off / bs);
            const uint64_t k = std::min(n, (b + 1) * bs - off);
            blocks[{src, b}].push_back({off - b * bs, vaddr, k});
            off += k;
            vaddr += k;
            n -= k;
        }
    };
    for (const PagePiece& p : CKPT_TRY(page_pieces(t, path))) add(p.zero ? nullptr : &pages, p.off, p.vaddr, p.len);
    // Pages not written since the parent dump: from the chain, in pieces of kCopyBatch.
    for (const auto& run : pm.runs()) {
        if (!run.in_parent()) continue;
        if (run.zero() || run.inherited() || run.nr_pages() > (~0ull - run.vaddr()) / kPage)
            return error_code(EINVAL, "{}: malformed page run at {:#x} (image is corrupt)", path, run.vaddr());
        const uint64_t len = run.nr_pages() * kPage;
        CKPT_TRY(chain.resolve(0, run.vaddr(), run.vaddr() + len,
                               [&](uint64_t at, const PageData* src, uint64_t off, uint64_t n) {
                                   for (uint64_t done = 0; done < n;) {
                                       const uint64_t k = std::min<uint64_t>(n - done, kCopyBatch);
                                       add(src, off + done, at + done, k);
                                       done += k;
                                   }
                               }));
    }
    CKPT_TRY(write_pieces(t.host, local, remote));
    if (blocks.empty()) return ok();

    // Blocks: each one read (decompressed) and checked whole before any of its pages is
    // written; the buffers are the restore's, shared by the processes filled at once.
    std::shared_ptr<BlockBuffers> pool = t.shared && t.shared->block_buffers ? t.shared->block_buffers : make_block_buffers();
    std::vector<const decltype(blocks)::value_type*> work;
    for (const auto& entry : blocks) work.push_back(&entry);
    return parallel_for(work.size(), kBlocksInFlight, [&](size_t w) -> Result<void> {
        const auto& [key, pieces] = *work[w];
        auto lease = pool->take();
        BlockBuffer& buf = *lease;
        CKPT_TRY(key.first->decode(key.second, &buf));
        iovec from[kPiecesPerCall], to[kPiecesPerCall];
        for (size_t lo = 0; lo < pieces.size(); lo += kPiecesPerCall) {
            const size_t n = std::min(kPiecesPerCall, pieces.size() - lo);
            for (size_t i = 0; i < n; ++i) {
                const InBlock& p = pieces[lo + i];
                from[i] = {buf.data + p.off, p.len};
                to[i] = {reinterpret_cast<void*>(p.vaddr), p.len};
            }
            CKPT_TRY(write_iovecs(t.host, from, to, n));
        }
        return ok();
    });
}

// The largest block a stream's page map may have (the buffer a block is read into).
constexpr uint64_t kMaxStreamBlock = 256ull << 20;

// Page data from the restore's stream: its next record, read block by block into a buffer
// and written into the process, or its PAGE_BLOCK records (dump --compress), each
// decompressed into the buffer; then the block checksums that follow it (a page map that
// has them, from a folder streamed, must agree with them). A block that does not match
// fails the restore, which kills the tree: its pages are in place by then.
Result<void> fill_pages_from_stream(RestoreTask& t, RestoreStream& in) {
    const image::PageMap& pm = t.pagemap;
    const std::string& where = in.reader.where();
    std::string path = where + "/" + pm.pages_file();
    auto rec = CKPT_TRY(in.next());
    const bool compressed = rec.kind() == image::StreamRecord::PAGE_BLOCK;
    if (compressed ? rec.name() != pm.pages_file() || pm.pages_bytes() == 0
                   : rec.kind() != image::StreamRecord::PAGES || rec.name() != pm.pages_file() ||
                         rec.length() != pm.pages_bytes())
        return error_code(EINVAL, "{}: pid {}: expected the page data {} ({} bytes), found record '{}' ({} bytes): refused",
                          where, t.pid, pm.pages_file(), pm.pages_bytes(), rec.name(), rec.length());
    if (!compressed && (pm.blocks_size() || pm.stored_bytes()))
        return error_code(EINVAL, "{}: pid {}: the page map stores {} compressed (dump --compress), the stream has it "
                                  "as is (stream is corrupt): refused", where, t.pid, pm.pages_file());
    if (std::any_of(pm.runs().begin(), pm.runs().end(), [](const auto& r) { return r.in_parent(); }))
        return error_code(EINVAL, "{}: pid {}: page runs of a parent dump in a stream (an incremental dump refers to "
                                  "a folder): refused", where, t.pid);
    const uint64_t bs = pm.block_size();
    if (pm.pages_bytes() && (!bs || bs > kMaxStreamBlock || bs % kPage))
        return error_code(EINVAL, "{}: blocks of {} bytes (image is corrupt): refused", path, bs);
    const size_t blocks = bs ? static_cast<size_t>((pm.pages_bytes() + bs - 1) / bs) : 0;
    if (pm.block_xxh3_size() && static_cast<size_t>(pm.block_xxh3_size()) != blocks)
        return error_code(EINVAL, "{}: malformed block checksums (image is corrupt): refused", path);
    if (pm.blocks_size() && static_cast<size_t>(pm.blocks_size()) != blocks)
        return error_code(EINVAL, "{}: malformed stored blocks (image is corrupt): refused", path);
    auto pieces = CKPT_TRY(page_pieces(t, path));
    std::vector<iovec> local, remote;
    for (const PagePiece& p : pieces) {
        if (!p.zero) continue;
        local.push_back({const_cast<char*>(zero_batch().data()), p.len});
        remote.push_back({reinterpret_cast<void*>(p.vaddr), p.len});
    }
    CKPT_TRY(write_pieces(t.host, local, remote));
    // Two buffers: block b+1 is read from the stream while block b is written into the
    // process (the stream is read by one thread; the writes go on their own).
    PageBuffer bufs[2];
    for (size_t k = 0; k < std::min<size_t>(blocks, 2); ++k) {
        bufs[k] = PageBuffer(static_cast<size_t>(bs));
        if (!bufs[k]) return error_code(ENOMEM, "{}: a buffer of {} bytes", path, bs);
    }
    auto mismatch = [&](size_t b) {
        return error_code(EINVAL, "{}: checksum mismatch in block {} (stream is corrupt): refused", path, b);
    };
    std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx{nullptr, &ZSTD_freeDCtx};
    PageBuffer piece;
    if (compressed) {
        dctx.reset(ZSTD_createDCtx());
        piece = PageBuffer(kCopyBatch);
        if (!dctx || !piece) return error_code(ENOMEM, "{}: a zstd context and a buffer of {} bytes", path, kCopyBatch);
    }
    // Block b (len bytes) into buf: as it comes, or from its PAGE_BLOCK record (the reader
    // checks their order), decompressed as it is read; its record's checksum verified
    // before anything wrong with the frame is reported.
    auto read_block = [&](size_t b, char* buf, uint64_t len) -> Result<void> {
        if (!compressed) return in.reader.read(buf, len);
        if (b) rec = CKPT_TRY(in.reader.next());
        if (rec.kind() != image::StreamRecord::PAGE_BLOCK || rec.block() != b)
            return error_code(EINVAL, "{}: pid {}: expected block {} of the page data {}, found record '{}' (stream is "
                                      "corrupt): refused", where, t.pid, b, pm.pages_file(), rec.name());
        if (!rec.zstd()) {
            if (rec.length() != len)
                return error_code(EINVAL, "{}: block {} stored as is in {} bytes, not the block's {} (stream is corrupt): "
                                          "refused", path, b, rec.length(), len);
            CKPT_TRY(in.reader.read(buf, len));
            return in.reader.end_record();
        }
        FrameDecoder frame(dctx.get(), buf, len, rec.length(), path, b, "(stream is corrupt): refused");
        CKPT_TRY(frame.reset());
        for (uint64_t at = 0; at < rec.length();) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(kCopyBatch, rec.length() - at));
            CKPT_TRY(in.reader.read(piece.data(), n));
            frame.feed(piece.data(), n);
            at += n;
        }
        CKPT_TRY(in.reader.end_record());
        return frame.finish();
    };
    std::vector<uint64_t> sums(blocks);
    std::vector<iovec> locals[2], remotes[2];
    std::future<Result<void>> writing;  // declared last: joined first when this returns early
    size_t next = 0;  // the first data piece not written whole yet
    for (size_t b = 0; b < blocks; ++b) {
        uint64_t lo = b * bs, hi = std::min(pm.pages_bytes(), lo + bs);
        char* buf = bufs[b % 2].data();
        CKPT_TRY(read_block(b, buf, hi - lo));
        sums[b] = XXH3_64bits(buf, hi - lo);
        if (pm.block_xxh3_size() && sums[b] != pm.block_xxh3(static_cast<int>(b))) return mismatch(b);
        std::vector<iovec>& l = locals[b % 2];
        std::vector<iovec>& r = remotes[b % 2];
        l.clear();
        r.clear();
        for (size_t i = next; i < pieces.size(); ++i) {
            const PagePiece& p = pieces[i];
            if (p.zero) continue;
            if (p.off >= hi) break;
            uint64_t from = std::max(p.off, lo), to = std::min(p.off + p.len, hi);
            l.push_back({buf + (from - lo), to - from});
            r.push_back({reinterpret_cast<void*>(p.vaddr + (from - p.off)), to - from});
            if (p.off + p.len <= hi) next = i + 1;
        }
        if (writing.valid()) CKPT_TRY(writing.get());
        writing = std::async(std::launch::async, [host = t.host, &l, &r] { return write_pieces(host, l, r); });
    }
    if (writing.valid()) CKPT_TRY(writing.get());
    if (!compressed) CKPT_TRY(in.reader.end_record());
    // The reader gives no record but the PAGE_SUMS of rec now (or a block too many).
    auto trailer = CKPT_TRY(in.reader.read_block_sums(CKPT_TRY(in.reader.next())));
    if (trailer.size() != blocks)
        return error_code(EINVAL, "{}: {} block checksums after {} blocks of page data (stream is corrupt): refused",
                          path, trailer.size(), blocks);
    for (size_t b = 0; b < blocks; ++b)
        if (trailer[b] != sums[b]) return mismatch(b);
    return ok();
}

}  // namespace

Result<void> restore_memory_pages(RestoreTask& t) {
    if (t.shared && t.shared->stream) CKPT_TRY_CTX(fill_pages_from_stream(t, *t.shared->stream), "pid {}: writing pages", t.pid);
    else CKPT_TRY_CTX(fill_pages_from_file(t), "pid {}: writing pages", t.pid);
    return ok();
}

Result<void> check_inherited_memory(const RestoreTask& t, const RestoreTask* parent) {
    const std::string where = fmt::format("{}/pagemap-{}.img", t.image_dir, t.pid);
    std::vector<const image::Vma*> kept;
    for (const auto& v : t.mm.vmas()) {
        if (!v.inherited()) continue;
        if (!parent)
            return error_code(EINVAL, "{}: mapping {:#x}-{:#x} inherited, but the parent is not restored with pid {} "
                                      "(image is corrupt)", where, v.start(), v.end(), t.pid);
        if (!same_inheritable(v, vma_at(parent->mm, v.start())))
            return error_code(EINVAL, "{}: mapping {:#x}-{:#x} inherited, but parent {} has no such mapping "
                                      "(image is corrupt)", where, v.start(), v.end(), parent->pid);
        kept.push_back(&v);
    }
    const auto& theirs = parent ? parent->pagemap.runs() : t.pagemap.runs();
    for (const auto& run : t.pagemap.runs()) {
        if (!run.inherited()) continue;
        uint64_t lo = run.vaddr(), hi = lo + run.nr_pages() * kPage;
        if (run.zero() || run.nr_pages() == 0 || hi < lo)
            return error_code(EINVAL, "{}: malformed inherited run at {:#x} (image is corrupt)", where, lo);
        bool inside = std::any_of(kept.begin(), kept.end(), [&](auto* v) { return lo >= v->start() && hi <= v->end(); });
        if (!inside)
            return error_code(EINVAL, "{}: inherited pages {:#x}-{:#x} outside an inherited mapping (image is corrupt)",
                              where, lo, hi);
        // The parent's runs of data (its own or inherited in turn) must cover them all.
        auto it = std::upper_bound(theirs.begin(), theirs.end(), lo,
                                   [](uint64_t at, const image::PageRun& r) { return at < r.vaddr(); });
        uint64_t at = lo;
        if (it != theirs.begin()) --it;
        for (; it != theirs.end() && at < hi; ++it) {
            uint64_t rlo = it->vaddr(), rhi = rlo + it->nr_pages() * kPage;
            if (rhi <= at) continue;
            if (rlo > at || it->zero()) break;
            at = rhi;
        }
        if (at < hi)
            return error_code(EINVAL, "{}: inherited page {:#x} has no data in parent {} (image is corrupt)", where, at,
                              parent->pid);
    }
    return ok();
}

Result<void> restore_memory_layout(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const image::MmCore& mm = t.mm;
    const pid_t pid = t.pid;
    const pid_t host = t.host;

    // 0. THP disable first, as it decides how the pages written below are backed; set either
    // way, as the process has the engine's (or its parent's) until now.
    uint64_t thp_flags = mm.thp_disabled() && mm.thp_disabled_except_advised() ? kThpDisableExceptAdvised : 0;
    int64_t thp = CKPT_TRY(rt.syscall(SYS_prctl, {PR_SET_THP_DISABLE, mm.thp_disabled() ? 1u : 0u, thp_flags}));
    if (thp == -EINVAL && thp_flags)
        return error_code(EINVAL, "pid {}: THP disabled except where advised needs linux 6.18 or later", pid);
    if (thp < 0) return sys_error_code(static_cast<int>(-thp), fmt::format("pid {}: prctl(PR_SET_THP_DISABLE)", pid));

    // 1. Drop everything the process inherited from the engine (or its parent) but the
    // trampoline, the vDSO and the mappings it shares pages with its parent in (inherited):
    // of a mapping that overlaps those, only the rest goes.
    std::vector<std::pair<uint64_t, uint64_t>> kept;
    for (const auto& v : mm.vmas())
        if (v.inherited()) kept.emplace_back(v.start(), v.end());
    auto current = CKPT_TRY(read_maps(host));
    for (auto [lo, hi] : kept) {
        uint64_t covered = 0;
        for (const auto& m : current) covered += m.end > lo && m.start < hi ? std::min(m.end, hi) - std::max(m.start, lo) : 0;
        if (covered != hi - lo)
            return error("pid {}: mapping {:#x}-{:#x} was not inherited from its parent", pid, lo, hi);
    }
    // The calls of steps 1, 3 and 4 that need nothing from the ones before them run in
    // batches (syscall_batch.h): each injected call alone is a round trip through ptrace, and
    // a tree's processes are made one after another.
    SyscallBatch batch(rt, t.scratch, t.batch_code());
    const std::string ctx_pid = fmt::format("pid {}", pid);
    auto drop = [&](uint64_t lo, uint64_t hi) {
        for (auto [klo, khi] : kept) {  // in address order
            if (khi <= lo || klo >= hi) continue;
            if (klo > lo) batch.add("munmap", SYS_munmap, {lo, klo - lo}, ctx_pid);
            lo = std::max(lo, khi);
        }
        if (lo < hi) batch.add("munmap", SYS_munmap, {lo, hi - lo}, ctx_pid);
    };
    // Mappings next to each other in maps (only holes between them) go with one munmap.
    std::map<image::Vma::Kind, ProcMapping> vdso_now;
    std::optional<std::pair<uint64_t, uint64_t>> run;
    auto flush = [&]() -> Result<void> {
        if (run) drop(run->first, run->second);
        run.reset();
        return ok();
    };
    for (const auto& m : current) {
        auto kind = classify(m);
        if (is_vdso_part(kind)) {
            CKPT_TRY(flush());
            vdso_now[kind] = m;
            continue;
        }
        if (kind == image::Vma::VSYSCALL) {
            CKPT_TRY(flush());
            continue;
        }
        if (m.start <= t.trampoline && t.trampoline < m.end) {
            if (m.start != t.trampoline || m.end != t.trampoline + RestoreTask::kTrampolineSize)
                return error("pid {}: trampoline {:#x} merged into mapping {:#x}-{:#x}", pid, t.trampoline, m.start, m.end);
            CKPT_TRY(flush());
            continue;
        }
        logger()->trace("pid {}: dropping inherited mapping {:#x}-{:#x} {}", pid, m.start, m.end, m.path);
        if (run) run->second = m.end;
        else run.emplace(m.start, m.end);
    }
    CKPT_TRY(flush());

    // 2. Move the vDSO and its data pages to where the process had them. Each moves to a
    // free spot first (free both now and in the image's layout, a page apart from the
    // others), so that old and new places may overlap; in the same batch as step 1.
    std::vector<const image::Vma*> vdso_want;
    for (const auto& v : mm.vmas())
        if (is_vdso_part(v.kind()))
            vdso_want.push_back(&v);
    for (const image::Vma* v : vdso_want) {
        auto it = vdso_now.find(v->kind());
        if (it == vdso_now.end())
            return error("pid {}: the image has a {} mapping that this kernel does not provide", pid, v->name());
        if (it->second.end - it->second.start != v->end() - v->start())
            return error("pid {}: {} is {} bytes here but was {} at dump (kernel changed?)", pid, v->name(),
                         it->second.end - it->second.start, v->end() - v->start());
    }
    uint64_t parking_size = 0;
    for (const image::Vma* v : vdso_want) parking_size += v->end() - v->start() + kPage;
    std::vector<std::pair<uint64_t, uint64_t>> taken;
    for (const auto& m : current) taken.emplace_back(m.start, m.end);
    for (const auto& v : mm.vmas()) taken.emplace_back(v.start(), v.end());
    uint64_t park = vdso_want.empty() ? 0 : find_hole(std::move(taken), parking_size);
    if (!vdso_want.empty() && !park) return error("pid {}: no free address range to move the vDSO through", pid);
    std::vector<std::pair<uint64_t, const image::Vma*>> parked;
    for (const image::Vma* v : vdso_want) {
        const auto& now = vdso_now[v->kind()];
        uint64_t len = now.end - now.start;
        batch.add("mremap(vdso)", SYS_mremap, {now.start, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, park}, ctx_pid, park);
        parked.emplace_back(park, v);
        park += len + kPage;
    }
    for (auto [at, v] : parked) {
        uint64_t len = v->end() - v->start();
        batch.add("mremap(vdso)", SYS_mremap, {at, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, v->start()}, ctx_pid,
                  v->start());
    }
    // Any vDSO part the image did not have (an older kernel) goes away.
    for (auto& [kind, m] : vdso_now) {
        bool wanted = std::any_of(vdso_want.begin(), vdso_want.end(), [&](auto* v) { return v->kind() == kind; });
        if (!wanted) batch.add("munmap", SYS_munmap, {m.start, m.end - m.start}, ctx_pid);
    }
    CKPT_TRY(batch.flush());

    // 3. Map every recorded mapping. Writable first where pages must be filled in.
    // A private anonymous mapping right after another one was a mapping of its own (the
    // kernel had not merged them: one was moved by mremap, say). Mapped in place, it would
    // be merged into its neighbour: one mapping where there were two (maps, and an mremap
    // across both that failed would succeed). It is mapped elsewhere, given its anon_vma by
    // a write (a mapping never written takes the page offset of wherever it is moved to),
    // moved into place, which keeps a page offset that does not continue its neighbour's,
    // and the page written is dropped again.
    const image::Vma* prev = nullptr;
    for (const auto& v : mm.vmas()) {
        const image::Vma* before = std::exchange(prev, &v);
        if (kernel_mapped(v.kind())) continue;
        uint64_t len = v.end() - v.start();
        uint32_t prot = v.prot() | (v.has_pages() ? PROT_WRITE : 0);
        const std::string ctx = mapping_context(pid, v);
        if (v.inherited()) {
            // The parent's mapping, kept: its own protection, and every page but those still
            // shared with the parent dropped (its own data is written below; what it never
            // had reads as zero, or as the file).
            batch.add("mprotect", SYS_mprotect, {v.start(), len, prot}, ctx);
            uint64_t at = v.start();
            auto forget = [&](uint64_t to) {
                if (to > at) batch.add("madvise(MADV_DONTNEED)", SYS_madvise, {at, to - at, MADV_DONTNEED}, ctx);
            };
            for (const auto& run : t.pagemap.runs()) {
                if (!run.inherited() || run.vaddr() < v.start() || run.vaddr() >= v.end()) continue;
                forget(run.vaddr());
                at = run.vaddr() + run.nr_pages() * kPage;
            }
            forget(v.end());
            continue;
        }
        if (v.sysv_shm()) {
            CKPT_TRY(batch.flush());
            // A System V segment of the tree's IPC namespace (made by ipc_ns.cpp), attached
            // whole, as it was; then given the protection the process had set.
            const uint32_t exec = v.prot() & PROT_EXEC;
            uint64_t shmflg = SHM_REMAP | (v.shm_rdonly() ? SHM_RDONLY : 0) | (exec ? SHM_EXEC : 0);
            int64_t got = CKPT_TRY_CTX(rt.syscall_ok("shmat", SYS_shmat,
                                                      {static_cast<uint64_t>(static_cast<uint32_t>(v.shm_id())),
                                                       v.start(), shmflg}),
                                       "pid {}: System V segment id {} at {:#x}", pid, v.shm_id(), v.start());
            if (static_cast<uint64_t>(got) != v.start())
                return error("pid {}: shmat placed segment id {} at {:#x}, not {:#x}", pid, v.shm_id(), got, v.start());
            const uint32_t given = PROT_READ | (v.shm_rdonly() ? 0 : PROT_WRITE) | exec;
            if (given != v.prot())
                CKPT_TRY_CTX(rt.syscall_ok("mprotect", SYS_mprotect, {v.start(), len, v.prot()}),
                             "pid {}: System V segment id {} at {:#x}", pid, v.shm_id(), v.start());
            continue;
        }
        uint32_t flags = (v.flags() & (MAP_SHARED | MAP_PRIVATE | kMapDroppable | MAP_GROWSDOWN | MAP_NORESERVE)) | MAP_FIXED;
        int64_t target_fd = -1;
        if (v.kind() == image::Vma::ANON) {
            flags |= MAP_ANONYMOUS;
        } else {
            target_fd = CKPT_TRY_CTX(t.mapping_fd(v), "{} ({})", ctx, v.name());
        }
        uint64_t pgoff = v.kind() == image::Vma::ANON ? 0 : v.pgoff();
        // (Only where nothing else keeps the two apart: same protection, flags and advice.)
        bool apart = v.kind() == image::Vma::ANON && !(v.flags() & MAP_GROWSDOWN) && before &&
                     before->end() == v.start() && before->kind() == image::Vma::ANON &&
                     before->prot() == v.prot() && before->flags() == v.flags() && before->madvise() == v.madvise();
        if (apart) {
            CKPT_TRY(batch.flush());
            // Writable while it is written (no forced write through /proc/PID/mem needed).
            const uint32_t tmp_prot = prot | PROT_READ | PROT_WRITE;
            int64_t tmp = CKPT_TRY_CTX(rt.syscall_ok("mmap", SYS_mmap,
                                                      {0, len, tmp_prot, flags & ~MAP_FIXED, static_cast<uint64_t>(-1), 0}),
                                       "{} ({})", ctx, v.name());
            const char zero = 0;
            CKPT_TRY_CTX(write_remote(host, static_cast<uint64_t>(tmp), &zero, 1), "{}", ctx);
            int64_t got = CKPT_TRY_CTX(rt.syscall_ok("mremap", SYS_mremap,
                                                      {static_cast<uint64_t>(tmp), len, len,
                                                       MREMAP_MAYMOVE | MREMAP_FIXED, v.start()}),
                                       "{} ({})", ctx, v.name());
            if (static_cast<uint64_t>(got) != v.start())
                return error("pid {}: mremap placed {:#x} at {:#x}", pid, v.start(), got);
            CKPT_TRY_CTX(rt.syscall_ok("madvise(MADV_DONTNEED)", SYS_madvise, {v.start(), kPage, MADV_DONTNEED}),
                         "{}", ctx);
            if (tmp_prot != prot)
                CKPT_TRY_CTX(rt.syscall_ok("mprotect", SYS_mprotect, {v.start(), len, prot}),
                             "{}", ctx);
            continue;
        }
        // (MAP_FIXED: placed where asked or failed; the result is checked all the same.)
        batch.add("mmap", SYS_mmap, {v.start(), len, prot, flags, static_cast<uint64_t>(target_fd), pgoff},
                  fmt::format("{} ({})", ctx, v.name()), v.start());
    }
    // The mapped files' fds are used by the mmaps queued above.
    CKPT_TRY(batch.flush());
    CKPT_TRY(t.close_mapping_fds());

    // 4. madvise flags first, so that huge pages are used where the process asked for them.
    for (const auto& v : mm.vmas()) {
        if (kernel_mapped(v.kind())) continue;
        static const std::pair<uint32_t, int> advice[] = {{kHugepage, MADV_HUGEPAGE},
                                                          {kNoHugepage, MADV_NOHUGEPAGE},
                                                          {kDontFork, MADV_DONTFORK},
                                                          {kWipeOnFork, MADV_WIPEONFORK},
                                                          {kDontDump, MADV_DONTDUMP},
                                                          {kSequential, MADV_SEQUENTIAL},
                                                          {kRandom, MADV_RANDOM},
                                                          {kMergeable, MADV_MERGEABLE}};
        for (auto [bit, adv] : advice)
            if (v.madvise() & bit)
                batch.add("madvise", SYS_madvise, {v.start(), v.end() - v.start(), static_cast<uint64_t>(adv)},
                          mapping_context(pid, v));
    }
    CKPT_TRY(batch.flush());
    // 5. Page data: restore_memory_pages, on any thread (no ptrace request is made).
    return ok();
}

bool keeps_parent_mappings(const image::MmCore& mm) {
    return std::any_of(mm.vmas().begin(), mm.vmas().end(), [](const image::Vma& v) { return v.inherited(); });
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> leave_out_of_fork(RestoreTask& parent, const image::MmCore& child) {
    std::vector<std::pair<uint64_t, uint64_t>> left_out;
    const auto& vmas = parent.mm.vmas();
    // What the child inherits (usually nothing or a few ranges), sorted and merged once: each
    // parent mapping is then looked up, not compared with every mapping of the child.
    std::vector<std::pair<uint64_t, uint64_t>> kept;
    for (const image::Vma& c : child.vmas())
        if (c.inherited()) kept.emplace_back(c.start(), c.end());
    std::sort(kept.begin(), kept.end());
    size_t merged = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
        auto& last = kept[merged ? merged - 1 : 0];
        if (merged && kept[i].first <= last.second) last.second = std::max(last.second, kept[i].second);
        else kept[merged++] = kept[i];
    }
    kept.resize(merged);
    auto kept_by_child = [&](const image::Vma& v) {
        // The last range that starts before v ends: the only one that can reach into v.
        auto it = std::lower_bound(kept.begin(), kept.end(), v.end(), [](const auto& r, uint64_t at) { return r.first < at; });
        return it != kept.begin() && std::prev(it)->second > v.start();
    };
    auto out_of_forks = [](const image::Vma& v) { return (v.madvise() & kDontFork) != 0; };
    SyscallBatch batch(*parent.leader, parent.scratch, parent.batch_code());
    for (int i = 0; i < vmas.size(); ++i) {
        const image::Vma& v = vmas[i];
        if (kernel_mapped(v.kind()) || v.sysv_shm() || out_of_forks(v) || kept_by_child(v)) continue;
        if (i > 0 && vmas[i - 1].end() == v.start() && out_of_forks(vmas[i - 1])) continue;
        if (i + 1 < vmas.size() && vmas[i + 1].start() == v.end() && out_of_forks(vmas[i + 1])) continue;
        batch.add("madvise(MADV_DONTFORK)", SYS_madvise, {v.start(), v.end() - v.start(), MADV_DONTFORK},
                  mapping_context(parent.pid, v));
        left_out.emplace_back(v.start(), v.end());
    }
    CKPT_TRY(batch.flush());
    return left_out;
}

Result<void> put_back_into_fork(RestoreTask& parent, const std::vector<std::pair<uint64_t, uint64_t>>& left_out) {
    SyscallBatch batch(*parent.leader, parent.scratch, parent.batch_code());
    for (auto [lo, hi] : left_out)
        batch.add("madvise(MADV_DOFORK)", SYS_madvise, {lo, hi - lo, MADV_DOFORK},
                  fmt::format("pid {}: mapping {:#x}-{:#x}", parent.pid, lo, hi));
    return batch.flush();
}

Result<void> restore_memory_finish(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const image::MmCore& mm = t.mm;
    const pid_t pid = t.pid;
    // Steps 5b to 6b in batches (syscall_batch.h), in the order given.
    SyscallBatch batch(rt, t.scratch, t.batch_code());

    // 5b. Guard pages, where nothing was written.
    for (const auto& v : mm.vmas()) {
        for (const auto& g : v.guards()) {
            if (g.vaddr() < v.start() || g.nr_pages() > (v.end() - g.vaddr()) / kPage)
                return error_code(EINVAL, "pid {}: guard pages {:#x} outside mapping {:#x}-{:#x} (image is corrupt)", pid,
                                  g.vaddr(), v.start(), v.end());
            batch.add("madvise(MADV_GUARD_INSTALL)", SYS_madvise,
                      {g.vaddr(), g.nr_pages() * kPage, static_cast<uint64_t>(kMadvGuardInstall)},
                      fmt::format("pid {}: guard pages at {:#x} in mapping {:#x}-{:#x}", pid, g.vaddr(), v.start(),
                                  v.end()));
        }
    }

    // 6. Final protections.
    for (const auto& v : mm.vmas()) {
        if (kernel_mapped(v.kind())) continue;
        if (v.has_pages() && !(v.prot() & PROT_WRITE))
            batch.add("mprotect", SYS_mprotect, {v.start(), v.end() - v.start(), v.prot()}, mapping_context(pid, v));
    }

    // 6b. Locks, then seals: nothing may change a sealed mapping after this.
    for (const auto& v : mm.vmas()) {
        if (kernel_mapped(v.kind())) continue;
        if ((v.madvise() & kLocked) && (v.madvise() & kLockOnFault))
            batch.add("mlock2(MLOCK_ONFAULT)", SYS_mlock2, {v.start(), v.end() - v.start(), kMlockOnFault},
                      mapping_context(pid, v));
        else if (v.madvise() & kLocked)
            batch.add("mlock", SYS_mlock, {v.start(), v.end() - v.start()}, mapping_context(pid, v));
    }
    for (const auto& v : mm.vmas()) {
        if (kernel_mapped(v.kind())) continue;
        if (v.madvise() & kSealed)
            batch.add("mseal", kSysMseal, {v.start(), v.end() - v.start(), 0}, mapping_context(pid, v));
    }
    CKPT_TRY(batch.flush());

    // 7. mm fields and the exe link.
    prctl_mm_map map{};
    map.start_code = mm.start_code();
    map.end_code = mm.end_code();
    map.start_data = mm.start_data();
    map.end_data = mm.end_data();
    map.start_brk = mm.start_brk();
    map.brk = mm.brk();
    map.start_stack = mm.start_stack();
    map.arg_start = mm.arg_start();
    map.arg_end = mm.arg_end();
    map.env_start = mm.env_start();
    map.env_end = mm.env_end();
    auto s = t.scratch.scope();
    uint64_t auxv_at = CKPT_TRY_CTX(s.put(mm.auxv().data(), mm.auxv().size()), "pid {}: auxv", pid);
    map.auxv = reinterpret_cast<__u64*>(auxv_at);
    map.auxv_size = static_cast<uint32_t>(mm.auxv().size());
    // (Closed right after: close-on-exec may stay set.)
    map.exe_fd = static_cast<uint32_t>(
        CKPT_TRY_CTX(t.install_file(mm.exe_file_id(), O_RDONLY, -1, true), "pid {}: exe", pid));
    uint64_t map_at = CKPT_TRY(s.put(map));
    CKPT_TRY_CTX(rt.syscall_ok("prctl(PR_SET_MM_MAP)", SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, map_at, sizeof map}),
                 "pid {}", pid);
    CKPT_TRY(rt.syscall_ok("close", SYS_close, {static_cast<uint64_t>(map.exe_fd)}));
    return ok();
}

}  // namespace ckpt::engine
