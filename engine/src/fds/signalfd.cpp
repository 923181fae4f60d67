// signalfd: the set of signals it takes. Which signals are pending belongs to the process
// (signals.cpp), not to the signalfd.
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_signalfd(const FdProbe& probe) { return probe.link == "anon_inode:[signalfd]"; }

Result<void> parse_signalfd(std::string_view fdinfo, image::SignalFdState* out) {
    auto mask = fdinfo_value(fdinfo, "sigmask:");
    if (!mask) return error("signalfd: no sigmask in fdinfo");
    auto v = parse_uint(*mask, 16);
    if (!v) return error("signalfd: malformed sigmask '{}'", *mask);
    out->set_mask(*v);
    return ok();
}

Result<UniqueFd> make_signalfd(const image::SignalFdState& s) {
    uint64_t mask = s.mask();  // the kernel's sigset layout: bit n-1 for signal n
    UniqueFd fd(static_cast<int>(syscall(SYS_signalfd4, -1, &mask, sizeof mask, SFD_CLOEXEC)));
    if (!fd) return sys_error("signalfd (mask {:#x})", mask);
    return fd;
}

Result<void> dump_signalfd(const FdProbe& probe, image::Fd* f) {
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    return parse_signalfd(CKPT_TRY(probe.fdinfo_text()), f->mutable_signalfd());
}

Result<void> restore_signalfd(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_signalfd(f.signalfd()); }, true);
}

}  // namespace

extern const FdKind kSignalFdKind{
    .name = "signalfd",
    .image_kind = image::Fd::SIGNALFD,
    .claims = claims_signalfd,
    .dump = dump_signalfd,
    .restore = restore_signalfd,
};

}  // namespace ckpt::engine
