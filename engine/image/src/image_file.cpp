#include "ckpt/image/image_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <optional>

namespace ckpt::image {
namespace {

constexpr char kMagic[4] = {'C', 'K', 'P', 'T'};
constexpr uint32_t kTrailerMark = 0xffffffffu;

struct Header {
    char magic[4];
    uint32_t kind;
    uint32_t version;
    uint32_t reserved;
};
static_assert(sizeof(Header) == 16);

struct Trailer {
    uint32_t mark;
    uint32_t records;
    uint64_t xxh3;
};
static_assert(sizeof(Trailer) == 16);

}  // namespace

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Inventory: return "inventory";
        case Kind::Core: return "core";
        case Kind::Mm: return "mm";
        case Kind::PageMap: return "pagemap";
        case Kind::Fds: return "fds";
        case Kind::Files: return "files";
        case Kind::SetManifest: return "set-manifest";
        case Kind::Ipc: return "ipc";
    }
    return "unknown";
}

uint64_t checksum(const void* p, size_t n) { return XXH3_64bits(p, n); }

namespace {

// The folder of path, opened, and the name in it: for the writers given a path.
Result<std::pair<ImageDir, std::string>> open_parent(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return std::pair{CKPT_TRY(ImageDir::open(".")), path};
    return std::pair{CKPT_TRY(ImageDir::open(slash == 0 ? "/" : path.substr(0, slash))), path.substr(slash + 1)};
}

}  // namespace

Result<ImageDir> ImageDir::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return sys_error("image directory {}", path);
    return ImageDir(path, UniqueFd(fd));
}

ImageDir ImageDir::in_memory(std::string label) {
    ImageDir d(std::move(label), UniqueFd());
    d.mem_ = std::make_shared<std::map<std::string, UniqueFd>>();
    return d;
}

const std::map<std::string, UniqueFd>& ImageDir::memory_files() const {
    static const std::map<std::string, UniqueFd> none;
    return mem_ ? *mem_ : none;
}

Result<UniqueFd> ImageDir::create(const std::string& name) const {
    const std::string path = path_ + "/" + name;
    CKPT_TRY(check_plain_name(path_, name));
    if (mem_) {
        UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
        if (!fd) return sys_error("memfd_create {}", path);
        UniqueFd kept(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
        if (!kept) return sys_error("dup memfd {}", path);
        (*mem_)[name] = std::move(kept);
        return fd;
    }
    if (::unlinkat(fd_.get(), name.c_str(), 0) != 0 && errno != ENOENT) return sys_error("unlink {}", path);
    int fd = ::openat(fd_.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return sys_error("create {} (something took the name again once it was removed: refused)", path);
        return sys_error("create {}", path);
    }
    return UniqueFd(fd);
}

Result<void> ImageDir::remove(const std::string& name) const {
    CKPT_TRY(check_plain_name(path_, name));
    if (mem_) {
        mem_->erase(name);
        return ok();
    }
    if (::unlinkat(fd_.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        return sys_error("unlink {}/{}", path_, name);
    return ok();
}

// stream.cpp: the memory folder's file of path (restore --stream), if path is under it.
Result<std::optional<ImageFileFd>> open_memory_image_file(const std::string& path);

Result<ImageFileFd> open_image_file(const std::string& path) {
    if (auto mem = CKPT_TRY(open_memory_image_file(path))) return std::move(*mem);
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP)
            return error_code(ELOOP, "{}: not a regular file (a symbolic link; image folders hold only regular files): refused",
                              path);
        return sys_error("open {}", path);
    }
    ImageFileFd f{UniqueFd(fd), 0};
    struct stat st;
    if (::fstat(fd, &st) != 0) return sys_error("fstat {}", path);
    if (!S_ISREG(st.st_mode))
        return error_code(EINVAL, "{}: not a regular file (image folders hold only regular files): refused", path);
    f.size = static_cast<uint64_t>(st.st_size);
    return f;
}

Result<void> check_plain_name(std::string_view image, std::string_view name) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
        name.find('\0') != std::string_view::npos)
        return error_code(EINVAL, "{}: names file '{}' outside its folder: refused", image, name);
    return ok();
}

Result<UniqueFd> open_recorded_data(const std::string& dir, std::string_view image, const std::string& name,
                                    uint64_t size) {
    CKPT_TRY(check_plain_name(fmt::format("{}/{}", dir, image), name));
    const std::string path = dir + "/" + name;
    auto f = CKPT_TRY(open_image_file(path));
    if (f.size != size)
        return error_code(EINVAL, "{}: {} bytes, expected {} (truncated image?)", path, f.size, size);
    return std::move(f.fd);
}

Result<ImageWriter> ImageWriter::create(const ImageDir& dir, const std::string& name, Kind kind) {
    auto fd = CKPT_TRY(dir.create(name));
    ImageWriter w(dir.path() + "/" + name, std::move(fd));
    Header h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.kind = static_cast<uint32_t>(kind);
    h.version = kFormatVersion;
    CKPT_TRY(w.append(&h, sizeof h));
    return w;
}

Result<ImageWriter> ImageWriter::create(const std::string& path, Kind kind) {
    auto [dir, name] = CKPT_TRY(open_parent(path));
    return create(dir, name, kind);
}

Result<void> ImageWriter::append(const void* p, size_t n) {
    buf_.append(static_cast<const char*>(p), n);
    return ok();
}

Result<void> ImageWriter::add(const google::protobuf::MessageLite& msg) {
    std::string payload;
    if (!msg.SerializeToString(&payload)) return error("{}: cannot serialize {}", path_, msg.GetTypeName());
    if (payload.size() >= kTrailerMark) return error("{}: record too large", path_);
    uint32_t len = static_cast<uint32_t>(payload.size());
    CKPT_TRY(append(&len, sizeof len));
    CKPT_TRY(append(payload.data(), payload.size()));
    ++records_;
    return ok();
}

Result<void> ImageWriter::finish(bool sync) {
    Trailer t{kTrailerMark, records_, 0};
    buf_.append(reinterpret_cast<const char*>(&t), offsetof(Trailer, xxh3));
    t.xxh3 = checksum(buf_.data(), buf_.size());
    buf_.append(reinterpret_cast<const char*>(&t.xxh3), sizeof t.xxh3);
    CKPT_TRY_CTX(write_all(fd_.get(), buf_.data(), buf_.size()), "{}", path_);
    if (sync && ::fsync(fd_.get()) != 0) return sys_error("fsync {}", path_);
    fd_.reset();
    return ok();
}

Result<ImageReader> ImageReader::open(const std::string& path, Kind kind) {
    ImageReader r;
    r.path_ = path;
    auto f = CKPT_TRY(open_image_file(path));
    if (f.size > kMaxImageBytes)
        return error_code(EFBIG, "{}: {} bytes, more than an image may hold ({} MiB): refused", path, f.size,
                          kMaxImageBytes >> 20);
    // No further than the size fstat gave: a file that grows meanwhile is not read on.
    std::string data(f.size, '\0');
    CKPT_TRY_CTX(read_exact(f.fd.get(), data.data(), data.size()), "{}", path);
    return from_data(path, std::move(data), kind);
}

Result<ImageReader> ImageReader::from_data(const std::string& path, std::string data, Kind kind) {
    ImageReader r;
    r.path_ = path;
    if (data.size() > kMaxImageBytes)
        return error_code(EFBIG, "{}: {} bytes, more than an image may hold ({} MiB): refused", path, data.size(),
                          kMaxImageBytes >> 20);
    r.data_ = std::move(data);
    const std::string& d = r.data_;
    if (d.size() < sizeof(Header) + sizeof(Trailer))
        return error_code(EINVAL, "{}: truncated image ({} bytes)", path, d.size());
    Header h;
    std::memcpy(&h, d.data(), sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
        return error_code(EINVAL, "{}: not a ckpt image (bad magic)", path);
    if (h.kind != static_cast<uint32_t>(kind))
        return error_code(EINVAL, "{}: is a {} image, expected {}", path, kind_name(static_cast<Kind>(h.kind)),
                          kind_name(kind));
    if (h.version != kFormatVersion)
        return error_code(EINVAL, "{}: image format version {} is not supported (this build reads version {})",
                          path, h.version, kFormatVersion);
    Trailer t;
    std::memcpy(&t, d.data() + d.size() - sizeof t, sizeof t);
    if (t.mark != kTrailerMark) return error_code(EINVAL, "{}: truncated image (no trailer)", path);
    uint64_t sum = checksum(d.data(), d.size() - sizeof t.xxh3);
    if (sum != t.xxh3) return error_code(EINVAL, "{}: checksum mismatch (image is corrupt)", path);
    r.xxh3_ = sum;

    size_t off = sizeof h, end = d.size() - sizeof t;
    while (off < end) {
        uint32_t len;
        if (end - off < sizeof len) return error_code(EINVAL, "{}: malformed record at offset {}", path, off);
        std::memcpy(&len, d.data() + off, sizeof len);
        off += sizeof len;
        if (len > end - off) return error_code(EINVAL, "{}: malformed record at offset {}", path, off);
        r.records_.emplace_back(off, len);
        off += len;
    }
    if (r.records_.size() != t.records)
        return error_code(EINVAL, "{}: {} records, trailer says {}", path, r.records_.size(), t.records);
    return r;
}

Result<void> ImageReader::parse(size_t index, google::protobuf::MessageLite* msg) const {
    if (index >= records_.size()) return error_code(EINVAL, "{}: no record {}", path_, index);
    auto [off, len] = records_[index];
    if (!msg->ParseFromArray(data_.data() + off, static_cast<int>(len)))
        return error_code(EINVAL, "{}: record {} is not a valid {}", path_, index, msg->GetTypeName());
    return ok();
}

Result<void> write_image(const ImageDir& dir, const std::string& name, Kind kind,
                         const google::protobuf::MessageLite& msg, bool sync) {
    auto w = CKPT_TRY(ImageWriter::create(dir, name, kind));
    CKPT_TRY(w.add(msg));
    return w.finish(sync);
}

Result<void> write_image(const std::string& path, Kind kind, const google::protobuf::MessageLite& msg,
                         bool sync) {
    auto [dir, name] = CKPT_TRY(open_parent(path));
    return write_image(dir, name, kind, msg, sync);
}

namespace {
Result<void> one_message(const ImageReader& r, const std::string& path, google::protobuf::MessageLite* msg,
                         uint64_t* xxh3) {
    if (r.records() != 1) return error_code(EINVAL, "{}: expected one record, found {}", path, r.records());
    if (xxh3) *xxh3 = r.xxh3();
    return r.parse(0, msg);
}
}  // namespace

Result<void> read_image(const std::string& path, Kind kind, google::protobuf::MessageLite* msg, uint64_t* xxh3) {
    return one_message(CKPT_TRY(ImageReader::open(path, kind)), path, msg, xxh3);
}

Result<void> parse_image(const std::string& path, std::string data, Kind kind, google::protobuf::MessageLite* msg) {
    return one_message(CKPT_TRY(ImageReader::from_data(path, std::move(data), kind)), path, msg, nullptr);
}

}  // namespace ckpt::image
