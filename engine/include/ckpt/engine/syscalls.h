// System calls and kernel constants newer than Debian 12's headers (linux 6.1), or
// without a glibc wrapper there.
#pragma once

#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace ckpt::engine {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

inline int sys_pidfd_open(pid_t pid, unsigned flags) { return static_cast<int>(syscall(SYS_pidfd_open, pid, flags)); }
inline int sys_pidfd_getfd(int pidfd, int fd, unsigned flags) {
    return static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, flags));
}
inline long sys_clone3(clone_args* args, size_t size) { return syscall(SYS_clone3, args, size); }
// fork() into a chosen pid of the caller's pid namespace (clone3 with set_tid); returns as
// fork does. Raw system call only, so fit for a copy of the engine about to be replaced.
inline long sys_fork_with_pid(pid_t pid) {
    clone_args args{};
    args.exit_signal = SIGCHLD;
    args.set_tid = reinterpret_cast<uint64_t>(&pid);
    args.set_tid_size = 1;
    return sys_clone3(&args, sizeof args);
}

inline constexpr int kPtraceGetRseqConfiguration = 0x420f;

// PAGEMAP_SCAN (linux 6.7), from include/uapi/linux/fs.h.
struct PageRegion {
    uint64_t start, end, categories;
};
struct PmScanArg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
        category_anyof_mask, return_mask;
};
inline constexpr uint64_t kPageIsWpOnly = 1ull << 0;
inline constexpr uint64_t kPageIsWritten = 1ull << 1;
inline constexpr uint64_t kPageIsFile = 1ull << 2;
inline constexpr uint64_t kPageIsPresent = 1ull << 3;
inline constexpr uint64_t kPageIsSwapped = 1ull << 4;
inline constexpr uint64_t kPageIsPfnZero = 1ull << 5;
inline constexpr uint64_t kPageIsHuge = 1ull << 6;
// _IOWR('f', 16, struct pm_scan_arg)
inline constexpr unsigned long kPagemapScan = (3ul << 30) | (sizeof(PmScanArg) << 16) | ('f' << 8) | 16;

}  // namespace ckpt::engine
