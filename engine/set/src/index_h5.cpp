#include "ckpt/set/index_h5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "ckpt/base/fd.h"
#include "ckpt/image/image_file.h"

namespace ckpt::set {
namespace {

// Our own messages replace HDF5's stack dump on stderr; the innermost HDF5 description is
// appended to them.
void silence_hdf5() {
    static std::once_flag once;
    std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::string hdf5_reason() {
    std::string reason;
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_UPWARD,
        [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
            if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
            return 0;
        },
        &reason);
    H5Eclear2(H5E_DEFAULT);
    return reason.empty() ? "HDF5 error" : reason;
}

// An HDF5 identifier released when it goes out of scope.
class Hid {
public:
    Hid() = default;
    explicit Hid(hid_t id) : id_(id) {}
    Hid(Hid&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
    Hid& operator=(Hid&& o) noexcept {
        std::swap(id_, o.id_);
        return *this;
    }
    Hid(const Hid&) = delete;
    Hid& operator=(const Hid&) = delete;
    ~Hid() {
        if (id_ >= 0) H5Idec_ref(id_);
    }
    hid_t get() const { return id_; }
    bool ok() const { return id_ >= 0; }

private:
    hid_t id_ = H5I_INVALID_HID;
};

// Wraps an hid_t from an HDF5 call; a negative one becomes an error naming what failed.
Result<Hid> check(hid_t id, const std::string& path, std::string_view what) {
    if (id < 0) return error_code(EIO, "{}: {}: {}", path, what, hdf5_reason());
    return Hid(id);
}
Result<void> check_status(herr_t st, const std::string& path, std::string_view what) {
    if (st < 0) return error_code(EIO, "{}: {}: {}", path, what, hdf5_reason());
    return ok();
}

Hid string_type() {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return Hid(t);
}

// File access without HDF5's own file locks: the index is replaced by rename and never
// written in place, and flock is unreliable on the shared file systems sets live on.
Hid file_access() {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, false, true);
    return Hid(fapl);
}

// --- attributes ---

template <typename T>
hid_t native_type();
template <>
hid_t native_type<uint64_t>() {
    return H5T_NATIVE_UINT64;
}
template <>
hid_t native_type<uint32_t>() {
    return H5T_NATIVE_UINT32;
}

template <typename T>
hid_t file_type();
template <>
hid_t file_type<uint64_t>() {
    return H5T_STD_U64LE;
}
template <>
hid_t file_type<uint32_t>() {
    return H5T_STD_U32LE;
}

class Writer {
public:
    explicit Writer(std::string path) : path_(std::move(path)) {}

    template <typename T>
    Result<void> attr(hid_t obj, const char* name, T v) {
        auto space = CKPT_TRY(check(H5Screate(H5S_SCALAR), path_, "H5Screate"));
        auto a = CKPT_TRY(
            check(H5Acreate2(obj, name, file_type<T>(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  path_, fmt::format("create attribute {}", name)));
        return check_status(H5Awrite(a.get(), native_type<T>(), &v), path_,
                            fmt::format("write attribute {}", name));
    }
    Result<void> attr(hid_t obj, const char* name, const std::string& v) {
        auto space = CKPT_TRY(check(H5Screate(H5S_SCALAR), path_, "H5Screate"));
        Hid t = string_type();
        auto a =
            CKPT_TRY(check(H5Acreate2(obj, name, t.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                           path_, fmt::format("create attribute {}", name)));
        const char* p = v.c_str();
        return check_status(H5Awrite(a.get(), t.get(), &p), path_,
                            fmt::format("write attribute {}", name));
    }

    // A one-dimensional dataset of rows of a compound type (written even when empty, so a
    // reader always finds it).
    template <typename Row>
    Result<void> table(hid_t group, const char* name, hid_t mem_type,
                       const std::vector<Row>& rows) {
        hsize_t dims[1] = {rows.size()};
        auto space = CKPT_TRY(check(H5Screate_simple(1, dims, nullptr), path_, "H5Screate_simple"));
        auto ftype = CKPT_TRY(check(H5Tcopy(mem_type), path_, "H5Tcopy"));
        CKPT_TRY(check_status(H5Tpack(ftype.get()), path_, "H5Tpack"));
        auto ds = CKPT_TRY(check(H5Dcreate2(group, name, ftype.get(), space.get(), H5P_DEFAULT,
                                            H5P_DEFAULT, H5P_DEFAULT),
                                 path_, fmt::format("create dataset {}", name)));
        if (rows.empty()) return ok();
        return check_status(
            H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()), path_,
            fmt::format("write dataset {}", name));
    }

private:
    std::string path_;
};

class Reader {
public:
    explicit Reader(std::string path) : path_(std::move(path)) {}

    template <typename T>
    Result<T> attr(hid_t obj, const char* name, const std::string& where) {
        auto a = CKPT_TRY(check(H5Aopen(obj, name, H5P_DEFAULT), path_,
                                fmt::format("{}attribute {}", where, name)));
        T v{};
        CKPT_TRY(check_status(H5Aread(a.get(), native_type<T>(), &v), path_,
                              fmt::format("{}read attribute {}", where, name)));
        return v;
    }
    Result<std::string> str(hid_t obj, const char* name, const std::string& where) {
        auto a = CKPT_TRY(check(H5Aopen(obj, name, H5P_DEFAULT), path_,
                                fmt::format("{}attribute {}", where, name)));
        auto t = CKPT_TRY(check(H5Aget_type(a.get()), path_, "H5Aget_type"));
        if (H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) <= 0)
            return error_code(EINVAL, "{}: {}attribute {} is not a variable-length string", path_,
                              where, name);
        Hid mt = string_type();
        char* p = nullptr;
        CKPT_TRY(check_status(H5Aread(a.get(), mt.get(), &p), path_,
                              fmt::format("{}read attribute {}", where, name)));
        std::string v = p ? p : "";
        H5free_memory(p);
        return v;
    }

    // Reads a whole compound table and hands each row to take (which copies what it needs:
    // the strings HDF5 allocated are freed afterwards).
    template <typename Row, typename Take>
    Result<void> table(hid_t group, const char* name, hid_t mem_type, const std::string& where,
                       Take take) {
        auto ds = CKPT_TRY(check(H5Dopen2(group, name, H5P_DEFAULT), path_,
                                 fmt::format("{}dataset {}", where, name)));
        auto space = CKPT_TRY(check(H5Dget_space(ds.get()), path_, "H5Dget_space"));
        if (H5Sget_simple_extent_ndims(space.get()) != 1)
            return error_code(EINVAL, "{}: {}dataset {} is not one-dimensional", path_, where,
                              name);
        hsize_t n = 0;
        H5Sget_simple_extent_dims(space.get(), &n, nullptr);
        if (n == 0) return ok();
        std::vector<Row> rows(n);
        CKPT_TRY(
            check_status(H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()),
                         path_, fmt::format("{}read dataset {}", where, name)));
        Result<void> r = ok();
        for (const Row& row : rows) {
            r = take(row);
            if (!r) break;
        }
        H5Dvlen_reclaim(mem_type, space.get(), H5P_DEFAULT, rows.data());
        return r;
    }

private:
    std::string path_;
};

// Rows of the members and files tables, as HDF5 compound types.
struct MemberRow {
    int32_t member_id;
    const char* node;
    const char* image_dir;
    uint64_t bytes;
    uint64_t checksum;
    uint64_t dump_time_ns;
    const char* state;
};

struct FileRow {
    int32_t member_id;
    const char* name;
    uint64_t bytes;
    uint64_t checksum;
};

Hid member_type() {
    Hid s = string_type();
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(MemberRow));
    H5Tinsert(t, "member_id", HOFFSET(MemberRow, member_id), H5T_NATIVE_INT32);
    H5Tinsert(t, "node", HOFFSET(MemberRow, node), s.get());
    H5Tinsert(t, "image_dir", HOFFSET(MemberRow, image_dir), s.get());
    H5Tinsert(t, "bytes", HOFFSET(MemberRow, bytes), H5T_NATIVE_UINT64);
    H5Tinsert(t, "checksum", HOFFSET(MemberRow, checksum), H5T_NATIVE_UINT64);
    H5Tinsert(t, "dump_time_ns", HOFFSET(MemberRow, dump_time_ns), H5T_NATIVE_UINT64);
    H5Tinsert(t, "state", HOFFSET(MemberRow, state), s.get());
    return Hid(t);
}

Hid file_row_type() {
    Hid s = string_type();
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(FileRow));
    H5Tinsert(t, "member_id", HOFFSET(FileRow, member_id), H5T_NATIVE_INT32);
    H5Tinsert(t, "name", HOFFSET(FileRow, name), s.get());
    H5Tinsert(t, "bytes", HOFFSET(FileRow, bytes), H5T_NATIVE_UINT64);
    H5Tinsert(t, "checksum", HOFFSET(FileRow, checksum), H5T_NATIVE_UINT64);
    return Hid(t);
}

// Rows of the job_files table (format 2): the files saved beside the index.
struct JobFileRow {
    const char* name;
    uint64_t bytes;
    uint64_t checksum;
};

Hid job_file_row_type() {
    Hid s = string_type();
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(JobFileRow));
    H5Tinsert(t, "name", HOFFSET(JobFileRow, name), s.get());
    H5Tinsert(t, "bytes", HOFFSET(JobFileRow, bytes), H5T_NATIVE_UINT64);
    H5Tinsert(t, "checksum", HOFFSET(JobFileRow, checksum), H5T_NATIVE_UINT64);
    return Hid(t);
}

std::string group_name(uint64_t seq) { return fmt::format("{:06}", seq); }

Result<void> write_set(Writer& w, const std::string& path, hid_t sets, const SetRecord& s,
                       uint32_t version) {
    auto g = CKPT_TRY(
        check(H5Gcreate2(sets, group_name(s.seq).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              path, fmt::format("create group /sets/{}", group_name(s.seq))));
    hid_t id = g.get();
    CKPT_TRY(w.attr<uint64_t>(id, "seq", s.seq));
    CKPT_TRY(w.attr(id, "state", std::string(to_string(s.state))));
    CKPT_TRY(w.attr(id, "trigger", std::string(to_string(s.trigger))));
    CKPT_TRY(w.attr<uint64_t>(id, "start_time_ns", s.start_ns));
    CKPT_TRY(w.attr<uint64_t>(id, "end_time_ns", s.end_ns));
    CKPT_TRY(w.attr<uint32_t>(id, "step_id", s.step_id));
    CKPT_TRY(w.attr<uint32_t>(id, "node_count", s.node_count));
    CKPT_TRY(w.attr<uint32_t>(id, "member_count", s.expected_members));
    CKPT_TRY(w.attr<uint64_t>(id, "bytes", s.bytes()));
    CKPT_TRY(w.attr<uint32_t>(id, "restart_count", s.restart_count));
    CKPT_TRY(w.attr(id, "folder", s.folder()));
    CKPT_TRY(w.attr(id, "failure", s.failure));
    if (version >= 3) CKPT_TRY(w.attr(id, "step_command", s.step_command));
    if (version >= 4) CKPT_TRY(w.attr(id, "levels", s.levels()));
    if (version >= 5) CKPT_TRY(w.attr<uint64_t>(id, "parent_set", s.parent));

    std::vector<MemberRow> members;
    std::vector<FileRow> files;
    for (const MemberRecord& m : s.members) {
        members.push_back({m.member_id, m.node.c_str(), m.image_dir.c_str(), m.bytes, m.checksum,
                           m.dump_ns, to_string(m.state).data()});
        for (const FileRecord& f : m.files)
            files.push_back({m.member_id, f.name.c_str(), f.bytes, f.checksum});
    }
    Hid mt = member_type(), ft = file_row_type();
    CKPT_TRY(w.table(id, "members", mt.get(), members));
    CKPT_TRY(w.table(id, "files", ft.get(), files));
    return ok();
}

Result<SetRecord> read_set(Reader& r, const std::string& path, hid_t sets,
                           const std::string& name, uint32_t version) {
    std::string where = fmt::format("set {}: ", name);
    auto g = CKPT_TRY(check(H5Gopen2(sets, name.c_str(), H5P_DEFAULT), path,
                            fmt::format("open group /sets/{}", name)));
    hid_t id = g.get();
    SetRecord s;
    s.seq = CKPT_TRY(r.attr<uint64_t>(id, "seq", where));
    where = fmt::format("set {}: ", s.seq);
    auto bad = [&](const Error& e) {
        return error_code(EINVAL, "{}: {}{}", path, where, e.message());
    };
    auto state = parse_set_state(CKPT_TRY(r.str(id, "state", where)));
    if (!state) return bad(state.error());
    s.state = *state;
    auto trigger = parse_trigger(CKPT_TRY(r.str(id, "trigger", where)));
    if (!trigger) return bad(trigger.error());
    s.trigger = *trigger;
    s.start_ns = CKPT_TRY(r.attr<uint64_t>(id, "start_time_ns", where));
    s.end_ns = CKPT_TRY(r.attr<uint64_t>(id, "end_time_ns", where));
    s.step_id = CKPT_TRY(r.attr<uint32_t>(id, "step_id", where));
    s.node_count = CKPT_TRY(r.attr<uint32_t>(id, "node_count", where));
    s.expected_members = CKPT_TRY(r.attr<uint32_t>(id, "member_count", where));
    s.restart_count = CKPT_TRY(r.attr<uint32_t>(id, "restart_count", where));
    s.failure = CKPT_TRY(r.str(id, "failure", where));
    if (version >= 3) s.step_command = CKPT_TRY(r.str(id, "step_command", where));
    if (version >= 4)
        if (auto l = parse_levels(CKPT_TRY(r.str(id, "levels", where)), s); !l) return bad(l.error());
    if (version >= 5) {
        s.parent = CKPT_TRY(r.attr<uint64_t>(id, "parent_set", where));
        if (s.parent >= s.seq)
            return bad(error("parent set {} is not older than the set", s.parent));
    }
    uint64_t bytes = CKPT_TRY(r.attr<uint64_t>(id, "bytes", where));

    Hid mt = member_type(), ft = file_row_type();
    CKPT_TRY(r.table<MemberRow>(id, "members", mt.get(), where,
                                [&](const MemberRow& row) -> Result<void> {
                                    MemberRecord m;
                                    m.member_id = row.member_id;
                                    m.node = row.node ? row.node : "";
                                    m.image_dir = row.image_dir ? row.image_dir : "";
                                    m.bytes = row.bytes;
                                    m.checksum = row.checksum;
                                    m.dump_ns = row.dump_time_ns;
                                    auto st = parse_member_state(row.state ? row.state : "");
                                    if (!st) return bad(st.error());
                                    m.state = *st;
                                    s.members.push_back(std::move(m));
                                    return ok();
                                }));
    CKPT_TRY(
        r.table<FileRow>(id, "files", ft.get(), where, [&](const FileRow& row) -> Result<void> {
            for (MemberRecord& m : s.members) {
                if (m.member_id != row.member_id) continue;
                m.files.push_back({row.name ? row.name : "", row.bytes, row.checksum});
                return ok();
            }
            return error_code(EINVAL,
                              "{}: {}file {} names member {}, which is not in the members table",
                              path, where, row.name ? row.name : "", row.member_id);
        }));
    if (s.bytes() != bytes)
        return error_code(EINVAL, "{}: {}bytes attribute {} disagrees with its members ({})", path,
                          where, bytes, s.bytes());
    return s;
}

// The HDF5 user block (bytes HDF5 leaves to applications; its tools skip them) holds a
// header with the file's length and XXH3-64 of everything after the header.
constexpr size_t kUserblockSize = 512;
constexpr char kIndexMagic[8] = {'C', 'K', 'P', 'T', 'I', 'D', 'X', '1'};

struct UserblockHeader {
    char magic[8];
    uint64_t file_bytes;  // little-endian, as everything we write
    uint64_t xxh3;        // of every byte after this header
};

Result<void> check_userblock(const std::string& path, const std::string& image) {
    if (image.size() < kUserblockSize + 8)
        return error_code(EINVAL, "{}: truncated index ({} bytes)", path, image.size());
    UserblockHeader h;
    std::memcpy(&h, image.data(), sizeof h);
    if (std::memcmp(h.magic, kIndexMagic, sizeof kIndexMagic) != 0)
        return error_code(EINVAL, "{}: not a ckpt index (no header; damaged or overwritten)", path);
    if (h.file_bytes != image.size())
        return error_code(EINVAL, "{}: truncated index ({} bytes, the header says {})", path,
                          image.size(), h.file_bytes);
    uint64_t sum = image::checksum(image.data() + sizeof h, image.size() - sizeof h);
    if (sum != h.xxh3)
        return error_code(EINVAL, "{}: checksum mismatch (the index is damaged)", path);
    return ok();
}

// Writes the header into a closed HDF5 file's user block, then fsyncs the file.
Result<void> seal_userblock(const std::string& path) {
    std::string image = CKPT_TRY(read_file(path));
    if (image.size() < kUserblockSize) return error_code(EIO, "{}: HDF5 wrote no user block", path);
    UserblockHeader h;
    std::memcpy(h.magic, kIndexMagic, sizeof kIndexMagic);
    h.file_bytes = image.size();
    h.xxh3 = image::checksum(image.data() + sizeof h, image.size() - sizeof h);
    auto fd = CKPT_TRY(open_file(path, O_WRONLY));
    if (::pwrite(fd.get(), &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h))
        return sys_error("write {}", path);
    if (::fsync(fd.get()) != 0) return sys_error("fsync {}", path);
    return ok();
}

}  // namespace

Result<Index> read_index(const std::string& path) {
    silence_hdf5();
    // Checked whole before HDF5 sees a byte: HDF5 does not detect most damage and may
    // crash on some.
    std::string image = CKPT_TRY(read_file(path));
    CKPT_TRY(check_userblock(path, image));
    Hid fapl = file_access();
    H5Pset_fapl_core(fapl.get(), 64 * 1024, false);
    H5Pset_file_image(fapl.get(), image.data(), image.size());
    // HDF5 refuses an image under the name of an existing file; the name is only a label.
    std::string label = path + ".checked-image";
    hid_t fid = H5Fopen(label.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (fid < 0) return error_code(EINVAL, "{}: cannot open as HDF5 ({})", path, hdf5_reason());
    Hid file(fid);
    Reader r(path);
    Index idx;
    hid_t root = file.get();
    idx.format_version = CKPT_TRY(r.attr<uint32_t>(root, "format_version", ""));
    if (idx.format_version < kOldestIndexFormatVersion ||
        idx.format_version > kIndexFormatVersion)
        return error_code(EINVAL,
                          "{}: index format version {} is not supported (this build reads "
                          "versions {} to {})",
                          path, idx.format_version, kOldestIndexFormatVersion, kIndexFormatVersion);
    idx.job.jobid = CKPT_TRY(r.attr<uint64_t>(root, "job_id", ""));
    idx.job.user = CKPT_TRY(r.str(root, "user", ""));
    idx.job.uid = CKPT_TRY(r.attr<uint32_t>(root, "uid", ""));
    idx.job.gid = CKPT_TRY(r.attr<uint32_t>(root, "gid", ""));
    idx.job.name = CKPT_TRY(r.str(root, "job_name", ""));
    idx.job.cluster = CKPT_TRY(r.str(root, "cluster", ""));
    idx.job.submit_options = CKPT_TRY(r.str(root, "submit_options", ""));
    idx.job.batch_script = CKPT_TRY(r.str(root, "batch_script", ""));
    idx.restart_count = CKPT_TRY(r.attr<uint32_t>(root, "restart_count", ""));
    if (idx.format_version >= 2) {
        idx.job.environment = CKPT_TRY(r.str(root, "environment", ""));
        idx.job.incarnation = CKPT_TRY(r.str(root, "incarnation", ""));
        Hid jt = job_file_row_type();
        CKPT_TRY(r.table<JobFileRow>(root, "job_files", jt.get(), "",
                                     [&](const JobFileRow& row) -> Result<void> {
                                         idx.job.saved_files.push_back(
                                             {row.name ? row.name : "", row.bytes, row.checksum});
                                         return ok();
                                     }));
    }

    auto sets = CKPT_TRY(check(H5Gopen2(root, "sets", H5P_DEFAULT), path, "open group /sets"));
    H5G_info_t info;
    CKPT_TRY(check_status(H5Gget_info(sets.get(), &info), path, "/sets"));
    for (hsize_t i = 0; i < info.nlinks; ++i) {
        ssize_t len = H5Lget_name_by_idx(sets.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                         H5P_DEFAULT);
        if (len < 0) return error_code(EIO, "{}: /sets: link {}: {}", path, i, hdf5_reason());
        std::string name(static_cast<size_t>(len) + 1, '\0');
        H5Lget_name_by_idx(sets.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                           H5P_DEFAULT);
        name.resize(static_cast<size_t>(len));
        idx.sets.push_back(CKPT_TRY(read_set(r, path, sets.get(), name, idx.format_version)));
    }
    std::sort(idx.sets.begin(), idx.sets.end(),
              [](const SetRecord& a, const SetRecord& b) { return a.seq < b.seq; });
    for (size_t i = 1; i < idx.sets.size(); ++i)
        if (idx.sets[i].seq == idx.sets[i - 1].seq)
            return error_code(EINVAL, "{}: set {} appears twice", path, idx.sets[i].seq);
    return idx;
}

Result<void> write_index_file(const std::string& path, const Index& idx, uint32_t version) {
    if (version < kOldestIndexFormatVersion || version > kIndexFormatVersion)
        return error_code(EINVAL, "{}: cannot write index format version {}", path, version);
    silence_hdf5();
    Hid fapl = file_access();
    hid_t fcpl_id = H5Pcreate(H5P_FILE_CREATE);
    Hid fcpl(fcpl_id);
    H5Pset_userblock(fcpl_id, kUserblockSize);
    hid_t fid = H5Fcreate(path.c_str(), H5F_ACC_EXCL, fcpl_id, fapl.get());
    if (fid < 0) return error_code(EIO, "{}: cannot create HDF5 file: {}", path, hdf5_reason());
    // Every object opened inside is closed when this returns, so H5Fclose really closes.
    auto contents = [&]() -> Result<void> {
        Writer w(path);
        hid_t root = fid;
        CKPT_TRY(w.attr<uint32_t>(root, "format_version", version));
        CKPT_TRY(w.attr<uint64_t>(root, "job_id", idx.job.jobid));
        CKPT_TRY(w.attr(root, "user", idx.job.user));
        CKPT_TRY(w.attr<uint32_t>(root, "uid", idx.job.uid));
        CKPT_TRY(w.attr<uint32_t>(root, "gid", idx.job.gid));
        CKPT_TRY(w.attr(root, "job_name", idx.job.name));
        CKPT_TRY(w.attr(root, "cluster", idx.job.cluster));
        CKPT_TRY(w.attr(root, "submit_options", idx.job.submit_options));
        CKPT_TRY(w.attr(root, "batch_script", idx.job.batch_script));
        if (version >= 2) {
            CKPT_TRY(w.attr(root, "environment", idx.job.environment));
            CKPT_TRY(w.attr(root, "incarnation", idx.job.incarnation));
            std::vector<JobFileRow> job_files;
            for (const FileRecord& f : idx.job.saved_files)
                job_files.push_back({f.name.c_str(), f.bytes, f.checksum});
            Hid jt = job_file_row_type();
            CKPT_TRY(w.table(root, "job_files", jt.get(), job_files));
        }
        CKPT_TRY(w.attr<uint32_t>(root, "restart_count", idx.restart_count));
        const SetRecord* cur = idx.newest_committed();
        CKPT_TRY(w.attr<uint64_t>(root, "current_set", cur ? cur->seq : 0));
        auto sets = CKPT_TRY(check(H5Gcreate2(root, "sets", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                   path, "create group /sets"));
        for (const SetRecord& s : idx.sets) CKPT_TRY(write_set(w, path, sets.get(), s, version));
        return ok();
    };
    Result<void> written = contents();
    herr_t closed = H5Fclose(fid);
    CKPT_TRY(std::move(written));
    CKPT_TRY(check_status(closed, path, "close"));
    return seal_userblock(path);
}

}  // namespace ckpt::set
