// The engine's entry points: dump a process tree into an image directory, restore one.
#pragma once

#include <sys/types.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::engine {

struct DumpOptions {
    pid_t root = 0;
    std::string image_dir;
    // dump --stream FD|PATH: the images as one stream (ckpt/image/stream.h) to an inherited fd,
    // a socket, a FIFO or a file; no image folder (image_dir empty).
    std::string stream;
    bool leave_running = false;
    // With leave_running: the copy-on-write snapshot (frozen only while its state is
    // recorded and its memory write-protected; pages copied while it runs) instead of
    // keeping the tree frozen until every page is copied. Opt-in (dump --snapshot) until a
    // rare failure under load is explained (docs/engine.md).
    bool snapshot = false;
    bool shell_job = false;
    // Fds 0, 1 and 2 are the launcher's (a batch system's output files or pipes): recorded
    // as external and bound at restore to the restorer's own stdin, stdout and stderr.
    bool external_stdio = false;
    // Files open under these folders are saved whole, like deleted ones, and come back at
    // restore as unlinked copies: a batch system's per-job copies (slurmd's copy of the job
    // script, which the shell keeps open) are gone, or elsewhere, when the job restarts.
    std::vector<std::string> save_files_under;
    // Left out of the dump (milestone 2: the MPI lower half).
    std::vector<std::pair<uint64_t, uint64_t>> exclude_memory;  // [start, end): mappings inside are left out
    std::set<pid_t> exclude_threads;
    std::set<int> exclude_fds;
    // Fds of the root recorded as external resources under a key of the caller's, to be
    // given back at restore with --inherit-fd fd[N]:KEY (the MPI control channel a parked
    // rank waits on).
    std::map<int, std::string> external_fds;
    // CRIU's --action-script: each run by /bin/sh -c with CRTOOLS_SCRIPT_ACTION set to
    // "pre-dump" (before the tree is frozen) and "post-dump" (images written, the tree still
    // frozen: the moment to snapshot the files it works on). A script that fails fails the dump.
    std::vector<std::string> action_scripts;
    // CRIU's --file-locks: flock, POSIX and OFD locks held through the tree's fds are saved
    // and taken again at restore. Without it a held lock fails the dump by name.
    bool file_locks = false;
    // CRIU's --ext-unix-sk: a datagram AF_UNIX socket connected to a named socket outside the
    // tree is recorded by that name, not refused.
    bool ext_unix_sk = false;
    // CRIU's --tcp-established: established TCP connections are saved with TCP_REPAIR (and,
    // when the tree is killed, closed without a FIN or a reset). Without it an established
    // connection fails the dump by name.
    bool tcp_established = false;
    // CRIU's --timeout: how long each thread of the tree may take to stop when it is seized
    // (a vfork parent waiting for its child's exec, a thread in uninterruptible I/O never
    // does): past it the dump fails naming the thread and where it waits, the tree left
    // running.
    int freeze_timeout_ms = 10'000;
    // CRIU's --link-remap: a file the tree holds open, maps or watches whose name was removed
    // while another link to it remains is kept through a hidden hard link in the folder of its
    // old name (".ckpt-link-remap.DEV-INO-N"), recorded in the images, opened through it at
    // restore and removed by the restore that succeeds (a dump with --leave-running leaves it
    // until then; a later dump of the same file reuses it). Without it such a file fails the
    // dump by name.
    bool link_remap = false;
    // With leave_running: arm a write tracker in every process (a userfaultfd in
    // asynchronous write-protect mode, left in the process at a high fd and recorded in the
    // images) so that a later dump can save only what was written since (prev_images_dir).
    bool track_mem = false;
    // The images of an earlier dump of the same tree made with track_mem, a folder beside
    // image_dir: pages not written since, in mappings tracked since, are recorded as in that
    // dump (PageRun.in_parent) and read from it at restore.
    std::string prev_images_dir;
    // With prev_images_dir: the longest chain of parent dumps a process's images may have
    // (at most kMaxParentChain, 64); one whose chain would be longer is saved whole, its
    // tracker still recognised through prev_images_dir. 0: every process saved whole (a full
    // dump of a tracked tree).
    uint32_t max_chain = 64;
    // dump --compress[=LEVEL]: page data stored per block as zstd frames of this level (1 to
    // 19), a block that does not compress as is; 0: uncompressed. Not with stream or snapshot.
    int compress = 0;
};

// dump --compress without a level, and the highest level taken (zstd's fast levels to 19;
// its slowest ones would hold a tree frozen for long).
inline constexpr int kDefaultCompressLevel = 1;
inline constexpr int kMaxCompressLevel = 19;

struct DumpStats {
    uint64_t frozen_ns = 0;     // from the first thread stopped to the tree let go
    uint64_t total_ns = 0;      // the whole dump
    uint64_t pages_bytes = 0;   // page data written
    uint64_t stored_bytes = 0;  // bytes of pages files written (less than pages_bytes compressed)
    uint64_t processes = 0;
    uint64_t threads = 0;
    bool snapshot = false;          // pages copied while the tree ran (copy-on-write snapshot)
    uint64_t snapshot_faults = 0;   // writes that waited for their page to be copied
};

Result<DumpStats> dump(const DumpOptions& opts);

struct RestoreOptions {
    std::string image_dir;
    // restore --stream FD|PATH: the images read from one stream; no image folder.
    std::string stream;
    bool detach = false;
    std::string pidfile;
    bool shell_job = false;
    bool skip_file_checks = false;
    // Restore into a fresh pid namespace (under a minimal init), so that the processes
    // get their old pids even where those are taken.
    bool new_pidns = false;
    // Restore for this user (the caller is root; needs new_pidns): the pid namespace is
    // made as root, then the whole restore runs as the user (uid, gid, the user's groups)
    // with only CAP_CHECKPOINT_RESTORE until the tree exists, so the kernel refuses whatever
    // the user could not do. Images must describe exactly the user (uids, gids, groups, no
    // capability, the restorer's bounding set, seccomp only with no_new_privs); every thread
    // is checked from /proc before it runs. -1: root restores the images as recorded.
    int64_t restore_as_uid = -1;
    int64_t restore_as_gid = -1;
    std::map<std::string, int> inherit_fds;  // key -> fd of the restorer
    // CRIU's --ext-unix-sk: datagram sockets recorded connected to a name outside the tree
    // are connected to it again (refused without it).
    bool ext_unix_sk = false;
    // CRIU's --tcp-established: images holding established TCP connections are restored
    // (TCP_REPAIR); without it they are refused.
    bool tcp_established = false;
    // CRIU's --with-cpu-affinity: every thread gets the CPU affinity recorded, whole (or the
    // restore fails); without it threads run on the restorer's CPUs.
    bool with_cpu_affinity = false;
};

struct RestoredTree {
    pid_t root = 0;        // as the caller sees it
    pid_t pidns_init = 0;  // the new pid namespace's init (new_pidns), else 0
};

// Restores the tree; its root becomes a child of the calling process (or of the new pid
// namespace's init, the caller's child), which waits for it (or not, when detaching).
// Under restore_as_uid the calling process has become the user, with no capability left.
Result<RestoredTree> restore(const RestoreOptions& opts);

// Stays with a restored tree as its launcher would: forwards termination and user
// signals to the root, waits for it, ends the pid namespace's init, and returns the
// root's status as an exit code (its code, or 128+N when killed by signal N).
int wait_restored(const RestoredTree& tree);

// `ckpt-engine stream`: an image folder written to fd as one stream (page data last, in the
// order restore fills the processes); a stream read from fd into a folder (created 0700 if
// missing; its inventory written last, once the whole stream is verified).
Result<void> stream_send(const std::string& images_dir, int fd);
Result<void> stream_recv(int fd, const std::string& images_dir);
// A TCP connection to HOST:PORT; the first one accepted on HOST:PORT (port 0: any, written
// to port_file when given, as soon as it listens).
Result<UniqueFd> tcp_connect(const std::string& host_port);
Result<UniqueFd> tcp_accept(const std::string& host_port, const std::string& port_file);

}  // namespace ckpt::engine
