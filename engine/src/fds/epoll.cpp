// epoll: every registered target with its events and data. The kernel knows a target by
// its file and the fd number it was added under; the dump requires that fd number to still
// hold that file in the process (kcmp KCMP_EPOLL_TFD), so that adding it again from inside
// the restored process, after all its fds are in place, registers the same pair. Readiness
// is not recorded: the kernel works it out again when a target is added (an edge-triggered
// target that is ready is reported once more).
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

constexpr int kKcmpEpollTfd = 7;
struct KcmpEpollSlot {
    uint32_t efd, tfd, toff;
};

bool claims_epoll(const FdProbe& probe) { return probe.link == "anon_inode:[eventpoll]"; }

Result<void> dump_targets(pid_t pid, int fd, std::string_view fdinfo, const DumpExclusions& ex,
                          image::EpollState* out) {
    out->set_registers_targets(true);
    for (auto line : split(fdinfo, '\n')) {
        // "tfd:        5 events:       19 data:             1234  pos:0 ino:40f sdev:10"
        if (!starts_with(line, "tfd:")) continue;
        auto t = fdinfo_value(line, "tfd:"), ev = fdinfo_value(line, "events:"),
             data = fdinfo_value(line, "data:");
        if (!t || !ev || !data) return error("epoll: malformed fdinfo line '{}'", line);
        auto word = [](std::string_view v) { return v.substr(0, v.find(' ')); };
        auto tfd = parse_int(word(*t));
        auto events = parse_uint(word(*ev), 16), value = parse_uint(word(*data), 16);
        if (!tfd || !events || !value) return error("epoll: malformed fdinfo line '{}'", line);
        int target = static_cast<int>(*tfd);
        KcmpEpollSlot slot{static_cast<uint32_t>(fd), static_cast<uint32_t>(target), 0};
        long same = syscall(SYS_kcmp, pid, pid, kKcmpEpollTfd, target, &slot);
        if (same != 0 || ex.fds.count(target))
            return error(
                "unsupported epoll target: fd {} was closed or replaced after it was registered "
                "(the kernel still watches its file under that number)",
                target);
        auto* e = out->add_targets();
        e->set_fd(target);
        e->set_events(static_cast<uint32_t>(*events));
        e->set_data(*value);
    }
    return ok();
}

Result<void> dump_epoll(const FdProbe& probe, image::Fd* f) {
    bool is_new = false;
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()), &is_new)));
    // The targets of a shared epoll are recorded once, by the first process seen holding
    // it, and added again in that process at restore.
    if (!is_new) {
        f->mutable_epoll();
        return ok();
    }
    return dump_targets(probe.pid, probe.fd, CKPT_TRY(probe.fdinfo_text()), probe.state->ex, f->mutable_epoll());
}

Result<void> restore_epoll(RestoreTask& t, const image::Fd& f) {
    auto make = []() -> Result<UniqueFd> {
        UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
        if (!fd) return sys_error("epoll_create1");
        return fd;
    };
    return install_description(t, f, make, true);
}

// From inside the process, once all its fds are in place (targets may be epolls too).
Result<void> restore_epoll_targets(RestoreTask& t, const image::Fd& f) {
    if (!f.epoll().registers_targets()) return ok();
    const int epoll_fd = f.fd();
    const image::EpollState& s = f.epoll();
    for (const auto& target : s.targets()) {
        auto sc = t.scratch.scope();
        epoll_event ev{};
        ev.events = target.events();
        ev.data.u64 = target.data();
        uint64_t at = CKPT_TRY(sc.put(&ev, sizeof ev, 4));
        auto r = t.leader->syscall_ok("epoll_ctl(ADD)", SYS_epoll_ctl,
                                      {static_cast<uint64_t>(epoll_fd), EPOLL_CTL_ADD,
                                       static_cast<uint64_t>(target.fd()), at});
        if (!r)
            return std::move(r).error().context("epoll fd {}: target fd {}", epoll_fd, target.fd());
    }
    return ok();
}

}  // namespace

extern const FdKind kEpollKind{
    .name = "epoll",
    .image_kind = image::Fd::EPOLL,
    .claims = claims_epoll,
    .dump = dump_epoll,
    .restore = restore_epoll,
    .restore_late = restore_epoll_targets,
};

}  // namespace ckpt::engine
