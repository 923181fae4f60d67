#include "job_folder.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>

#include "ckpt/base/fd.h"

namespace ckpt::slurm::agent {

namespace {

Result<UniqueFd> open_site_root(const std::string& site_root) {
    UniqueFd fd(::open(site_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return sys_error("open checkpoint root {}", site_root);
    return fd;
}

bool closed_root_folder(int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

// A name part nobody can guess or have taken.
Result<uint64_t> random_word() {
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) return sys_error("getrandom");
    return r;
}

Result<void> rename_noreplace(int dir, const std::string& from, const std::string& to) {
    if (::syscall(SYS_renameat2, dir, from.c_str(), dir, to.c_str(), RENAME_NOREPLACE) != 0)
        return sys_error("rename {} to {}", from, to);
    return ok();
}

}  // namespace

bool root_makes_job_folders(const std::string& site_root) {
    auto fd = open_site_root(site_root);
    return fd && closed_root_folder(fd->get());
}

Result<std::string> make_job_folder(const std::string& site_root, uint64_t job, uid_t uid,
                                    gid_t gid) {
    UniqueFd root = CKPT_TRY(open_site_root(site_root));
    if (!closed_root_folder(root.get())) return std::string();
    // Nobody but root may add or rename names in this folder, so a name seen here stays what
    // it is until root changes it.
    std::string name = std::to_string(job), note;
    struct stat st;
    if (::fstatat(root.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode) && st.st_uid == uid) return std::string();
        uint64_t r = CKPT_TRY(random_word());
        std::string aside = fmt::format("{}.earlier-uid{}-{:08x}", name, st.st_uid, r & 0xffffffffu);
        CKPT_TRY_CTX(rename_noreplace(root.get(), name, aside), "{}", site_root);
        note = fmt::format("{}/{} belonged to uid {} (an earlier job of id {}): moved aside to {}",
                           site_root, name, st.st_uid, job, aside);
    } else if (errno != ENOENT) {
        return sys_error("stat {}/{}", site_root, name);
    }
    // Made under a temporary name, given to the user, then renamed into place: nobody (the
    // task's restart lookup, as the user, runs at the same time) ever sees it as root's.
    std::string fresh = fmt::format(".{}.new-{:016x}", name, CKPT_TRY(random_word()));
    if (::mkdirat(root.get(), fresh.c_str(), 0700) != 0) return sys_error("mkdir {}/{}", site_root, fresh);
    UniqueFd dir(::openat(root.get(), fresh.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir || ::fchown(dir.get(), uid, gid) != 0) {
        Error e = sys_error("chown {}/{}", site_root, fresh);
        ::unlinkat(root.get(), fresh.c_str(), AT_REMOVEDIR);
        return e;
    }
    if (auto moved = rename_noreplace(root.get(), fresh, name); !moved) {
        ::unlinkat(root.get(), fresh.c_str(), AT_REMOVEDIR);
        // Made meanwhile by another helper of the job (step-done, another step's agent).
        if (::fstatat(root.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
            st.st_uid == uid)
            return note;
        return std::move(moved).error().context("{}", site_root);
    }
    return note;
}

Result<void> move_job_folder_aside(const std::string& site_root, uint64_t job, uid_t uid,
                                   const std::string& to) {
    std::string from = std::to_string(job), prefix = from + ".earlier-";
    std::string_view suffix = std::string_view(to).substr(std::min(to.size(), prefix.size()));
    bool plain = to.starts_with(prefix) && !suffix.empty() && suffix.size() <= 64;
    for (char c : suffix)
        plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_');
    if (!plain) return error_code(EINVAL, "move aside job {}: '{}' is not a name for it", job, to);
    UniqueFd root = CKPT_TRY(open_site_root(site_root));
    if (!closed_root_folder(root.get()))
        return error_code(EPERM, "move aside job {}: {} is not root's alone", job, site_root);
    struct stat st;
    if (::fstatat(root.get(), from.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return sys_error("stat {}/{}", site_root, from);
    if (!S_ISDIR(st.st_mode) || st.st_uid != uid)
        return error_code(EPERM, "move aside job {}: {}/{} is not a folder of uid {}", job,
                          site_root, from, uid);
    return rename_noreplace(root.get(), from, to).context("{}", site_root);
}

}  // namespace ckpt::slurm::agent
