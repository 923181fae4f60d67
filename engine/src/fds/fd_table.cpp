#include "fd_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <map>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "restore_task.h"
#include "syscall_batch.h"

namespace ckpt::engine {
namespace {

Result<std::vector<int>> list_fds(pid_t pid) { return read_numbered_dir(proc_path(pid, "fd")); }

// F_GETOWN_EX and F_GETSIG of the fd, when either is set. The owner is as the engine sees
// it; the dump records it as the tree sees it, and only inside the tree (dump.cpp).
Result<void> dump_async(const FdProbe& probe, image::Fd* f) {
    UniqueFd mine = CKPT_TRY(probe.take());
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

// The kind that claims the fd; null when none does.
const FdKind* claiming_kind(const FdProbe& probe) {
    for (const FdKind* k : fd_kinds())
        if (k->claims && k->claims(probe)) return k;
    return nullptr;
}

// Reads what every kind needs of pid's fd.
Result<FdProbe> probe_fd(pid_t pid, int fd, int pidfd, FdDumpState& state) {
    FdProbe p;
    p.pid = pid;
    p.fd = fd;
    p.pidfd = pidfd;
    p.state = &state;
    p.link_path = proc_path(pid, "fd/") + std::to_string(fd);
    p.link = CKPT_TRY(read_link(p.link_path));
    p.info = CKPT_TRY(read_parsed(proc_path(pid, "fdinfo/") + std::to_string(fd), parse_fdinfo));
    return p;
}

}  // namespace

std::string unescape_mount_path(std::string_view field) {
    std::string out;
    for (size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && field.size() - i >= 4) {
            auto code = parse_uint(field.substr(i + 1, 3), 8);
            if (code && *code < 256) {
                out += static_cast<char>(*code);
                i += 3;
                continue;
            }
        }
        out += field[i];
    }
    return out;
}

Result<UniqueFd> mount_of(uint64_t sdev) {
    const std::string want = fmt::format("{}:{}", sdev >> 20, sdev & 0xfffff);
    std::string table = CKPT_TRY(read_file("/proc/self/mountinfo"));
    for (auto line : split(table, '\n')) {
        // "36 35 98:0 /mnt1 /mnt/parent rw,noatime ..."
        auto f = split(line, ' ');
        if (f.size() < 5 || f[2] != want || f[3] != "/") continue;
        UniqueFd fd(open(unescape_mount_path(f[4]).c_str(), O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC));
        if (fd) return fd;
    }
    return error_code(ENOENT, "no mount of the file system {} (device {}) with its root visible to the engine", want,
                      sdev);
}

Result<UniqueFd> open_file_handle(uint64_t sdev, uint32_t handle_type, std::string_view hex) {
    if (hex.size() % 2 || hex.size() > 2 * MAX_HANDLE_SZ) return error("malformed f_handle '{}'", hex);
    std::string buf(sizeof(file_handle) + hex.size() / 2, '\0');
    auto* h = reinterpret_cast<file_handle*>(buf.data());
    h->handle_bytes = static_cast<unsigned>(hex.size() / 2);
    h->handle_type = static_cast<int>(handle_type);
    for (size_t i = 0; i < hex.size() / 2; ++i) {
        auto byte = parse_uint(hex.substr(2 * i, 2), 16);
        if (!byte) return error("malformed f_handle '{}'", hex);
        h->f_handle[i] = static_cast<unsigned char>(*byte);
    }
    UniqueFd mnt = CKPT_TRY(mount_of(sdev));
    UniqueFd obj(open_by_handle_at(mnt.get(), h, O_PATH | O_CLOEXEC));
    if (!obj) return sys_error("open_by_handle_at (needs CAP_DAC_READ_SEARCH)");
    return obj;
}

Result<std::string> path_of_file_handle(uint64_t sdev, uint32_t handle_type, std::string_view hex) {
    UniqueFd obj = CKPT_TRY(open_file_handle(sdev, handle_type, hex));
    std::string path = CKPT_TRY(read_link("/proc/self/fd/" + std::to_string(obj.get())));
    if (path.ends_with(" (deleted)"))
        return error_code(ENOTSUP, "it watches {}, deleted since: such a watch cannot be made again", path);
    return path;
}

std::optional<std::string_view> fdinfo_value(std::string_view fdinfo, std::string_view key) {
    for (size_t at = fdinfo.find(key); at != std::string_view::npos; at = fdinfo.find(key, at + 1)) {
        if (at != 0 && fdinfo[at - 1] != '\n' && fdinfo[at - 1] != ' ' && fdinfo[at - 1] != '\t') continue;
        std::string_view rest = fdinfo.substr(at + key.size());
        return trim(rest.substr(0, rest.find('\n')));
    }
    return std::nullopt;
}

Result<UniqueFd> FdProbe::take() const {
    UniqueFd mine(sys_pidfd_getfd(pidfd, fd, 0));
    if (!mine) return sys_error("pidfd_getfd");
    return mine;
}

Result<struct stat> FdProbe::stat_target() const {
    struct stat st;
    if (::stat(link_path.c_str(), &st) != 0) return sys_error("stat");
    return st;
}

Result<std::string> FdProbe::fdinfo_text() const { return read_file(proc_path(pid, "fdinfo/") + std::to_string(fd)); }

Result<uint64_t> FdProbe::description_id(const struct stat& st, bool* is_new) const {
    auto& seen = state->descs.by_inode[{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)}];
    constexpr int kKcmpFile = 0;
    for (const auto& s : seen) {
        long r = syscall(SYS_kcmp, s.pid, pid, kKcmpFile, s.fd, fd);
        if (r < 0) return sys_error("kcmp(pid {} fd {}, pid {} fd {})", s.pid, s.fd, pid, fd);
        if (r == 0) return s.id;
    }
    if (is_new) *is_new = true;
    uint64_t id = state->descs.next_id++;
    seen.push_back({pid, fd, id});
    return id;
}

Result<void> FdProbe::refuse_async_external(const image::Fd& f) const {
    if (f.has_async() || (f.flags() & O_ASYNC))
        return error_code(ENOTSUP, "O_ASYNC or an owner (F_SETOWN/F_SETSIG) on a resource outside the tree cannot be "
                                   "restored");
    return ok();
}

bool FdProbe::restorers() const {
    const DumpExclusions& ex = state->ex;
    return (state->external_stdio && fd <= 2) || (pid == ex.root && ex.external_fds.count(fd));
}

const FdKind* fd_kind_of(image::Fd::Kind k) {
    for (const FdKind* kind : fd_kinds())
        if (kind->image_kind == k && kind->restore) return kind;
    return nullptr;
}

Result<void> survey_fds(pid_t pid, FdDumpState& state) {
    UniqueFd pidfd(sys_pidfd_open(pid, 0));
    if (!pidfd) return sys_error("pidfd_open pid {}", pid);
    const auto& engine_fds = state.engine_fds[pid];
    for (int fd : CKPT_TRY(list_fds(pid))) {
        if (state.ex.fds.count(fd) || engine_fds.count(fd)) continue;
        auto probe = probe_fd(pid, fd, pidfd.get(), state);
        // Closed meanwhile is not possible (the tree is frozen); anything else is an error.
        if (!probe) return std::move(probe).error().context("pid {}: fd {}", pid, fd);
        const FdKind* kind = claiming_kind(*probe);
        if (kind && kind->survey)
            CKPT_TRY_CTX(kind->survey(*probe), "pid {}: fd {} ({})", pid, fd, probe->link);
    }
    return ok();
}

Result<void> dump_fds(pid_t pid, FdDumpState& state, image::FdTable* table) {
    table->set_pid(pid);
    UniqueFd pidfd(sys_pidfd_open(pid, 0));
    if (!pidfd) return sys_error("pidfd_open pid {}", pid);
    const DumpExclusions& ex = state.ex;

    const auto& engine_fds = state.engine_fds[pid];
    for (int fd : CKPT_TRY(list_fds(pid))) {
        if (ex.fds.count(fd) || engine_fds.count(fd)) continue;
        FdProbe probe = CKPT_TRY_CTX(probe_fd(pid, fd, pidfd.get(), state), "pid {}: fd {}", pid, fd);
        auto ctx = [&](Error e) { return e.context("pid {}: fd {} ({})", pid, fd, probe.link); };
        image::Fd* f = table->add_fds();
        f->set_fd(fd);
        f->set_flags(probe.info.flags & ~static_cast<uint32_t>(O_CLOEXEC));
        f->set_cloexec(probe.info.flags & O_CLOEXEC);
        f->set_pos(probe.info.pos);
        // An O_PATH fd names a file without opening it: no owner, signal or offset to keep
        // (fcntl(F_GETOWN_EX) refuses it).
        if (!(probe.info.flags & O_PATH))
            if (auto r = dump_async(probe, f); !r) return ctx(std::move(r).error());

        // Resources the caller says are its own, whatever their kind.
        const bool external_stdio = state.external_stdio && fd <= 2;
        auto named = ex.external_fds.find(fd);
        if (external_stdio || (pid == ex.root && named != ex.external_fds.end())) {
            if (external_stdio)
                if (auto r = probe.refuse_async_external(*f); !r) return ctx(std::move(r).error());
            f->set_kind(image::Fd::EXTERNAL);
            f->set_external_key(external_stdio ? probe.link : named->second);
            continue;
        }
        const FdKind* kind = claiming_kind(probe);
        if (!kind) return ctx(error_code(ENOTSUP, "unsupported fd kind: {}", probe.link));
        f->set_kind(kind->image_kind);
        if (auto r = kind->dump(probe, f); !r) return ctx(std::move(r).error());
        // Locks are saved on regular files only: any other lock would be lost silently.
        if (f->kind() != image::Fd::REG) {
            auto text = probe.fdinfo_text();
            if (!text) return ctx(std::move(text).error());
            if (text->find("\nlock:") != std::string::npos)
                return ctx(error_code(ENOTSUP, "holds a file lock on a {}: only locks on regular files are saved",
                                      kind->name));
        }
    }
    return ok();
}

Result<void> install_description(RestoreTask& t, const image::Fd& f, const std::function<Result<UniqueFd>()>& make,
                                 bool set_flags) {
    RestoreShared& sh = *t.shared;
    auto it = sh.descriptions.find(f.description_id());
    // Id 0 names no description to share: one of its own.
    if (it == sh.descriptions.end() || f.description_id() == 0) {
        UniqueFd made = CKPT_TRY(make());
        // O_NONBLOCK and the other status flags belong to the description.
        if (set_flags && fcntl(made.get(), F_SETFL, f.flags() & ~static_cast<uint32_t>(O_ACCMODE) & ~kLateFlags) != 0)
            return sys_error("fcntl(F_SETFL)");
        it = sh.descriptions.insert_or_assign(f.description_id(), std::move(made)).first;
    }
    CKPT_TRY(t.install_fd(it->second.get(), f.fd(), f.cloexec()));
    return ok();
}

Result<void> restore_fds(RestoreTask& t) {
    // The engine's own fds the process inherited at clone: close all but the pidfd.
    SyscallBatch closes(*t.leader, t.scratch, t.batch_code());
    for (int fd : CKPT_TRY(list_fds(t.host)))
        if (fd != t.engine_pidfd_in_target)
            closes.add("close", SYS_close, {static_cast<uint64_t>(fd)}, fmt::format("pid {}: inherited fd {}", t.pid, fd));
    CKPT_TRY(closes.flush());

    // Place fds in order; a recorded fd number equal to the engine pidfd's moves it first.
    for (const auto& f : t.fds.fds()) {
        if (f.fd() == t.engine_pidfd_in_target) {
            int64_t moved = CKPT_TRY(t.leader->syscall_ok("fcntl(F_DUPFD_CLOEXEC)", SYS_fcntl,
                                                          {static_cast<uint64_t>(t.engine_pidfd_in_target), F_DUPFD_CLOEXEC, 1000}));
            CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(t.engine_pidfd_in_target)}));
            t.engine_pidfd_in_target = static_cast<int>(moved);
        }
    }
    std::vector<std::pair<const FdKind*, const image::Fd*>> late;
    for (const auto& f : t.fds.fds()) {
        const FdKind* kind = fd_kind_of(f.kind());
        if (!kind) return error("pid {}: fd {}: unsupported fd kind {} in image", t.pid, f.fd(), static_cast<int>(f.kind()));
        CKPT_TRY_CTX(kind->restore(t, f), "pid {}: fd {}", t.pid, f.fd());
        if (kind->restore_late) late.emplace_back(kind, &f);
    }
    // What needs every fd in place (an epoll's targets, which may be epolls too).
    for (auto [kind, f] : late) CKPT_TRY_CTX(kind->restore_late(t, *f), "pid {}: fd {}", t.pid, f->fd());
    return ok();
}

Result<void> restore_fd_async(RestoreTask& t) {
    for (const auto& f : t.fds.fds()) {
        const FdKind* kind = fd_kind_of(f.kind());
        if (!kind || kind->restorers_fd) continue;
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
        const FdKind* kind = fd_kind_of(f.kind());
        if (!kind || kind->restorers_fd) continue;
        auto info = read_parsed(proc_path(t.host, "fdinfo/") + std::to_string(f.fd()), parse_fdinfo);
        if (!info) return std::move(info).error().context("pid {}: fd {}", t.pid, f.fd());
        uint32_t want = f.flags() | (f.cloexec() ? static_cast<uint32_t>(O_CLOEXEC) : 0u);
        if (info->flags != want)
            return error_code(EINVAL, "pid {}: fd {}: file status flags 0{:o} after restore, 0{:o} at dump (differ in 0{:o})",
                              t.pid, f.fd(), info->flags, want, info->flags ^ want);
    }
    return ok();
}

// A table shared by several processes (clone with CLONE_FILES, not CLONE_THREAD): an fd one
// opens or closes is the others' too. The restore makes such a child with CLONE_FILES from its
// restored parent, and only the first process of the table restores its fds (restore.cpp).
Result<std::set<pid_t>> find_shared_fd_tables(const std::vector<std::pair<pid_t, pid_t>>& procs) {
    constexpr int kKcmpFiles = 2;  // KCMP_FILES
    auto same = [](pid_t a, pid_t b) -> Result<bool> {
        long r = syscall(SYS_kcmp, a, b, kKcmpFiles, 0, 0);
        if (r < 0) return sys_error("kcmp(pid {}, pid {}, KCMP_FILES)", a, b);
        return r == 0;
    };
    std::set<pid_t> sharing;  // processes with their parent's table
    std::map<pid_t, pid_t> parent_of;
    for (auto [pid, parent] : procs) {
        parent_of[pid] = parent;
        if (parent > 0 && CKPT_TRY(same(parent, pid))) sharing.insert(pid);
    }
    // The first process of a table: up the parents while they share it.
    auto first = [&](pid_t p) {
        while (sharing.count(p)) p = parent_of[p];
        return p;
    };
    // Any other sharing (processes that got the table from one that has exited, say) cannot
    // be made again by clone from a restored parent: refused, rather than split unnoticed.
    for (size_t i = 0; i < procs.size(); ++i)
        for (size_t j = i + 1; j < procs.size(); ++j) {
            pid_t a = procs[i].first, b = procs[j].first;
            if (first(a) != first(b) && CKPT_TRY(same(a, b)))
                return error_code(ENOTSUP,
                                  "pid {} and pid {} share one fd table (clone with CLONE_FILES) but neither "
                                  "has it from the other or from a parent sharing it: cannot be restored",
                                  a, b);
        }
    return sharing;
}

}  // namespace ckpt::engine
