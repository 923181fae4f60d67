// File descriptors: regular files and devices, pipes inside the tree (with their queued
// data), and fds whose other end is outside the tree (bound to what the restorer gives).
#pragma once

#include <sys/types.h>

#include <map>
#include <set>

#include "ckpt/base/result.h"
#include "dump_context.h"
#include "files.pb.h"

namespace ckpt::engine {

struct RestoreTask;

// Records the fds of pid. pipe_ends counts, per pipe inode, the read and write ends seen
// in the whole tree (collected first by count_pipe_ends), so a pipe with both ends in the
// tree is restored as a pipe and any other as external.
struct PipeEnds {
    std::map<uint64_t, std::pair<int, int>> ends;  // inode -> (readers, writers)
};
// Open file descriptions seen so far in the tree (dup'ed and inherited fds share one).
struct Descriptions {
    struct Seen {
        pid_t pid;
        int fd;
        uint64_t id;
    };
    std::map<std::pair<uint64_t, uint64_t>, std::vector<Seen>> by_inode;  // (dev, ino)
    uint64_t next_id = 1;
};
Result<void> count_pipe_ends(pid_t pid, PipeEnds* out);
Result<void> dump_fds(pid_t pid, const PipeEnds& pipes, Descriptions& descs, FileRegistry& files,
                      const DumpExclusions& ex, bool shell_job, bool external_stdio, image::FdTable* table);

Result<void> restore_fds(RestoreTask& t);
// Owners (F_SETOWN_EX), signals (F_SETSIG) and O_ASYNC of t's fds, from inside t once every
// process and thread of the tree exists (an owner may be any of them).
Result<void> restore_fd_async(RestoreTask& t);
// Every fd's status flags, from /proc/PID/fdinfo, exactly as recorded (close-on-exec too);
// a difference fails the restore naming pid, fd and bits.
Result<void> verify_fd_flags(const RestoreTask& t);

}  // namespace ckpt::engine
