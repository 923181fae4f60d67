// One kind of file descriptor (a pipe, a regular file, an eventfd...): how the dump tells it
// from the others, records it, and how the restore makes it again. Each kind lives in its own
// file of this folder with both sides next to each other, and is listed once in
// fd_kinds.cpp; fd_table.cpp walks a process's fd table and hands each fd to its kind.
//
// Adding a kind: a file here defining `const FdKind kXxxKind`, its entry in fd_kinds.cpp
// (in the order kinds are tried), its image message in proto/files.proto.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <fcntl.h>

#include <functional>
#include <map>
#include <array>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "dump_context.h"
#include "files.pb.h"
#include "proc.h"

namespace ckpt::engine {

struct RestoreShared;
struct RestoreTask;

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

// Per pipe inode, the read and write ends the whole tree holds (the survey counts them), so
// that a pipe with both ends in the tree is restored as a pipe and any other as external.
struct PipeEnds {
    std::map<uint64_t, std::pair<int, int>> ends;  // inode -> (readers, writers)
    std::set<uint64_t> saved;                      // pipes whose buffer is recorded already
};

// The pty pairs whose master the tree holds, and what of their slaves it holds (pty.cpp).
struct PtyPairs {
    struct Master {
        int entry = -1;   // index in FileTable.ptys
        pid_t pid = 0;    // the first fd of the tree on it
        int fd = -1;
        bool hup = false;  // polls POLLHUP: every holder of the slave closed it
    };
    std::map<std::pair<uint64_t, uint32_t>, Master> masters;  // (devpts st_dev, pts index)
    std::set<std::pair<uint64_t, uint32_t>> slaves;           // slaves the tree holds open
    std::set<uint64_t> dev_tty;  // the terminals (st_rdev) /dev/tty fds of the tree name
    // The kernel's tty drivers (/proc/tty/drivers): (major, first minor, last minor), read
    // once per dump, at the first character device the fast checks do not place.
    std::optional<std::vector<std::array<uint32_t, 3>>> tty_drivers;
};

// Established TCP connections of the tree held in repair mode by the dump (fds/tcp.cpp), each
// through the engine's own copy of its fd: while the dump reads them, incoming segments are
// dropped unacknowledged by a socket filter, so nothing arrives that the image would lack.
// release() takes them out of repair mode (and the filter off) so that the tree, let go,
// goes on using them; the destructor does the same unless close_silently is set, when the
// tree is killed: a socket closed in repair mode sends neither FIN nor reset to its peer.
struct TcpRepairHold {
    struct Held {
        UniqueFd sock;
        image::SocketFilter filter;  // the process's own, given back
    };
    std::vector<Held> socks;
    bool close_silently = false;
    void release();
    ~TcpRepairHold() {
        if (!close_silently) release();
    }
};

// What the kinds share over one dump of a tree.
struct FdDumpState {
    FdDumpState(FileRegistry& f, const DumpExclusions& e) : files(f), ex(e) {}
    FileRegistry& files;
    const DumpExclusions& ex;
    bool shell_job = false;       // terminals are the shell's, taken again at restore
    bool external_stdio = false;  // fds 0-2 of every process are the restorer's
    bool file_locks = false;      // locks are saved (dump --file-locks), not refused
    bool tcp_established = false; // established TCP connections are saved (--tcp-established)
    TcpRepairHold tcp_repair;
    Descriptions descs;
    PipeEnds pipes;
    std::map<std::pair<uint64_t, uint64_t>, int> fifos;  // (dev, ino) -> index in FileTable.fifos
    std::set<uint64_t> sockets;                 // inodes of every socket the tree holds (survey)
    // Per pid, its fds that hold the engine's write tracker (mem_track.h): never recorded.
    std::map<pid_t, std::set<int>> engine_fds;
    std::map<uint64_t, int> unix_pairs;         // pair id -> index in FileTable.unix_sockets
    PtyPairs ptys;
    bool ext_unix_sk = false;                   // dump --ext-unix-sk
    // AF_UNIX sockets other than pairs (socket.cpp): inode -> index in FileTable.unix_sks;
    // what the survey saw: listeners by name, datagram sockets by name, pending clients.
    std::map<uint64_t, int> unix_sks;
    std::map<std::string, uint64_t> unix_listeners;
    std::map<std::string, uint64_t> unix_dgram_names;
    std::map<uint64_t, uint64_t> unix_pending;  // client inode -> listener inode
    // fds in flight (SCM_RIGHTS) in messages queued on AF_UNIX sockets, as the engine's peek
    // received them: told apart (which description of the tree each is) once every fd of the
    // tree has been seen.
    struct FdsInFlight {
        pid_t pid = 0;        // the first fd of the tree on the socket
        int fd = -1;
        uint64_t socket = 0;  // a pair's id (unix_pairs) or a socket's inode (unix_sks)
        bool pair = false;
        uint32_t end = 0;     // of the pair
        uint32_t message = 0;  // index in its queued list
        std::vector<UniqueFd> fds;
    };
    std::vector<FdsInFlight> fds_in_flight;
    // The tree's processes, the engine's pid -> the tree's: the senders whose credentials
    // (SCM_CREDENTIALS) messages queued on AF_UNIX sockets carry.
    std::map<pid_t, pid_t> tree_pids;
};

// One fd of one frozen process, as /proc shows it.
struct FdProbe {
    pid_t pid = 0;  // the engine's view
    int fd = -1;
    int pidfd = -1;         // of pid, for pidfd_getfd
    std::string link;       // readlink of /proc/PID/fd/N
    std::string link_path;  // /proc/PID/fd/N
    FdInfo info;
    FdDumpState* state = nullptr;

    // A duplicate of the fd in the engine (pidfd_getfd): the same open file description.
    Result<UniqueFd> take() const;
    // stat(2) of what the fd names.
    Result<struct stat> stat_target() const;
    // The fd's /proc/PID/fdinfo text.
    Result<std::string> fdinfo_text() const;
    // The id of the fd's open file description: the same as an fd seen before in the tree
    // when kcmp says they are one description (is_new says it was not seen before).
    Result<uint64_t> description_id(const struct stat& st, bool* is_new = nullptr) const;
    // O_ASYNC or an owner can be restored only on a resource the tree owns: an fd bound at
    // restore to one of the restorer's has the restorer's.
    Result<void> refuse_async_external(const image::Fd& f) const;
    // Whether the caller says the fd is its own (--external-stdio, --external): restored as
    // external whatever its kind, so no kind counts it as the tree's.
    bool restorers() const;
};

struct FdKind {
    const char* name;
    // The image kind the restore dispatches on (a kind may also record an fd as EXTERNAL).
    image::Fd::Kind image_kind;
    // Dump: whether the fd is of this kind, mostly by its /proc link (null: never).
    bool (*claims)(const FdProbe& probe) = nullptr;
    // Dump, first pass over every fd of the tree before any is recorded (may be null).
    Result<void> (*survey)(const FdProbe& probe) = nullptr;
    // Dump: records the fd into f (fd number, flags, offset, owner are set already).
    Result<void> (*dump)(const FdProbe& probe, image::Fd* f) = nullptr;
    // Dump, once every fd of every process is recorded (may be null).
    Result<void> (*finish_dump)(FdDumpState& state) = nullptr;
    // Restore, once before any process is made: what the tree's fds of this kind share
    // (may be null).
    Result<void> (*prepare_restore)(RestoreShared& shared) = nullptr;
    // Restore, once every process of the tree exists (RestoreShared.made), before any fd is
    // installed: what a process of the tree must make itself (may be null).
    Result<void> (*tree_made)(RestoreShared& shared) = nullptr;
    // Restore: installs f at its number in the process (null: a kind the dump records as
    // another, e.g. EXTERNAL, or refuses).
    Result<void> (*restore)(RestoreTask& t, const image::Fd& f) = nullptr;
    // Restore, once every fd of the process is in place (may be null).
    Result<void> (*restore_late)(RestoreTask& t, const image::Fd& f) = nullptr;
    // Restore, once every fd of every process is in place (may be null).
    Result<void> (*finish_restore)(RestoreShared& shared) = nullptr;
    // Bound at restore to one of the restorer's own fds: its flags and owner are the
    // restorer's, neither restored nor verified.
    bool restorers_fd = false;
};

// Every kind, in the order the dump asks them to claim an fd.
const std::vector<const FdKind*>& fd_kinds();
// Every kind's finish_dump.
Result<void> finish_fd_dump(FdDumpState& state);
// Every kind's prepare_restore, tree_made, and finish_restore.
Result<void> prepare_fd_restore(RestoreShared& shared);
Result<void> tree_made_fd_restore(RestoreShared& shared);
Result<void> finish_fd_restore(RestoreShared& shared);
// The kind that restores fds recorded as k (null: none, the image is corrupt or newer).
const FdKind* fd_kind_of(image::Fd::Kind k);

// The status flags open() or the kernel cannot take back at once: O_ASYNC goes in last,
// once the owner and signal are set (restore_fd_async); open() would record it without
// registering the fd for signals.
inline constexpr uint32_t kLateFlags = O_ASYNC;

// What is queued in a pipe or FIFO (fd: a read end), copied without taking it out.
Result<std::string> peek_pipe(int fd);

// The text after "key" on its fdinfo line, trimmed (nullopt when the kernel has no such line).
std::optional<std::string_view> fdinfo_value(std::string_view fdinfo, std::string_view key);

// A path field of /proc/PID/mountinfo with its octal escapes ("\\040" for a space) undone.
std::string unescape_mount_path(std::string_view field);
// A mount of the file system the kernel calls sdev in fdinfo (its internal dev_t: major << 20 |
// minor) whose root is that file system's root, opened (open_by_handle_at refuses an O_PATH
// fd); from the engine's mount table.
Result<UniqueFd> mount_of(uint64_t sdev);
// The path of an object inotify or fanotify watches, from its file handle in fdinfo
// ("fhandle-type:", "f_handle:" hex bytes): open_by_handle_at (CAP_DAC_READ_SEARCH). A
// deleted object is refused: a watch on it cannot be made again.
Result<std::string> path_of_file_handle(uint64_t sdev, uint32_t handle_type, std::string_view hex);
// The object itself, O_PATH (its /proc/self/fd link names it, " (deleted)" when it is).
Result<UniqueFd> open_file_handle(uint64_t sdev, uint32_t handle_type, std::string_view hex);

// Restore: installs the open file description f names, made with make() (in the engine) by
// the first fd of the tree that has it, shared by every later one (in every process).
// With set_flags, the recorded status flags are set on a description just made.
Result<void> install_description(RestoreTask& t, const image::Fd& f, const std::function<Result<UniqueFd>()>& make,
                                 bool set_flags);

}  // namespace ckpt::engine
