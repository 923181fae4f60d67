#include "fsutil.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <memory>
#include <vector>

namespace ckpt::set::fsutil {
namespace fs = std::filesystem;

Result<void> fsync_path(const std::string& path) {
    auto fd = CKPT_TRY(open_file(path, O_RDONLY));
    if (::fsync(fd.get()) != 0) return sys_error("fsync {}", path);
    return ok();
}

Result<void> install(const std::string& from, const std::string& to) {
    if (::rename(from.c_str(), to.c_str()) != 0) return sys_error("rename {} to {}", from, to);
    return fsync_path(std::filesystem::path(to).parent_path().string());
}

std::string temp_path(const std::string& path) {
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
        r = now_ns() ^ (static_cast<uint64_t>(::getpid()) << 32);
    fs::path p(path);
    return (p.parent_path() / fmt::format(".{}.tmp.{:016x}", p.filename().string(), r)).string();
}

Result<void> write_file_atomic(const std::string& path, const std::string& text) {
    std::string tmp = temp_path(path);
    {
        auto fd = CKPT_TRY(open_file(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
        auto fail = [&](Error e) {
            ::unlink(tmp.c_str());
            return e;
        };
        if (auto w = write_all(fd.get(), text.data(), text.size()); !w)
            return fail(std::move(w).error().context("{}", tmp));
        if (::fsync(fd.get()) != 0) return fail(sys_error("fsync {}", tmp));
    }
    return install(tmp, path);
}

Result<void> make_private_dir(const std::string& path, bool exclusive) {
    if (::mkdir(path.c_str(), 0700) == 0) return ok();
    if (errno != EEXIST || exclusive) return sys_error("mkdir {}", path);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return sys_error("lstat {}", path);
    if (!S_ISDIR(st.st_mode)) return error_code(ENOTDIR, "{}: exists and is not a folder", path);
    return ok();
}

Result<void> remove_tree(const std::string& parent, const std::string& name) {
    std::string from = parent + "/" + name;
    std::string doomed =
        name.starts_with(".deleted-") ? from : fmt::format("{}/.deleted-{}", parent, name);
    if (from != doomed && ::rename(from.c_str(), doomed.c_str()) != 0) {
        if (errno == ENOENT) return ok();
        return sys_error("rename {} to {}", from, doomed);
    }
    std::error_code ec;
    std::filesystem::remove_all(doomed, ec);
    if (ec) return error_code(ec.value(), "remove {}: {}", doomed, ec.message());
    return fsync_path(parent);
}

Result<UniqueFd> lock_dir(const std::string& dir) {
    std::string path = dir + "/.lock";
    auto fd = CKPT_TRY(open_file(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600));
    while (::flock(fd.get(), LOCK_EX) != 0)
        if (errno != EINTR) return sys_error("flock {}", path);
    return fd;
}

Result<FileRecord> checksum_file(const std::string& path, const std::string& name) {
    // A FIFO or device put in place of an image must not block or feed the reader forever.
    auto fd = CKPT_TRY(open_file(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK));
    struct stat sb;
    if (::fstat(fd.get(), &sb) != 0) return sys_error("fstat {}", path);
    if (!S_ISREG(sb.st_mode)) return error_code(EINVAL, "{}: not a regular file", path);
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), XXH3_freeState);
    XXH3_64bits_reset(st.get());
    // Reused: a fresh 1 MiB buffer per file costs more in page faults than small files take to
    // read.
    static thread_local std::vector<char> buf(1 << 20);
    FileRecord rec{name, 0, 0};
    for (;;) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("read {}", path);
        }
        if (n == 0) break;
        XXH3_64bits_update(st.get(), buf.data(), static_cast<size_t>(n));
        rec.bytes += static_cast<uint64_t>(n);
    }
    rec.checksum = XXH3_64bits_digest(st.get());
    return rec;
}

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace ckpt::set::fsutil
