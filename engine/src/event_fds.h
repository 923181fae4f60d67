// eventfd, timerfd, signalfd, epoll fds and pidfds: one file each (eventfd.cpp, timerfd.cpp,
// signalfd.cpp, epoll.cpp, pidfd.cpp) with its dump and restore side. Each state is read from
// /proc/PID/fdinfo at dump and made again in the engine at restore, then handed over like
// any other description (fds.cpp keeps one description shared by all the fds holding it).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string_view>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"
#include "dump_context.h"
#include "files.pb.h"

namespace ckpt::engine {

struct RestoreShared;
struct RestoreTask;

// The text after "key" on its fdinfo line, trimmed (nullopt when the kernel has no such line).
std::optional<std::string_view> fdinfo_value(std::string_view fdinfo, std::string_view key);

Result<void> dump_eventfd(std::string_view fdinfo, image::EventFdState* out);
Result<UniqueFd> make_eventfd(const image::EventFdState& s);

// engine_fd: the timerfd's description taken into the engine (pidfd_getfd).
Result<void> dump_timerfd(pid_t pid, int fd, int engine_fd, image::TimerFdState* out);
Result<UniqueFd> make_timerfd(const image::TimerFdState& s);

Result<void> dump_signalfd(std::string_view fdinfo, image::SignalFdState* out);
Result<UniqueFd> make_signalfd(const image::SignalFdState& s);

// Records every target of pid's epoll fd; each must still be open in pid under the fd
// number it was registered with.
Result<void> dump_epoll(pid_t pid, int fd, std::string_view fdinfo, const DumpExclusions& ex,
                        image::EpollState* out);
Result<UniqueFd> make_epoll();

// pidfd.cpp. flags: the description's status flags (PIDFD_THREAD is refused).
Result<void> dump_pidfd(std::string_view fdinfo, uint32_t flags, image::PidFdState* out);
Result<UniqueFd> make_pidfd(const image::PidFdState& s, const RestoreShared& sh);
// Adds the recorded targets from inside the process, once all its fds are in place.
Result<void> restore_epoll_targets(RestoreTask& t, int epoll_fd, const image::EpollState& s);

}  // namespace ckpt::engine
