// Image streams in the engine (the format: ckpt/image/stream.h): dump --stream writes the
// images held in memory and then the page data straight from the frozen processes;
// restore --stream reads the metadata into memory and then the page data as it fills the
// processes; `ckpt-engine stream` moves a stream between a folder and a TCP connection.
#pragma once

#include <optional>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/stream.h"

namespace ckpt::engine {

// Streams every file of a memory folder (dump --stream) as DATA or IMAGE records.
Result<void> stream_metadata(const image::ImageDir& dir, image::StreamWriter& w);

// The stream restore --stream reads: its metadata read whole (and made the memory folder
// its where() names, read by the restore as a folder), its page data left to read.
struct RestoreStream {
    UniqueFd fd;
    image::StreamReader reader;
    std::optional<image::StreamRecord> pending;  // the first PAGES record (or END), read ahead

    static Result<std::unique_ptr<RestoreStream>> open(const std::string& spec);
    // The next record: the pending one first.
    Result<image::StreamRecord> next();
    // Every pages record consumed: the trailer must come now.
    Result<void> finish();
};

}  // namespace ckpt::engine
