// eventfd: the counter and EFD_SEMAPHORE. The count is written into a fresh eventfd rather
// than given to eventfd2, whose initial value is only 32 bits wide.
#include <sys/eventfd.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "event_fds.h"

namespace ckpt::engine {

Result<void> dump_eventfd(std::string_view fdinfo, image::EventFdState* out) {
    auto count = fdinfo_value(fdinfo, "eventfd-count:");
    if (!count) return error("eventfd: no eventfd-count in fdinfo");
    auto v = parse_uint(*count, 16);
    if (!v) return error("eventfd: malformed eventfd-count '{}'", *count);
    out->set_count(*v);
    // Older kernels have no eventfd-semaphore line: such an eventfd comes back as a counter.
    auto sem = fdinfo_value(fdinfo, "eventfd-semaphore:");
    out->set_semaphore(sem && *sem == "1");
    return ok();
}

Result<UniqueFd> make_eventfd(const image::EventFdState& s) {
    UniqueFd fd(eventfd(0, EFD_CLOEXEC | (s.semaphore() ? EFD_SEMAPHORE : 0)));
    if (!fd) return sys_error("eventfd");
    uint64_t count = s.count();
    if (count == 0) return fd;
    if (count == UINT64_MAX)
        return error_code(EINVAL, "eventfd: count {:#x} is out of range (image is corrupt)", count);
    if (write(fd.get(), &count, sizeof count) != sizeof count)
        return sys_error("eventfd: write count {}", count);
    return fd;
}

}  // namespace ckpt::engine
