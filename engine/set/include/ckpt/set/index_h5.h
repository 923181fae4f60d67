// index.h5: the job's index as an HDF5 file that h5dump and h5py read without our code.
// The schema is in docs/index-schema.md.
//
// The HDF5 library here is the serial build: call these from one thread at a time.
#pragma once

#include <string>

#include "ckpt/base/result.h"
#include "ckpt/set/model.h"

namespace ckpt::set {

// Reads and checks a whole index: first its seal (length and XXH3-64 in the HDF5 user
// block), then the HDF5 content from that checked copy in memory. A missing, truncated,
// damaged or foreign file, an unknown format version or a malformed set is an error that
// names the file (and the set).
Result<Index> read_index(const std::string& path);

// Writes idx to a new file at path (which must not exist), seals it and fsyncs it; the
// caller renames it into place. Writers use the current format version; an older one (what
// an earlier build wrote, without the newer attributes) is for compatibility tests.
Result<void> write_index_file(const std::string& path, const Index& idx,
                              uint32_t version = kIndexFormatVersion);

}  // namespace ckpt::set
