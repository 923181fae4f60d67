// Files: the registry used while dumping, and opening a recorded file at restore.
#pragma once

#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "dump_context.h"
#include "files.pb.h"

#include <xxhash.h>

namespace ckpt::engine {

// The ELF NT_GNU_BUILD_ID of an open file (empty when it has none or is no ELF).
std::string build_id(int fd);
// Copies from -> to keeping holes; returns a checksum of the data and its offsets.
Result<void> copy_sparse(int from, int to, uint64_t size, uint64_t* xxh3);
// Opens a recorded file by its path in the engine with the given flags, verifying it is the
// file that was dumped (unless skip_checks). Not for saved files (e.deleted()).
Result<UniqueFd> open_recorded_file(const std::string& image_dir, const image::FileEntry& e, int flags,
                                    bool skip_checks);
// Makes a saved file (e.deleted(): deleted while open, memfd, shared anonymous memory, or
// saved under --save-files-under) again from its content: a new object, open O_RDWR. A
// restore makes it once and opens it again for every fd and mapping of that file
// (RestoreShared::saved_object), so that all of them share it as they did.
Result<UniqueFd> recreate_saved_file(const std::string& image_dir, const image::FileEntry& e);

}  // namespace ckpt::engine
