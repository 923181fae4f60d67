// Identity and settings: uids, gids, groups, capabilities, securebits, no_new_privs;
// limits, umask, personality, cwd and root, timer slack, parent-death signal, dumpable.
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <map>
#include <set>
#include <tuple>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "proc.h"
#include "restore_task.h"
#include "syscall_batch.h"
#include "task_state.h"

// Linux 6.3 (older headers lack them).
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN (1UL << 0)
#endif
#ifndef PR_MDWE_NO_INHERIT
#define PR_MDWE_NO_INHERIT (1UL << 1)
#endif

namespace ckpt::engine {

namespace {

void fill_creds(const ProcStatus& s, image::Creds* c) {
    c->set_uid(s.uid[0]);
    c->set_euid(s.uid[1]);
    c->set_suid(s.uid[2]);
    c->set_fsuid(s.uid[3]);
    c->set_gid(s.gid[0]);
    c->set_egid(s.gid[1]);
    c->set_sgid(s.gid[2]);
    c->set_fsgid(s.gid[3]);
    for (auto g : s.groups) c->add_groups(g);
    c->set_cap_inh(s.cap_inh);
    c->set_cap_prm(s.cap_prm);
    c->set_cap_eff(s.cap_eff);
    c->set_cap_bnd(s.cap_bnd);
    c->set_cap_amb(s.cap_amb);
    c->set_no_new_privs(s.no_new_privs);
}

}  // namespace

Result<void> dump_creds(const FrozenProcess& p, RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core) {
    const pid_t pid = p.pid;
    const ProcStatus& s = p.status;
    auto* c = core->mutable_creds();
    fill_creds(s, c);
    c->set_securebits(static_cast<uint32_t>(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_SECUREBITS)", SYS_prctl, {PR_GET_SECUREBITS}))));
    core->set_umask(s.umask);

    for (const auto& l : CKPT_TRY(read_limits(pid))) {
        auto* r = core->add_rlimits();
        r->set_resource(l.resource);
        r->set_cur(l.cur);
        r->set_max(l.max);
    }
    std::string pers_path = proc_path(pid, "personality");
    auto pers = CKPT_TRY(read_file(pers_path));
    core->set_personality(static_cast<uint32_t>(CKPT_TRY_CTX(parse_uint(trim(pers), 16), "{}", pers_path)));
    // timerslack_ns is unreadable without CAP_SYS_NICE over the task: then the default stays.
    std::string slack_path = proc_path(pid, "timerslack_ns");
    auto slack = read_file(slack_path);
    if (slack) core->set_timer_slack_ns(CKPT_TRY_CTX(parse_uint(trim(*slack)), "{}", slack_path));
    core->set_cwd(CKPT_TRY(read_link(proc_path(pid, "cwd"))));
    core->set_root(CKPT_TRY(read_link(proc_path(pid, "root"))));
    // A folder removed after it was entered cannot be entered again (a restore would fail,
    // or enter another folder of that name).
    for (auto [path, what] : {std::pair{core->cwd(), "cwd"}, std::pair{core->root(), "root"}})
        if (path.ends_with(" (deleted)"))
            return error_code(ENOTSUP, "pid {}: its {} {} was removed (rmdir) after it was entered: it cannot be "
                                       "restored; refused",
                              pid, what, path.substr(0, path.size() - std::string_view(" (deleted)").size()));
    auto sc = scratch.scope();
    int pdeath = 0;
    uint64_t at = CKPT_TRY(sc.take(sizeof pdeath, alignof(int)));
    CKPT_TRY(rt.syscall_ok("prctl(PR_GET_PDEATHSIG)", SYS_prctl, {PR_GET_PDEATHSIG, at}));
    CKPT_TRY(read_remote(pid, at, &pdeath, sizeof pdeath));
    core->set_pdeath_signal(pdeath);
    core->set_dumpable(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_DUMPABLE)", SYS_prctl, {PR_GET_DUMPABLE})) == 1);
    int subreaper = 0;
    at = CKPT_TRY(sc.take(sizeof subreaper, alignof(int)));
    CKPT_TRY(rt.syscall_ok("prctl(PR_GET_CHILD_SUBREAPER)", SYS_prctl, {PR_GET_CHILD_SUBREAPER, at}));
    CKPT_TRY(read_remote(pid, at, &subreaper, sizeof subreaper));
    core->set_child_subreaper(subreaper != 0);
    // Linux 6.3: a kernel without it says EINVAL, and no process there has it.
    const int64_t mdwe = CKPT_TRY(rt.syscall(SYS_prctl, {PR_GET_MDWE}));
    if (mdwe < 0 && mdwe != -EINVAL) return error_code(static_cast<int>(-mdwe), "pid {}: prctl(PR_GET_MDWE) failed", pid);
    core->set_mdwe(mdwe > 0 ? static_cast<uint32_t>(mdwe) : 0);
    return ok();
}

Result<void> dump_thread_creds(pid_t pid, RemoteThread& rt, const image::Creds& process, image::ThreadCore* tc) {
    // Credentials are per thread in the kernel: a thread that called the raw setresuid (or
    // capset, setgroups...) for itself alone has its own. Kept only where they differ.
    image::Creds c;
    fill_creds(CKPT_TRY(read_status(pid, rt.tid())), &c);
    c.set_securebits(static_cast<uint32_t>(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_SECUREBITS)", SYS_prctl, {PR_GET_SECUREBITS}))));
    if (c.SerializeAsString() != process.SerializeAsString()) *tc->mutable_creds() = c;
    return ok();
}

Result<void> restore_mdwe(RestoreTask& t) {
    if (t.core.mdwe() == 0) return ok();
    if (t.core.mdwe() & ~static_cast<uint32_t>(PR_MDWE_REFUSE_EXEC_GAIN | PR_MDWE_NO_INHERIT))
        return error_code(EINVAL, "pid {}: memory-deny-write-execute flags {:#x}: unknown (image is corrupt)", t.pid,
                          t.core.mdwe());
    RemoteThread& rt = *t.leader;
    const int64_t r = CKPT_TRY(rt.syscall(SYS_prctl, {PR_SET_MDWE, t.core.mdwe()}));
    if (r == -EINVAL)
        return error_code(EINVAL, "pid {}: memory-deny-write-execute (PR_SET_MDWE {:#x}) was set at dump and this kernel "
                                  "cannot set it: refused",
                          t.pid, t.core.mdwe());
    if (r < 0) return error_code(static_cast<int>(-r), "pid {}: prctl(PR_SET_MDWE, {:#x})", t.pid, t.core.mdwe());
    const int64_t now = CKPT_TRY(rt.syscall_ok("prctl(PR_GET_MDWE)", SYS_prctl, {PR_GET_MDWE}));
    if (static_cast<uint64_t>(now) != t.core.mdwe())
        return error_code(EINVAL, "pid {}: memory-deny-write-execute flags {:#x} after restore, {:#x} at dump", t.pid, now,
                          t.core.mdwe());
    return ok();
}

const image::Creds& thread_creds(const image::TaskCore& core, const image::ThreadCore& tc) {
    return tc.has_creds() ? tc.creds() : core.creds();
}

namespace {

const char* rlimit_name(uint32_t resource) {
    static const char* const names[] = {"RLIMIT_CPU",     "RLIMIT_FSIZE",  "RLIMIT_DATA",   "RLIMIT_STACK",
                                        "RLIMIT_CORE",    "RLIMIT_RSS",    "RLIMIT_NPROC",  "RLIMIT_NOFILE",
                                        "RLIMIT_MEMLOCK", "RLIMIT_AS",     "RLIMIT_LOCKS",  "RLIMIT_SIGPENDING",
                                        "RLIMIT_MSGQUEUE", "RLIMIT_NICE",  "RLIMIT_RTPRIO", "RLIMIT_RTTIME"};
    return resource < std::size(names) ? names[resource] : "unknown limit";
}

}  // namespace

Result<void> read_own_rlimits(std::array<std::pair<uint64_t, uint64_t>, 16>* out) {
    for (uint32_t res = 0; res < out->size(); ++res) {
        struct rlimit lim{};
        if (getrlimit(static_cast<int>(res), &lim) != 0) return sys_error("getrlimit({}) of the engine", rlimit_name(res));
        (*out)[res] = {lim.rlim_cur, lim.rlim_max};
    }
    return ok();
}

Result<void> restore_task_settings(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const auto& core = t.core;
    {
        // The limits and settings in one batch (syscall_batch.h); the limits' values stay in
        // the scratch scope until it has run.
        SyscallBatch batch(rt, t.scratch, t.batch_code());
        const std::string ctx = fmt::format("pid {}", t.pid);
        auto s = t.scratch.scope();
        for (const auto& r : core.rlimits()) {
            struct rlimit64 {
                uint64_t cur, max;
            } lim{r.cur(), r.max()}, old{};
            if (r.resource() < t.shared->inherited_rlimits.size()) {
                // What the process inherited from the engine: known without asking it.
                std::tie(old.cur, old.max) = t.shared->inherited_rlimits[r.resource()];
            } else {
                uint64_t old_at = CKPT_TRY(s.take(sizeof old));
                CKPT_TRY(rt.syscall_ok("prlimit64", SYS_prlimit64, {0, r.resource(), 0, old_at}));
                CKPT_TRY(read_remote(t.host, old_at, &old, sizeof old));
            }
            if (lim.max > old.max) {
                // Raising a hard limit needs CAP_SYS_RESOURCE, which the engine may lack (and a
                // user's restore never has): the process gets the restorer's hard limit, never
                // more than it had.
                logger()->warn("pid {}: hard {} {} is above the restorer's {}: lowered to it", t.pid,
                               rlimit_name(r.resource()), lim.max, old.max);
                lim.max = old.max;
                lim.cur = std::min(lim.cur, lim.max);
            }
            if (lim.cur == old.cur && lim.max == old.max) continue;  // as inherited: nothing to set
            uint64_t lim_at = CKPT_TRY(s.put(lim));
            batch.add("prlimit64", SYS_prlimit64, {0, r.resource(), lim_at, 0}, fmt::format("{}: {}", ctx, rlimit_name(r.resource())));
        }
        batch.add("umask", SYS_umask, {core.umask()}, ctx);
        batch.add("personality", SYS_personality, {core.personality()}, ctx);
        if (core.timer_slack_ns()) batch.add("prctl(PR_SET_TIMERSLACK)", SYS_prctl, {PR_SET_TIMERSLACK, core.timer_slack_ns()}, ctx);
        batch.add("prctl(PR_SET_CHILD_SUBREAPER)", SYS_prctl, {PR_SET_CHILD_SUBREAPER, core.child_subreaper() ? 1u : 0u}, ctx);
        CKPT_TRY(batch.flush());
    }

    // cwd and root: directories opened by the engine (with its rights: the user's under
    // --restore-as) and entered through their fds.
    for (auto [path, is_root] : {std::pair{core.root(), true}, std::pair{core.cwd(), false}}) {
        if (path.empty() || (is_root && path == "/")) continue;
        UniqueFd dir = CKPT_TRY_CTX(open_file(path, O_RDONLY | O_DIRECTORY | O_PATH), "pid {}: {}", t.pid,
                                    is_root ? "root" : "cwd");
        int fd = CKPT_TRY(t.install_fd(dir.get()));
        CKPT_TRY(rt.syscall_ok("fchdir", SYS_fchdir, {static_cast<uint64_t>(fd)}));
        if (is_root) {
            auto s = t.scratch.scope();
            char dot[2] = ".";
            uint64_t at = CKPT_TRY(s.put(dot));
            int64_t r = CKPT_TRY(rt.syscall(SYS_chroot, {at}));
            if (r < 0) {
                int err = static_cast<int>(-r);
                // CAP_SYS_CHROOT: a user's restore never has it.
                return error_code(err, "pid {}: chroot({}): {}{}", t.pid, path, std::strerror(err),
                                  err == EPERM ? ": the user may not set it" : "");
            }
        }
        CKPT_TRY(rt.syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    }
    return ok();
}

Result<void> restore_creds(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, const image::Creds& c) {
    // One batch (syscall_batch.h), run in this order and ended by the first call that fails;
    // what the calls point to stays in the scope until it ran. The identity is checked from
    // /proc afterwards all the same (verify_thread_identity).
    SyscallBatch batch(rt, scratch, batch_code);
    const std::string ctx = fmt::format("tid {}", rt.tid());
    auto s = scratch.scope();
    // Bounding set first: dropping needs CAP_SETPCAP, which goes with the uid change.
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(c.cap_bnd() & (1ull << cap))) batch.add("prctl(PR_CAPBSET_DROP)", SYS_prctl, {PR_CAPBSET_DROP, cap}, ctx);
    if (c.securebits()) batch.add("prctl(PR_SET_SECUREBITS)", SYS_prctl, {PR_SET_SECUREBITS, c.securebits()}, ctx);
    std::vector<uint32_t> groups(c.groups().begin(), c.groups().end());
    uint64_t groups_at = CKPT_TRY(s.put(groups.data(), groups.size() * sizeof(uint32_t), alignof(uint32_t)));
    batch.add("setgroups", SYS_setgroups, {groups.size(), groups_at}, ctx);
    batch.add("setresgid", SYS_setresgid, {c.gid(), c.egid(), c.sgid()}, ctx);
    batch.add("setfsgid", SYS_setfsgid, {c.fsgid()}, ctx);
    batch.add("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, 1}, ctx);
    batch.add("setresuid", SYS_setresuid, {c.uid(), c.euid(), c.suid()}, ctx);
    batch.add("setfsuid", SYS_setfsuid, {c.fsuid()}, ctx);
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0] = {static_cast<uint32_t>(c.cap_eff()), static_cast<uint32_t>(c.cap_prm()), static_cast<uint32_t>(c.cap_inh())};
    data[1] = {static_cast<uint32_t>(c.cap_eff() >> 32), static_cast<uint32_t>(c.cap_prm() >> 32),
               static_cast<uint32_t>(c.cap_inh() >> 32)};
    uint64_t hdr_at = CKPT_TRY(s.put(hdr));
    uint64_t data_at = CKPT_TRY(s.put(data));
    batch.add("capset", SYS_capset, {hdr_at, data_at}, ctx);
    bool keep = c.securebits() & (1u << 4);  // SECBIT_KEEP_CAPS
    batch.add("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, keep ? 1u : 0u}, ctx);
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (c.cap_amb() & (1ull << cap))
            batch.add("prctl(PR_CAP_AMBIENT_RAISE)", SYS_prctl, {PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap}, ctx);
    if (c.no_new_privs()) batch.add("prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1}, ctx);
    return batch.flush();
}


namespace {

constexpr uint32_t kSecbitKeepCaps = 1u << 4;  // SECBIT_KEEP_CAPS (linux/securebits.h)

std::string join_ids(const std::vector<uint32_t>& ids) {
    std::string out;
    for (uint32_t id : ids) out += (out.empty() ? "" : " ") + std::to_string(id);
    return out.empty() ? "none" : out;
}

std::vector<uint32_t> id_set(auto&& ids) {
    std::vector<uint32_t> out(ids.begin(), ids.end());
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

}  // namespace

Result<void> check_user_images(pid_t pid, const image::TaskCore& core, const RestoreShared& sh) {
    const privilege::Identity& who = *sh.user;
    // A user's restore gives every thread the user's identity: a thread with credentials of
    // its own cannot come back as it was.
    for (const auto& tc : core.threads())
        if (tc.has_creds())
            return error_code(EPERM, "pid {} tid {}: the thread has credentials of its own (uid {}, gid {}): refused",
                              pid, tc.tid(), tc.creds().uid(), tc.creds().gid());
    const image::Creds& c = core.creds();
    for (uint32_t u : {c.uid(), c.euid(), c.suid(), c.fsuid()})
        if (u != who.uid)
            return error_code(EPERM, "pid {}: the images claim uid {} but belong to uid {}: refused", pid, u, who.uid);
    for (uint32_t g : {c.gid(), c.egid(), c.sgid(), c.fsgid()})
        if (g != who.gid)
            return error_code(EPERM, "pid {}: the images claim gid {}, the user's is {}: refused", pid, g, who.gid);
    // Restored as the user, a process can only have the groups the user has now (setgroups
    // needs CAP_SETGID).
    std::vector<uint32_t> groups = id_set(c.groups()), user_groups = id_set(who.groups);
    if (groups != user_groups)
        return error_code(EPERM, "pid {}: the images claim groups [{}], the user's are [{}]: refused", pid,
                          join_ids(groups), join_ids(user_groups));
    if (c.cap_prm() || c.cap_eff() || c.cap_inh() || c.cap_amb())
        return error_code(EPERM,
                          "pid {}: the images claim capabilities (permitted {:#x}, effective {:#x}, inheritable {:#x}, "
                          "ambient {:#x}) for uid {}: refused",
                          pid, c.cap_prm(), c.cap_eff(), c.cap_inh(), c.cap_amb(), who.uid);
    // Dropping from the bounding set needs CAP_SETPCAP: a user's process keeps the restorer's.
    if (c.cap_bnd() != sh.own_cap_bnd)
        return error_code(EPERM, "pid {}: capability bounding set {:#x} differs from the restorer's {:#x}: refused", pid,
                          c.cap_bnd(), sh.own_cap_bnd);
    if (c.securebits() & ~kSecbitKeepCaps)
        return error_code(EPERM, "pid {}: securebits {:#x}: only SECBIT_KEEP_CAPS can be restored as a user: refused",
                          pid, c.securebits());
    if (core.seccomp_size() > 0 && !c.no_new_privs())
        return error_code(EPERM, "pid {}: a seccomp filter without no_new_privs cannot be restored as a user", pid);
    return ok();
}

Result<void> restore_creds_as_user(RemoteThread& rt, RemoteScratch& scratch, uint64_t batch_code, const image::Creds& c) {
    // The thread is the user already (a copy of the init, which became the user); it holds
    // CAP_CHECKPOINT_RESTORE for the restore only. Capabilities are per thread: each drops
    // its own.
    SyscallBatch batch(rt, scratch, batch_code);  // in order, ended by the first that fails
    const std::string ctx = fmt::format("tid {}", rt.tid());
    auto s = scratch.scope();
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[2] = {};
    uint64_t hdr_at = CKPT_TRY(s.put(hdr));
    uint64_t data_at = CKPT_TRY(s.put(none));
    batch.add("capset(none)", SYS_capset, {hdr_at, data_at}, ctx);
    batch.add("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", SYS_prctl, {PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL}, ctx);
    bool keep = c.securebits() & kSecbitKeepCaps;
    batch.add("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, keep ? 1u : 0u}, ctx);
    if (c.no_new_privs()) batch.add("prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1}, ctx);
    return batch.flush();
}

ExpectedIdentity expected_identity(const image::Creds& c, const RestoreShared& sh) {
    ExpectedIdentity e;
    if (sh.user) {
        const privilege::Identity& who = *sh.user;
        std::fill(std::begin(e.uid), std::end(e.uid), who.uid);
        std::fill(std::begin(e.gid), std::end(e.gid), who.gid);
        e.groups = id_set(who.groups);
        e.cap_bnd = sh.own_cap_bnd;
    } else {
        uint32_t uid[4] = {c.uid(), c.euid(), c.suid(), c.fsuid()}, gid[4] = {c.gid(), c.egid(), c.sgid(), c.fsgid()};
        std::copy(std::begin(uid), std::end(uid), e.uid);
        std::copy(std::begin(gid), std::end(gid), e.gid);
        e.groups = id_set(c.groups());
        e.cap_inh = c.cap_inh();
        e.cap_prm = c.cap_prm();
        e.cap_eff = c.cap_eff();
        e.cap_amb = c.cap_amb();
        // A bounding capability the restorer lacks cannot be given back.
        e.cap_bnd = c.cap_bnd() & sh.own_cap_bnd;
    }
    e.no_new_privs = c.no_new_privs();
    return e;
}

namespace {

// "Key:\tvalue" lines of a /proc status file.
std::map<std::string, std::string, std::less<>> status_fields(const std::string& text) {
    std::map<std::string, std::string, std::less<>> out;
    for (std::string_view line : split(text, '\n')) {
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        out.emplace(std::string(line.substr(0, colon)), std::string(trim(line.substr(colon + 1))));
    }
    return out;
}

std::vector<uint32_t> parse_ids(std::string_view value) {
    std::vector<uint32_t> out;
    for (auto a : split(value, '\t'))
        for (auto b : split(a, ' '))
            if (auto n = parse_uint(trim(b)); !trim(b).empty() && n) out.push_back(static_cast<uint32_t>(*n));
    return out;
}

}  // namespace

Result<void> verify_thread_identity(pid_t pid, pid_t tid, pid_t host_tgid, pid_t host_tid, const ExpectedIdentity& want) {
    std::string text = CKPT_TRY_CTX(read_file(proc_task_path(host_tgid, host_tid, "status")), "pid {} tid {}", pid, tid);
    auto fields = status_fields(text);
    auto field = [&](std::string_view key) -> Result<std::string_view> {
        auto it = fields.find(key);
        if (it == fields.end()) return error("pid {} tid {}: /proc status has no {} field", pid, tid, key);
        return std::string_view(it->second);
    };
    auto mismatch = [&](std::string_view key, std::string_view have, std::string want_text) {
        return error_code(EPERM, "pid {} tid {}: {} is '{}' after the restore, expected '{}'", pid, tid, key, have,
                          want_text);
    };
    for (auto [key, ids] : {std::pair{"Uid", want.uid}, std::pair{"Gid", want.gid}}) {
        std::string_view v = CKPT_TRY(field(key));
        std::vector<uint32_t> have = parse_ids(v), expected(ids, ids + 4);
        if (have != expected) return mismatch(key, v, join_ids(expected));
    }
    std::string_view groups = CKPT_TRY(field("Groups"));
    if (id_set(parse_ids(groups)) != want.groups) return mismatch("Groups", groups, join_ids(want.groups));
    for (auto [key, caps] : {std::pair{"CapInh", want.cap_inh}, std::pair{"CapPrm", want.cap_prm},
                             std::pair{"CapEff", want.cap_eff}, std::pair{"CapAmb", want.cap_amb},
                             std::pair{"CapBnd", want.cap_bnd}}) {
        std::string_view v = CKPT_TRY(field(key));
        auto have = parse_uint(v, 16);
        if (!have || *have != caps) return mismatch(key, v, fmt::format("{:016x}", caps));
    }
    std::string_view nnp = CKPT_TRY(field("NoNewPrivs"));
    if (nnp != (want.no_new_privs ? "1" : "0")) return mismatch("NoNewPrivs", nnp, want.no_new_privs ? "1" : "0");
    return ok();
}

}  // namespace ckpt::engine
