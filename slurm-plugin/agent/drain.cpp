#include "drain.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <memory>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/set/model.h"
#include "ckpt/set/store.h"

namespace ckpt::slurm::agent {

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

Result<UniqueFd> open_dir_at(int dir, const std::string& name, std::string_view where) {
    UniqueFd fd(::openat(dir, name.c_str(), kDirFlags));
    if (!fd) return sys_error("open {}/{} (a folder, not a link)", where, name);
    return fd;
}

// One recorded file of a member, from src (the local member folder) to dst (the shared one).
Result<void> copy_file(int src_member, int dst_member, const set::FileRecord& f, std::string_view where) {
    if (!set::is_plain_relative_path(f.name)) return error("{}: '{}' leaves the member folder", where, f.name);
    auto parts = split(f.name, '/');
    UniqueFd src(::dup(src_member)), dst(::dup(dst_member));
    if (!src || !dst) return sys_error("dup");
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
        std::string part(parts[i]);
        src = CKPT_TRY(open_dir_at(src.get(), part, where));
        if (::mkdirat(dst.get(), part.c_str(), 0700) != 0 && errno != EEXIST)
            return sys_error("mkdir {}: {}", where, part);
        dst = CKPT_TRY(open_dir_at(dst.get(), part, where));
    }
    std::string leaf(parts.back());
    UniqueFd in(::openat(src.get(), leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!in) return sys_error("{}: open local {}", where, f.name);
    struct stat st;
    if (::fstat(in.get(), &st) != 0) return sys_error("{}: fstat local {}", where, f.name);
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != f.bytes)
        return error_code(EIO, "{}: local {} is not the regular file of {} bytes that was dumped", where,
                          f.name, f.bytes);
    // A name already there (a planted link, a leftover) is removed, never followed.
    if (::unlinkat(dst.get(), leaf.c_str(), 0) != 0 && errno != ENOENT)
        return sys_error("{}: remove {}", where, f.name);
    UniqueFd out(::openat(dst.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) return sys_error("{}: create {}", where, f.name);
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> h(XXH3_createState(), XXH3_freeState);
    XXH3_64bits_reset(h.get());
    std::vector<char> buf(1 << 20);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = ::read(in.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("{}: read local {}", where, f.name);
        if (n == 0) break;
        total += static_cast<uint64_t>(n);
        if (total > f.bytes) break;
        XXH3_64bits_update(h.get(), buf.data(), static_cast<size_t>(n));
        CKPT_TRY_CTX(write_all(out.get(), buf.data(), static_cast<size_t>(n)), "{}: {}", where, f.name);
    }
    if (total != f.bytes || XXH3_64bits_digest(h.get()) != f.checksum)
        return error_code(EIO, "{}: local {}: checksum mismatch (changed since it was dumped)", where, f.name);
    if (::fsync(out.get()) != 0) return sys_error("{}: fsync {}", where, f.name);
    return ok();
}

// fsync of a member's folders in the job's folder (the files were fsynced as written).
Result<void> fsync_dirs(int dir, std::string_view where) {
    DIR* it = ::fdopendir(::dup(dir));
    if (!it) return sys_error("opendir {}", where);
    ::rewinddir(it);
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(it))
        if (e->d_type == DT_DIR && std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..")
            subdirs.emplace_back(e->d_name);
    ::closedir(it);
    for (const auto& s : subdirs) {
        UniqueFd d = CKPT_TRY(open_dir_at(dir, s, where));
        CKPT_TRY(fsync_dirs(d.get(), where));
    }
    if (::fsync(dir) != 0) return sys_error("fsync {}", where);
    return ok();
}

}  // namespace

Result<UniqueFd> open_local_job_folder(const std::string& local_root, uint64_t job, uid_t uid) {
    std::string dir = fmt::format("{}/{}", local_root, job);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir {}", dir);
    UniqueFd fd = CKPT_TRY(open_folder(dir, uid));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return sys_error("fstat {}", dir);
    if (st.st_mode & (S_IWGRP | S_IWOTH)) return error_code(EPERM, "{}: group or others may write it", dir);
    return fd;
}

Result<void> make_local_set(int local_fd, const std::string& local_dir, uint64_t seq,
                            const std::vector<int32_t>& ids) {
    std::string name = set::set_folder_name(seq);
    struct stat st;
    if (::fstatat(local_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        std::error_code ec;
        std::filesystem::remove_all(fmt::format("{}/{}", local_dir, name), ec);  // never follows links
        if (ec) return error_code(ec.value(), "remove {}/{}: {}", local_dir, name, ec.message());
    }
    if (::mkdirat(local_fd, name.c_str(), 0700) != 0) return sys_error("mkdir {}/{}", local_dir, name);
    UniqueFd set_fd = CKPT_TRY(open_dir_at(local_fd, name, local_dir));
    for (int32_t id : ids)
        if (std::string m = fmt::format("member-{}", id); ::mkdirat(set_fd.get(), m.c_str(), 0700) != 0)
            return sys_error("mkdir {}/{}/{}", local_dir, name, m);
    return ok();
}

Result<void> drain_members(int local_fd, int job_fd, uint64_t seq,
                           const std::vector<NodeReport::Member>& members) {
    std::string name = set::set_folder_name(seq);
    UniqueFd src_set = CKPT_TRY(open_dir_at(local_fd, name, "local job folder"));
    UniqueFd dst_set = CKPT_TRY(open_dir_at(job_fd, name, "job folder"));
    for (const auto& m : members) {
        std::string member = fmt::format("member-{}", m.member_id);
        std::string where = fmt::format("set {} member {}", seq, m.member_id);
        if (m.image_dir != name + "/" + member) return error("{}: unexpected folder {}", where, m.image_dir);
        UniqueFd src = CKPT_TRY(open_dir_at(src_set.get(), member, where));
        UniqueFd dst = CKPT_TRY(open_dir_at(dst_set.get(), member, where));
        for (const auto& f : m.files) CKPT_TRY(copy_file(src.get(), dst.get(), f, where));
        CKPT_TRY(fsync_dirs(dst.get(), where));
    }
    if (::fsync(dst_set.get()) != 0) return sys_error("fsync set {}", seq);
    return ok();
}

void prune_local_sets(int local_fd, const std::string& local_dir, uint64_t keep) {
    DIR* it = ::fdopendir(::dup(local_fd));
    if (!it) return;
    ::rewinddir(it);  // the dup shares its offset with local_fd, read to the end last time
    std::vector<std::string> old;
    while (dirent* e = ::readdir(it))
        if (auto seq = set::parse_set_folder_name(e->d_name); seq && *seq != keep) old.emplace_back(e->d_name);
    ::closedir(it);
    for (const auto& name : old) {
        std::error_code ec;
        std::filesystem::remove_all(fmt::format("{}/{}", local_dir, name), ec);
        if (ec) log::get("slurm")->warn("remove {}/{}: {}", local_dir, name, ec.message());
    }
}

}  // namespace ckpt::slurm::agent
