// Image files: a fixed header (magic, image kind, format version), length-prefixed
// protobuf records, and a trailer with the record count and an XXH3-64 checksum of
// everything before it.
//
// A reader checks all of it before handing out a single message: a truncated file, a
// flipped byte, an image of another kind or of a format version it does not know is
// refused with a message that says which.
//
// Everything in an image folder may have been written by its user, at any moment, checksums
// included. So files are written there only as fresh files created through the folder's fd
// (ImageDir), and read only when they are regular files reached without following a link,
// opened without blocking and read no further than their size (open_image_file).
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::image {

// The image format version this build writes and the only major one it reads.
// 2: status flags kept whole, fd owners and signals (Fd.async), saved files' owner and memfd
//    seals, Vma.may_write; a version 1 image lacks them and is refused, not restored wrong.
// 3: per-thread scheduling flags and utilization clamps, per-thread credentials,
//    oom_score_adj, loginuid; a version 2 image lacks them and is refused.
// 4: guard pages of mappings (Vma.guards), mlock'ed and mseal'ed mappings (Vma.madvise); a
//    version 3 image may lack them and is refused.
// 5: fds on /proc files reopened for the restored process (FileEntry.proc); a version 4
//    image refused them at restore as changed files, and is refused.
// 6: pages a child shares copy-on-write with its parent since a fork, stored once (the
//    parent's) and inherited by fork at restore (Vma.inherited, PageRun.inherited); fd tables
//    shared with the parent (TaskEntry.fd_table_of_parent); named pipes (Fd.FIFO,
//    FileTable.fifos); membarrier registrations (TaskCore); file locks (Fd.locks); inotify
//    (Fd.INOTIFY); connected unnamed AF_UNIX pairs (Fd.UNIX_SOCKET, FileTable.unix_sockets); a
//    version 5 reader would restore such pages as zeros and such tables
//    split, so it must refuse version 6.
// 7: more fd kinds (issue 12), each listed here; a version 6 reader would not know them and
//    refuses version 7 (one bump for all of them):
//    - leases (FileLock.LEASE); fanotify groups (Fd.FANOTIFY, Fd.fanotify);
//    - pty pairs inside the tree and /dev/tty on their slave (Fd.PTY, FileTable.ptys);
//    - AF_UNIX sockets bound, listening (with pending connections), accepted, connected to a
//      named socket or alone (Fd.UNIX_SK, FileTable.unix_sks: UnixSkEntry, UnixMessage);
//    - TCP sockets, listening or established (Fd.TCP_SOCKET, Fd.tcp).
// 8: more of issue 12, each listed here; a version 7 reader would restore them wrong or not
//    know them, and refuses version 8:
//    - fds in flight (SCM_RIGHTS) in queued messages (UnixSocketEnd.in_flight,
//      UnixMessage.fds): a version 7 reader would send the messages without them.
//    - output of a pty's slave not read by its master yet (PtyEntry.to_master).
//    - UDP, UDP-Lite, ICMP ping and raw sockets of AF_INET/AF_INET6 (Fd.INET_DGRAM,
//      Fd.inet_dgram) and netlink sockets (Fd.NETLINK_SOCKET, Fd.netlink), with their socket
//      options (SocketOption);
//    - dump --link-remap: a file unlinked while open, mapped or inotify-watched but linked
//      elsewhere, kept through a hidden hard link in its old folder (FileEntry.link_remap,
//      InotifyWatch.file_id): a version 7 reader would open whatever is at the old path now;
//    - System V IPC of a tree in its own IPC namespace (ipc.img, Kind::Ipc: the namespace's
//      sysctls, segments with their content, semaphore sets, message queues with their
//      messages) and segment attachments (Vma.sysv_shm, shm_id, shm_rdonly).
// 9: more of issues 12 and 13, each listed here; a version 8 reader would restore them wrong
//    and refuses version 9:
//    - image streams (stream.h, proto/stream.proto, StreamHeader.format_version): every file of
//      a dump as one framed stream, page data last; the files in it are a folder's, unchanged.
//    - TCP connections half-closed (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING:
//      TcpConnection.tcp_state): a version 8 reader would restore them as established.
//    - incremental dumps (dump --prev-images-dir): page runs read from the parent dump
//      (PageRun.in_parent, PageMap.parent_dir/parent_dump_id/parent_pagemap_xxh3/dump_id,
//      Inventory.dump_id) and the write tracker left by dump --track-mem (MmCore.tracker_fd,
//      tracker_ino): a version 8 reader would restore in_parent pages as zeros.
// 10: more of issues 12 and 13, each listed here; a version 9 reader refuses version 10:
//    - write trackers a process holds that its dump did not arm (MmCore.held_tracker_inos):
//      a version 9 dump naming such a dump would refuse them as unknown.
//    - the credentials (SCM_CREDENTIALS) of messages queued for an AF_UNIX receiver with
//      SO_PASSCRED (MessageCreds: UnixSocketEnd.creds, UnixMessage.creds) and SO_PASSCRED of a
//      pair's ends (UnixSocketEnd.passcred): a version 9 reader would send them as the engine's.
//    - dump --compress: page data stored per block, zstd-compressed where that helps
//      (PageMap.blocks, PageBlock, PageMap.stored_bytes): a version 9 reader would take the
//      compressed bytes for pages.
// 11: more of issues 12 and 13, each listed here; a version 10 reader refuses version 11:
//    - AF_UNIX SO_PASSPIDFD and SO_PASSSEC (UnixSocketEnd.options, UnixSkEntry.options) and
//      SO_PEERCRED at dump (PeerCred): a version 10 reader would restore a receiver without them.
// 12: SO_PEERGROUPS of AF_UNIX sockets (PeerCred.groups): a version 11 reader would restore the
//     restorer's supplementary groups there; it refuses version 12.
// 13: a version 12 reader refuses version 13:
//    - datagrams queued for UDP and UDP-Lite sockets (InetDgramSocket.queued): a version 12
//      reader would restore the socket empty.
//    - classic BPF socket filters and SO_LOCK_FILTER of every socket kind (SocketFilter): a
//      version 12 reader would restore the sockets unfiltered.
//    - each thread's CPU affinity and I/O priority (ThreadCore.cpu_affinity, ioprio): a
//      version 12 reader would restore the restorer's I/O priority.
// 14: memory-deny-write-execute (PR_SET_MDWE: TaskCore.mdwe): a version 13 reader would restore
//     the process able to make its memory executable again; it refuses version 14.
// 15: mappings' read-ahead advice (MADV_SEQUENTIAL, MADV_RANDOM), MADV_MERGEABLE and
//     MLOCK_ONFAULT locks (Vma.madvise bits 128, 256, 512, 1024), MAP_NORESERVE and
//     MAP_DROPPABLE (Vma.flags): a version 14 reader would restore them without.
// 16: a UDP socket shut down for sending (InetDgramSocket.shutdown 2, from sock_diag), which a
//     version 15 reader would refuse as corrupt; a MAP_DROPPABLE mapping's pages are no
//     longer saved.
inline constexpr uint32_t kFormatVersion = 16;

enum class Kind : uint32_t {
    Inventory = 1,
    Core = 2,
    Mm = 3,
    PageMap = 4,
    Fds = 5,
    Files = 6,
    SetManifest = 7,
    Ipc = 20,
};
const char* kind_name(Kind k);

// The largest protobuf image a reader accepts (a forged size must not exhaust memory).
inline constexpr uint64_t kMaxImageBytes = 1ull << 30;

// An image folder opened once for writing: every file is created in it through its fd.
class ImageDir {
public:
    // Opens an existing folder (O_DIRECTORY). Its path may traverse symbolic links: where the
    // folder is, is the caller's choice; what is inside it is not.
    static Result<ImageDir> open(const std::string& path);
    // A folder held in memory (dump --stream), named label in messages: create() makes
    // memory files, kept by name until the dump streams them.
    static ImageDir in_memory(std::string label);
    bool is_memory() const { return mem_ != nullptr; }
    // Its files by name (a memory folder's; empty for a folder on disk).
    const std::map<std::string, UniqueFd>& memory_files() const;
    const std::string& path() const { return path_; }
    // Creates name (a plain name) as a fresh file, write-only, mode 0600: whatever is there
    // is removed first (a planted symbolic link itself, never its target), then the name is
    // created with O_EXCL|O_NOFOLLOW. An existing file is never opened for writing.
    Result<UniqueFd> create(const std::string& name) const;
    // Removes name if it is there.
    Result<void> remove(const std::string& name) const;

private:
    ImageDir(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    std::string path_;
    UniqueFd fd_;
    std::shared_ptr<std::map<std::string, UniqueFd>> mem_;
};

// A file of an image folder opened for reading: a regular file, of size bytes.
struct ImageFileFd {
    UniqueFd fd;
    uint64_t size = 0;
};
// Opens path (its last component not followed if a link) with O_NONBLOCK, so that a FIFO
// cannot block, and refuses anything but a regular file.
Result<ImageFileFd> open_image_file(const std::string& path);

// Refuses a file name recorded in image (a path, for the message) unless it is a plain name
// of the image's own folder: not empty, no '/', not "." or "..", no NUL.
Result<void> check_plain_name(std::string_view image, std::string_view name);

// Opens the data file name that image (in dir) records, of the size it records: the name
// is checked to be plain, the file opened as open_image_file does.
Result<UniqueFd> open_recorded_data(const std::string& dir, std::string_view image, const std::string& name,
                                    uint64_t size);

class ImageWriter {
public:
    static Result<ImageWriter> create(const ImageDir& dir, const std::string& name, Kind kind);
    // The same, opening the file's folder first.
    static Result<ImageWriter> create(const std::string& path, Kind kind);
    Result<void> add(const google::protobuf::MessageLite& msg);
    // Writes the trailer; with sync, fsyncs the file. The image is invalid until then.
    Result<void> finish(bool sync = false);

private:
    ImageWriter(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    Result<void> append(const void* p, size_t n);
    std::string path_;
    UniqueFd fd_;
    std::string buf_;
    uint32_t records_ = 0;
};

class ImageReader {
public:
    // Reads and verifies the whole image.
    static Result<ImageReader> open(const std::string& path, Kind kind);
    // The same of an image's content already read (named path in messages).
    static Result<ImageReader> from_data(const std::string& path, std::string data, Kind kind);
    size_t records() const { return records_.size(); }
    Result<void> parse(size_t index, google::protobuf::MessageLite* msg) const;
    // The checksum of the whole file (its trailer's, verified): which image this is.
    uint64_t xxh3() const { return xxh3_; }

private:
    std::string path_;
    uint64_t xxh3_ = 0;
    std::string data_;
    std::vector<std::pair<size_t, size_t>> records_;  // offset, length
};

// One-message images, the common case. The path form opens the file's folder first.
Result<void> write_image(const ImageDir& dir, const std::string& name, Kind kind,
                         const google::protobuf::MessageLite& msg, bool sync = false);
Result<void> write_image(const std::string& path, Kind kind, const google::protobuf::MessageLite& msg,
                         bool sync = false);
// xxh3, when given, gets the checksum of the whole file (ImageReader::xxh3).
Result<void> read_image(const std::string& path, Kind kind, google::protobuf::MessageLite* msg,
                        uint64_t* xxh3 = nullptr);
// The same of an image's content already read (a stream's record), named path in messages.
Result<void> parse_image(const std::string& path, std::string data, Kind kind, google::protobuf::MessageLite* msg);

// XXH3-64 of a buffer; the checksum used for images and page data.
uint64_t checksum(const void* p, size_t n);

}  // namespace ckpt::image
