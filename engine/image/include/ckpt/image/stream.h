// Image streams: every file of an image folder as framed records of one stream (a pipe, a
// socket, a file), page data last (layout in proto/stream.proto). dump --stream writes one,
// restore --stream reads one, `ckpt-engine stream` moves one between a folder and a socket.
//
// A stream is as hostile as a folder: a reader bounds every size, takes plain names only,
// refuses a name seen twice, a framing or format version it does not know, and verifies the
// checksum of every record before its data is used; a stream without its trailer is
// truncated and refused.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <set>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "ckpt/image/image_file.h"
#include "mm.pb.h"
#include "stream.pb.h"

namespace ckpt::image {

// The framing this build writes and the only one it reads.
// 2: the block checksums of page data follow it (StreamRecord.PAGE_SUMS).
// 3: compressed page data block by block (StreamRecord.PAGE_BLOCK); version 2 read as well.
inline constexpr uint32_t kStreamVersion = 3;
inline constexpr uint32_t kOldestStreamVersion = 2;
// Bounds of a reader: a frame's message, a record's data (but page data), all metadata.
inline constexpr uint32_t kMaxStreamFrame = 1u << 20;
inline constexpr uint64_t kMaxStreamMetadata = 2 * kMaxImageBytes;
// A PAGE_BLOCK record's data (what a reader buffers of it): no larger than a block may be.
inline constexpr uint64_t kMaxStreamPageBlock = 256ull << 20;

// Opens the stream of --stream FD|PATH: a number is an fd the engine inherited (taken
// over); a path is a socket (connected to), else opened (a FIFO or a file: for writing,
// created 0600 or truncated, never through a link).
Result<UniqueFd> open_stream(const std::string& spec, bool write);

class StreamWriter {
public:
    StreamWriter(int fd, std::string where);
    StreamWriter(StreamWriter&&) = default;
    // The magic and the header.
    Result<void> begin();
    // One record: its frame, then length bytes through data(), then end_record().
    Result<void> begin_record(const std::string& name, StreamRecord::Kind kind, uint64_t length, uint32_t image_kind = 0,
                              const std::vector<uint64_t>& extents = {});
    Result<void> data(const void* p, size_t n);
    Result<void> end_record();
    // A whole record in one call.
    Result<void> record(const std::string& name, StreamRecord::Kind kind, std::string_view data, uint32_t image_kind = 0,
                        const std::vector<uint64_t>& extents = {});
    // A PAGE_BLOCK record: block b of the compressed page data name (a zstd frame of the
    // block, or the block as is), length bytes through data(), then end_record(); or whole.
    Result<void> begin_page_block(const std::string& name, uint64_t b, bool zstd, uint64_t length);
    Result<void> page_block(const std::string& name, uint64_t b, bool zstd, const void* p, size_t n);
    // The PAGE_SUMS record of the PAGES record name just streamed (or of its last PAGE_BLOCK).
    Result<void> block_sums(const std::string& name, const std::vector<uint64_t>& sums);
    // The trailer: the stream is complete.
    Result<void> end();
    const std::string& where() const { return where_; }

private:
    Result<void> frame(const google::protobuf::MessageLite& m);
    int fd_;
    std::string where_;
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st_;
    uint64_t left_ = 0;
    uint64_t records_ = 0;
    bool open_ = false;
};

class StreamReader {
public:
    StreamReader(int fd, std::string where);
    StreamReader(StreamReader&&) = default;
    // Reads and checks the magic and the header.
    Result<void> begin();
    // The next record's frame, checked (name, kind, length bound); END is checked against
    // the records counted, after which the stream is complete(). The PAGE_BLOCK records of
    // one pages file come in block order from 0, each at most kMaxStreamPageBlock bytes,
    // and end with its PAGE_SUMS.
    Result<StreamRecord> next();
    // Up to the record's length, in pieces.
    Result<void> read(void* p, size_t n);
    // Reads the record's checksum and verifies it (every byte of data read first).
    Result<void> end_record();
    // A metadata record (DATA, IMAGE) read whole and verified.
    Result<std::string> read_whole(const StreamRecord& r);
    // A PAGE_SUMS record (next() returns one only right after its PAGES record) read whole
    // and verified: its checksums.
    Result<std::vector<uint64_t>> read_block_sums(const StreamRecord& r);
    bool complete() const { return complete_; }
    const std::string& where() const { return where_; }

private:
    int fd_;
    std::string where_;
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st_;
    std::set<std::string> names_;
    std::string name_;  // the current record's
    std::string sums_due_;  // a PAGES record read whose PAGE_SUMS must come next
    std::string blocks_of_;  // a PAGE_BLOCK record read whose next block or PAGE_SUMS must come next
    uint64_t next_block_ = 0;  // of blocks_of_
    uint64_t block_ = 0;  // the current record's, a PAGE_BLOCK
    uint32_t version_ = 0;  // the stream's (its header)
    StreamRecord::Kind kind_ = StreamRecord::DATA;  // the current record's
    uint64_t left_ = 0;
    uint64_t records_ = 0;
    uint64_t metadata_ = 0;
    bool open_ = false;
    bool complete_ = false;
};

// Gives pm the block checksums that followed its page data in a stream: a page map that has
// some already (a folder streamed) must have these (where names it in messages).
Result<void> merge_block_sums(PageMap& pm, const std::vector<uint64_t>& sums, const std::string& where);

// Where fd (size bytes) has data (SEEK_DATA, SEEK_HOLE): (offset, length) pairs.
Result<std::vector<uint64_t>> data_extents(int fd, uint64_t size, const std::string& what);
// Writes a DATA record's content to fd (at offset 0, empty): its extents written, the rest
// left a hole (refused unless zeros).
Result<void> write_with_holes(int fd, std::string_view data, const StreamRecord& r, const std::string& what);

// A file of a memory folder: its content, and for a DATA record its extents.
struct MemoryFile {
    std::string data;
    std::optional<StreamRecord> record;  // a DATA record: written with its holes
};

// An image folder held in memory (restore --stream): once set, open_image_file of path
// "where/NAME" opens NAME from files (a memory file of its content), no file system read.
void set_memory_folder(std::string where, std::map<std::string, MemoryFile> files);
// Whether path names a file: of the memory folder when it is under it, else lstat.
Result<bool> image_file_exists(const std::string& path);

}  // namespace ckpt::image
