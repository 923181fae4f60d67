#include "ckpt/base/fd.h"

#include <fcntl.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ckpt {

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

Result<UniqueFd> open_file(const std::string& path, int flags, int mode) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd < 0) return sys_error("open {}", path);
    return UniqueFd(fd);
}

Result<std::string> read_file(const std::string& path, size_t read_size) {
    auto fd = CKPT_TRY(open_file(path, O_RDONLY));
    std::string out;
    char buf[8192];
    const size_t want = std::min(read_size, sizeof buf);
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("read {}", path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::string read_to_end(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) out.append(buf, static_cast<size_t>(n));
    return out;
}

Result<UniqueFd> memory_file(const char* name, std::string_view text) {
    UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
    if (!fd) return sys_error("memfd_create {}", name);
    CKPT_TRY_CTX(write_all(fd.get(), text.data(), text.size()), "memfd {}", name);
    if (::lseek(fd.get(), 0, SEEK_SET) != 0) return sys_error("lseek memfd {}", name);
    return fd;
}

Result<void> write_all(int fd, const void* buf, size_t len) {
    const char* p = static_cast<const char*>(buf);
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("write fd {}", fd);
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
    return ok();
}

Result<void> read_exact(int fd, void* buf, size_t len) {
    char* p = static_cast<char*>(buf);
    while (len > 0) {
        ssize_t n = ::read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("read fd {}", fd);
        }
        if (n == 0) return error_code(EIO, "read fd {}: unexpected end of file ({} bytes missing)", fd, len);
        p += n;
        len -= static_cast<size_t>(n);
    }
    return ok();
}

bool place_fds_for_exec(std::span<const std::pair<int, int>> moves) {
    int copies[8];
    if (moves.size() > std::size(copies)) {
        errno = EINVAL;
        return false;
    }
    int above = 0;
    for (const auto& m : moves) above = std::max(above, m.second + 1);
    for (size_t i = 0; i < moves.size(); ++i)
        if ((copies[i] = ::fcntl(moves[i].first, F_DUPFD_CLOEXEC, above)) < 0) return false;
    for (size_t i = 0; i < moves.size(); ++i)
        if (::dup2(copies[i], moves[i].second) < 0) return false;
    return true;
}

ssize_t send_with_fds(int sock, const void* data, size_t len, std::span<const int> fds, int flags) {
    iovec iov{const_cast<void*>(data), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    // Room for a few fds, on the stack: this runs in the SPANK plugin too (nothing thrown).
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
    if (fds.size() > kMaxPassedFds) {
        errno = EINVAL;
        return -1;
    }
    if (!fds.empty()) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(fds.size_bytes());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(fds.size_bytes());
        std::memcpy(CMSG_DATA(c), fds.data(), fds.size_bytes());
    }
    return ::sendmsg(sock, &msg, flags);
}

}  // namespace ckpt
