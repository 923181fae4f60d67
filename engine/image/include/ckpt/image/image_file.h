// Image files: a fixed header (magic, image kind, format version), length-prefixed
// protobuf records, and a trailer with the record count and an XXH3-64 checksum of
// everything before it.
//
// A reader checks all of it before handing out a single message: a truncated file, a
// flipped byte, an image of another kind or of a format version it does not know is
// refused with a message that says which.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::image {

// The image format version this build writes and the only major one it reads.
inline constexpr uint32_t kFormatVersion = 1;

enum class Kind : uint32_t {
    Inventory = 1,
    Core = 2,
    Mm = 3,
    PageMap = 4,
    Fds = 5,
    Files = 6,
    SetManifest = 7,
};
const char* kind_name(Kind k);

class ImageWriter {
public:
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
    size_t records() const { return records_.size(); }
    Result<void> parse(size_t index, google::protobuf::MessageLite* msg) const;

private:
    std::string path_;
    std::string data_;
    std::vector<std::pair<size_t, size_t>> records_;  // offset, length
};

// One-message images, the common case.
Result<void> write_image(const std::string& path, Kind kind, const google::protobuf::MessageLite& msg,
                         bool sync = false);
Result<void> read_image(const std::string& path, Kind kind, google::protobuf::MessageLite* msg);

// XXH3-64 of a buffer; the checksum used for images and page data.
uint64_t checksum(const void* p, size_t n);

}  // namespace ckpt::image
