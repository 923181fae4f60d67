// Pipes: a pipe with both ends in the tree (or with one end nobody holds any more) is the
// tree's own, made again with its capacity and what is queued in it; a pipe whose other end
// a process outside the tree holds is an external resource, bound at restore to what the
// restorer is given (--inherit-fd).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

Result<uint64_t> pipe_inode(std::string_view link) {
    // "pipe:[12345]"
    return parse_uint(link.substr(6, link.size() - 7)).context("pipe fd link '{}'", link);
}

bool read_end(const FdProbe& probe) { return (probe.info.flags & O_ACCMODE) == O_RDONLY; }

// Whether nobody holds the other end of a pipe the tree holds one end of: no writer left
// (a read end polls POLLHUP) or no reader (a write end polls POLLERR). Such a pipe is the
// tree's own, restored with that end closed; only a pipe whose other end a process outside
// the tree holds is an external resource.
Result<bool> other_end_gone(const FdProbe& probe) {
    UniqueFd mine = CKPT_TRY(probe.take());
    pollfd p{mine.get(), 0, 0};  // POLLHUP and POLLERR are reported whatever is asked
    if (::poll(&p, 1, 0) < 0) return sys_error("poll");
    return read_end(probe) ? (p.revents & POLLHUP) != 0 : (p.revents & POLLERR) != 0;
}

bool claims_pipe(const FdProbe& probe) { return starts_with(probe.link, "pipe:["); }

// Counts the ends every process of the tree holds.
Result<void> survey_pipe(const FdProbe& probe) {
    auto& e = probe.state->pipes.ends[CKPT_TRY(pipe_inode(probe.link))];
    (read_end(probe) ? e.first : e.second)++;
    return ok();
}

Result<void> dump_pipe(const FdProbe& probe, image::Fd* f) {
    PipeEnds& pipes = probe.state->pipes;
    uint64_t ino = CKPT_TRY(pipe_inode(probe.link));
    auto it = pipes.ends.find(ino);
    bool internal = it != pipes.ends.end() && it->second.first > 0 && it->second.second > 0;
    bool widowed = false;
    if (!internal) internal = widowed = CKPT_TRY(other_end_gone(probe));
    if (!internal) {
        CKPT_TRY(probe.refuse_async_external(*f));
        f->set_kind(image::Fd::EXTERNAL);
        f->set_external_key(probe.link);
        return ok();
    }
    f->set_pipe_id(ino);
    // Another description of the same end (opened again through /proc/PID/fd) has status
    // flags of its own: kept apart (format 16; 0 before: every fd of an end shared one).
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    // Recorded by a reader (with what is queued), or by the writer of a pipe nobody reads
    // any more (what is queued there can never be read).
    if (pipes.saved.count(ino) || (!read_end(probe) && !widowed)) return ok();
    UniqueFd mine = CKPT_TRY(probe.take());
    auto* p = probe.state->files.table().add_pipes();
    p->set_id(ino);
    int cap = fcntl(mine.get(), F_GETPIPE_SZ);
    p->set_capacity(cap > 0 ? static_cast<uint32_t>(cap) : 0);
    if (read_end(probe)) p->set_queued(CKPT_TRY(peek_pipe(mine.get())));
    pipes.saved.insert(ino);
    return ok();
}

// Every pipe of the tree, with its capacity and queued data, before any process: each fd is
// then one of its two ends.
Result<void> make_pipes(RestoreShared& sh) {
    for (const auto& p : sh.files.pipes()) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe2");
        sh.pipes[p.id()] = {UniqueFd(fds[0]), UniqueFd(fds[1])};
        if (p.capacity() && fcntl(fds[1], F_SETPIPE_SZ, p.capacity()) < 0)
            logger()->warn("pipe {}: cannot set capacity {}: {}", p.id(), p.capacity(), strerror(errno));
        CKPT_TRY_CTX(write_all(fds[1], p.queued().data(), p.queued().size()), "pipe {}: queued data", p.id());
    }
    return ok();
}

Result<void> restore_pipe(RestoreTask& t, const image::Fd& f) {
    auto it = t.shared->pipes.find(f.pipe_id());
    if (it == t.shared->pipes.end()) return error("pipe {} missing from the images", f.pipe_id());
    const bool reader = (f.flags() & O_ACCMODE) == O_RDONLY;
    const int end = reader ? it->second.first.get() : it->second.second.get();
    if (f.description_id() == 0) return error_code(EINVAL, "pipe {}: fd without a description id (image is corrupt)", f.pipe_id());
    // An end's first description is the pipe's own; each other one is opened again through
    // /proc, as the process did (the engine's own fd: never a path of the user's).
    auto make = [&]() -> Result<UniqueFd> {
        if (t.shared->pipe_ends_given.insert({f.pipe_id(), reader}).second) {
            UniqueFd d(fcntl(end, F_DUPFD_CLOEXEC, 0));
            if (!d) return sys_error("pipe {}: dup", f.pipe_id());
            return d;
        }
        return open_file("/proc/self/fd/" + std::to_string(end), (reader ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_CLOEXEC)
            .context("pipe {}: another description of its {} end", f.pipe_id(), reader ? "read" : "write");
    };
    // Status flags (O_NONBLOCK) live in the description: set on it once it is made.
    return install_description(t, f, make, true);
}

}  // namespace

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

extern const FdKind kPipeKind{
    .name = "pipe",
    .image_kind = image::Fd::PIPE,
    .claims = claims_pipe,
    .survey = survey_pipe,
    .dump = dump_pipe,
    .prepare_restore = make_pipes,
    .restore = restore_pipe,
};

}  // namespace ckpt::engine
