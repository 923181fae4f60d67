// Files behind mappings and file descriptors: recorded by path plus what proves they are
// the same file at restore (size, mtime, ELF build-id); files that cannot be found again
// by path (deleted while open, memfd, shared anonymous memory) are saved whole.
#include "files.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "ckpt/base/page_buffer.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/image_names.h"
#include "memory.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

constexpr std::string_view kDeletedSuffix = " (deleted)";

bool is_elf(int fd) {
    unsigned char ident[EI_NIDENT];
    return pread(fd, ident, sizeof ident, 0) == sizeof ident && std::memcmp(ident, ELFMAG, SELFMAG) == 0 &&
           ident[EI_CLASS] == ELFCLASS64;
}

}  // namespace

std::string build_id(int fd) {
    if (!is_elf(fd)) return {};
    Elf64_Ehdr eh;
    if (pread(fd, &eh, sizeof eh, 0) != sizeof eh || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 256)
        return {};
    std::vector<Elf64_Phdr> ph(eh.e_phnum);
    ssize_t want = static_cast<ssize_t>(ph.size() * sizeof(Elf64_Phdr));
    if (pread(fd, ph.data(), static_cast<size_t>(want), static_cast<off_t>(eh.e_phoff)) != want) return {};
    for (const auto& p : ph) {
        if (p.p_type != PT_NOTE || p.p_filesz > 65536) continue;
        std::string notes(p.p_filesz, '\0');
        if (pread(fd, notes.data(), notes.size(), static_cast<off_t>(p.p_offset)) != static_cast<ssize_t>(notes.size()))
            continue;
        size_t off = 0;
        while (off + sizeof(Elf64_Nhdr) <= notes.size()) {
            Elf64_Nhdr nh;
            std::memcpy(&nh, notes.data() + off, sizeof nh);
            size_t name_at = off + sizeof nh, desc_at = name_at + ((nh.n_namesz + 3) & ~3u);
            size_t next = desc_at + ((nh.n_descsz + 3) & ~3u);
            if (next > notes.size()) break;
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(notes.data() + name_at, "GNU", 4) == 0)
                return notes.substr(desc_at, nh.n_descsz);
            off = next;
        }
    }
    return {};
}

namespace {
// The buffer files are read through, one per thread, kept: a fresh one per file costs more
// in page faults than a small file takes to read (page_buffer.h).
Result<PageBuffer*> file_buffer() {
    thread_local PageBuffer buf(2u << 20);
    if (!buf) return error_code(ENOMEM, "a buffer of {} bytes to read files through", 2u << 20);
    return &buf;
}
}  // namespace

Result<void> copy_sparse(int from, int to, uint64_t size, uint64_t* xxh3) {
    // Copies data regions to the same offsets: holes stay holes in the copy.
    PageBuffer& buf = *CKPT_TRY(file_buffer());
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    off_t pos = 0;
    auto fail = [&](Error e) {
        XXH3_freeState(st);
        return e;
    };
    while (static_cast<uint64_t>(pos) < size) {
        off_t data = lseek(from, pos, SEEK_DATA);
        if (data < 0) break;  // ENXIO: only a hole is left
        off_t hole = lseek(from, data, SEEK_HOLE);
        if (hole < 0) hole = static_cast<off_t>(size);
        for (off_t at = data; at < hole;) {
            size_t n = static_cast<size_t>(std::min<off_t>(hole - at, static_cast<off_t>(buf.size())));
            ssize_t r = pread(from, buf.data(), n, at);
            if (r <= 0) return fail(sys_error("pread at {}", at));
            if (pwrite(to, buf.data(), static_cast<size_t>(r), at) != r) return fail(sys_error("pwrite at {}", at));
            uint64_t off = static_cast<uint64_t>(at);
            XXH3_64bits_update(st, &off, sizeof off);
            XXH3_64bits_update(st, buf.data(), static_cast<size_t>(r));
            at += r;
        }
        pos = hole;
    }
    if (ftruncate(to, static_cast<off_t>(size)) != 0) return fail(sys_error("ftruncate"));
    *xxh3 = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return ok();
}

Result<uint32_t> FileRegistry::add(const std::string& fd_path, const std::string& path, int reader) {
    struct stat st;
    if (stat(fd_path.c_str(), &st) != 0) return sys_error("stat {} ({})", fd_path, path);
    auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
    if (auto it = by_inode_.find(key); it != by_inode_.end()) return it->second;

    image::FileEntry* e = table_.add_files();
    uint32_t id = static_cast<uint32_t>(table_.files_size());
    e->set_id(id);
    e->set_size(static_cast<uint64_t>(st.st_size));
    e->set_mtime_ns(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
    e->set_dev(key.first);
    e->set_ino(key.second);
    e->set_mode(st.st_mode);
    e->set_uid(st.st_uid);
    e->set_gid(st.st_gid);
    by_inode_[key] = id;

    struct statfs fs;
    if (statfs(fd_path.c_str(), &fs) != 0) return sys_error("statfs {} ({})", fd_path, path);
    // Files of kernel objects that look like files but are none: no content to read or open
    // again (told by their file system, not by their name, which is the user's).
    if (static_cast<uint32_t>(fs.f_type) == kMqueueMagic)
        return error_code(ENOTSUP, "{}: a POSIX message queue (mq_open): not supported", path);
    if (static_cast<uint32_t>(fs.f_type) == kSecretmemMagic)
        return error_code(ENOTSUP, "{}: memfd_secret memory, which no other process can read: not supported", path);
    if (fs.f_type == PROC_SUPER_MAGIC) {
        e->set_path(path);
        CKPT_TRY(record_proc_file(e, path));
        return id;
    }

    std::string p = path;
    bool deleted = p.size() > kDeletedSuffix.size() && p.ends_with(kDeletedSuffix);
    if (deleted) p.resize(p.size() - kDeletedSuffix.size());
    e->set_path(p);
    bool memfd = starts_with(p, "/memfd:");
    // Shared anonymous memory shows as "/dev/zero (deleted)" on the shmem device.
    bool anon_shmem = deleted && p == "/dev/zero";
    bool copy = !deleted && !memfd && S_ISREG(st.st_mode) && saved_whole(p);
    // dump --link-remap: a name removed while another link remains. The file lives on in the
    // file system: kept through a hidden link to it (make_link_remaps), not copied.
    if (deleted && link_remap_ && !memfd && !anon_shmem && S_ISREG(st.st_mode) && st.st_nlink > 0) {
        UniqueFd object(open(fd_path.c_str(), O_PATH | O_CLOEXEC));
        struct stat again;
        if (!object || fstat(object.get(), &again) != 0) return sys_error("{}: open O_PATH {}", path, fd_path);
        if (again.st_dev != st.st_dev || again.st_ino != st.st_ino)
            return error_code(ESTALE, "{}: {} changed while it was recorded", path, fd_path);
        remaps_.push_back({id, std::move(object)});
        deleted = false;
    }
    if (deleted || memfd || anon_shmem || copy) {
        if (!S_ISREG(st.st_mode)) return error("{}: deleted file of type {:o} is not supported", path, st.st_mode & S_IFMT);
        e->set_deleted(true);
        e->set_saved_copy(copy);
        e->set_memfd(memfd || anon_shmem);
        auto from = CKPT_TRY(open_file(fd_path, O_RDONLY));
        if (memfd) {
            // Seals belong to the inode: any description of it tells them.
            int seals = fcntl(from.get(), F_GET_SEALS);
            if (seals < 0 && errno != EINVAL) return sys_error("{}: fcntl(F_GET_SEALS)", path);
            e->set_seals(seals > 0 ? static_cast<uint32_t>(seals) : 0);
        }
        std::string name = image::names::saved_file(id);
        auto to = CKPT_TRY(dir_.create(name));
        uint64_t sum = 0;
        CKPT_TRY_CTX(copy_sparse(from.get(), to.get(), static_cast<uint64_t>(st.st_size), &sum), "saving {}", path);
        e->set_content_file(name);
        e->set_content_xxh3(sum);
    } else if (S_ISREG(st.st_mode)) {
        if (reader >= 0) {
            e->set_build_id(build_id(reader));
        } else if (auto fd = open_file(fd_path, O_RDONLY)) {
            e->set_build_id(build_id(fd->get()));
        }
    }
    return id;
}

namespace {

constexpr std::string_view kLinkRemapPrefix = ".ckpt-link-remap.";

// The folder of an absolute path and the last component ("/" and "a" for "/a").
bool split_path(const std::string& path, std::string* dir, std::string* base) {
    size_t slash = path.rfind('/');
    if (path.empty() || path[0] != '/' || slash == std::string::npos || slash + 1 == path.size()) return false;
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
    return *base != "." && *base != "..";
}

// A folder opened O_PATH without following any symlink on the way.
UniqueFd open_folder_nofollow(const std::string& dir) {
    struct open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS;
    return UniqueFd(static_cast<int>(syscall(SYS_openat2, AT_FDCWD, dir.c_str(), &how, sizeof how)));
}

bool same_inode(const struct stat& st, dev_t dev, ino_t ino) { return st.st_dev == dev && st.st_ino == ino; }

}  // namespace

Result<void> FileRegistry::make_link_remaps() {
    for (auto& r : remaps_) {
        image::FileEntry* e = table_.mutable_files(static_cast<int>(r.id) - 1);
        const std::string path = e->path();
        auto ctx = [&](Error err) {
            return err.context("{} (its name removed while the tree holds it, another link remaining; --link-remap)",
                               path);
        };
        std::string dir, base;
        if (!split_path(path, &dir, &base))
            return ctx(error_code(ENOTSUP, "not an absolute path: no folder to keep it in"));
        UniqueFd dirfd = open_folder_nofollow(dir);
        if (!dirfd) return ctx(sys_error("its folder {} cannot take the hidden link (open without symlinks)", dir));
        const dev_t dev = static_cast<dev_t>(e->dev());
        const ino_t ino = static_cast<ino_t>(e->ino());
        const std::string self = "/proc/self/fd/" + std::to_string(r.object.get());
        for (int n = 0;; ++n) {
            if (n == 64) return ctx(error_code(EEXIST, "{}/{}{}-{}-N: every name is taken by another file", dir,
                                               kLinkRemapPrefix, dev, ino));
            std::string name = fmt::format("{}{}-{}-{}", kLinkRemapPrefix, dev, ino, n);
            struct stat st;
            if (fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
                // An earlier dump's link to this inode (dump --leave-running, not restored
                // since): reused, so that repeated dumps do not pile links up.
                if (S_ISREG(st.st_mode) && same_inode(st, dev, ino)) {
                    e->set_link_remap(name);
                    break;
                }
                continue;
            }
            if (errno != ENOENT) return ctx(sys_error("{}/{}: fstatat", dir, name));
            // Through the engine's own O_PATH open of the inode: /proc/self/fd/N followed to
            // the very file (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
            if (linkat(AT_FDCWD, self.c_str(), dirfd.get(), name.c_str(), AT_SYMLINK_FOLLOW) != 0) {
                if (errno == EEXIST) continue;
                return ctx(sys_error("its folder {} cannot take the hidden link {} (another file system or mount, "
                                     "read-only, or no permission): linkat",
                                     dir, name));
            }
            if (fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !same_inode(st, dev, ino))
                return ctx(error_code(ESTALE, "{}/{}: the hidden link is not the file once made", dir, name));
            made_.push_back({UniqueFd(dup(dirfd.get())), name, dev, ino});
            e->set_link_remap(name);
            logger()->info("{}: kept through the hidden link {}/{}", path, dir, name);
            break;
        }
    }
    remaps_.clear();
    return ok();
}

FileRegistry::~FileRegistry() {
    if (keep_links_) return;
    for (const auto& m : made_) {
        struct stat st;
        if (m.dir && fstatat(m.dir.get(), m.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && same_inode(st, m.dev, m.ino))
            unlinkat(m.dir.get(), m.name.c_str(), 0);
    }
}

namespace {

// Whether a path under /proc stays there: no "." or ".." component, no empty one.
bool plain_relative(std::string_view rest) {
    if (rest.empty()) return true;
    for (auto part : split(rest, '/'))
        if (part.empty() || part == "." || part == "..") return false;
    return true;
}

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Result<void> FileRegistry::record_proc_file(image::FileEntry* e, const std::string& path) const {
    constexpr std::string_view kProc = "/proc/";
    if (!starts_with(path, kProc) || path.ends_with(kDeletedSuffix))
        return error_code(ENOTSUP, "{}: a file of procfs not under /proc (or gone) cannot be reopened", path);
    std::string_view rest = std::string_view(path).substr(kProc.size());
    std::string_view first = rest.substr(0, rest.find('/'));
    e->set_proc(true);
    if (all_digits(first)) {
        pid_t n = static_cast<pid_t>(CKPT_TRY(parse_int(first)));
        rest.remove_prefix(std::min(rest.size(), first.size() + 1));
        auto it = processes_.find(n);
        if (it == processes_.end()) {
            if (threads_.count(n))
                return error_code(ENOTSUP, "{}: a /proc file of thread {} (not its process's leader): not supported", path, n);
            return error_code(ENOTSUP,
                              "{}: a /proc file of process {}, outside the dumped tree: it cannot be reopened for a "
                              "restored process",
                              path, n);
        }
        // /proc/PID/task/TID/...: only the leader's own (other threads come after the fds).
        if (starts_with(rest, "task/")) {
            std::string_view tid = rest.substr(5, rest.find('/', 5) == std::string_view::npos ? std::string_view::npos
                                                                                               : rest.find('/', 5) - 5);
            if (tid != first)
                return error_code(ENOTSUP, "{}: a /proc file of thread {} (not its process's leader): not supported",
                                  path, tid);
        }
        e->set_proc_pid(it->second);
    } else if (first == "self" || first == "thread-self") {
        return error_code(ENOTSUP, "{}: unexpected /proc link in an fd's path", path);
    }
    if (!plain_relative(rest)) return error_code(ENOTSUP, "{}: unexpected /proc path", path);
    e->set_proc_rest(std::string(rest));
    return ok();
}

Result<UniqueFd> open_proc_file(const image::FileEntry& e, int flags, const std::map<pid_t, pid_t>& hosts) {
    // The image may be the user's to forge: the path stays a plain one under /proc.
    if (!plain_relative(e.proc_rest()) || (e.proc_pid() == 0 && e.proc_rest().empty()))
        return error_code(EINVAL, "/proc file '{}' of pid {}: not a plain path under /proc", e.proc_rest(), e.proc_pid());
    std::string path = "/proc/";
    if (e.proc_pid() != 0) {
        auto it = hosts.find(e.proc_pid());
        if (it == hosts.end())
            return error_code(EINVAL, "{}: a /proc file of pid {}, which is not a process of the restored tree",
                              e.path(), e.proc_pid());
        path += std::to_string(it->second);
        if (!e.proc_rest().empty()) path += "/";
    }
    path += e.proc_rest();
    // No symlink on the way: /proc/self, /proc/PID/root, cwd, fd/N... lead out of /proc,
    // and a forged image could name them.
    struct open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOCTTY);
    how.resolve = RESOLVE_NO_SYMLINKS;
    int fd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
    if (fd < 0) return sys_error("reopening /proc file {} (was {}; openat2 without symlinks)", path, e.path());
    UniqueFd owned(fd);
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error("fstat {}", path);
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0 || fs.f_type != PROC_SUPER_MAGIC || (st.st_mode & S_IFMT) != (e.mode() & S_IFMT))
        return error_code(ESTALE, "{}: not the same kind of /proc file as {} at the dump", path, e.path());
    return owned;
}

bool FileRegistry::saved_whole(const std::string& path) const {
    for (const std::string& dir : save_whole_under_) {
        std::string_view d = dir;
        while (d.size() > 1 && d.ends_with('/')) d.remove_suffix(1);
        if (path.size() > d.size() && starts_with(path, d) && (d == "/" || path[d.size()] == '/'))
            return true;
    }
    return false;
}

namespace {

// The saved file made again as a fresh file under its old name in its old folder, if both
// are there and the name is free (O_EXCL|O_NOFOLLOW: nothing planted there is opened).
// Mode 0600 until its content is in; root's until it is unlinked, so that in a sticky
// folder its user cannot swap the name before the restore removes it.
Result<std::optional<UniqueFd>> create_under_old_name(const image::FileEntry& e, std::optional<SavedName>* named) {
    const std::string& path = e.path();
    size_t slash = path.rfind('/');
    if (slash == std::string::npos || slash + 1 == path.size()) return std::optional<UniqueFd>();
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    UniqueFd dirfd(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return std::optional<UniqueFd>();
    std::string name = path.substr(slash + 1);
    UniqueFd fd(openat(dirfd.get(), name.c_str(), O_CREAT | O_EXCL | O_NOFOLLOW | O_RDWR | O_CLOEXEC, 0600));
    if (!fd) {
        if (errno == EEXIST || errno == ENOENT || errno == EACCES || errno == EPERM || errno == EROFS)
            return std::optional<UniqueFd>();
        return sys_error("recreating deleted file {} under its name", path);
    }
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return sys_error("{}: fstat", path);
    named->emplace();
    (*named)->dir = std::move(dirfd);
    (*named)->name = std::move(name);
    (*named)->dev = st.st_dev;
    (*named)->ino = st.st_ino;
    return std::optional<UniqueFd>(std::move(fd));
}

}  // namespace

void remove_saved_name(const image::FileEntry& e, const SavedName& n) {
    struct stat st;
    if (fstatat(n.dir.get(), n.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != n.dev ||
        st.st_ino != n.ino) {
        logger()->warn("{}: its name was taken by another file during the restore; left alone", e.path());
        return;
    }
    if (unlinkat(n.dir.get(), n.name.c_str(), 0) != 0)
        logger()->warn("{}: removing the name of the restored copy: {}", e.path(), strerror(errno));
}

Result<UniqueFd> recreate_saved_file(const std::string& image_dir, const image::FileEntry& e,
                                     std::optional<SavedName>* named) {
    // Recreated from the saved content: a memfd for memfd and shared anonymous memory,
    // a file under its old name (removed once the restore is done) or an unlinked file
    // beside the original path otherwise; a memfd named after the file when that folder is
    // gone or closed to the restoring user (a batch system's per-job folder, deleted when
    // the job ended or on another node).
    // The saved copy is opened first: a name the image records is checked before
    // anything is made.
    auto from = CKPT_TRY(image::open_recorded_data(image_dir, image::names::kFiles, e.content_file(), e.size()));
    UniqueFd fd;
    bool in_memfd = e.memfd();
    // A copy saved whole of a file that was not deleted (saved_copy) stays nameless: its
    // name, where it still exists, is the original's.
    if (!in_memfd && !e.saved_copy() && e.path() != "/dev/zero") {
        auto made = CKPT_TRY(create_under_old_name(e, named));
        if (made) fd = std::move(*made);
    }
    if (!in_memfd && !fd) {
        std::string dir = e.path().substr(0, e.path().rfind('/'));
        fd = UniqueFd(open(dir.empty() ? "/" : dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, e.mode() & 07777));
        if (!fd && errno != ENOENT && errno != EACCES && errno != EPERM)
            return sys_error("recreating deleted file {} (O_TMPFILE in {})", e.path(), dir);
        in_memfd = !fd;
    }
    // Shared anonymous memory: a shared anonymous object again (mapped, it shows as
    // "/dev/zero (deleted)" as it did, not as a memfd).
    if (in_memfd && e.path() == "/dev/zero") {
        auto anon = make_anon_shmem(e.size());
        if (anon) {
            fd = std::move(*anon);
            in_memfd = false;
        } else {
            logger()->info("shared anonymous memory of {} bytes made as a memfd: {}", e.size(), anon.error().message());
        }
    }
    if (in_memfd) {
        std::string name = e.memfd() ? (starts_with(e.path(), "/memfd:") ? e.path().substr(7) : "ckpt-shmem")
                                     : e.path().substr(e.path().rfind('/') + 1);
        // Sealable, so that the recorded seals can be added once everything is in place
        // (seal_saved_files); one made without MFD_ALLOW_SEALING records F_SEAL_SEAL.
        fd = UniqueFd(memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd) return sys_error("memfd_create for {}", e.path());
    }
    uint64_t sum = 0;
    CKPT_TRY_CTX(copy_sparse(from.get(), fd.get(), e.size(), &sum), "restoring content of {}", e.path());
    if (sum != e.content_xxh3())
        return error_code(EINVAL, "{}/{}: checksum mismatch (image is corrupt)", image_dir, e.content_file());
    // Under its old name: owner and mode once the name is gone (remove_saved_name's caller).
    if (*named) return fd;
    CKPT_TRY(give_saved_attributes(e, fd.get()));
    return fd;
}

Result<void> give_saved_attributes(const image::FileEntry& e, int fd) {
    // Its own owner and mode, not the restorer's (nor its umask): owner first, as a change of
    // owner clears set-id bits. Whatever the restoring user may not set fails the restore.
    if (fchown(fd, e.uid(), e.gid()) != 0) {
        if (!(e.saved_copy() && errno == EPERM))
            return sys_error("{}: giving the recreated file its owner {}:{} (fchown)", e.path(), e.uid(), e.gid());
        // A batch system's copy (see FileEntry.saved_copy): the restoring user's own.
        logger()->info("{}: the copy stays the restoring user's (owner {}:{} not permitted)", e.path(), e.uid(), e.gid());
    }
    if (fchmod(fd, e.mode() & 07777) != 0)
        return sys_error("{}: giving the recreated file its mode {:o} (fchmod)", e.path(), e.mode() & 07777);
    // Its modification time last, after every write of its content (the access time is not
    // recorded: the dump's own read of the content moved it).
    constexpr int64_t kNs = 1000000000;
    int64_t sec = e.mtime_ns() / kNs, ns = e.mtime_ns() % kNs;
    if (ns < 0) --sec, ns += kNs;  // before 1970
    const timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(sec), static_cast<long>(ns)}};
    if (futimens(fd, times) != 0)
        return sys_error("{}: giving the recreated file its modification time {} ns (futimens)", e.path(), e.mtime_ns());
    return ok();
}

Result<UniqueFd> reopen_saved_file(const image::FileEntry& e, int object, int flags, const SavedName* named) {
    std::string proc = "/proc/self/fd/" + std::to_string(object);
    if (!(flags & O_NOFOLLOW)) return CKPT_TRY_CTX(open_file(proc, flags), "{}", e.path());
    if (named) {
        // By its name, checked to still be the object.
        UniqueFd fd(openat(named->dir.get(), named->name.c_str(), flags | O_CLOEXEC | O_NOCTTY));
        if (!fd) return sys_error("{}: reopening with O_NOFOLLOW", e.path());
        struct stat st;
        if (fstat(fd.get(), &st) != 0) return sys_error("{}: fstat", e.path());
        if (st.st_dev != named->dev || st.st_ino != named->ino)
            return error_code(EEXIST, "{}: its name was taken by another file during the restore", e.path());
        return fd;
    }
    // O_NOFOLLOW (shm_open sets it) refuses the /proc link: the object is given a name for
    // the moment of the open, beside where it was, and the name is checked to be the object.
    std::string dir = e.path().substr(0, e.path().rfind('/'));
    if (dir.empty()) dir = "/";
    UniqueFd dirfd(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return sys_error("{}: reopening with O_NOFOLLOW (open {})", e.path(), dir);
    std::string name = fmt::format(".ckpt-reopen-{}-{}", getpid(), object);
    if (linkat(AT_FDCWD, proc.c_str(), dirfd.get(), name.c_str(), AT_SYMLINK_FOLLOW) != 0)
        return sys_error("{}: reopening with O_NOFOLLOW needs a name for it in {} (linkat)", e.path(), dir);
    int fd = openat(dirfd.get(), name.c_str(), flags | O_CLOEXEC | O_NOCTTY);
    int saved_errno = errno;
    unlinkat(dirfd.get(), name.c_str(), 0);
    if (fd < 0) return error_code(saved_errno, "{}: reopening with O_NOFOLLOW (open {}/{}): {}", e.path(), dir, name,
                                  strerror(saved_errno));
    UniqueFd owned(fd);
    struct stat a, b;
    if (fstat(fd, &a) != 0 || fstat(object, &b) != 0) return sys_error("{}: fstat", e.path());
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return error_code(EEXIST, "{}: the name {}/{} was taken by another file while reopening", e.path(), dir, name);
    return owned;
}

Result<void> seal_saved_files(const image::FileTable& files, const std::map<uint32_t, UniqueFd>& objects) {
    for (const auto& [id, fd] : objects) {
        const image::FileEntry& e = files.files(static_cast<int>(id) - 1);
        if (!e.memfd() || e.seals() == 0) continue;
        if (fcntl(fd.get(), F_ADD_SEALS, e.seals()) != 0)
            return sys_error("{}: fcntl(F_ADD_SEALS, {:#x})", e.path(), e.seals());
        int now = fcntl(fd.get(), F_GET_SEALS);
        if (now < 0 || static_cast<uint32_t>(now) != e.seals())
            return error_code(EINVAL, "{}: seals {:#x} after restore, {:#x} at dump", e.path(), now, e.seals());
    }
    return ok();
}

namespace {

// What of a written file a restore checks before it rolls the file back: all of it up to
// 64 MiB, else its last 64 MiB (hashing a file read from the page cache costs milliseconds
// per 64 MiB while the tree is frozen).
constexpr uint64_t kWrittenChecked = 64ull << 20;

Result<uint64_t> hash_range(int fd, uint64_t from, uint64_t to) {
    PageBuffer& buf = *CKPT_TRY(file_buffer());
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (uint64_t at = from; at < to;) {
        ssize_t n = pread(fd, buf.data(), static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at)),
                          static_cast<off_t>(at));
        if (n <= 0) {
            XXH3_freeState(st);
            return n < 0 ? sys_error("pread at {}", at) : error("the file ends at {}, before {}", at, to);
        }
        XXH3_64bits_update(st, buf.data(), static_cast<size_t>(n));
        at += static_cast<uint64_t>(n);
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

// A file the tree wrote to that changed since the dump: rolled back to its size at the dump
// when only bytes after that size differ (its writer, restored, writes them again). False
// when it cannot be told (then the restore refuses).
Result<bool> roll_back_written(int fd, const image::FileEntry& e, uint64_t size_now) {
    if (!e.written() || size_now < e.size() || e.written_from() > e.size()) return false;
    // Through descriptions of their own: the fd being restored may be write-only, or read-only.
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    UniqueFd r(open(self.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!r) return sys_error("{}: reading it to compare with the dump", e.path());
    if (CKPT_TRY(hash_range(r.get(), e.written_from(), e.size())) != e.written_xxh3()) return false;
    if (size_now == e.size()) return true;  // rolled back by an earlier fd of this restore
    UniqueFd w(open(self.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
    if (!w || ftruncate(w.get(), static_cast<off_t>(e.size())) != 0)
        return sys_error("{}: rolling it back to its size at the dump ({} bytes; ftruncate)", e.path(), e.size());
    logger()->info("{}: rolled back to its size at the dump ({} -> {} bytes): its writer writes the rest again",
                   e.path(), size_now, e.size());
    return true;
}

}  // namespace

Result<void> FileRegistry::mark_written(uint32_t id, const std::string& fd_path, int reader) {
    image::FileEntry* e = table_.mutable_files(static_cast<int>(id) - 1);
    if (e->written() || e->deleted()) return ok();
    UniqueFd opened;
    if (reader < 0) {
        opened = CKPT_TRY(open_file(fd_path, O_RDONLY));
        reader = opened.get();
    }
    e->set_written(true);
    e->set_written_from(e->size() > kWrittenChecked ? e->size() - kWrittenChecked : 0);
    e->set_written_xxh3(CKPT_TRY_CTX(hash_range(reader, e->written_from(), e->size()), "{}", e->path()));
    return ok();
}

Result<UniqueFd> open_recorded_file(const std::string& image_dir, const image::FileEntry& e, int flags,
                                    bool skip_checks) {
    (void)image_dir;
    if (e.deleted())
        return error_code(EINVAL, "{}: a saved file is opened through its one recreated object", e.path());
    int fd = open(e.path().c_str(), flags | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return sys_error("open {}", e.path());
    UniqueFd owned(fd);
    CKPT_TRY(check_recorded_file(fd, e, skip_checks));
    return owned;
}

Result<void> check_recorded_file(int fd, const image::FileEntry& e, bool skip_checks) {
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error("fstat {}", e.path());
    // An O_PATH open of a symlink itself, a folder, a device: the same kind of file again.
    if (!skip_checks && (st.st_mode & S_IFMT) != (e.mode() & S_IFMT))
        return error_code(ESTALE, "{} changed since the dump (file type {:o}, was {:o}); use --skip-file-checks to restore anyway",
                          e.path(), st.st_mode & S_IFMT, e.mode() & S_IFMT);
    if (skip_checks || !S_ISREG(e.mode())) return ok();
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if ((static_cast<uint64_t>(st.st_size) != e.size() || mtime != e.mtime_ns()) &&
        !CKPT_TRY_CTX(roll_back_written(fd, e, static_cast<uint64_t>(st.st_size)), "{}", e.path()))
        return error_code(ESTALE, "{} changed since the dump (size {} -> {}, mtime changed: {}); use --skip-file-checks to restore anyway",
                          e.path(), e.size(), st.st_size, mtime != e.mtime_ns() ? "yes" : "no");
    if (!e.build_id().empty() && build_id(fd) != e.build_id())
        return error_code(ESTALE, "{} changed since the dump (ELF build-id differs); use --skip-file-checks to restore anyway",
                          e.path());
    return ok();
}

Result<LinkRemapped> open_link_remapped(const image::FileEntry& e, bool skip_checks) {
    const std::string& name = e.link_remap();
    // The image may be forged: the link is a plain name of the recognisable form, in the
    // folder of the recorded path, reached without following any symlink.
    std::string dir, base;
    if (!starts_with(name, kLinkRemapPrefix) || name.find('/') != std::string::npos || name.size() > 255 ||
        !split_path(e.path(), &dir, &base))
        return error_code(EINVAL, "{}: hidden link '{}' is not a plain .ckpt-link-remap name beside an absolute path "
                                  "(image is corrupt)",
                          e.path(), name);
    auto ctx = [&](Error err) {
        return err.context("{} (kept by dump --link-remap through {}/{})", e.path(), dir, name);
    };
    LinkRemapped l;
    l.dir = open_folder_nofollow(dir);
    if (!l.dir) return ctx(sys_error("opening its folder {} (openat2 without symlinks)", dir));
    struct open_how how{};
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    l.object = UniqueFd(static_cast<int>(syscall(SYS_openat2, l.dir.get(), name.c_str(), &how, sizeof how)));
    if (!l.object) return ctx(sys_error("opening the hidden link (removed, or the images were restored already?)"));
    struct stat st;
    if (fstat(l.object.get(), &st) != 0) return ctx(sys_error("fstat"));
    if (!S_ISREG(st.st_mode))
        return ctx(error_code(ESTALE, "the hidden link is not a regular file (type {:o}): refused", st.st_mode & S_IFMT));
    if (!skip_checks && static_cast<uint64_t>(st.st_ino) != e.ino())
        return ctx(error_code(ESTALE, "the hidden link is another file (inode {}, was {}); use --skip-file-checks to "
                                      "restore anyway",
                              st.st_ino, e.ino()));
    l.dev = st.st_dev;
    l.ino = st.st_ino;
    // Given back its old name for the moment of the restore when that name is free, so that
    // /proc names every fd and mapping of it "PATH (deleted)" as before (removed with the
    // saved files' names, drop_old_name); where the name is taken (by another file since),
    // the hidden link's name shows instead.
    const std::string self = "/proc/self/fd/" + std::to_string(l.object.get());
    if (linkat(AT_FDCWD, self.c_str(), l.dir.get(), base.c_str(), AT_SYMLINK_FOLLOW) == 0) {
        l.old_name = base;
        UniqueFd by_name(openat(l.dir.get(), base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        struct stat again;
        if (by_name && fstat(by_name.get(), &again) == 0 && same_inode(again, l.dev, l.ino)) {
            l.object = std::move(by_name);
        } else {
            logger()->warn("{}: its old name was taken by another file while the restore gave it back", e.path());
            l.old_name.clear();
        }
    } else {
        logger()->info("{}: its old name cannot be given back for the restore ({}): the fds and mappings of it are "
                       "named after the hidden link {}",
                       e.path(), strerror(errno), name);
    }
    return l;
}

Result<UniqueFd> reopen_link_remapped(const image::FileEntry& e, const LinkRemapped& l, int flags, bool skip_checks,
                                      bool check_content) {
    int fd;
    if (flags & O_NOFOLLOW) {
        // The /proc link refuses O_NOFOLLOW: by name in the folder, checked to be the object.
        const std::string& name = l.old_name.empty() ? e.link_remap() : l.old_name;
        fd = openat(l.dir.get(), name.c_str(), flags | O_CLOEXEC | O_NOCTTY);
    } else {
        std::string self = "/proc/self/fd/" + std::to_string(l.object.get());
        fd = open(self.c_str(), flags | O_CLOEXEC | O_NOCTTY);
    }
    if (fd < 0) return sys_error("{}: reopening it through its hidden link {}", e.path(), e.link_remap());
    UniqueFd owned(fd);
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error("{}: fstat", e.path());
    if (!same_inode(st, l.dev, l.ino))
        return error_code(ESTALE, "{}: its name was taken by another file during the restore", e.path());
    if (check_content && !(flags & O_PATH)) CKPT_TRY(check_recorded_file(fd, e, skip_checks));
    return owned;
}

void drop_old_name(const image::FileEntry& e, LinkRemapped& l) {
    if (l.old_name.empty()) return;
    struct stat st;
    if (fstatat(l.dir.get(), l.old_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && same_inode(st, l.dev, l.ino)) {
        if (unlinkat(l.dir.get(), l.old_name.c_str(), 0) != 0)
            logger()->warn("{}: removing the name given back for the restore: {}", e.path(), strerror(errno));
    } else {
        logger()->warn("{}: its name was taken by another file during the restore; left alone", e.path());
    }
    l.old_name.clear();
}

void remove_link_remap(const image::FileEntry& e, const LinkRemapped& l) {
    struct stat st;
    if (fstatat(l.dir.get(), e.link_remap().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !same_inode(st, l.dev, l.ino)) {
        logger()->warn("{}: its hidden link {} is no longer the file; left alone", e.path(), e.link_remap());
        return;
    }
    if (unlinkat(l.dir.get(), e.link_remap().c_str(), 0) != 0)
        logger()->warn("{}: removing its hidden link {}: {}", e.path(), e.link_remap(), strerror(errno));
}

}  // namespace ckpt::engine
