// Named pipes (FIFOs). A FIFO is found again by its name: the restore opens it by path (a
// deleted one is made again nameless), so a process outside the tree that has it open, or
// opens it later, is connected as before. The data queued in it is recorded when the tree
// holds a read end (read without taking it out) and put back unless the FIFO, kept open by
// someone else meanwhile, still holds exactly that data.
//
// The engine holds one O_RDWR open of each FIFO from before the first process is restored
// until every fd of it is in place: every end then opens without blocking (and without
// ENXIO), each as a description of its own reopened through /proc/self/fd with its own
// flags, as a pipe's ends are.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

constexpr std::string_view kDeleted = " (deleted)";

bool claims_fifo(const FdProbe& probe) {
    if (!starts_with(probe.link, "/") || (probe.info.flags & O_PATH)) return false;
    auto st = probe.stat_target();
    return st && S_ISFIFO(st->st_mode);
}

bool can_read(uint32_t flags) { return (flags & O_ACCMODE) != O_WRONLY; }

Result<void> dump_fifo(const FdProbe& probe, image::Fd* f) {
    struct stat st = CKPT_TRY(probe.stat_target());
    FdDumpState& state = *probe.state;
    auto& fifos = *state.files.table().mutable_fifos();
    auto [it, is_new] = state.fifos.try_emplace({static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)},
                                                fifos.size());
    if (is_new) {
        image::FifoEntry* e = fifos.Add();
        e->set_id(static_cast<uint64_t>(it->second) + 1);
        std::string path = probe.link;
        if (path.ends_with(kDeleted)) {
            path.resize(path.size() - kDeleted.size());
            e->set_deleted(true);
        }
        e->set_path(path);
        e->set_mode(st.st_mode & 07777);
        e->set_uid(st.st_uid);
        e->set_gid(st.st_gid);
    }
    image::FifoEntry& e = fifos[it->second];
    // A reader of the tree tells what is queued (pidfd_getfd: no open of the FIFO of our own,
    // which would wake a writer of the tree waiting in open() for a reader).
    if (!e.has_queued() && can_read(probe.info.flags)) {
        UniqueFd mine = CKPT_TRY(probe.take());
        int cap = fcntl(mine.get(), F_GETPIPE_SZ);
        e.set_capacity(cap > 0 ? static_cast<uint32_t>(cap) : 0);
        e.set_queued(CKPT_TRY(peek_pipe(mine.get())));
        e.set_has_queued(true);
    }
    f->set_fifo_id(e.id());
    f->set_description_id(CKPT_TRY(probe.description_id(st)));
    return ok();
}

// Opens the FIFO name in dirfd (AT_FDCWD: a path) O_RDWR, without blocking, having checked it
// is one first: the name is resolved O_PATH (its last component not followed) and only a
// FIFO is opened for real, so a device or file put in its place is never opened.
Result<UniqueFd> open_fifo_at(int dirfd, const std::string& name) {
    UniqueFd path(openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!path) return sys_error("open");
    struct stat st;
    if (fstat(path.get(), &st) != 0) return sys_error("fstat");
    if (!S_ISFIFO(st.st_mode)) return error_code(EEXIST, "it is no longer a FIFO (mode {:o})", st.st_mode);
    std::string self = "/proc/self/fd/" + std::to_string(path.get());
    UniqueFd fd(open(self.c_str(), O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!fd) return sys_error("open");
    return fd;
}

// A deleted FIFO made again under its old name (or a hidden one beside it when that is
// taken), opened, and its name removed at once: /proc names it "PATH (deleted)" as before.
Result<UniqueFd> make_deleted_fifo(const image::FifoEntry& e) {
    const std::string& path = e.path();
    size_t slash = path.rfind('/');
    if (slash == std::string::npos || slash + 1 == path.size())
        return error_code(EINVAL, "FIFO '{}': not an absolute path (image is corrupt)", path);
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    UniqueFd dirfd(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return sys_error("FIFO {} (deleted): its folder {}", path, dir);
    std::string name = path.substr(slash + 1);
    if (mkfifoat(dirfd.get(), name.c_str(), 0600) != 0) {
        if (errno != EEXIST) return sys_error("FIFO {} (deleted): mkfifo", path);
        name = fmt::format(".ckpt-fifo-{}-{}", getpid(), e.id());
        if (mkfifoat(dirfd.get(), name.c_str(), 0600) != 0)
            return sys_error("FIFO {} (deleted): mkfifo {}/{}", path, dir, name);
    }
    auto opened = open_fifo_at(dirfd.get(), name);
    unlinkat(dirfd.get(), name.c_str(), 0);
    UniqueFd fd = CKPT_TRY_CTX(std::move(opened), "FIFO {} (deleted), made again as {}/{}", path, dir, name);
    if (fchown(fd.get(), e.uid(), e.gid()) != 0)
        return sys_error("FIFO {} (deleted): giving it its owner {}:{} (fchown)", path, e.uid(), e.gid());
    if (fchmod(fd.get(), e.mode() & 07777) != 0)
        return sys_error("FIFO {} (deleted): giving it its mode {:o} (fchmod)", path, e.mode() & 07777);
    return fd;
}

// The FIFO at its recorded path: it must still be one (the last component not followed).
Result<UniqueFd> open_fifo(const image::FifoEntry& e) {
    auto fd = open_fifo_at(AT_FDCWD, e.path());
    if (!fd && fd.error().code() == ENOENT) return error_code(ENOENT, "FIFO {}: it no longer exists", e.path());
    return CKPT_TRY_CTX(std::move(fd), "FIFO {}", e.path());
}

Result<void> make_fifos(RestoreShared& sh) {
    for (const auto& e : sh.files.fifos()) {
        if (e.id() == 0 || sh.fifos.count(e.id())) return error_code(EINVAL, "FIFO id {} twice or zero (image is corrupt)", e.id());
        UniqueFd fd = CKPT_TRY(e.deleted() ? make_deleted_fifo(e) : open_fifo(e));
        if (e.capacity() && fcntl(fd.get(), F_SETPIPE_SZ, e.capacity()) < 0)
            logger()->warn("FIFO {}: cannot set capacity {}: {}", e.path(), e.capacity(), strerror(errno));
        if (e.has_queued()) {
            // Kept open elsewhere since the dump, it may still hold what it held then (the
            // tree was killed, not the other holder): put back only into an empty FIFO.
            int queued = 0;
            if (ioctl(fd.get(), FIONREAD, &queued) != 0) return sys_error("FIFO {}: FIONREAD", e.path());
            if (queued > 0) {
                std::string now = CKPT_TRY(peek_pipe(fd.get()));
                if (now != e.queued())
                    return error_code(EBUSY,
                                      "FIFO {}: another process has it open and {} bytes other than the {} recorded are "
                                      "queued in it; refused",
                                      e.path(), now.size(), e.queued().size());
            } else {
                CKPT_TRY_CTX(write_all(fd.get(), e.queued().data(), e.queued().size()), "FIFO {}: queued data", e.path());
            }
        }
        sh.fifos.emplace(e.id(), std::move(fd));
    }
    return ok();
}

Result<void> restore_fifo(RestoreTask& t, const image::Fd& f) {
    auto it = t.shared->fifos.find(f.fifo_id());
    if (it == t.shared->fifos.end()) return error("FIFO {} missing from the images", f.fifo_id());
    auto reopen = [&]() -> Result<UniqueFd> {
        // Without blocking: the engine's open is a reader and a writer.
        int flags = static_cast<int>(f.flags() & ~kLateFlags) & ~(O_CREAT | O_TRUNC | O_EXCL);
        std::string self = "/proc/self/fd/" + std::to_string(it->second.get());
        UniqueFd fd(open(self.c_str(), flags | O_NONBLOCK | O_CLOEXEC));
        if (!fd) return sys_error("FIFO: reopening (flags {:o})", flags);
        return fd;
    };
    return install_description(t, f, reopen, true);
}

// Every end is in place: the engine's own open goes, or a reader would never see end of file.
Result<void> close_fifos(RestoreShared& sh) {
    sh.fifos.clear();
    return ok();
}

}  // namespace

extern const FdKind kFifoKind{
    .name = "FIFO",
    .image_kind = image::Fd::FIFO,
    .claims = claims_fifo,
    .dump = dump_fifo,
    .prepare_restore = make_fifos,
    .restore = restore_fifo,
    .finish_restore = close_fifos,
};

}  // namespace ckpt::engine
