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

Result<void> dump_creds(pid_t pid, RemoteThread& rt, uint64_t scratch, image::TaskCore* core) {
    auto s = CKPT_TRY(read_status(pid));
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
    CKPT_TRY(rt.syscall_ok("prctl(PR_GET_PDEATHSIG)", SYS_prctl, {PR_GET_PDEATHSIG, scratch}));
    int pdeath = 0;
    CKPT_TRY(read_remote(pid, scratch, &pdeath, sizeof pdeath));
    core->set_pdeath_signal(pdeath);
    core->set_dumpable(CKPT_TRY(rt.syscall_ok("prctl(PR_GET_DUMPABLE)", SYS_prctl, {PR_GET_DUMPABLE})) == 1);
    CKPT_TRY(rt.syscall_ok("prctl(PR_GET_CHILD_SUBREAPER)", SYS_prctl, {PR_GET_CHILD_SUBREAPER, scratch}));
    int subreaper = 0;
    CKPT_TRY(read_remote(pid, scratch, &subreaper, sizeof subreaper));
    core->set_child_subreaper(subreaper != 0);
    return ok();
}

Result<void> restore_task_settings(RestoreTask& t) {
    RemoteThread& rt = *t.leader;
    const auto& core = t.core;
    uint64_t scratch = t.scratch();
    for (const auto& r : core.rlimits()) {
        struct rlimit64 {
            uint64_t cur, max;
        } lim{r.cur(), r.max()}, old{};
        CKPT_TRY(rt.syscall_ok("prlimit64", SYS_prlimit64, {0, r.resource(), 0, scratch}));
        CKPT_TRY(read_remote(t.host, scratch, &old, sizeof old));
        if (lim.max > old.max) {
            // Raising a hard limit needs CAP_SYS_RESOURCE, which the engine may lack: the
            // process gets the engine's (lower) hard limit, never more than it had.
            logger()->warn("pid {}: limit {} hard {} capped at {}", t.pid, r.resource(), lim.max, old.max);
            lim.max = old.max;
            lim.cur = std::min(lim.cur, lim.max);
        }
        CKPT_TRY(write_remote(t.host, scratch, &lim, sizeof lim));
        CKPT_TRY(rt.syscall_ok("prlimit64", SYS_prlimit64, {0, r.resource(), scratch, 0}));
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
            char dot[2] = ".";
            CKPT_TRY(write_remote(t.host, scratch, dot, sizeof dot));
            CKPT_TRY(rt.syscall_ok("chroot", SYS_chroot, {scratch}));
        }
        CKPT_TRY(rt.syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    }
    return ok();
}

Result<void> restore_creds(RemoteThread& rt, const image::Creds& c) {
    uint64_t scratch = rt.code_addr() + 4096 + 512;
    pid_t tid = rt.tid();
    // Bounding set first: dropping needs CAP_SETPCAP, which goes with the uid change.
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(c.cap_bnd() & (1ull << cap))) CKPT_TRY(rt.syscall_ok("prctl(PR_CAPBSET_DROP)", SYS_prctl, {PR_CAPBSET_DROP, cap}));
    if (c.securebits()) CKPT_TRY(rt.syscall_ok("prctl(PR_SET_SECUREBITS)", SYS_prctl, {PR_SET_SECUREBITS, c.securebits()}));
    std::vector<uint32_t> groups(c.groups().begin(), c.groups().end());
    if (groups.size() * 4 > 2048) return error("tid {}: too many supplementary groups ({})", tid, groups.size());
    CKPT_TRY(write_remote(tid, scratch, groups.data(), groups.size() * 4));
    CKPT_TRY(rt.syscall_ok("setgroups", SYS_setgroups, {groups.size(), scratch}));
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
    CKPT_TRY(write_remote(tid, scratch, &hdr, sizeof hdr));
    CKPT_TRY(write_remote(tid, scratch + sizeof hdr, data, sizeof data));
    CKPT_TRY(rt.syscall_ok("capset", SYS_capset, {scratch, scratch + sizeof hdr}));
    bool keep = c.securebits() & (1u << 4);  // SECBIT_KEEP_CAPS
    CKPT_TRY(rt.syscall_ok("prctl(PR_SET_KEEPCAPS)", SYS_prctl, {PR_SET_KEEPCAPS, keep ? 1u : 0u}));
    for (uint64_t cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (c.cap_amb() & (1ull << cap))
            CKPT_TRY(rt.syscall_ok("prctl(PR_CAP_AMBIENT_RAISE)", SYS_prctl, {PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap}));
    if (c.no_new_privs()) CKPT_TRY(rt.syscall_ok("prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1}));
    return ok();
}

}  // namespace ckpt::engine
