// timerfd: clock, settime flags, time left, interval and the expirations not yet read.
//
// A periodic timerfd whose expiry nobody has read stops counting in the kernel; what it
// missed since is added only when it is read or timerfd_gettime is called. The dump calls
// timerfd_gettime first (which changes nothing the process can see) so that fdinfo's ticks
// holds every expiry up to now. At restore the timer is armed with the time it had left
// (time spent frozen or in images does not count, as for POSIX timers), except an absolute
// CLOCK_REALTIME timer, which keeps its wall-clock expiry (and fires at once, counting what
// it missed, when that has passed). Absolute timers on the per-boot clocks (MONOTONIC,
// BOOTTIME) keep their time left. The unread expirations are put back with
// TFD_IOC_SET_TICKS, so the first read after restore reports them.
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "proc.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

constexpr int64_t kNsPerSec = 1000000000;
// <linux/timerfd.h> (which clashes with <sys/timerfd.h>): sets a timerfd's unread expirations.
constexpr unsigned long kTfdIocSetTicks = _IOW('T', 0, uint64_t);

// "(12, 345)" -> nanoseconds.
Result<int64_t> parse_timespec(std::string_view text) {
    if (text.size() < 2 || text.front() != '(' || text.back() != ')')
        return error("malformed time '{}'", text);
    auto parts = split(text.substr(1, text.size() - 2), ',');
    if (parts.size() != 2) return error("malformed time '{}'", text);
    auto sec = parse_int(trim(parts[0])), nsec = parse_int(trim(parts[1]));
    if (!sec || !nsec) return error("malformed time '{}'", text);
    return *sec * kNsPerSec + *nsec;
}

timespec to_timespec(int64_t ns) {
    return {static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
}

int64_t clock_now_ns(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

bool is_realtime(int clock) { return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_ALARM; }

bool claims_timerfd(const FdProbe& probe) { return probe.link == "anon_inode:[timerfd]"; }

Result<void> dump_timerfd(const FdProbe& probe, image::Fd* fd_image) {
    fd_image->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    image::TimerFdState* out = fd_image->mutable_timerfd();
    UniqueFd mine = CKPT_TRY(probe.take());
    itimerspec settled{};
    if (timerfd_gettime(mine.get(), &settled) != 0) return sys_error("timerfd_gettime");
    std::string text = CKPT_TRY(probe.fdinfo_text());
    out->set_realtime_at_dump_ns(clock_now_ns(CLOCK_REALTIME));
    auto clock = fdinfo_value(text, "clockid:"), ticks = fdinfo_value(text, "ticks:");
    auto flags = fdinfo_value(text, "settime flags:"), value = fdinfo_value(text, "it_value:");
    auto interval = fdinfo_value(text, "it_interval:");
    if (!clock || !ticks || !flags || !value || !interval)
        return error("timerfd: fdinfo lacks a timerfd line");
    auto c = parse_int(*clock);
    auto t = parse_uint(*ticks), f = parse_uint(*flags, 8);
    if (!c || !t || !f) return error("timerfd: malformed fdinfo");
    int64_t value_ns = CKPT_TRY(parse_timespec(*value)),
            interval_ns = CKPT_TRY(parse_timespec(*interval));
    // A periodic timer that expired again after timerfd_gettime shows no time left (it is
    // stopped until read, its expiry counted in ticks): its next expiry is within a period.
    // A disarmed one shows its interval too, but no ticks (settime clears them).
    if (value_ns == 0 && interval_ns != 0 && *t > 0) value_ns = interval_ns;
    out->set_clock_id(static_cast<int32_t>(*c));
    out->set_ticks(*t);
    out->set_settime_flags(static_cast<uint32_t>(*f));
    out->set_value_ns(value_ns);
    out->set_interval_ns(interval_ns);
    return ok();
}

Result<UniqueFd> make_timerfd(const image::TimerFdState& s) {
    // An alarm clock needs CAP_WAKE_ALARM: restoring as a user, the kernel refuses it.
    UniqueFd fd(timerfd_create(s.clock_id(), TFD_CLOEXEC));
    if (!fd) return sys_error("timerfd_create(clock {})", s.clock_id());
    itimerspec its{};
    its.it_interval = to_timespec(s.interval_ns());
    int flags = static_cast<int>(s.settime_flags());
    if (s.value_ns() > 0) {
        int64_t at = s.value_ns();
        if (flags & TFD_TIMER_ABSTIME)
            at += is_realtime(s.clock_id()) ? s.realtime_at_dump_ns() : clock_now_ns(s.clock_id());
        its.it_value = to_timespec(at);
    }
    if (timerfd_settime(fd.get(), flags, &its, nullptr) != 0)
        return sys_error("timerfd_settime(clock {}, flags {:o})", s.clock_id(), flags);
    uint64_t ticks = s.ticks();
    if (ticks && ioctl(fd.get(), kTfdIocSetTicks, &ticks) != 0)
        return sys_error(
            "timerfd: setting {} unread expirations (TFD_IOC_SET_TICKS needs "
            "CONFIG_CHECKPOINT_RESTORE)",
            ticks);
    return fd;
}

Result<void> restore_timerfd(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_timerfd(f.timerfd()); }, true);
}

}  // namespace

extern const FdKind kTimerFdKind{
    .name = "timerfd",
    .image_kind = image::Fd::TIMERFD,
    .claims = claims_timerfd,
    .dump = dump_timerfd,
    .restore = restore_timerfd,
};

}  // namespace ckpt::engine
