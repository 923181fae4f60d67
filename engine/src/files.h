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
// Opens a recorded file in the engine with the given flags, verifying it is the file that
// was dumped (unless skip_checks), or recreating it from saved content.
Result<UniqueFd> open_recorded_file(const std::string& image_dir, const image::FileEntry& e, int flags,
                                    bool skip_checks);

}  // namespace ckpt::engine
