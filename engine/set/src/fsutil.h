// File system steps of the commit protocol: durable writes, atomic replacement, locking.
#pragma once

#include <sys/types.h>

#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/set/model.h"

namespace ckpt::set::fsutil {

// fsync of a file or folder by path.
Result<void> fsync_path(const std::string& path);
// rename(from, to) then fsync of the folder holding `to`: the replacement is atomic and,
// once this returns, durable.
Result<void> install(const std::string& from, const std::string& to);
// A name for a temporary file beside `path` that nobody can predict:
// <folder>/.<name>.tmp.<random hex>.
std::string temp_path(const std::string& path);
// Writes text to a fresh temporary file beside path (O_EXCL, no link followed), fsyncs it
// and installs it at path.
Result<void> write_file_atomic(const std::string& path, const std::string& text);
// mkdir with mode 0700; an existing folder is an error when exclusive, and an existing name
// that is not a folder (a link) always is.
Result<void> make_private_dir(const std::string& path, bool exclusive);
// Removes a folder tree. Renames it to a hidden ".deleted-" name first, so that a crash
// halfway never leaves a partial set folder under its real name.
Result<void> remove_tree(const std::string& parent, const std::string& name);

// An exclusive flock on <dir>/.lock, released when destroyed.
Result<UniqueFd> lock_dir(const std::string& dir);

// Size and XXH3-64 of one regular file (no link followed), read in large chunks.
Result<FileRecord> checksum_file(const std::string& path, const std::string& name);

// The current CLOCK_REALTIME in nanoseconds.
uint64_t now_ns();

}  // namespace ckpt::set::fsutil
