// signalfd: the set of signals it takes. Which signals are pending belongs to the process
// (signals.cpp), not to the signalfd.
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "event_fds.h"

namespace ckpt::engine {

Result<void> dump_signalfd(std::string_view fdinfo, image::SignalFdState* out) {
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

}  // namespace ckpt::engine
