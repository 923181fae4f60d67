// Files: the registry used while dumping, and opening a recorded file at restore.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "dump_context.h"
#include "files.pb.h"

#include <xxhash.h>

namespace ckpt::engine {

// The f_type (statfs) of pseudo file systems whose files are kernel objects with no content
// to save: POSIX message queues, memfd_secret memory, AIO rings.
inline constexpr uint32_t kMqueueMagic = 0x19800202;     // MQUEUE_MAGIC
inline constexpr uint32_t kSecretmemMagic = 0x5345434d;  // SECRETMEM_MAGIC
inline constexpr uint32_t kAioFsMagic = 0xa10a10a1;      // AIO_RING_MAGIC (fs/aio.c): the AIO ring pseudo fs

// The ELF NT_GNU_BUILD_ID of an open file (empty when it has none or is no ELF).
std::string build_id(int fd);
// Copies from -> to keeping holes; returns a checksum of the data and its offsets.
Result<void> copy_sparse(int from, int to, uint64_t size, uint64_t* xxh3);
// Opens a recorded file by its path in the engine with the given flags, verifying it is the
// file that was dumped (unless skip_checks). Not for saved files (e.deleted()).
Result<UniqueFd> open_recorded_file(const std::string& image_dir, const image::FileEntry& e, int flags,
                                    bool skip_checks);
// The checks open_recorded_file makes on fd, an open of e: the same kind of file; for a
// regular file its size and mtime (a written file rolled back) and ELF build-id.
Result<void> check_recorded_file(int fd, const image::FileEntry& e, bool skip_checks);
// A file kept by dump --link-remap (e.link_remap()): its folder and the object, opened O_PATH
// through the hidden link in that folder (no symlink followed, a regular file with the
// recorded inode). The old name is given back to it for the restore when free (old_name),
// and removed again with drop_old_name; the hidden link is removed by remove_link_remap once
// the restore has succeeded (a failed one leaves it, so the images stay restorable).
struct LinkRemapped {
    UniqueFd dir;
    UniqueFd object;
    std::string old_name;
    dev_t dev = 0;
    ino_t ino = 0;
};
Result<LinkRemapped> open_link_remapped(const image::FileEntry& e, bool skip_checks);
// A new open file description of it with flags, checked to be the object (and, with
// check_content, as open_recorded_file checks a file).
Result<UniqueFd> reopen_link_remapped(const image::FileEntry& e, const LinkRemapped& l, int flags, bool skip_checks,
                                      bool check_content);
void drop_old_name(const image::FileEntry& e, LinkRemapped& l);
void remove_link_remap(const image::FileEntry& e, const LinkRemapped& l);
// Opens a file of /proc recorded at dump (e.proc()): its pid translated to the restored
// process's as the engine sees it (hosts: recorded pid -> the engine's).
Result<UniqueFd> open_proc_file(const image::FileEntry& e, int flags, const std::map<pid_t, pid_t>& hosts);
// Makes a saved file (e.deleted(): deleted while open, memfd, shared anonymous memory, or
// saved under --save-files-under) again from its content: a new object, open O_RDWR. A
// restore makes it once and opens it again for every fd and mapping of that file
// (RestoreShared::saved_object), so that all of them share it as they did.
// The copy gets the recorded owner and mode (a memfd is made sealable, its seals added later).
//
// A file deleted while open is made again under its old name when that name is free, and
// keeps it until every fd and mapping of it is in place (then remove_saved_name): /proc
// then names it "PATH (deleted)", as it did. Where the name is taken it is made nameless
// (O_TMPFILE: "DIR/#INODE (deleted)"), and where the folder is gone or closed, as a memfd.
struct SavedName {
    UniqueFd dir;
    std::string name;
    dev_t dev = 0;
    ino_t ino = 0;
};
Result<UniqueFd> recreate_saved_file(const std::string& image_dir, const image::FileEntry& e,
                                     std::optional<SavedName>* named);
// The recorded owner, mode and modification time of a saved file made again (fd: the object).
Result<void> give_saved_attributes(const image::FileEntry& e, int fd);
// Unlinks the name, if it is still the saved file's (a name taken meanwhile is left alone).
void remove_saved_name(const image::FileEntry& e, const SavedName& n);
// A new open file description with flags of a saved file's one object (engine fd `object`),
// named: the saved file's name while it has one.
Result<UniqueFd> reopen_saved_file(const image::FileEntry& e, int object, int flags, const SavedName* named);
// Adds the recorded seals to every memfd made again (objects: file id -> fd), once its
// content, every mapping of it and every fd on it are in place, then checks them.
Result<void> seal_saved_files(const image::FileTable& files, const std::map<uint32_t, UniqueFd>& objects);

}  // namespace ckpt::engine
