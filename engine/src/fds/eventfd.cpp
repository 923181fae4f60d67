// eventfd: the counter and EFD_SEMAPHORE. The count is written into a fresh eventfd rather
// than given to eventfd2, whose initial value is only 32 bits wide.
#include <sys/eventfd.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_eventfd(const FdProbe& probe) { return probe.link == "anon_inode:[eventfd]"; }

Result<void> parse_eventfd(std::string_view fdinfo, image::EventFdState* out) {
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

Result<void> dump_eventfd(const FdProbe& probe, image::Fd* f) {
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    return parse_eventfd(CKPT_TRY(probe.fdinfo_text()), f->mutable_eventfd());
}

// Made once in the engine, shared by every fd (in every process) that had it.
Result<void> restore_eventfd(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_eventfd(f.eventfd()); }, true);
}

}  // namespace

extern const FdKind kEventFdKind{
    .name = "eventfd",
    .image_kind = image::Fd::EVENTFD,
    .claims = claims_eventfd,
    .dump = dump_eventfd,
    .restore = restore_eventfd,
};

}  // namespace ckpt::engine
