// Regular files, folders and the harmless character devices (/dev/null, /dev/zero,
// /dev/random, /dev/urandom, /dev/full), and O_PATH fds on any of these or on a symlink,
// a block device, a FIFO or a socket node: recorded in the file registry (files.cpp, which
// checks at restore that each file is still the one dumped) and opened again by path, or
// on a saved copy when the file was deleted, is a memfd or was saved whole.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdint>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "files.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_path(const FdProbe& probe) { return starts_with(probe.link, "/"); }

// The locks fdinfo lists for the fd ("lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"):
// the description's flock and OFD locks, the process's POSIX locks set through it, and a lease
// on the description ("LEASE  ACTIVE    READ"). A lease being broken, delegations and
// mandatory locks are refused.
Result<void> dump_locks(const FdProbe& probe, image::Fd* f) {
    std::string text = CKPT_TRY(probe.fdinfo_text());
    for (auto line : split(text, '\n')) {
        if (!starts_with(line, "lock:")) continue;
        std::vector<std::string_view> w;
        for (auto word : split(line.substr(5), ' '))
            if (!trim(word).empty()) w.push_back(trim(word));
        // id: TYPE MODE ACCESS PID DEV:INO START END
        if (w.size() != 8) return error("malformed fdinfo lock line '{}'", line);
        if (!probe.state->file_locks)
            return error_code(ENOTSUP, "holds a file lock ({} {} {}-{}): dump with --file-locks to save it", w[1], w[3],
                              w[6], w[7]);
        image::FileLock* l = f->add_locks();
        if (w[1] == "FLOCK") l->set_type(image::FileLock::FLOCK);
        else if (w[1] == "POSIX") l->set_type(image::FileLock::POSIX);
        else if (w[1] == "OFDLCK") l->set_type(image::FileLock::OFD);
        else if (w[1] == "LEASE") l->set_type(image::FileLock::LEASE);
        else return error_code(ENOTSUP, "holds a {} lock (delegations are not supported): refused", w[1]);
        if (l->type() == image::FileLock::LEASE) {
            // BREAKING: someone opened the file and waits for the holder to give the lease up;
            // that wait (and the break's deadline) cannot be made again.
            if (w[2] != "ACTIVE")
                return error_code(ENOTSUP, "holds a {} lease that is being broken ({}): refused", w[3], w[2]);
        } else if (w[2] != "ADVISORY") {
            return error_code(ENOTSUP, "holds a {} {} lock: only advisory locks are supported", w[2], w[1]);
        }
        if (w[3] != "READ" && w[3] != "WRITE") return error("malformed fdinfo lock line '{}'", line);
        l->set_write(w[3] == "WRITE");
        auto start = parse_uint(w[6]);
        auto end = w[7] == "EOF" ? parse_uint("0") : parse_uint(w[7]);
        if (!start || !end || (w[7] != "EOF" && *end < *start)) return error("malformed fdinfo lock line '{}'", line);
        l->set_start(*start);
        l->set_length(w[7] == "EOF" ? 0 : *end - *start + 1);
    }
    return ok();
}

bool harmless_device(std::string_view path) {
    return path == "/dev/null" || path == "/dev/zero" || path == "/dev/urandom" || path == "/dev/random" ||
           path == "/dev/full";
}

Result<void> dump_regular(const FdProbe& probe, image::Fd* f) {
    const std::string& link = probe.link;
    const bool o_path = (probe.info.flags & O_PATH) != 0;
    struct stat st = CKPT_TRY(probe.stat_target());
    const bool deleted_name = link.ends_with(" (deleted)");
    // A folder removed after it was opened cannot be made again as the same folder (nor
    // would a new one be what the fd names).
    if (S_ISDIR(st.st_mode) && deleted_name)
        return error_code(ENOTSUP, "directory {} was removed (rmdir) after it was opened: it cannot be restored; refused",
                          link.substr(0, link.size() - std::string_view(" (deleted)").size()));
    // O_PATH (a symlink itself with O_NOFOLLOW, a device, a FIFO...): opened again by path
    // with the same flags, which opens nothing behind it.
    const bool path_only = o_path && !deleted_name &&
                           (S_ISLNK(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    if (!path_only) {
        if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISDIR(st.st_mode))
            return error_code(ENOTSUP, "unsupported fd kind: file type {:o}", st.st_mode & S_IFMT);
        if (S_ISCHR(st.st_mode) && !o_path && !harmless_device(link))
            return error_code(ENOTSUP, "unsupported fd kind: character device {}", link);
    }
    // Such a description can only come from open(O_TMPFILE) in its folder, which would be
    // another file: an open of the same file with these flags does not exist.
    // (glibc's __O_TMPFILE holds O_DIRECTORY too: every bit of it, not any.)
    if ((probe.info.flags & __O_TMPFILE) == __O_TMPFILE)
        return error_code(ENOTSUP, "opened with O_TMPFILE: a description with these flags cannot be made again on the "
                                   "same file");
    FileRegistry& files = probe.state->files;
    // The tree's own description is read when it can be (pread: its offset stays), so the
    // dump opens nothing the tree would notice (a lease broken, a watch's event). O_DIRECT
    // would need aligned reads.
    UniqueFd own;
    const int access = static_cast<int>(probe.info.flags & O_ACCMODE);
    if (S_ISREG(st.st_mode) && !o_path && !(probe.info.flags & O_DIRECT) && (access == O_RDONLY || access == O_RDWR))
        own = CKPT_TRY(probe.take());
    const int reader = own ? own.get() : -1;
    uint32_t id = CKPT_TRY(files.add(probe.link_path, link, reader));
    f->set_file_id(id);
    const image::FileEntry& entry = files.table().files(static_cast<int>(id) - 1);
    // A deleted name of a file that still has a link elsewhere: a restored copy would no
    // longer be the file the others write and read.
    if (entry.deleted() && !entry.memfd() && !entry.saved_copy() && st.st_nlink > 0)
        return error_code(ENOTSUP,
                          "file deleted while open still has {} other link(s) elsewhere: a restored copy would not "
                          "share its writes; refused",
                          st.st_nlink);
    if ((probe.info.flags & O_ACCMODE) != O_RDONLY && S_ISREG(st.st_mode) && !entry.proc())
        CKPT_TRY(files.mark_written(id, probe.link_path, reader));
    f->set_description_id(CKPT_TRY(probe.description_id(st)));
    return dump_locks(probe, f);
}

// One description per id, shared by every fd (in every process) that had it.
Result<void> restore_regular(RestoreTask& t, const image::Fd& f) {
    RestoreShared& sh = *t.shared;
    auto open = [&]() -> Result<UniqueFd> {
        const image::FileEntry* e = CKPT_TRY(sh.file(f.file_id()));
        int flags = static_cast<int>(f.flags() & ~kLateFlags) & ~(O_CREAT | O_TRUNC | O_EXCL);
        // A saved file is one object for every fd and mapping that had it.
        UniqueFd fd = CKPT_TRY(sh.open_file(f.file_id(), flags));
        // O_PATH has no offset (lseek refuses it); a /proc file's must be taken. A folder's is
        // where its listing goes on (the file system's cookie: ext4's hash, tmpfs's index).
        if ((S_ISREG(e->mode()) || S_ISDIR(e->mode())) && !(flags & O_PATH)) {
            off_t at = lseek(fd.get(), static_cast<off_t>(f.pos()), SEEK_SET);
            if (at < 0) return sys_error("lseek to {} in {}", f.pos(), e->path());
            if (static_cast<uint64_t>(at) != f.pos())
                return error_code(EINVAL, "lseek to {} in {} went to {}", f.pos(), e->path(), at);
        }
        return fd;
    };
    return install_description(t, f, open, false);
}

// From inside the process once its fds are in place: a POSIX lock is the process's own, and
// flock and OFD locks taken again on a description it shares are the same lock. A lock held
// by someone else by now fails the restore by name.
Result<void> restore_locks(RestoreTask& t, const image::Fd& f) {
    const uint64_t fd = static_cast<uint64_t>(f.fd());
    for (const auto& l : f.locks()) {
        auto ctx = [&](Error e) {
            return e.context("{} lock {} {}+{}", image::FileLock::Type_Name(l.type()), l.write() ? "write" : "read",
                             l.start(), l.length());
        };
        Result<int64_t> r = 0;
        if (l.type() == image::FileLock::FLOCK) {
            r = t.leader->syscall_ok("flock", SYS_flock, {fd, static_cast<uint64_t>((l.write() ? LOCK_EX : LOCK_SH) | LOCK_NB)});
        } else if (l.type() == image::FileLock::POSIX || l.type() == image::FileLock::OFD) {
            if (l.start() > static_cast<uint64_t>(INT64_MAX) || l.length() > static_cast<uint64_t>(INT64_MAX))
                return ctx(error_code(EINVAL, "out of range (image is corrupt)"));
            struct flock fl{};
            fl.l_type = l.write() ? F_WRLCK : F_RDLCK;
            fl.l_whence = SEEK_SET;
            fl.l_start = static_cast<off_t>(l.start());
            fl.l_len = static_cast<off_t>(l.length());
            auto s = t.scratch.scope();
            uint64_t at = CKPT_TRY(s.put(fl));
            int cmd = l.type() == image::FileLock::POSIX ? F_SETLK : F_OFD_SETLK;
            r = t.leader->syscall_ok("fcntl(F_SETLK)", SYS_fcntl, {fd, static_cast<uint64_t>(cmd), at});
        } else if (l.type() == image::FileLock::LEASE) {
            // Taken again from inside: the lease is the description's, and the kernel checks
            // the process may take it (owner of the file, or CAP_LEASE; no conflicting open).
            r = t.leader->syscall_ok("fcntl(F_SETLEASE)", SYS_fcntl,
                                     {fd, static_cast<uint64_t>(F_SETLEASE), static_cast<uint64_t>(l.write() ? F_WRLCK : F_RDLCK)});
        } else {
            return ctx(error_code(EINVAL, "unknown lock type (image is corrupt)"));
        }
        if (!r) {
            int code = r.error().code();
            if (code == EAGAIN || code == EACCES || code == EWOULDBLOCK)
                return ctx(l.type() == image::FileLock::LEASE
                               ? error_code(code, "the file is open elsewhere in a way the lease conflicts with: refused")
                               : error_code(code, "the lock is held by another process now: refused"));
            return ctx(std::move(r).error());
        }
    }
    return ok();
}

}  // namespace

extern const FdKind kRegularFileKind{
    .name = "file",
    .image_kind = image::Fd::REG,
    .claims = claims_path,
    .dump = dump_regular,
    .restore = restore_regular,
    .restore_late = restore_locks,
};

}  // namespace ckpt::engine
