// index.h5: the job's index as an HDF5 file that h5dump and h5py read without our code.
// The schema is in docs/index-schema.md.
//
// The HDF5 library here is the serial build: call these from one thread at a time.
#pragma once

#include <string>

#include "ckpt/base/result.h"
#include "ckpt/set/model.h"

namespace ckpt::set {

// Reads and checks a whole index. A missing, truncated or garbage file, an unknown format
// version or a malformed set is an error that names the file (and the set).
Result<Index> read_index(const std::string& path);

// Writes idx to a new file at path (which must not be in use): the caller renames it into
// place. The file is fsynced before this returns.
Result<void> write_index_file(const std::string& path, const Index& idx);

}  // namespace ckpt::set
