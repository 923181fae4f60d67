// System V IPC of a tree in its own IPC namespace: dump and restore side by side (ipc_ns.h).
//
// The engine reads and makes the objects from a thread of its own that enters the namespace
// with setns(CLONE_NEWIPC): the System V calls, /proc/sys/kernel's IPC sysctls and
// kernel.*_next_id act on the calling thread's namespace, and a thread may enter an IPC
// namespace alone (nothing else of the engine changes). It needs CAP_SYS_ADMIN, over the
// namespace's user namespace and the engine's.
#include "ipc_ns.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "ckpt/base/strings.h"
#include "proc.h"
#include "ptrace_ctl.h"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif
#ifndef SHM_STAT_ANY  // glibc 2.28 and later have them (linux 4.17)
#define SHM_STAT_ANY 15
#endif
#ifndef SEM_STAT_ANY
#define SEM_STAT_ANY 20
#endif
#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#endif

namespace ckpt::engine {
namespace {

constexpr uint64_t kPage = 4096;
// Forged images: bounds on what a restore makes (the kernel's defaults are below them).
constexpr int kMaxObjects = 32768;             // per kind (IPCMNI)
constexpr uint64_t kMaxShmSize = 1ull << 40;   // one segment
constexpr int kMaxSems = 32000;                // SEMMSL's largest
constexpr uint32_t kSemValueMax = 32767;       // SEMVMX
constexpr uint64_t kMaxMsgBytes = 1ull << 24;  // one message
constexpr uint64_t kMaxQueueBytes = 1ull << 30;

union SemArg {
    int val;
    struct semid_ds* buf;
    unsigned short* array;
    struct seminfo* info;
};

// Runs f on a thread of the engine that has entered the IPC namespace ns_fd.
template <typename F>
Result<void> in_namespace(int ns_fd, F&& f) {
    Result<void> r = ok();
    std::thread th([&] {
        if (setns(ns_fd, CLONE_NEWIPC) != 0) {
            r = sys_error("setns(CLONE_NEWIPC) into the tree's IPC namespace (needs CAP_SYS_ADMIN)");
            return;
        }
        r = f();
    });
    th.join();
    return r;
}

std::string sysctl_path(const char* name) { return std::string("/proc/sys/kernel/") + name; }

Result<std::vector<int64_t>> read_sysctl(const char* name) {
    std::string text = CKPT_TRY(read_file(sysctl_path(name)));
    std::vector<int64_t> out;
    for (char& c : text)
        if (c == '\t' || c == '\n') c = ' ';
    for (auto w : split(trim(text), ' ')) {
        if (w.empty()) continue;
        // shmmax and shmall may be above INT64_MAX (ULONG_MAX): kept as their bits.
        bool neg = w[0] == '-';
        auto v = parse_uint(neg ? w.substr(1) : w, 10);
        if (!v) return error_code(EINVAL, "{}: unexpected value '{}'", sysctl_path(name), text);
        out.push_back(neg ? -static_cast<int64_t>(*v) : static_cast<int64_t>(*v));
    }
    if (out.empty()) return error_code(EINVAL, "{}: empty", sysctl_path(name));
    return out;
}

Result<void> write_sysctl(const char* name, const std::string& value) {
    auto fd = CKPT_TRY(open_file(sysctl_path(name), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    ssize_t n = write(fd.get(), value.data(), value.size());
    if (n != static_cast<ssize_t>(value.size())) return sys_error("write '{}' to {}", value, sysctl_path(name));
    return ok();
}

void set_perm(image::IpcPerm* p, const struct ipc_perm& k, int id) {
    p->set_key(k.__key);
    p->set_id(id);
    p->set_mode(k.mode & 0777);
    p->set_uid(k.uid);
    p->set_gid(k.gid);
    p->set_cuid(k.cuid);
    p->set_cgid(k.cgid);
}

// In the namespace: its sysctls and every object.
Result<void> read_namespace(image::IpcNamespace* out) {
    auto one = [](const char* name) -> Result<int64_t> { return CKPT_TRY(read_sysctl(name))[0]; };
    out->set_shmmax(static_cast<uint64_t>(CKPT_TRY(one("shmmax"))));
    out->set_shmall(static_cast<uint64_t>(CKPT_TRY(one("shmall"))));
    out->set_shmmni(static_cast<int32_t>(CKPT_TRY(one("shmmni"))));
    out->set_shm_rmid_forced(static_cast<int32_t>(CKPT_TRY(one("shm_rmid_forced"))));
    out->set_msgmax(static_cast<int32_t>(CKPT_TRY(one("msgmax"))));
    out->set_msgmnb(static_cast<int32_t>(CKPT_TRY(one("msgmnb"))));
    out->set_msgmni(static_cast<int32_t>(CKPT_TRY(one("msgmni"))));
    for (int64_t v : CKPT_TRY(read_sysctl("sem"))) out->add_sem(static_cast<int32_t>(v));
    if (out->sem_size() != 4) return error_code(EINVAL, "{}: not 4 values", sysctl_path("sem"));
    out->set_shm_next_id(static_cast<int32_t>(CKPT_TRY(one("shm_next_id"))));
    out->set_sem_next_id(static_cast<int32_t>(CKPT_TRY(one("sem_next_id"))));
    out->set_msg_next_id(static_cast<int32_t>(CKPT_TRY(one("msg_next_id"))));

    // Shared memory: every index up to the highest in use.
    struct shm_info si{};
    int top = shmctl(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&si));
    if (top < 0) return sys_error("shmctl(SHM_INFO)");
    for (int i = 0; i <= top; ++i) {
        struct shmid_ds ds{};
        int id = shmctl(i, SHM_STAT_ANY, &ds);
        if (id < 0 && (errno == EINVAL || errno == EIDRM)) continue;
        if (id < 0) return sys_error("shmctl({}, SHM_STAT_ANY)", i);
        image::SysvShm* s = out->add_shms();
        set_perm(s->mutable_perm(), ds.shm_perm, id);
        s->set_size(ds.shm_segsz);
        s->set_locked(ds.shm_perm.mode & SHM_LOCKED);
        s->set_destroyed(ds.shm_perm.mode & SHM_DEST);
        s->set_nattch(ds.shm_nattch);
        if (ds.shm_segsz == 0 || ds.shm_segsz > kMaxShmSize)
            return error_code(ENOTSUP, "System V shared memory segment id {}: {} bytes, not supported", id, ds.shm_segsz);
        // Its content: the pages in memory (mincore), or every page when the namespace has
        // swapped some out; zero pages are not stored.
        void* p = shmat(id, nullptr, SHM_RDONLY);
        if (p == reinterpret_cast<void*>(-1)) return sys_error("shmat(id {}, SHM_RDONLY) to read it", id);
        const uint64_t pages = (ds.shm_segsz + kPage - 1) / kPage;
        std::vector<unsigned char> in_core(pages);
        Result<void> r = ok();
        if (mincore(p, pages * kPage, in_core.data()) != 0) r = sys_error("mincore of segment id {}", id);
        const char* base = static_cast<const char*>(p);
        image::ShmData* run = nullptr;
        for (uint64_t pg = 0; r && pg < pages; ++pg) {
            if (!(in_core[pg] & 1) && si.shm_swp == 0) {
                run = nullptr;
                continue;
            }
            const uint64_t off = pg * kPage;
            const size_t len = static_cast<size_t>(std::min<uint64_t>(kPage, ds.shm_segsz - off));
            bool zero = true;
            for (size_t k = 0; k < len && zero; ++k) zero = base[off + k] == 0;
            if (zero) {
                run = nullptr;
                continue;
            }
            if (!run) {
                run = s->add_data();
                run->set_offset(off);
            }
            run->mutable_data()->append(base + off, len);
        }
        shmdt(p);
        CKPT_TRY(std::move(r));
    }

    // Semaphore sets.
    struct seminfo smi{};
    SemArg arg{};
    arg.info = &smi;
    top = semctl(0, 0, SEM_INFO, arg);
    if (top < 0) return sys_error("semctl(SEM_INFO)");
    for (int i = 0; i <= top; ++i) {
        struct semid_ds ds{};
        arg.buf = &ds;
        int id = semctl(i, 0, SEM_STAT_ANY, arg);
        if (id < 0 && (errno == EINVAL || errno == EIDRM)) continue;
        if (id < 0) return sys_error("semctl({}, SEM_STAT_ANY)", i);
        image::SysvSem* s = out->add_sems();
        set_perm(s->mutable_perm(), ds.sem_perm, id);
        std::vector<unsigned short> values(ds.sem_nsems);
        arg.array = values.data();
        if (semctl(id, 0, GETALL, arg) != 0) return sys_error("semctl(id {}, GETALL)", id);
        for (unsigned short v : values) s->add_values(v);
    }

    // Message queues, every message copied (MSG_COPY), none taken.
    struct msginfo mi{};
    top = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&mi));
    if (top < 0) return sys_error("msgctl(MSG_INFO)");
    for (int i = 0; i <= top; ++i) {
        struct msqid_ds ds{};
        int id = msgctl(i, MSG_STAT_ANY, &ds);
        if (id < 0 && (errno == EINVAL || errno == EIDRM)) continue;
        if (id < 0) return sys_error("msgctl({}, MSG_STAT_ANY)", i);
        image::SysvMsgQueue* q = out->add_queues();
        set_perm(q->mutable_perm(), ds.msg_perm, id);
        q->set_qbytes(ds.msg_qbytes);
        std::vector<char> buf(sizeof(long) + ds.__msg_cbytes + 1);
        uint64_t total = 0;
        for (msgqnum_t n = 0; n < ds.msg_qnum; ++n) {
            ssize_t len = msgrcv(id, buf.data(), buf.size() - sizeof(long), static_cast<long>(n), IPC_NOWAIT | MSG_COPY);
            if (len < 0 && errno == ENOSYS)
                return error_code(ENOTSUP, "message queue id {}: reading its messages needs msgrcv(MSG_COPY) "
                                           "(CONFIG_CHECKPOINT_RESTORE)", id);
            if (len < 0) return sys_error("message queue id {}: msgrcv(MSG_COPY) of message {}", id, n);
            image::SysvMsg* m = q->add_messages();
            long type;
            std::memcpy(&type, buf.data(), sizeof type);
            m->set_type(type);
            m->set_text(buf.data() + sizeof(long), static_cast<size_t>(len));
            total += static_cast<uint64_t>(len);
        }
        if (total != ds.__msg_cbytes)
            return error("message queue id {}: {} bytes read in {} messages, {} queued", id, total, ds.msg_qnum,
                         ds.__msg_cbytes);
    }
    return ok();
}

Result<ino_t> ns_inode(const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return sys_error("stat {}", path);
    return st.st_ino;
}

}  // namespace

Result<bool> dump_ipc_namespace(const std::vector<FrozenProcess>& procs, image::IpcNamespace* out) {
    const pid_t root = procs.front().pid;
    const ino_t ns = CKPT_TRY_CTX(read_ns_inode(root, "ipc"), "pid {}", root);
    if (ns == CKPT_TRY_CTX(read_ns_inode(getpid(), "ipc"), "the engine")) return false;

    std::set<pid_t> in_tree;
    for (const auto& p : procs) {
        in_tree.insert(p.pid);
        if (p.zombie) continue;
        for (pid_t tid : p.threads) {
            std::string who = tid == p.pid ? fmt::format("pid {}", p.pid) : fmt::format("pid {} (thread {})", p.pid, tid);
            ino_t its = CKPT_TRY_CTX(ns_inode(proc_task_path(p.pid, tid, "ns/ipc")), "{}", who);
            if (its != ns)
                return error_code(ENOTSUP,
                                  "{} is in IPC namespace ipc:[{}], not the one of the tree's root {} (ipc:[{}]): a "
                                  "tree in several IPC namespaces is not supported",
                                  who, its, root, ns);
            // Undo adjustments cannot be read: a thread that ever used SEM_UNDO has an undo
            // list, which kcmp tells apart from the engine's (none).
            long c = syscall(SYS_kcmp, tid, getpid(), KCMP_SYSVSEM, 0, 0);
            if (c < 0) return sys_error("{}: kcmp(KCMP_SYSVSEM)", who);
            if (c != 0)
                return error_code(ENOTSUP,
                                  "{} has System V semaphore undo adjustments (semop with SEM_UNDO), which cannot be "
                                  "read: not supported",
                                  who);
        }
    }
    // Nobody outside the tree may share the namespace: its objects would be theirs too.
    for (int pid : CKPT_TRY(read_numbered_dir("/proc"))) {
        if (in_tree.count(pid)) continue;
        auto its = ns_inode(proc_path(pid, "ns/ipc"));
        if (its && *its == ns)
            return error_code(ENOTSUP,
                              "pid {}, outside the tree, is in the tree's IPC namespace (ipc:[{}]): its System V "
                              "objects would be shared with it; not supported",
                              pid, ns);
    }

    auto ns_fd = CKPT_TRY(open_file(proc_path(root, "ns/ipc"), O_RDONLY | O_CLOEXEC));
    CKPT_TRY_CTX(in_namespace(ns_fd.get(), [&] { return read_namespace(out); }), "the IPC namespace of pid {}", root);

    // Every attachment is the tree's, of a whole segment.
    std::map<int, uint64_t> size_of, attached;
    std::map<int, int32_t> name_key;
    for (const auto& s : out->shms()) size_of[s.perm().id()] = s.size();
    for (const auto& p : procs) {
        if (p.zombie) continue;
        for (const auto& m : CKPT_TRY_CTX(read_maps(p.pid), "pid {}", p.pid)) {
            if (!starts_with(m.path, "/SYSV")) continue;
            int id = static_cast<int>(m.inode);
            auto it = size_of.find(id);
            if (it == size_of.end())
                return error_code(ENOTSUP,
                                  "pid {}: System V shared memory mapping {:#x}-{:#x} (shmid {}) is of no segment of "
                                  "the tree's IPC namespace: not supported",
                                  p.pid, m.start, m.end, id);
            uint64_t whole = (it->second + kPage - 1) / kPage * kPage;
            if (m.offset != 0 || m.end - m.start != whole)
                return error_code(ENOTSUP,
                                  "pid {}: System V shared memory mapping {:#x}-{:#x} (shmid {}) is part of its "
                                  "segment of {} bytes (split by mprotect, munmap or mremap): not supported",
                                  p.pid, m.start, m.end, id, it->second);
            ++attached[id];
            // "/SYSV%08x": the key it was made with, kept after IPC_RMID made it private.
            auto key = parse_uint(std::string_view(m.path).substr(5, 8), 16);
            if (!key) return error("pid {}: mapping {:#x}: unexpected name '{}'", p.pid, m.start, m.path);
            name_key[id] = static_cast<int32_t>(*key);
        }
    }
    for (auto& s : *out->mutable_shms())
        if (s.destroyed()) s.set_name_key(name_key[s.perm().id()]);
    for (const auto& s : out->shms())
        if (attached[s.perm().id()] != s.nattch())
            return error_code(ENOTSUP,
                              "System V shared memory segment id {} is attached {} times, {} of them by the tree: "
                              "attached outside the tree, not supported",
                              s.perm().id(), s.nattch(), attached[s.perm().id()]);
    if (out->shm_rmid_forced() != 0 && out->shms_size() > 0)
        return error_code(ENOTSUP,
                          "the tree's IPC namespace has kernel.shm_rmid_forced=1 and shared memory segments: which "
                          "process created each (removed when it exits) cannot be restored; not supported");
    return true;
}

Result<void> check_ipc_image(const image::IpcNamespace& ns, const std::string& where) {
    auto bad = [&](const std::string& what) {
        return error_code(EINVAL, "{}: {} (image is corrupt)", where, what);
    };
    if (ns.sem_size() != 4) return bad("kernel.sem has not 4 values");
    if (ns.shms_size() > kMaxObjects || ns.sems_size() > kMaxObjects || ns.queues_size() > kMaxObjects)
        return bad("too many objects");
    if (ns.shm_rmid_forced() != 0 && ns.shms_size() > 0) return bad("shm_rmid_forced with segments");
    auto check_perm = [&](const image::IpcPerm& p, std::set<int>& ids, const char* kind) -> Result<void> {
        if (p.id() < 0 || !ids.insert(p.id()).second)
            return bad(fmt::format("{} id {} negative or twice", kind, p.id()));
        if (p.mode() & ~0777u) return bad(fmt::format("{} id {}: mode {:o}", kind, p.id(), p.mode()));
        return ok();
    };
    std::set<int> shm_ids, sem_ids, msg_ids;
    for (const auto& s : ns.shms()) {
        CKPT_TRY(check_perm(s.perm(), shm_ids, "segment"));
        if (s.size() == 0 || s.size() > kMaxShmSize) return bad(fmt::format("segment id {}: size {}", s.perm().id(), s.size()));
        if (s.destroyed() && s.perm().key() != IPC_PRIVATE)
            return bad(fmt::format("segment id {}: marked for destruction with a key", s.perm().id()));
        uint64_t end = 0;
        for (const auto& d : s.data()) {
            if (d.offset() % kPage || d.offset() < end || d.offset() >= s.size() || d.data().empty() ||
                d.data().size() > s.size() - d.offset())
                return bad(fmt::format("segment id {}: data at {:#x}", s.perm().id(), d.offset()));
            end = d.offset() + d.data().size();
        }
    }
    for (const auto& s : ns.sems()) {
        CKPT_TRY(check_perm(s.perm(), sem_ids, "semaphore set"));
        if (s.values_size() == 0 || s.values_size() > kMaxSems)
            return bad(fmt::format("semaphore set id {}: {} semaphores", s.perm().id(), s.values_size()));
        for (uint32_t v : s.values())
            if (v > kSemValueMax) return bad(fmt::format("semaphore set id {}: value {}", s.perm().id(), v));
    }
    for (const auto& q : ns.queues()) {
        CKPT_TRY(check_perm(q.perm(), msg_ids, "message queue"));
        if (q.qbytes() > kMaxQueueBytes) return bad(fmt::format("message queue id {}: qbytes {}", q.perm().id(), q.qbytes()));
        uint64_t total = 0;
        for (const auto& m : q.messages()) {
            if (m.type() <= 0 || m.text().size() > kMaxMsgBytes)
                return bad(fmt::format("message queue id {}: message of type {}, {} bytes", q.perm().id(), m.type(),
                                       m.text().size()));
            total += m.text().size();
        }
        if (total > q.qbytes() || static_cast<uint64_t>(q.messages_size()) > q.qbytes())
            return bad(fmt::format("message queue id {}: {} bytes queued, qbytes {}", q.perm().id(), total, q.qbytes()));
    }
    return ok();
}

Result<void> check_shm_attachment(const image::IpcNamespace* ns, const image::Vma& v, const std::string& where) {
    if (!ns)
        return error_code(EINVAL, "{}: mapping {:#x} is a System V segment but the images have no IPC namespace "
                                  "(image is corrupt)", where, v.start());
    for (const auto& s : ns->shms()) {
        if (s.perm().id() != v.shm_id()) continue;
        uint64_t whole = (s.size() + kPage - 1) / kPage * kPage;
        if (v.pgoff() != 0 || v.end() <= v.start() || v.end() - v.start() != whole || v.start() % kPage)
            return error_code(EINVAL, "{}: mapping {:#x}-{:#x} is not the whole of segment id {} (image is corrupt)",
                              where, v.start(), v.end(), v.shm_id());
        return ok();
    }
    return error_code(EINVAL, "{}: mapping {:#x} attaches segment id {}, which ipc.img lacks (image is corrupt)", where,
                      v.start(), v.shm_id());
}

namespace {

// The calling thread only (raw system calls: glibc would change every thread of the engine)
// takes egid and euid for the creation of one object, which records them as its creator.
class CreatorIdentity {
public:
    CreatorIdentity(uint32_t uid, uint32_t gid) {
        if (syscall(SYS_setresgid, -1, gid, -1) != 0) {
            err_ = errno;
            return;
        }
        gid_set_ = true;
        if (syscall(SYS_setresuid, -1, uid, -1) != 0) err_ = errno;
        else uid_set_ = true;
    }
    ~CreatorIdentity() {
        if (uid_set_) syscall(SYS_setresuid, -1, 0, -1);
        if (gid_set_) syscall(SYS_setresgid, -1, 0, -1);
    }
    int error() const { return err_; }

private:
    int err_ = 0;
    bool gid_set_ = false, uid_set_ = false;
};

template <typename Make>
Result<void> make_with_id(const char* next_id, const image::IpcPerm& p, const char* kind, Make&& make) {
    CKPT_TRY(write_sysctl(next_id, std::to_string(p.id())));
    int got;
    {
        CreatorIdentity as(p.cuid(), p.cgid());
        if (as.error())
            return sys_error_code(as.error(), fmt::format("{} id {}: taking creator uid {} gid {}", kind, p.id(),
                                                          p.cuid(), p.cgid()));
        got = make();
        if (got < 0) got = -errno;
    }
    if (got < 0) return sys_error_code(-got, fmt::format("{} id {} (key {:#x}): create", kind, p.id(), p.key()));
    if (got != p.id()) return error("{} id {} (key {:#x}) was made with id {}", kind, p.id(), p.key(), got);
    return ok();
}

template <typename Ds>
void fill_set(Ds& ds, const image::IpcPerm& p, struct ipc_perm Ds::*perm) {
    (ds.*perm).uid = p.uid();
    (ds.*perm).gid = p.gid();
    (ds.*perm).mode = static_cast<unsigned short>(p.mode());
}

// In the namespace: limits that let every object be made (the recorded ones may be lower
// than what exists: lowered afterwards), then every object.
Result<void> make_objects(const image::IpcNamespace& ns, std::vector<void*>* held_) {
    if (geteuid() != 0 || getegid() != 0) return error_code(EPERM, "making System V objects needs root");
    uint64_t biggest = 0, total_pages = 0, sems = 0;
    int most_sems = 0;
    int64_t longest = 0;
    for (const auto& s : ns.shms()) {
        biggest = std::max(biggest, s.size());
        total_pages += (s.size() + kPage - 1) / kPage;
    }
    for (const auto& s : ns.sems()) {
        most_sems = std::max(most_sems, s.values_size());
        sems += static_cast<uint64_t>(s.values_size());
    }
    int64_t most_qbytes = 0;  // above msgmnb, a queue's qbytes needs CAP_SYS_RESOURCE
    for (const auto& q : ns.queues()) {
        most_qbytes = std::max<int64_t>(most_qbytes, static_cast<int64_t>(q.qbytes()));
        for (const auto& m : q.messages()) longest = std::max<int64_t>(longest, static_cast<int64_t>(m.text().size()));
    }
    auto at_least = [](int64_t rec, int64_t need) { return std::to_string(std::max(rec, need)); };
    CKPT_TRY(write_sysctl("shmmax", std::to_string(std::max(ns.shmmax(), biggest))));
    CKPT_TRY(write_sysctl("shmall", std::to_string(std::max(ns.shmall(), total_pages))));
    CKPT_TRY(write_sysctl("shmmni", at_least(ns.shmmni(), ns.shms_size())));
    CKPT_TRY(write_sysctl("msgmax", at_least(ns.msgmax(), longest)));
    CKPT_TRY(write_sysctl("msgmnb", at_least(ns.msgmnb(), most_qbytes)));
    CKPT_TRY(write_sysctl("msgmni", at_least(ns.msgmni(), ns.queues_size())));
    CKPT_TRY(write_sysctl("sem", fmt::format("{} {} {} {}", at_least(ns.sem(0), most_sems),
                                             at_least(ns.sem(1), static_cast<int64_t>(sems)), ns.sem(2),
                                             at_least(ns.sem(3), ns.sems_size()))));

    // Segments marked for destruction first: made with the key of their name, removed at once
    // (their key becomes private, free for a live segment), kept by an attachment of the
    // engine's until the tree's processes hold theirs.
    std::vector<const image::SysvShm*> order;
    for (const auto& s : ns.shms())
        if (s.destroyed()) order.push_back(&s);
    for (const auto& s : ns.shms())
        if (!s.destroyed()) order.push_back(&s);
    for (const image::SysvShm* sp : order) {
        const image::SysvShm& s = *sp;
        const auto& p = s.perm();
        const key_t key = s.destroyed() ? s.name_key() : p.key();
        CKPT_TRY(make_with_id("shm_next_id", p, "segment", [&] {
            return shmget(key, s.size(), static_cast<int>(IPC_CREAT | IPC_EXCL | p.mode()));
        }));
        if (s.destroyed()) {
            void* held = shmat(p.id(), nullptr, SHM_RDONLY);
            if (held == reinterpret_cast<void*>(-1)) return sys_error("segment id {}: shmat to hold it", p.id());
            held_->push_back(held);
            if (shmctl(p.id(), IPC_RMID, nullptr) != 0) return sys_error("segment id {}: IPC_RMID", p.id());
        }
        if (s.data_size() > 0) {
            void* at = shmat(p.id(), nullptr, 0);
            if (at == reinterpret_cast<void*>(-1)) return sys_error("segment id {}: shmat to write it", p.id());
            for (const auto& d : s.data()) std::memcpy(static_cast<char*>(at) + d.offset(), d.data().data(), d.data().size());
            shmdt(at);
        }
        if (s.locked() && shmctl(p.id(), SHM_LOCK, nullptr) != 0) return sys_error("segment id {}: SHM_LOCK", p.id());
        struct shmid_ds ds{};
        fill_set(ds, p, &shmid_ds::shm_perm);
        if (shmctl(p.id(), IPC_SET, &ds) != 0) return sys_error("segment id {}: IPC_SET", p.id());
    }
    for (const auto& s : ns.sems()) {
        const auto& p = s.perm();
        CKPT_TRY(make_with_id("sem_next_id", p, "semaphore set", [&] {
            return semget(p.key(), s.values_size(), static_cast<int>(IPC_CREAT | IPC_EXCL | p.mode()));
        }));
        std::vector<unsigned short> values(s.values().begin(), s.values().end());
        SemArg arg{};
        arg.array = values.data();
        if (semctl(p.id(), 0, SETALL, arg) != 0) return sys_error("semaphore set id {}: SETALL", p.id());
        struct semid_ds ds{};
        fill_set(ds, p, &semid_ds::sem_perm);
        arg.buf = &ds;
        if (semctl(p.id(), 0, IPC_SET, arg) != 0) return sys_error("semaphore set id {}: IPC_SET", p.id());
    }
    for (const auto& q : ns.queues()) {
        const auto& p = q.perm();
        CKPT_TRY(make_with_id("msg_next_id", p, "message queue", [&] {
            return msgget(p.key(), static_cast<int>(IPC_CREAT | IPC_EXCL | p.mode()));
        }));
        struct msqid_ds ds{};
        fill_set(ds, p, &msqid_ds::msg_perm);
        ds.msg_qbytes = q.qbytes();
        if (msgctl(p.id(), IPC_SET, &ds) != 0) return sys_error("message queue id {}: IPC_SET", p.id());
        std::vector<char> buf;
        for (const auto& m : q.messages()) {
            buf.resize(sizeof(long) + m.text().size());
            long type = static_cast<long>(m.type());
            std::memcpy(buf.data(), &type, sizeof type);
            std::memcpy(buf.data() + sizeof type, m.text().data(), m.text().size());
            if (msgsnd(p.id(), buf.data(), m.text().size(), IPC_NOWAIT) != 0)
                return sys_error("message queue id {}: msgsnd of a message of type {}, {} bytes", p.id(), m.type(),
                                 m.text().size());
        }
    }
    return ok();
}

Result<void> finish_objects(const image::IpcNamespace& ns) {
    CKPT_TRY(write_sysctl("shmmax", std::to_string(ns.shmmax())));
    CKPT_TRY(write_sysctl("shmall", std::to_string(ns.shmall())));
    CKPT_TRY(write_sysctl("shmmni", std::to_string(ns.shmmni())));
    CKPT_TRY(write_sysctl("msgmax", std::to_string(ns.msgmax())));
    CKPT_TRY(write_sysctl("msgmnb", std::to_string(ns.msgmnb())));
    CKPT_TRY(write_sysctl("msgmni", std::to_string(ns.msgmni())));
    CKPT_TRY(write_sysctl("sem", fmt::format("{} {} {} {}", ns.sem(0), ns.sem(1), ns.sem(2), ns.sem(3))));
    CKPT_TRY(write_sysctl("shm_rmid_forced", std::to_string(ns.shm_rmid_forced())));
    // -1 (unset, as every create leaves it) cannot be written, and is what they are now.
    if (ns.shm_next_id() >= 0) CKPT_TRY(write_sysctl("shm_next_id", std::to_string(ns.shm_next_id())));
    if (ns.sem_next_id() >= 0) CKPT_TRY(write_sysctl("sem_next_id", std::to_string(ns.sem_next_id())));
    if (ns.msg_next_id() >= 0) CKPT_TRY(write_sysctl("msg_next_id", std::to_string(ns.msg_next_id())));
    return ok();
}

}  // namespace

Result<IpcRestore> IpcRestore::create(RemoteThread& root, pid_t host, const image::IpcNamespace& ns) {
    CKPT_TRY(root.syscall_ok("unshare(CLONE_NEWIPC)", SYS_unshare, {CLONE_NEWIPC}));
    IpcRestore out;
    out.ns_ = CKPT_TRY(open_file(proc_path(host, "ns/ipc"), O_RDONLY | O_CLOEXEC));
    out.img_ = &ns;
    CKPT_TRY_CTX(in_namespace(out.ns_.get(), [&] { return make_objects(ns, &out.held_); }), "the tree's IPC namespace");
    return out;
}

IpcRestore::~IpcRestore() {
    for (void* p : held_) shmdt(p);
}

Result<void> IpcRestore::finish() {
    // The tree's processes hold every segment marked for destruction now: the engine lets go.
    for (void* p : held_) shmdt(p);
    held_.clear();
    CKPT_TRY_CTX(in_namespace(ns_.get(), [&] { return finish_objects(*img_); }), "the tree's IPC namespace");
    return ok();
}

}  // namespace ckpt::engine
