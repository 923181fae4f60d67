// Incremental dumps, the dump's side (see mem_track.h).
//
// Why a tracker's record identifies the dump it was last armed by: a tracker is a userfaultfd
// (its own inode, never reused while it lives) at an fd number that moves strictly down each
// time the tracker is re-armed. A dump finds the tracker its parent recorded only at that
// fd, of that inode: after any later re-arm it is elsewhere (or gone), so a parent older than
// the last re-arm is never taken for the one whose write-protection holds. The move is made
// before anything is re-armed, so a dump that fails afterwards leaves no record that matches.
#include "mem_track.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "dump_context.h"
#include "proc.h"
#include "ptrace_ctl.h"

namespace ckpt::engine {
namespace {

// UFFD_FEATURE_WP_UNPOPULATED (linux 6.4) and UFFD_FEATURE_WP_ASYNC (linux 6.7): writes
// resolve the protection themselves (no fault to handle), and PAGEMAP_SCAN tells them.
constexpr uint64_t kWpUnpopulated = 1ull << 13;
constexpr uint64_t kWpAsync = 1ull << 15;
constexpr uint64_t kTrackFeatures = kWpUnpopulated | kWpAsync;
constexpr uint64_t kFeatureInitialized = 1ull << 31;  // the kernel's own mark, in fdinfo
constexpr uint64_t kScanWpMatching = 1, kScanCheckWpAsync = 2;  // PM_SCAN_* flags
// A tracker's fd stays at or above this (moving down one number per dump), then is renewed.
constexpr int kLowestTrackerFd = 64;
constexpr int kHighestTrackerFd = (1 << 20) - 1;

// The highest fd number below `below` (and not below kLowestTrackerFd) that pid has free.
int highest_free_fd(const std::set<int>& used, int below) {
    for (int fd = below - 1; fd >= kLowestTrackerFd; --fd)
        if (!used.count(fd)) return fd;
    return -1;
}

Result<std::set<int>> fds_of(pid_t pid) {
    auto list = CKPT_TRY(read_numbered_dir(proc_path(pid, "fd")));
    return std::set<int>(list.begin(), list.end());
}

Result<void> uffd_range_ioctl(int uffd, unsigned long req, uint64_t start, uint64_t len, uint64_t mode) {
    if (req == UFFDIO_REGISTER) {
        uffdio_register reg{};
        reg.range = {start, len};
        reg.mode = mode;
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return sys_error("UFFDIO_REGISTER {:#x}+{:#x}", start, len);
    } else if (req == UFFDIO_UNREGISTER) {
        uffdio_range r{start, len};
        if (ioctl(uffd, UFFDIO_UNREGISTER, &r) != 0) return sys_error("UFFDIO_UNREGISTER {:#x}+{:#x}", start, len);
    } else {
        uffdio_writeprotect wp{};
        wp.range = {start, len};
        wp.mode = mode;
        if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) return sys_error("UFFDIO_WRITEPROTECT {:#x}+{:#x}", start, len);
    }
    return ok();
}

}  // namespace

Result<std::set<int>> find_trackers(pid_t pid, const std::set<uint64_t>& tracker_inos) {
    std::set<int> out;
    for (int fd : CKPT_TRY(read_numbered_dir(proc_path(pid, "fd")))) {
        const std::string path = proc_path(pid, "fd/") + std::to_string(fd);
        auto link = read_link(path);
        if (!link || *link != "anon_inode:[userfaultfd]") continue;
        std::string info = CKPT_TRY_CTX(read_file(proc_path(pid, "fdinfo/") + std::to_string(fd)), "pid {}: fd {}", pid, fd);
        bool tracker_like = false;
        for (auto line : split(info, '\n')) {
            if (!starts_with(line, "API:")) continue;
            unsigned long long api = 0, features = 0, ioctls = 0;
            std::string l(trim(line.substr(4)));
            if (std::sscanf(l.c_str(), "%llx:%llx:%llx", &api, &features, &ioctls) == 3 &&
                (features & ~kFeatureInitialized) == kTrackFeatures)
                tracker_like = true;
        }
        if (!tracker_like) continue;  // the fd table refuses it as an unsupported kind
        struct stat st{};
        if (stat(path.c_str(), &st) != 0) return sys_error("pid {}: fd {}: stat", pid, fd);
        if (!tracker_inos.count(st.st_ino))
            return error_code(ENOTSUP, "pid {}: fd {}: a userfaultfd in asynchronous write-protect mode that the dump "
                                       "named with --prev-images-dir did not record (the application's own, or a write "
                                       "tracker of another dump --track-mem: name that dump): refused",
                              pid, fd);
        out.insert(fd);
    }
    return out;
}

Result<void> prepare_tracker(pid_t pid, RemoteThread& leader, const std::set<int>& trackers, bool seccomp,
                             MemTrack* t, std::set<int>* engine_fds) {
    *engine_fds = trackers;
    int keep = -1;
    uint64_t keep_ino = 0;
    if (t->prev && t->prev->mm.tracker_fd() > 0) {
        const int f = t->prev->mm.tracker_fd();
        struct stat st{};
        std::string path = proc_path(pid, "fd/") + std::to_string(f);
        if (trackers.count(f) && stat(path.c_str(), &st) == 0 && st.st_ino == t->prev->mm.tracker_ino()) {
            keep = f;
            keep_ino = st.st_ino;
        } else {
            logger()->debug("pid {}: the write tracker of the previous dump (fd {}) is gone or replaced: its pages "
                            "are saved whole", pid, f);
        }
    } else if (t->prev) {
        logger()->debug("pid {}: no write tracker in the previous dump: its pages are saved whole", pid);
    }
    UniqueFd pidfd(sys_pidfd_open(pid, 0));
    if (!pidfd) return sys_error("pid {}: pidfd_open", pid);
    if (keep >= 0) {
        t->uffd = UniqueFd(sys_pidfd_getfd(pidfd.get(), keep, 0));
        if (!t->uffd) return sys_error("pid {}: pidfd_getfd of its write tracker (fd {})", pid, keep);
        t->since_prev = true;
    }
    if (!t->rearm) return ok();  // left as it is: the previous dump stays the one to compare with
    if (seccomp)
        return error_code(ENOTSUP, "pid {}: --track-mem makes a userfaultfd inside the process, which its seccomp "
                                   "filter may forbid: refused", pid);

    // Trackers other than the one kept (an older chain's, or one inherited from a parent by
    // fork): closed in the process.
    for (int f : trackers) {
        if (f == keep) continue;
        logger()->debug("pid {}: closing a stale write tracker at fd {}", pid, f);
        CKPT_TRY_CTX(leader.syscall_ok("close(stale tracker)", SYS_close, {static_cast<uint64_t>(f)}), "pid {}", pid);
        engine_fds->erase(f);
    }
    std::set<int> used = CKPT_TRY(fds_of(pid));
    if (keep >= 0) {
        const int to = highest_free_fd(used, keep);
        if (to >= 0)
            CKPT_TRY_CTX(leader.syscall_ok("dup3(tracker)", SYS_dup3,
                                           {static_cast<uint64_t>(keep), static_cast<uint64_t>(to), O_CLOEXEC}),
                         "pid {}", pid);
        // The old number goes: the record of the previous dump matches no more.
        CKPT_TRY_CTX(leader.syscall_ok("close(tracker)", SYS_close, {static_cast<uint64_t>(keep)}), "pid {}", pid);
        engine_fds->erase(keep);
        used.erase(keep);
        if (to >= 0) {
            t->fd = to;
            t->ino = keep_ino;
            engine_fds->insert(to);
            return ok();
        }
        logger()->debug("pid {}: no lower fd left for its write tracker: a new one is made", pid);
    }
    // A new tracker, made inside the process (a userfaultfd belongs to its maker's mm).
    // UFFD_USER_MODE_ONLY: what an unprivileged process may make where the
    // vm.unprivileged_userfaultfd sysctl is 0 (a job's process under Slurm). It changes
    // nothing for the tracker: with UFFD_FEATURE_WP_ASYNC the kernel resolves every
    // write-protect fault itself (do_wp_page, the pte markers of unpopulated pages), from
    // user or kernel mode alike, and never hands one to the userfaultfd.
    int64_t made = CKPT_TRY(leader.syscall(SYS_userfaultfd, {O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY}));
    if (made < 0)
        return sys_error_code(static_cast<int>(-made), fmt::format("pid {}: --track-mem: userfaultfd() in the process", pid));
    UniqueFd copy(sys_pidfd_getfd(pidfd.get(), static_cast<int>(made), 0));
    int err = errno;
    auto close_made = [&] { return leader.syscall_ok("close(userfaultfd)", SYS_close, {static_cast<uint64_t>(made)}); };
    if (!copy) {
        CKPT_TRY(close_made());
        return sys_error_code(err, fmt::format("pid {}: pidfd_getfd of its new write tracker", pid));
    }
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = kTrackFeatures;
    if (ioctl(copy.get(), UFFDIO_API, &api) != 0 || (api.features & kTrackFeatures) != kTrackFeatures) {
        CKPT_TRY(close_made());
        return error_code(ENOTSUP, "pid {}: --track-mem: this kernel's userfaultfd lacks asynchronous write-protect "
                                   "(UFFD_FEATURE_WP_ASYNC and WP_UNPOPULATED, linux 6.7)", pid);
    }
    // Its RLIMIT_NOFILE from /proc (prlimit on another user's process needs
    // CAP_SYS_RESOURCE, which root may lack: the fd would then be beyond the limit).
    int top = kHighestTrackerFd;
    auto limits = read_limits(pid);
    if (!limits) {
        CKPT_TRY(close_made());
        return std::move(limits).error().context("pid {}: --track-mem: its fd limit", pid);
    }
    for (const Limit& l : *limits)
        if (l.resource == RLIMIT_NOFILE && l.cur < static_cast<uint64_t>(top)) top = static_cast<int>(l.cur) - 1;
    used.insert(static_cast<int>(made));
    int to = highest_free_fd(used, top + 1);
    if (to < 0) {
        CKPT_TRY(close_made());
        return error_code(EMFILE, "pid {}: --track-mem: no free fd between {} and its limit {} for the write tracker",
                          pid, kLowestTrackerFd, top);
    }
    auto moved = leader.syscall_ok("dup3(tracker)", SYS_dup3,
                                   {static_cast<uint64_t>(made), static_cast<uint64_t>(to), O_CLOEXEC});
    CKPT_TRY(close_made());  // on failure too: no tracker is left behind that no image records
    if (!moved) return std::move(moved).error().context("pid {}", pid);
    struct stat st{};
    if (fstat(copy.get(), &st) != 0) return sys_error("pid {}: fstat of its write tracker", pid);
    t->fd = to;
    t->ino = st.st_ino;
    t->made = true;
    engine_fds->insert(to);
    if (t->since_prev) t->next = std::move(copy);
    else t->uffd = std::move(copy);
    return ok();
}

Result<uint64_t> written_scan_flags(MemTrack& t, pid_t pid, uint64_t start, uint64_t end,
                                    image::Vma::Kind kind, const std::string& name, uint64_t pgoff) {
    if (!t.since_prev || !t.uffd) return uint64_t{0};
    // The same mapping as in the previous dump: inside mappings of the same kind, name and
    // offset there, end to end (an mprotect may have split or merged them since).
    bool same = false;
    uint64_t at = start;
    for (const auto& v : t.prev->mm.vmas()) {
        if (v.end() <= at) continue;
        if (v.start() > at || v.kind() != kind || v.name() != name || v.sysv_shm() || (v.flags() & MAP_SHARED)) break;
        if (kind == image::Vma::FILE && v.pgoff() + (at - v.start()) != pgoff + (at - start)) break;
        at = v.end();
        if (at >= end) {
            same = true;
            break;
        }
    }
    if (!same) {
        logger()->debug("pid {}: mapping {:#x}-{:#x} is not the previous dump's: saved whole", pid, start, end);
        return uint64_t{0};
    }
    // Registered with this tracker (registering again with the same one is allowed; with
    // another userfaultfd's, EBUSY).
    if (auto r = uffd_range_ioctl(t.uffd.get(), UFFDIO_REGISTER, start, end - start, UFFDIO_REGISTER_MODE_WP); !r) {
        logger()->debug("pid {}: mapping {:#x}-{:#x} is not its tracker's ({}): saved whole", pid, start, end,
                        r.error().message());
        return uint64_t{0};
    }
    // CHECK_WPASYNC: the scan fails (EPERM) on a mapping not write-protected asynchronously.
    return uint64_t{kScanCheckWpAsync | (t.rearm && !t.next ? kScanWpMatching : 0)};
}

Result<void> arm_mapping(MemTrack& t, pid_t pid, uint64_t start, uint64_t end, bool tracked,
                         const std::vector<std::pair<uint64_t, uint64_t>>& populated) {
    if (!t.rearm) return ok();
    if (tracked && !t.next) return ok();  // re-armed by the scan of what was written
    if (tracked) (void)uffd_range_ioctl(t.uffd.get(), UFFDIO_UNREGISTER, start, end - start, 0);
    const int uffd = t.arm_fd();
    if (auto r = uffd_range_ioctl(uffd, UFFDIO_REGISTER, start, end - start, UFFDIO_REGISTER_MODE_WP); !r) {
        logger()->debug("pid {}: mapping {:#x}-{:#x} not tracked ({}): the next dump saves it whole", pid, start, end,
                        r.error().message());
        return ok();
    }
    for (auto [lo, hi] : populated) {
        auto r = uffd_range_ioctl(uffd, UFFDIO_WRITEPROTECT, lo, hi - lo, UFFDIO_WRITEPROTECT_MODE_WP);
        if (r) continue;
        // Registered but not protected would read as not written: unregistered again.
        if (auto u = uffd_range_ioctl(uffd, UFFDIO_UNREGISTER, start, end - start, 0); !u)
            return std::move(u).error().context("pid {}: mapping {:#x}-{:#x} half armed", pid, start, end);
        logger()->debug("pid {}: mapping {:#x}-{:#x} not tracked ({}): the next dump saves it whole", pid, start, end,
                        r.error().message());
        return ok();
    }
    return ok();
}

}  // namespace ckpt::engine
