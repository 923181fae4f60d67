// pidfds: an fd naming a process of the tree (the process itself, a child, a zombie). It
// is recorded by the pid it names, as the tree sees it, and opened again with pidfd_open on
// the restored process, so it names the same process, not merely the same number.
#include <fcntl.h>

#include <cerrno>

#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_pidfd(const FdProbe& probe) { return probe.link == "anon_inode:[pidfd]"; }

// flags: the description's status flags.
Result<void> parse_pidfd(std::string_view fdinfo, uint32_t flags, image::PidFdState* out) {
    // PIDFD_THREAD (O_EXCL) names one thread: not restored yet.
    if (flags & O_EXCL) return error_code(ENOTSUP, "a pidfd of a single thread (PIDFD_THREAD) cannot be restored: refused");
    auto v = fdinfo_value(fdinfo, "Pid:");
    if (!v) return error("pidfd: no Pid line in fdinfo");
    auto n = parse_int(*v);
    if (!n) return error("pidfd: malformed Pid '{}'", *v);
    // -1: the process is gone, reaped; no restored process can be that one again.
    if (*n < 0)
        return error_code(ESRCH, "a pidfd of a process that has exited and been reaped: it cannot be restored: refused");
    if (*n == 0) return error_code(ENOTSUP, "a pidfd of a process outside the engine's pid namespace: refused");
    // The engine's number; record_tree_pids turns it into the tree's or refuses it.
    out->set_pid(static_cast<int32_t>(*n));
    return ok();
}

Result<UniqueFd> make_pidfd(const image::PidFdState& s, const RestoreShared& sh) {
    auto it = sh.hosts.find(s.pid());
    if (it == sh.hosts.end())
        return error_code(EINVAL, "pidfd: process {} is not in the images (image is corrupt)", s.pid());
    // Every process exists by now (zombies not yet reaped: their parents are the restore's).
    UniqueFd fd(sys_pidfd_open(it->second, 0));
    if (!fd) return sys_error("pidfd_open(process {})", s.pid());
    return fd;
}

Result<void> dump_pidfd(const FdProbe& probe, image::Fd* f) {
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    return parse_pidfd(CKPT_TRY(probe.fdinfo_text()), f->flags(), f->mutable_pidfd());
}

Result<void> restore_pidfd(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_pidfd(f.pidfd(), *t.shared); }, true);
}

}  // namespace

extern const FdKind kPidFdKind{
    .name = "pidfd",
    .image_kind = image::Fd::PIDFD,
    .claims = claims_pidfd,
    .dump = dump_pidfd,
    .restore = restore_pidfd,
};

}  // namespace ckpt::engine
