#include "ckpt/image/stream.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "ckpt/image/image_names.h"

namespace ckpt::image {
namespace {

constexpr char kStreamMagic[8] = {'C', 'K', 'P', 'T', 'S', 'T', 'R', 'M'};

bool all_digits(const std::string& s) {
    if (s.empty() || s.size() > 9) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

// A pipe's buffer made 1 MiB (the most any user may ask by default, pipe-max-size) where it
// is smaller: with the default 64 KiB, moving a 64 MiB block takes a thousand wake-ups of
// each side (1 GiB dumped into a pipe took 3 to 8 times a folder's time). A hint only: a
// pipe that cannot grow (the user's pipe-user-pages-soft used up) is used as it is.
void widen_pipe(int fd) {
    constexpr int kPipeBytes = 1 << 20;
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
    const int now = ::fcntl(fd, F_GETPIPE_SZ);
    if (now >= 0 && now < kPipeBytes) ::fcntl(fd, F_SETPIPE_SZ, kPipeBytes);
}

Result<UniqueFd> open_stream_fd(const std::string& spec, bool write) {
    if (all_digits(spec)) {
        int fd = std::stoi(spec);
        int fl = ::fcntl(fd, F_GETFL);
        if (fl < 0) return sys_error("--stream fd {}", fd);
        if ((fl & O_ACCMODE) == (write ? O_RDONLY : O_WRONLY))
            return error_code(EBADF, "--stream fd {}: not open for {}", fd, write ? "writing" : "reading");
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        return UniqueFd(fd);
    }
    struct stat st;
    if (::stat(spec.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        if (spec.size() >= sizeof a.sun_path) return error_code(ENAMETOOLONG, "--stream {}: socket path too long", spec);
        std::memcpy(a.sun_path, spec.data(), spec.size());
        UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!s) return sys_error("socket(AF_UNIX)");
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return sys_error("connect {}", spec);
        return s;
    }
    int flags = O_CLOEXEC | O_NOFOLLOW | (write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY);
    return open_file(spec, flags, 0600);
}

}  // namespace

Result<UniqueFd> open_stream(const std::string& spec, bool write) {
    // A reader gone is an error of the write (EPIPE), not a signal that kills the engine.
    if (write) ::signal(SIGPIPE, SIG_IGN);
    UniqueFd fd = CKPT_TRY(open_stream_fd(spec, write));
    widen_pipe(fd.get());
    return fd;
}

StreamWriter::StreamWriter(int fd, std::string where)
    : fd_(fd), where_(std::move(where)), st_(XXH3_createState(), &XXH3_freeState) {}

Result<void> StreamWriter::frame(const google::protobuf::MessageLite& m) {
    std::string buf(sizeof(uint32_t), '\0');
    if (!m.AppendToString(&buf)) return error_code(EINVAL, "{}: cannot serialize a stream frame", where_);
    auto len = static_cast<uint32_t>(buf.size() - sizeof(uint32_t));
    std::memcpy(buf.data(), &len, sizeof len);
    XXH3_64bits_reset(st_.get());
    XXH3_64bits_update(st_.get(), buf.data(), buf.size());
    return write_all(fd_, buf.data(), buf.size());
}

Result<void> StreamWriter::begin() {
    CKPT_TRY_CTX(write_all(fd_, kStreamMagic, sizeof kStreamMagic), "{}", where_);
    StreamHeader h;
    h.set_stream_version(kStreamVersion);
    h.set_format_version(kFormatVersion);
    CKPT_TRY_CTX(frame(h), "{}", where_);
    uint64_t sum = XXH3_64bits_digest(st_.get());
    return write_all(fd_, &sum, sizeof sum);
}

Result<void> StreamWriter::begin_record(const std::string& name, StreamRecord::Kind kind, uint64_t length,
                                        uint32_t image_kind, const std::vector<uint64_t>& extents) {
    if (open_) return error("{}: record {} begun inside another", where_, name);
    StreamRecord r;
    r.set_name(name);
    r.set_kind(kind);
    r.set_image_kind(image_kind);
    r.set_length(length);
    for (uint64_t e : extents) r.add_extents(e);
    CKPT_TRY_CTX(frame(r), "{}: record {}", where_, name);
    left_ = length;
    open_ = true;
    return ok();
}

Result<void> StreamWriter::data(const void* p, size_t n) {
    if (!open_ || n > left_) return error("{}: more data than its record announced", where_);
    XXH3_64bits_update(st_.get(), p, n);
    left_ -= n;
    CKPT_TRY_CTX(write_all(fd_, p, n), "{}", where_);
    return ok();
}

Result<void> StreamWriter::end_record() {
    if (!open_ || left_) return error("{}: record ended {} bytes short", where_, left_);
    open_ = false;
    ++records_;
    uint64_t sum = XXH3_64bits_digest(st_.get());
    CKPT_TRY_CTX(write_all(fd_, &sum, sizeof sum), "{}", where_);
    return ok();
}

Result<void> StreamWriter::record(const std::string& name, StreamRecord::Kind kind, std::string_view d,
                                  uint32_t image_kind, const std::vector<uint64_t>& extents) {
    CKPT_TRY(begin_record(name, kind, d.size(), image_kind, extents));
    CKPT_TRY(data(d.data(), d.size()));
    return end_record();
}

Result<void> StreamWriter::block_sums(const std::string& name, const std::vector<uint64_t>& sums) {
    std::string d(sums.size() * sizeof(uint64_t), '\0');
    if (!sums.empty()) std::memcpy(d.data(), sums.data(), d.size());  // little-endian (as the frames)
    return record(name, StreamRecord::PAGE_SUMS, d);
}

Result<void> StreamWriter::begin_page_block(const std::string& name, uint64_t b, bool zstd, uint64_t length) {
    if (open_) return error("{}: record {} begun inside another", where_, name);
    StreamRecord r;
    r.set_name(name);
    r.set_kind(StreamRecord::PAGE_BLOCK);
    r.set_length(length);
    r.set_block(b);
    r.set_zstd(zstd);
    CKPT_TRY_CTX(frame(r), "{}: record {}", where_, name);
    left_ = length;
    open_ = true;
    return ok();
}

Result<void> StreamWriter::page_block(const std::string& name, uint64_t b, bool zstd, const void* p, size_t n) {
    CKPT_TRY(begin_page_block(name, b, zstd, n));
    CKPT_TRY(data(p, n));
    return end_record();
}

Result<void> StreamWriter::end() {
    if (open_) return error("{}: trailer inside a record", where_);
    StreamRecord r;
    r.set_kind(StreamRecord::END);
    r.set_records(records_);
    CKPT_TRY_CTX(frame(r), "{}: trailer", where_);
    uint64_t sum = XXH3_64bits_digest(st_.get());
    CKPT_TRY_CTX(write_all(fd_, &sum, sizeof sum), "{}", where_);
    return ok();
}

StreamReader::StreamReader(int fd, std::string where)
    : fd_(fd), where_(std::move(where)), st_(XXH3_createState(), &XXH3_freeState) {}

namespace {

// Reads exactly n bytes; the end of the stream is a truncated stream.
Result<void> read_stream(int fd, const std::string& where, void* p, size_t n) {
    auto r = read_exact(fd, p, n);
    if (r) return ok();
    if (r.error().code() == EIO)
        return error_code(EIO, "{}: truncated stream (it ends before its trailer): refused", where);
    return std::move(r).context("{}", where);
}

// A frame's message, bounded, its bytes hashed into st.
Result<std::string> read_frame(int fd, const std::string& where, XXH3_state_t* st) {
    uint32_t len;
    CKPT_TRY(read_stream(fd, where, &len, sizeof len));
    if (len > kMaxStreamFrame)
        return error_code(EINVAL, "{}: a frame of {} bytes, more than {} (stream is corrupt): refused", where, len,
                          kMaxStreamFrame);
    std::string buf(len, '\0');
    CKPT_TRY(read_stream(fd, where, buf.data(), len));
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &len, sizeof len);
    XXH3_64bits_update(st, buf.data(), buf.size());
    return buf;
}

Result<void> check_sum(int fd, const std::string& where, XXH3_state_t* st, const std::string& what) {
    uint64_t sum;
    CKPT_TRY(read_stream(fd, where, &sum, sizeof sum));
    if (sum != XXH3_64bits_digest(st))
        return error_code(EINVAL, "{}: checksum mismatch in {} (stream is corrupt): refused", where, what);
    return ok();
}

}  // namespace

Result<void> StreamReader::begin() {
    char magic[sizeof kStreamMagic];
    CKPT_TRY(read_stream(fd_, where_, magic, sizeof magic));
    if (std::memcmp(magic, kStreamMagic, sizeof magic) != 0)
        return error_code(EINVAL, "{}: not a ckpt image stream (bad magic): refused", where_);
    auto buf = CKPT_TRY(read_frame(fd_, where_, st_.get()));
    // The versions first: a stream of another version may frame its header otherwise.
    StreamHeader h;
    if (!h.ParseFromString(buf)) return error_code(EINVAL, "{}: malformed stream header: refused", where_);
    if (h.stream_version() < kOldestStreamVersion || h.stream_version() > kStreamVersion)
        return error_code(EINVAL, "{}: stream version {} is not supported (this build reads versions {} to {}): refused",
                          where_, h.stream_version(), kOldestStreamVersion, kStreamVersion);
    if (h.format_version() != kFormatVersion)
        return error_code(EINVAL,
                          "{}: image format version {} is not supported (this build reads version {}): refused",
                          where_, h.format_version(), kFormatVersion);
    version_ = h.stream_version();
    return check_sum(fd_, where_, st_.get(), "the stream header");
}

Result<StreamRecord> StreamReader::next() {
    if (complete_) return error_code(EINVAL, "{}: read past its trailer", where_);
    if (open_) return error("{}: record {} not read to its end", where_, name_);
    auto buf = CKPT_TRY(read_frame(fd_, where_, st_.get()));
    StreamRecord r;
    if (!r.ParseFromString(buf)) return error_code(EINVAL, "{}: malformed record frame (stream is corrupt): refused", where_);
    // The checksums of page data come right after it (and only then); the blocks of
    // compressed page data one after another, in order, then their checksums.
    if (!sums_due_.empty() && (r.kind() != StreamRecord::PAGE_SUMS || r.name() != sums_due_))
        return error_code(EINVAL, "{}: no block checksums after the page data {} (stream is corrupt): refused", where_,
                          sums_due_);
    if (!blocks_of_.empty() && r.name() != blocks_of_ &&
        (r.kind() == StreamRecord::PAGE_BLOCK || r.kind() == StreamRecord::PAGE_SUMS))
        return error_code(EINVAL, "{}: {} record {} inside the blocks of page data {} (stream is corrupt): refused",
                          where_, r.kind() == StreamRecord::PAGE_BLOCK ? "block" : "checksums", r.name(), blocks_of_);
    if (!blocks_of_.empty() && r.kind() != StreamRecord::PAGE_BLOCK && r.kind() != StreamRecord::PAGE_SUMS)
        return error_code(EINVAL, "{}: no block checksums after the blocks of page data {} (stream is corrupt): refused",
                          where_, blocks_of_);
    if (r.kind() != StreamRecord::PAGE_BLOCK && (r.block() || r.zstd()))
        return error_code(EINVAL, "{}: record {}: block fields in a record not of a block (stream is corrupt): refused",
                          where_, r.name());
    if (r.kind() == StreamRecord::PAGE_SUMS) {
        if (sums_due_.empty() && blocks_of_.empty())
            return error_code(EINVAL, "{}: block checksums {} not after their page data (stream is corrupt): refused",
                              where_, r.name());
        sums_due_.clear();  // its name is that of the page data (checked there)
        blocks_of_.clear();
        if (r.length() % sizeof(uint64_t))
            return error_code(EINVAL, "{}: block checksums {} of {} bytes (stream is corrupt): refused", where_,
                              r.name(), r.length());
    } else if (r.kind() == StreamRecord::PAGE_BLOCK) {
        if (version_ < 3)
            return error_code(EINVAL, "{}: record {}: a block of page data in a stream of version {} (stream is corrupt): "
                                      "refused", where_, r.name(), version_);
        const uint64_t want = blocks_of_.empty() ? 0 : next_block_;
        if (r.block() != want)
            return error_code(EINVAL, "{}: block {} of page data {} where block {} was due (stream is corrupt): refused",
                              where_, r.block(), r.name(), want);
        if (want == 0) {  // the first block names a pages file, as a PAGES record would
            CKPT_TRY(check_plain_name(where_, r.name()));
            if (names::kind_of(r.name()))
                return error_code(EINVAL, "{}: record {} is an image, not data (stream is corrupt): refused", where_,
                                  r.name());
            if (!names_.insert(r.name()).second)
                return error_code(EINVAL, "{}: record {} comes twice (stream is corrupt): refused", where_, r.name());
        }
        if (r.length() == 0 || r.length() > kMaxStreamPageBlock)
            return error_code(EINVAL, "{}: block {} of page data {} of {} bytes (at most {}; stream is corrupt): refused",
                              where_, r.block(), r.name(), r.length(), kMaxStreamPageBlock);
    } else if (r.kind() == StreamRecord::END) {
        CKPT_TRY(check_sum(fd_, where_, st_.get(), "the trailer"));
        if (r.records() != records_)
            return error_code(EINVAL, "{}: trailer counts {} records, the stream had {} (stream is corrupt): refused",
                              where_, r.records(), records_);
        complete_ = true;
        return r;
    } else {
        CKPT_TRY(check_plain_name(where_, r.name()));
        if (!names_.insert(r.name()).second)
            return error_code(EINVAL, "{}: record {} comes twice (stream is corrupt): refused", where_, r.name());
        auto kind = names::kind_of(r.name());
        switch (r.kind()) {
            case StreamRecord::IMAGE:
                if (!kind || static_cast<uint32_t>(*kind) != r.image_kind())
                    return error_code(EINVAL, "{}: record {} is not a {} image (stream is corrupt): refused", where_,
                                      r.name(), kind_name(static_cast<Kind>(r.image_kind())));
                break;
            case StreamRecord::DATA:
            case StreamRecord::PAGES:
                if (kind)
                    return error_code(EINVAL, "{}: record {} is an image, not data (stream is corrupt): refused", where_,
                                      r.name());
                break;
            default:
                return error_code(EINVAL, "{}: record {} of unknown kind {}: refused", where_, r.name(),
                                  static_cast<int>(r.kind()));
        }
    }
    if (r.kind() == StreamRecord::DATA) {
        uint64_t at = 0;
        if (r.extents_size() % 2)
            return error_code(EINVAL, "{}: record {}: malformed extents (stream is corrupt): refused", where_, r.name());
        for (int i = 0; i < r.extents_size(); i += 2) {
            uint64_t off = r.extents(i), len = r.extents(i + 1);
            if (off < at || len > r.length() || off > r.length() - len)
                return error_code(EINVAL, "{}: record {}: malformed extents (stream is corrupt): refused", where_, r.name());
            at = off + len;
        }
    } else if (r.extents_size()) {
        return error_code(EINVAL, "{}: record {}: extents in a record not of data (stream is corrupt): refused", where_,
                          r.name());
    }
    if (r.kind() != StreamRecord::PAGES && r.kind() != StreamRecord::PAGE_BLOCK) {
        if (r.length() > kMaxImageBytes || r.length() > kMaxStreamMetadata - metadata_)
            return error_code(EFBIG, "{}: record {} of {} bytes, more than a stream's metadata may hold: refused",
                              where_, r.name(), r.length());
        metadata_ += r.length();
    }
    name_ = r.name();
    kind_ = r.kind();
    block_ = r.block();
    left_ = r.length();
    open_ = true;
    return r;
}

Result<void> StreamReader::read(void* p, size_t n) {
    if (!open_ || n > left_) return error("{}: record {}: read past its end", where_, name_);
    CKPT_TRY(read_stream(fd_, where_, p, n));
    XXH3_64bits_update(st_.get(), p, n);
    left_ -= n;
    return ok();
}

Result<void> StreamReader::end_record() {
    if (!open_ || left_) return error("{}: record {}: {} bytes not read", where_, name_, left_);
    CKPT_TRY(check_sum(fd_, where_, st_.get(), "record " + name_));
    open_ = false;
    ++records_;
    if (kind_ == StreamRecord::PAGES) sums_due_ = name_;
    if (kind_ == StreamRecord::PAGE_BLOCK) {
        blocks_of_ = name_;
        next_block_ = block_ + 1;
    }
    return ok();
}

Result<std::string> StreamReader::read_whole(const StreamRecord& r) {
    std::string d(r.length(), '\0');
    CKPT_TRY(read(d.data(), d.size()));
    CKPT_TRY(end_record());
    return d;
}

Result<std::vector<uint64_t>> StreamReader::read_block_sums(const StreamRecord& r) {
    if (r.kind() != StreamRecord::PAGE_SUMS)
        return error_code(EINVAL, "{}: record {} is not block checksums (stream is corrupt): refused", where_, r.name());
    std::string d = CKPT_TRY(read_whole(r));
    std::vector<uint64_t> sums(d.size() / sizeof(uint64_t));
    if (!sums.empty()) std::memcpy(sums.data(), d.data(), sums.size() * sizeof(uint64_t));
    return sums;
}

Result<void> merge_block_sums(PageMap& pm, const std::vector<uint64_t>& sums, const std::string& where) {
    if (pm.block_xxh3_size() == 0) {
        for (uint64_t s : sums) pm.add_block_xxh3(s);
        return ok();
    }
    if (!std::equal(pm.block_xxh3().begin(), pm.block_xxh3().end(), sums.begin(), sums.end()))
        return error_code(EINVAL, "{}: block checksums differ from those after its page data (stream is corrupt): refused",
                          where);
    return ok();
}

Result<std::vector<uint64_t>> data_extents(int fd, uint64_t size, const std::string& what) {
    std::vector<uint64_t> out;
    for (off_t pos = 0; static_cast<uint64_t>(pos) < size;) {
        off_t data = ::lseek(fd, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) break;
        if (data < 0) return sys_error("lseek(SEEK_DATA) {}", what);
        if (static_cast<uint64_t>(data) >= size) break;
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) return sys_error("lseek(SEEK_HOLE) {}", what);
        uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
        out.push_back(static_cast<uint64_t>(data));
        out.push_back(end - static_cast<uint64_t>(data));
        pos = static_cast<off_t>(end);
    }
    if (::lseek(fd, 0, SEEK_SET) != 0) return sys_error("lseek {}", what);
    return out;
}

Result<void> write_with_holes(int fd, std::string_view data, const StreamRecord& r, const std::string& what) {
    uint64_t at = 0;
    auto zeros = [&](uint64_t from, uint64_t to) {
        return std::all_of(data.begin() + static_cast<ptrdiff_t>(from), data.begin() + static_cast<ptrdiff_t>(to),
                           [](char c) { return c == 0; });
    };
    for (int i = 0; i + 1 < r.extents_size(); i += 2) {
        uint64_t off = r.extents(i), len = r.extents(i + 1);
        if (!zeros(at, off)) return error_code(EINVAL, "{}: data in a hole (stream is corrupt): refused", what);
        for (uint64_t done = 0; done < len;) {
            ssize_t n = ::pwrite(fd, data.data() + off + done, len - done, static_cast<off_t>(off + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return sys_error("write {}", what);
            done += static_cast<uint64_t>(n);
        }
        at = off + len;
    }
    if (!zeros(at, data.size())) return error_code(EINVAL, "{}: data in a hole (stream is corrupt): refused", what);
    if (::ftruncate(fd, static_cast<off_t>(data.size())) != 0) return sys_error("ftruncate {}", what);
    return ok();
}

namespace {
struct MemoryFolder {
    std::mutex mu;
    std::string where;
    std::map<std::string, MemoryFile> files;
};
MemoryFolder& memory_folder() {
    static MemoryFolder m;
    return m;
}
// The name under the memory folder of path, or null when path is not under it.
const std::string* under_memory_folder(MemoryFolder& m, const std::string& path, std::string* name) {
    if (m.where.empty() || path.size() <= m.where.size() + 1 || path.compare(0, m.where.size(), m.where) != 0 ||
        path[m.where.size()] != '/')
        return nullptr;
    *name = path.substr(m.where.size() + 1);
    return &m.where;
}
}  // namespace

void set_memory_folder(std::string where, std::map<std::string, MemoryFile> files) {
    auto& m = memory_folder();
    std::lock_guard lock(m.mu);
    m.where = std::move(where);
    m.files = std::move(files);
}

Result<bool> image_file_exists(const std::string& path) {
    auto& m = memory_folder();
    {
        std::lock_guard lock(m.mu);
        std::string name;
        if (under_memory_folder(m, path, &name)) return m.files.count(name) > 0;
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT) return false;
    return sys_error("{}", path);
}

// For open_image_file (image_file.cpp): the memory folder's file of path, if under it.
Result<std::optional<ImageFileFd>> open_memory_image_file(const std::string& path) {
    auto& m = memory_folder();
    std::lock_guard lock(m.mu);
    std::string name;
    if (!under_memory_folder(m, path, &name)) return std::optional<ImageFileFd>{};
    auto it = m.files.find(name);
    if (it == m.files.end()) return error_code(ENOENT, "open {}: not in the stream", path);
    const MemoryFile& f = it->second;
    if (!f.record) {
        auto fd = CKPT_TRY(ckpt::memory_file(name.c_str(), f.data));
        return std::optional<ImageFileFd>{ImageFileFd{std::move(fd), f.data.size()}};
    }
    UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
    if (!fd) return sys_error("memfd_create {}", path);
    CKPT_TRY(write_with_holes(fd.get(), f.data, *f.record, path));
    return std::optional<ImageFileFd>{ImageFileFd{std::move(fd), f.data.size()}};
}

}  // namespace ckpt::image
