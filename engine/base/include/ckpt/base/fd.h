// UniqueFd: an owned file descriptor, closed when it goes out of scope.
#pragma once

#include <sys/types.h>

#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "ckpt/base/result.h"

namespace ckpt {

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    explicit operator bool() const { return valid(); }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

// open(2) returning an owned fd or an error naming the path.
Result<UniqueFd> open_file(const std::string& path, int flags, int mode = 0);
// Reads a whole file (e.g. under /proc) into a string, read_size bytes (at most 8 KiB) per
// read(2).
Result<std::string> read_file(const std::string& path, size_t read_size = 8192);
// Reads fd (a pipe, a file) to its end, retrying EINTR; what came before an error is kept.
std::string read_to_end(int fd);
// Writes all of buf, retrying short writes and EINTR.
Result<void> write_all(int fd, const void* buf, size_t len);
// Reads exactly len bytes at the current offset; a short file is an error.
Result<void> read_exact(int fd, void* buf, size_t len);
// An anonymous memory file (memfd, close-on-exec) holding text, at offset 0: a way to hand
// bytes to a child through an fd without a file on disk or a pipe that could fill.
Result<UniqueFd> memory_file(const char* name, std::string_view text);

// One sendmsg(2) of len bytes at data on socket sock with fds passed along (SCM_RIGHTS; none
// when empty, at most kMaxPassedFds, else EINVAL); flags as sendmsg's. Returns what sendmsg
// returns (errno set on -1).
constexpr size_t kMaxPassedFds = 8;
ssize_t send_with_fds(int sock, const void* data, size_t len, std::span<const int> fds, int flags);

// In a forked child about to exec: puts each pair's fd (first) at the number second, open
// across exec. Every source is first copied above all targets, so a source that sits on
// another pair's target is not overwritten, and no fd is dup2'd onto itself (which would
// leave close-on-exec set). The copies are close-on-exec. False (errno set) on failure.
// Allocates nothing (at most 8 pairs).
bool place_fds_for_exec(std::span<const std::pair<int, int>> moves);

}  // namespace ckpt
