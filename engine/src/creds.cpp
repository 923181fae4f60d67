// Identity and settings: uids, gids, groups, capabilities, securebits, no_new_privs;
// limits, umask, personality, cwd and root, timer slack, parent-death signal, dumpable.
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "proc.h"
#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {

Result<void> dump_creds(const FrozenProcess& p, RemoteThread& rt, RemoteScratch& scratch, image::TaskCore* core) {
    const pid_t pid = p.pid;
    const ProcStatus& s = p.status;
    auto* c = core->mutable_creds();
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
    c->set_securebits(static_cast<uint32_t>(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_SECUREBITS)", SYS_prctl, {PR_GET_SECUREBITS}))));
    core->set_umask(s.umask);

    for (const auto& l : CKPT_TRY(read_limits(pid))) {
        auto* r = core->add_rlimits();
        r->set_resource(l.resource);
        r->set_cur(l.cur);
        r->set_max(l.max);
    }
    auto pers = CKPT_TRY(read_file(proc_path(pid, "personality")));
    core->set_personality(static_cast<uint32_t>(parse_uint(trim(pers), 16).value()));
    auto slack = read_file(proc_path(pid, "timerslack_ns"));
    if (slack) core->set_timer_slack_ns(parse_uint(trim(*slack)).value());
    core->set_cwd(CKPT_TRY(read_link(proc_path(pid, "cwd"))));
    core->set_root(CKPT_TRY(read_link(proc_path(pid, "root"))));
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
    return ok();
}

Result<void> restore_task_settings(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const auto& core = t.core;
    for (const auto& r : core.rlimits()) {
        auto s = t.scratch.scope();
        struct rlimit64 {
            uint64_t cur, max;
        } lim{r.cur(), r.max()}, old{};
        uint64_t old_at = CKPT_TRY(s.take(sizeof old));
        CKPT_TRY(rt.syscall_ok("prlimit64", SYS_prlimit64, {0, r.resource(), 0, old_at}));
        CKPT_TRY(read_remote(t.host, old_at, &old, sizeof old));
        if (lim.max > old.max) {
            // Raising a hard limit needs CAP_SYS_RESOURCE, which the engine may lack: the
            // process gets the engine's (lower) hard limit, never more than it had.
            logger()->warn("pid {}: limit {} hard {} capped at {}", t.pid, r.resource(), lim.max, old.max);
            lim.max = old.max;
            lim.cur = std::min(lim.cur, lim.max);
        }
        uint64_t lim_at = CKPT_TRY(s.put(lim));
        CKPT_TRY(rt.syscall_ok("prlimit64", SYS_prlimit64, {0, r.resource(), lim_at, 0}));
    }
    CKPT_TRY(rt.syscall_ok("umask", SYS_umask, {core.umask()}));
    CKPT_TRY(rt.syscall_ok("personality", SYS_personality, {core.personality()}));
    if (core.timer_slack_ns()) CKPT_TRY(rt.syscall_ok("prctl(PR_SET_TIMERSLACK)", SYS_prctl, {PR_SET_TIMERSLACK, core.timer_slack_ns()}));
    CKPT_TRY(rt.syscall_ok("prctl(PR_SET_PDEATHSIG)", SYS_prctl, {PR_SET_PDEATHSIG, static_cast<uint64_t>(core.pdeath_signal())}));
    CKPT_TRY(rt.syscall_ok("prctl(PR_SET_CHILD_SUBREAPER)", SYS_prctl, {PR_SET_CHILD_SUBREAPER, core.child_subreaper() ? 1u : 0u}));

    // cwd and root: directories opened by the engine and entered through their fds.
    for (auto [path, is_root] : {std::pair{core.root(), true}, std::pair{core.cwd(), false}}) {
        if (path.empty() || (is_root && path == "/")) continue;
        UniqueFd dir;
        {
            FsIdentity as(t.shared->fs_uid, t.shared->fs_gid);
            dir = CKPT_TRY_CTX(open_file(path, O_RDONLY | O_DIRECTORY | O_PATH), "pid {}: {}", t.pid,
                               is_root ? "root" : "cwd");
        }
        int fd = CKPT_TRY(t.install_fd(dir.get()));
        CKPT_TRY(rt.syscall_ok("fchdir", SYS_fchdir, {static_cast<uint64_t>(fd)}));
        if (is_root) {
            auto s = t.scratch.scope();
            char dot[2] = ".";
            uint64_t at = CKPT_TRY(s.put(dot));
            CKPT_TRY(rt.syscall_ok("chroot", SYS_chroot, {at}));
        }
        CKPT_TRY(rt.syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    }
    return ok();
}

Result<void> restore_creds(RemoteThread& rt, RemoteScratch& scratch, const image::Creds& c) {
    auto s = scratch.scope();
    // Bounding set first: dropping needs CAP_SETPCAP, which goes with the uid change.
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(c.cap_bnd() & (1ull << cap))) CKPT_TRY(rt.syscall_ok("prctl(PR_CAPBSET_DROP)", SYS_prctl, {PR_CAPBSET_DROP, cap}));
    if (c.securebits()) CKPT_TRY(rt.syscall_ok("prctl(PR_SET_SECUREBITS)", SYS_prctl, {PR_SET_SECUREBITS, c.securebits()}));
    std::vector<uint32_t> groups(c.groups().begin(), c.groups().end());
    uint64_t groups_at = CKPT_TRY(s.put(groups.data(), groups.size() * sizeof(uint32_t), alignof(uint32_t)));
    CKPT_TRY(rt.syscall_ok("setgroups", SYS_setgroups, {groups.size(), groups_at}));
    CKPT_TRY(rt.syscall_ok("setresgid", SYS_setresgid, {c.gid(), c.egid(), c.sgid()}));
    CKPT_TRY(rt.syscall_ok("setfsgid", SYS_setfsgid, {c.fsgid()}));
    CKPT_TRY(rt.syscall_ok("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, 1}));
    CKPT_TRY(rt.syscall_ok("setresuid", SYS_setresuid, {c.uid(), c.euid(), c.suid()}));
    CKPT_TRY(rt.syscall_ok("setfsuid", SYS_setfsuid, {c.fsuid()}));
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0] = {static_cast<uint32_t>(c.cap_eff()), static_cast<uint32_t>(c.cap_prm()), static_cast<uint32_t>(c.cap_inh())};
    data[1] = {static_cast<uint32_t>(c.cap_eff() >> 32), static_cast<uint32_t>(c.cap_prm() >> 32),
               static_cast<uint32_t>(c.cap_inh() >> 32)};
    uint64_t hdr_at = CKPT_TRY(s.put(hdr));
    uint64_t data_at = CKPT_TRY(s.put(data));
    CKPT_TRY(rt.syscall_ok("capset", SYS_capset, {hdr_at, data_at}));
    bool keep = c.securebits() & (1u << 4);  // SECBIT_KEEP_CAPS
    CKPT_TRY(rt.syscall_ok("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, keep ? 1u : 0u}));
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (c.cap_amb() & (1ull << cap))
            CKPT_TRY(rt.syscall_ok("prctl(PR_CAP_AMBIENT_RAISE)", SYS_prctl, {PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap}));
    if (c.no_new_privs()) CKPT_TRY(rt.syscall_ok("prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1}));
    return ok();
}

}  // namespace ckpt::engine
