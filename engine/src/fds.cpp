#include "fds.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "event_fds.h"
#include "files.h"
#include "proc.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

Result<FdInfo> read_fdinfo(pid_t pid, int fd) {
    return read_parsed(proc_path(pid, "fdinfo/") + std::to_string(fd), parse_fdinfo);
}

Result<std::vector<int>> list_fds(pid_t pid) { return read_numbered_dir(proc_path(pid, "fd")); }

Result<uint64_t> pipe_inode(const std::string& link) {
    // "pipe:[12345]"
    return parse_uint(std::string_view(link).substr(6, link.size() - 7)).context("pipe fd link '{}'", link);
}

// Copies what is queued in a pipe without taking it out (tee into a private pipe).
Result<std::string> peek_pipe(int read_end) {
    int tmp[2];
    if (pipe2(tmp, O_CLOEXEC | O_NONBLOCK) != 0) return sys_error("pipe2");
    UniqueFd tr(tmp[0]), tw(tmp[1]);
    int cap = fcntl(read_end, F_GETPIPE_SZ);
    if (cap > 0) fcntl(tw.get(), F_SETPIPE_SZ, cap);  // may be capped by pipe-max-size
    ssize_t n = tee(read_end, tw.get(), static_cast<size_t>(cap > 0 ? cap : 65536), SPLICE_F_NONBLOCK);
    if (n < 0 && errno != EAGAIN) return sys_error("tee");
    std::string data(n > 0 ? static_cast<size_t>(n) : 0, '\0');
    if (n > 0) CKPT_TRY(read_exact(tr.get(), data.data(), data.size()));
    return data;
}

// The id of the open file description behind pid's fd: the same as an fd seen before
// when kcmp says they are one description (is_new says it was not).
Result<uint64_t> description_of(Descriptions& descs, pid_t pid, int fd, const struct stat& st, bool* is_new = nullptr) {
    auto& seen = descs.by_inode[{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)}];
    constexpr int kKcmpFile = 0;
    for (const auto& s : seen) {
        long r = syscall(SYS_kcmp, s.pid, pid, kKcmpFile, s.fd, fd);
        if (r < 0) return sys_error("kcmp(pid {} fd {}, pid {} fd {})", s.pid, s.fd, pid, fd);
        if (r == 0) return s.id;
    }
    if (is_new) *is_new = true;
    uint64_t id = descs.next_id++;
    seen.push_back({pid, fd, id});
    return id;
}

// eventfd, timerfd, signalfd, epoll and pidfd (their own files); anything else behind an anonymous
// inode is refused by name.
Result<void> dump_anon_fd(pid_t pid, int fd, int pidfd, const std::string& link, Descriptions& descs,
                          const DumpExclusions& ex, image::Fd* f) {
    std::string_view kind = link;
    kind.remove_prefix(std::string_view("anon_inode:").size());
    if (kind == "[eventfd]") f->set_kind(image::Fd::EVENTFD);
    else if (kind == "[timerfd]") f->set_kind(image::Fd::TIMERFD);
    else if (kind == "[signalfd]") f->set_kind(image::Fd::SIGNALFD);
    else if (kind == "[eventpoll]") f->set_kind(image::Fd::EPOLL);
    else if (kind == "[pidfd]") f->set_kind(image::Fd::PIDFD);
    else return error("unsupported fd kind: {}", link);
    std::string link_path = proc_path(pid, "fd/") + std::to_string(fd);
    struct stat st;
    if (stat(link_path.c_str(), &st) != 0) return sys_error("stat");
    bool is_new = false;
    f->set_description_id(CKPT_TRY(description_of(descs, pid, fd, st, &is_new)));
    std::string text = CKPT_TRY(read_file(proc_path(pid, "fdinfo/") + std::to_string(fd)));
    switch (f->kind()) {
        case image::Fd::EVENTFD: return dump_eventfd(text, f->mutable_eventfd());
        case image::Fd::SIGNALFD: return dump_signalfd(text, f->mutable_signalfd());
        case image::Fd::PIDFD: return dump_pidfd(text, f->flags(), f->mutable_pidfd());
        case image::Fd::TIMERFD: {
            UniqueFd mine(sys_pidfd_getfd(pidfd, fd, 0));
            if (!mine) return sys_error("pidfd_getfd");
            return dump_timerfd(pid, fd, mine.get(), f->mutable_timerfd());
        }
        default:
            // The targets of a shared epoll are recorded once, by the first process seen
            // holding it, and added again in that process at restore.
            if (!is_new) {
                f->mutable_epoll();
                return ok();
            }
            return dump_epoll(pid, fd, text, ex, f->mutable_epoll());
    }
}

// Whether nobody holds the other end of a pipe the tree holds one end of: no writer left
// (a read end polls POLLHUP) or no reader (a write end polls POLLERR). Such a pipe is the
// tree's own, restored with that end closed; only a pipe whose other end a process outside
// the tree holds is an external resource.
Result<bool> other_end_gone(int pidfd, int fd, bool read_end) {
    UniqueFd mine(sys_pidfd_getfd(pidfd, fd, 0));
    if (!mine) return sys_error("pidfd_getfd");
    pollfd p{mine.get(), 0, 0};  // POLLHUP and POLLERR are reported whatever is asked
    if (::poll(&p, 1, 0) < 0) return sys_error("poll");
    return read_end ? (p.revents & POLLHUP) != 0 : (p.revents & POLLERR) != 0;
}

// F_GETOWN_EX and F_GETSIG of pid's fd, when either is set. The owner is as the engine sees
// it; the dump records it as the tree sees it, and only inside the tree (dump.cpp).
Result<void> dump_async(int pidfd, int fd, image::Fd* f) {
    UniqueFd mine(sys_pidfd_getfd(pidfd, fd, 0));
    if (!mine) return sys_error("pidfd_getfd");
    f_owner_ex owner{};
    if (fcntl(mine.get(), F_GETOWN_EX, &owner) != 0) return sys_error("fcntl(F_GETOWN_EX)");
    int sig = fcntl(mine.get(), F_GETSIG);
    if (sig < 0) return sys_error("fcntl(F_GETSIG)");
    if (owner.pid == 0 && sig == 0) return ok();
    auto* a = f->mutable_async();
    a->set_owner_type(static_cast<uint32_t>(owner.type));
    a->set_owner(owner.pid);
    a->set_signal(sig);
    return ok();
}

// The status flags open() or the kernel cannot take back at once: O_ASYNC goes in last,
// once the owner and signal are set (restore_fd_async); open() would record it without
// registering the fd for signals.
constexpr uint32_t kLateFlags = O_ASYNC;

}  // namespace

std::optional<std::string_view> fdinfo_value(std::string_view fdinfo, std::string_view key) {
    for (size_t at = fdinfo.find(key); at != std::string_view::npos; at = fdinfo.find(key, at + 1)) {
        if (at != 0 && fdinfo[at - 1] != '\n' && fdinfo[at - 1] != ' ' && fdinfo[at - 1] != '\t') continue;
        std::string_view rest = fdinfo.substr(at + key.size());
        return trim(rest.substr(0, rest.find('\n')));
    }
    return std::nullopt;
}

Result<void> count_pipe_ends(pid_t pid, PipeEnds* out) {
    for (int fd : CKPT_TRY(list_fds(pid))) {
        auto link = read_link(proc_path(pid, "fd/") + std::to_string(fd));
        if (!link || !starts_with(*link, "pipe:[")) continue;
        auto info = CKPT_TRY(read_fdinfo(pid, fd));
        auto& e = out->ends[CKPT_TRY_CTX(pipe_inode(*link), "pid {}: fd {}", pid, fd)];
        ((info.flags & O_ACCMODE) == O_RDONLY ? e.first : e.second)++;
    }
    return ok();
}

Result<void> dump_fds(pid_t pid, const PipeEnds& pipes, Descriptions& descs, FileRegistry& files,
                      const DumpExclusions& ex, bool shell_job, bool external_stdio, image::FdTable* table) {
    table->set_pid(pid);
    UniqueFd pidfd(sys_pidfd_open(pid, 0));
    if (!pidfd) return sys_error("pidfd_open pid {}", pid);
    std::set<uint64_t> saved_pipes;
    for (const auto& p : files.table().pipes()) saved_pipes.insert(p.id());

    for (int fd : CKPT_TRY(list_fds(pid))) {
        if (ex.fds.count(fd)) continue;
        std::string link_path = proc_path(pid, "fd/") + std::to_string(fd);
        std::string link = CKPT_TRY(read_link(link_path));
        auto info = CKPT_TRY(read_fdinfo(pid, fd));
        image::Fd* f = table->add_fds();
        f->set_fd(fd);
        f->set_flags(info.flags & ~static_cast<uint32_t>(O_CLOEXEC));
        f->set_cloexec(info.flags & O_CLOEXEC);
        f->set_pos(info.pos);
        auto ctx = [&](Error e) { return e.context("pid {}: fd {} ({})", pid, fd, link); };
        // An O_PATH fd names a file without opening it: no owner, signal or offset to keep
        // (fcntl(F_GETOWN_EX) refuses it).
        const bool o_path = (info.flags & O_PATH) != 0;
        if (!o_path)
            if (auto r = dump_async(pidfd.get(), fd, f); !r) return ctx(std::move(r).error());
        // Bound at restore to the restorer's fds, whose owner and O_ASYNC are the restorer's.
        auto refuse_async_external = [&]() -> Result<void> {
            if (f->has_async() || (f->flags() & O_ASYNC))
                return ctx(error_code(ENOTSUP, "O_ASYNC or an owner (F_SETOWN/F_SETSIG) on a resource outside the "
                                               "tree cannot be restored"));
            return ok();
        };
        if (external_stdio && fd <= 2) {
            CKPT_TRY(refuse_async_external());
            f->set_kind(image::Fd::EXTERNAL);
            f->set_external_key(link);
            continue;
        }
        if (auto named = ex.external_fds.find(fd); pid == ex.root && named != ex.external_fds.end()) {
            f->set_kind(image::Fd::EXTERNAL);
            f->set_external_key(named->second);
            continue;
        }

        if (starts_with(link, "pipe:[")) {
            uint64_t ino = CKPT_TRY_CTX(pipe_inode(link), "pid {}: fd {}", pid, fd);
            auto it = pipes.ends.find(ino);
            bool read_end = (info.flags & O_ACCMODE) == O_RDONLY;
            bool internal = it != pipes.ends.end() && it->second.first > 0 && it->second.second > 0;
            bool widowed = false;
            if (!internal) {
                auto gone = other_end_gone(pidfd.get(), fd, read_end);
                if (!gone) return ctx(std::move(gone).error());
                internal = widowed = *gone;
            }
            if (!internal) {
                CKPT_TRY(refuse_async_external());
                f->set_kind(image::Fd::EXTERNAL);
                f->set_external_key(link);
                continue;
            }
            f->set_kind(image::Fd::PIPE);
            f->set_pipe_id(ino);
            // Recorded by a reader (with what is queued), or by the writer of a pipe nobody
            // reads any more (what is queued there can never be read).
            if (!saved_pipes.count(ino) && (read_end || widowed)) {
                UniqueFd mine(sys_pidfd_getfd(pidfd.get(), fd, 0));
                if (!mine) return ctx(sys_error("pidfd_getfd"));
                auto* p = files.table().add_pipes();
                p->set_id(ino);
                int cap = fcntl(mine.get(), F_GETPIPE_SZ);
                p->set_capacity(cap > 0 ? static_cast<uint32_t>(cap) : 0);
                if (read_end) {
                    auto data = peek_pipe(mine.get());
                    if (!data) return ctx(std::move(data).error());
                    p->set_queued(*data);
                }
                saved_pipes.insert(ino);
            }
            continue;
        }
        if (link.starts_with("/dev/pts/") || link == "/dev/tty" || link.starts_with("/dev/tty")) {
            CKPT_TRY(refuse_async_external());
            f->set_kind(shell_job ? image::Fd::TTY : image::Fd::EXTERNAL);
            f->set_external_key("tty");
            continue;
        }
        if (link.starts_with("socket:[")) {
            if (fd <= 2) {
                CKPT_TRY(refuse_async_external());
                f->set_kind(image::Fd::EXTERNAL);
                f->set_external_key(link);
                continue;
            }
            return ctx(error("unsupported fd kind: socket (sockets come with the next engine release)"));
        }
        if (link.starts_with("anon_inode:")) {
            auto r = dump_anon_fd(pid, fd, pidfd.get(), link, descs, ex, f);
            if (!r) return ctx(std::move(r).error());
            continue;
        }
        if (!link.starts_with("/")) return ctx(error("unsupported fd kind: {}", link));
        struct stat st;
        if (stat(link_path.c_str(), &st) != 0) return ctx(sys_error("stat"));
        const bool deleted_name = link.ends_with(" (deleted)");
        // A folder removed after it was opened cannot be made again as the same folder (nor
        // would a new one be what the fd names).
        if (S_ISDIR(st.st_mode) && deleted_name)
            return ctx(error_code(ENOTSUP, "directory {} was removed (rmdir) after it was opened: it cannot be "
                                           "restored; refused",
                                  link.substr(0, link.size() - std::string_view(" (deleted)").size())));
        // O_PATH (a symlink itself with O_NOFOLLOW, a device, a FIFO...): opened again by path
        // with the same flags, which opens nothing behind it.
        if (o_path && !deleted_name && (S_ISLNK(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) ||
                                        S_ISSOCK(st.st_mode))) {
        } else if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISDIR(st.st_mode)) {
            return ctx(error("unsupported fd kind: file type {:o}", st.st_mode & S_IFMT));
        } else if (S_ISCHR(st.st_mode) && !o_path && link != "/dev/null" && link != "/dev/zero" &&
                   link != "/dev/urandom" && link != "/dev/random" && link != "/dev/full") {
            return ctx(error("unsupported fd kind: character device {}", link));
        }
        // Such a description can only come from open(O_TMPFILE) in its folder, which would be
        // another file: an open of the same file with these flags does not exist.
        // (glibc's __O_TMPFILE holds O_DIRECTORY too: every bit of it, not any.)
        if ((info.flags & __O_TMPFILE) == __O_TMPFILE)
            return ctx(error_code(ENOTSUP, "opened with O_TMPFILE: a description with these flags cannot be "
                                           "made again on the same file"));
        f->set_kind(image::Fd::REG);
        auto id = files.add(link_path, link);
        if (!id) return ctx(std::move(id).error());
        f->set_file_id(*id);
        const image::FileEntry& entry = files.table().files(static_cast<int>(*id) - 1);
        // A deleted name of a file that still has a link elsewhere: a restored copy would no
        // longer be the file the others write and read.
        if (entry.deleted() && !entry.memfd() && !entry.saved_copy() && st.st_nlink > 0)
            return ctx(error_code(ENOTSUP,
                                  "file deleted while open still has {} other link(s) elsewhere: a restored copy "
                                  "would not share its writes; refused",
                                  st.st_nlink));
        if ((info.flags & O_ACCMODE) != O_RDONLY && S_ISREG(st.st_mode) && !entry.proc())
            if (auto w = files.mark_written(*id, link_path); !w) return ctx(std::move(w).error());
        auto desc = description_of(descs, pid, fd, st);
        if (!desc) return ctx(std::move(desc).error());
        f->set_description_id(*desc);
    }
    return ok();
}

Result<void> restore_fds(RestoreTask& t) {
    RestoreShared& sh = *t.shared;
    // The engine's own fds the process inherited at clone: close all but the pidfd.
    for (int fd : CKPT_TRY(list_fds(t.host)))
        if (fd != t.engine_pidfd_in_target) CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));

    // Place fds in order; a recorded fd number equal to the engine pidfd's moves it first.
    for (const auto& f : t.fds.fds()) {
        if (f.fd() == t.engine_pidfd_in_target) {
            int64_t moved = CKPT_TRY(t.leader->syscall_ok("fcntl(F_DUPFD_CLOEXEC)", SYS_fcntl,
                                                          {static_cast<uint64_t>(t.engine_pidfd_in_target), F_DUPFD_CLOEXEC, 1000}));
            CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(t.engine_pidfd_in_target)}));
            t.engine_pidfd_in_target = static_cast<int>(moved);
        }
    }
    std::vector<const image::Fd*> registering_epolls;
    for (const auto& f : t.fds.fds()) {
        auto ctx = [&](Error e) { return e.context("pid {}: fd {}", t.pid, f.fd()); };
        switch (f.kind()) {
            case image::Fd::EVENTFD:
            case image::Fd::TIMERFD:
            case image::Fd::SIGNALFD:
            case image::Fd::PIDFD:
            case image::Fd::EPOLL: {
                // Made once in the engine, shared by every fd (in every process) that had it.
                auto it = sh.descriptions.find(f.description_id());
                if (it == sh.descriptions.end()) {
                    auto made = f.kind() == image::Fd::EVENTFD    ? make_eventfd(f.eventfd())
                                : f.kind() == image::Fd::TIMERFD  ? make_timerfd(f.timerfd())
                                : f.kind() == image::Fd::SIGNALFD ? make_signalfd(f.signalfd())
                                : f.kind() == image::Fd::PIDFD    ? make_pidfd(f.pidfd(), sh)
                                                                  : make_epoll();
                    if (!made) return ctx(std::move(made).error());
                    // O_NONBLOCK and the other status flags belong to the description.
                    if (fcntl(made->get(), F_SETFL, f.flags() & ~static_cast<uint32_t>(O_ACCMODE) & ~kLateFlags) != 0)
                        return ctx(sys_error("fcntl(F_SETFL)"));
                    it = sh.descriptions.insert_or_assign(f.description_id(), std::move(*made)).first;
                }
                auto r = t.install_fd(it->second.get(), f.fd(), f.cloexec());
                if (!r) return ctx(std::move(r).error());
                if (f.kind() == image::Fd::EPOLL && f.epoll().registers_targets()) registering_epolls.push_back(&f);
                break;
            }
            case image::Fd::REG: {
                // One description per id, shared by every fd (in every process) that had it.
                auto it = sh.descriptions.find(f.description_id());
                if (it == sh.descriptions.end() || f.description_id() == 0) {
                    auto e = sh.file(f.file_id());
                    if (!e) return ctx(std::move(e).error());
                    int flags = static_cast<int>(f.flags() & ~kLateFlags) & ~(O_CREAT | O_TRUNC | O_EXCL);
                    // A saved file is one object for every fd and mapping that had it.
                    auto fd = sh.open_file(f.file_id(), flags);
                    if (!fd) return ctx(std::move(fd).error());
                    // O_PATH has no offset (lseek refuses it); a /proc file's must be taken.
                    if (S_ISREG((*e)->mode()) && !(flags & O_PATH)) {
                        off_t at = lseek(fd->get(), static_cast<off_t>(f.pos()), SEEK_SET);
                        if (at < 0) return ctx(sys_error("lseek to {} in {}", f.pos(), (*e)->path()));
                        if (static_cast<uint64_t>(at) != f.pos())
                            return ctx(error_code(EINVAL, "lseek to {} in {} went to {}", f.pos(), (*e)->path(), at));
                    }
                    it = sh.descriptions.insert_or_assign(f.description_id(), std::move(*fd)).first;
                }
                auto r = t.install_fd(it->second.get(), f.fd(), f.cloexec());
                if (!r) return ctx(std::move(r).error());
                break;
            }
            case image::Fd::PIPE: {
                auto it = sh.pipes.find(f.pipe_id());
                if (it == sh.pipes.end()) return ctx(error("pipe {} missing from the images", f.pipe_id()));
                bool read_end = (f.flags() & O_ACCMODE) == O_RDONLY;
                int engine_fd = read_end ? it->second.first.get() : it->second.second.get();
                auto r = t.install_fd(engine_fd, f.fd(), f.cloexec());
                if (!r) return ctx(std::move(r).error());
                // Status flags (O_NONBLOCK) live in the shared open file description.
                CKPT_TRY(t.leader->syscall_ok("fcntl(F_SETFL)", SYS_fcntl,
                                              {static_cast<uint64_t>(f.fd()), F_SETFL, f.flags() & ~static_cast<uint32_t>(O_ACCMODE) & ~kLateFlags}));
                break;
            }
            case image::Fd::TTY: {
                // A shell job takes the restoring shell's terminal.
                UniqueFd opened;
                int source = -1;
                for (int std_fd : {f.fd(), 0, 1, 2})
                    if (std_fd <= 2 && isatty(std_fd)) {
                        source = std_fd;
                        break;
                    }
                if (source < 0) {
                    opened = UniqueFd(open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
                    if (!opened) return ctx(sys_error("shell job: the restorer has no terminal (open /dev/tty)"));
                    source = opened.get();
                }
                auto r = t.install_fd(source, f.fd(), f.cloexec());
                if (!r) return ctx(std::move(r).error());
                break;
            }
            case image::Fd::EXTERNAL: {
                int source = -1;
                auto it = sh.inherited.find(f.external_key());
                if (it != sh.inherited.end()) source = it->second;
                else if (f.fd() <= 2) source = f.fd();  // the restorer's own stdin, stdout, stderr
                if (source < 0)
                    return ctx(error("external resource {} needs --inherit-fd fd[N]:{}", f.external_key(),
                                     f.external_key()));
                auto r = t.install_fd(source, f.fd(), f.cloexec());
                if (!r) return ctx(std::move(r).error());
                break;
            }
            default:
                return ctx(error("unsupported fd kind {} in image", static_cast<int>(f.kind())));
        }
    }
    // Epoll targets go in once every fd they name is in place (targets may be epolls too).
    for (const image::Fd* f : registering_epolls)
        CKPT_TRY_CTX(restore_epoll_targets(t, f->fd(), f->epoll()), "pid {}: fd {}", t.pid, f->fd());
    return ok();
}

Result<void> restore_fd_async(RestoreTask& t) {
    for (const auto& f : t.fds.fds()) {
        if (f.kind() == image::Fd::EXTERNAL || f.kind() == image::Fd::TTY) continue;
        if (!f.has_async() && !(f.flags() & kLateFlags)) continue;
        auto ctx = [&](Error e) { return e.context("pid {}: fd {}", t.pid, f.fd()); };
        const uint64_t fd = static_cast<uint64_t>(f.fd());
        if (f.has_async()) {
            // From inside the process: the owner is named in the tree's pid namespace, and the
            // kernel records the process's credentials as the owner's, as when it set them.
            auto s = t.scratch.scope();
            f_owner_ex owner{static_cast<__pid_type>(f.async().owner_type()), f.async().owner()};
            uint64_t at = CKPT_TRY(s.put(owner));
            auto r = t.leader->syscall_ok("fcntl(F_SETOWN_EX)", SYS_fcntl, {fd, F_SETOWN_EX, at});
            if (r) r = t.leader->syscall_ok("fcntl(F_SETSIG)", SYS_fcntl,
                                             {fd, F_SETSIG, static_cast<uint64_t>(f.async().signal())});
            if (!r) return ctx(std::move(r).error());
        }
        auto r = t.leader->syscall_ok("fcntl(F_SETFL)", SYS_fcntl,
                                      {fd, F_SETFL, f.flags() & ~static_cast<uint32_t>(O_ACCMODE)});
        if (!r) return ctx(std::move(r).error());
    }
    return ok();
}

Result<void> verify_fd_flags(const RestoreTask& t) {
    for (const auto& f : t.fds.fds()) {
        // Bound to the restorer's own fds, whose flags are the restorer's.
        if (f.kind() == image::Fd::EXTERNAL || f.kind() == image::Fd::TTY) continue;
        auto info = read_fdinfo(t.host, f.fd());
        if (!info) return std::move(info).error().context("pid {}: fd {}", t.pid, f.fd());
        uint32_t want = f.flags() | (f.cloexec() ? static_cast<uint32_t>(O_CLOEXEC) : 0u);
        if (info->flags != want)
            return error_code(EINVAL, "pid {}: fd {}: file status flags 0{:o} after restore, 0{:o} at dump (differ in 0{:o})",
                              t.pid, f.fd(), info->flags, want, info->flags ^ want);
    }
    return ok();
}

}  // namespace ckpt::engine
