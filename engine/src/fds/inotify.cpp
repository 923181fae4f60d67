// inotify instances: every watch with its mask, under its watch descriptor number. The
// kernel names a watched file by a file handle (fdinfo); the dump turns it into a path with
// open_by_handle_at on a mount of its file system (CAP_DAC_READ_SEARCH), and the restore adds
// the watch again on that path (IN_DONT_FOLLOW: the path is the object itself, a symlink
// too). Watch descriptors are handed out in increasing order, so numbers the original had
// given up are used and given up again first, to come to the same numbers.
//
// Events queued at dump are not saved (the only way to read them takes them from the
// process): an inotify fd with events queued is refused, as is a watch on a deleted file.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_inotify(const FdProbe& probe) { return probe.link == "anon_inode:inotify"; }

Result<void> dump_inotify(const FdProbe& probe, image::Fd* f) {
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    {
        UniqueFd mine = CKPT_TRY(probe.take());
        int queued = 0;
        if (ioctl(mine.get(), FIONREAD, &queued) != 0) return sys_error("inotify: FIONREAD");
        if (queued > 0)
            return error_code(EBUSY, "inotify: {} bytes of events are queued, which cannot be saved without taking "
                                     "them from the process; refused (dump again once they are read)",
                              queued);
    }
    std::string text = CKPT_TRY(probe.fdinfo_text());
    auto* st = f->mutable_inotify();
    for (auto line : split(text, '\n')) {
        if (!starts_with(line, "inotify ")) continue;
        auto word = [](std::string_view v) { return v.substr(0, v.find(' ')); };
        auto wd = fdinfo_value(line, "wd:"), sdev = fdinfo_value(line, "sdev:"), mask = fdinfo_value(line, "mask:"),
             ignored = fdinfo_value(line, "ignored_mask:"), type = fdinfo_value(line, "fhandle-type:"),
             handle = fdinfo_value(line, "f_handle:");
        if (!wd || !sdev || !mask || !ignored || !type || !handle)
            return error("inotify: malformed fdinfo line '{}' (no file handle: a kernel without CONFIG_FHANDLE?)", line);
        auto w = parse_int(word(*wd), 16);
        auto d = parse_uint(word(*sdev), 16), m = parse_uint(word(*mask), 16), t = parse_uint(word(*type), 16);
        if (!w || !d || !m || !t || *w <= 0) return error("inotify: malformed fdinfo line '{}'", line);
        if (word(*ignored) != "0") return error_code(ENOTSUP, "inotify: watch {} has an ignored mask: refused", *w);
        auto* watch = st->add_watches();
        watch->set_wd(static_cast<int32_t>(*w));
        watch->set_mask(static_cast<uint32_t>(*m));
        watch->set_path(CKPT_TRY_CTX(path_of_file_handle(*d, static_cast<uint32_t>(*t), word(*handle)), "inotify watch {}", *w));
    }
    return ok();
}

// The watches added again in increasing wd order, numbers in between taken and given up.
Result<UniqueFd> make_inotify(const image::InotifyState& s) {
    // Non-blocking while it is made, to drain it (its recorded flags are set afterwards).
    UniqueFd fd(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!fd) return sys_error("inotify_init1");
    std::vector<const image::InotifyWatch*> watches;
    for (const auto& w : s.watches()) watches.push_back(&w);
    std::sort(watches.begin(), watches.end(), [](auto* a, auto* b) { return a->wd() < b->wd(); });
    int next = 1;
    for (const auto* w : watches) {
        if (w->wd() < next) return error_code(EINVAL, "inotify: watch {} twice (image is corrupt)", w->wd());
        while (next < w->wd()) {
            int burnt = inotify_add_watch(fd.get(), "/", IN_ACCESS);
            if (burnt < 0) return sys_error("inotify: taking watch number {}", next);
            inotify_rm_watch(fd.get(), burnt);
            if (burnt != next)
                return error_code(EINVAL, "inotify: watch number {} came out as {}", next, burnt);
            ++next;
        }
        int wd = inotify_add_watch(fd.get(), w->path().c_str(), w->mask() | IN_DONT_FOLLOW);
        if (wd < 0) return sys_error("inotify: watching {} (mask {:#x})", w->path(), w->mask());
        if (wd != w->wd())
            return error_code(EINVAL, "inotify: watching {} gave watch {}, it was {} (one file watched twice?)",
                              w->path(), wd, w->wd());
        ++next;
    }
    // Giving a number up queues IN_IGNORED for it: none of that may reach the process. (An
    // event of a real watch during these microseconds goes too, as any between the dump and
    // the restore does.)
    alignas(inotify_event) char buf[4096];
    while (read(fd.get(), buf, sizeof buf) > 0) {
    }
    return fd;
}

Result<void> restore_inotify(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_inotify(f.inotify()); }, true);
}

}  // namespace

extern const FdKind kInotifyKind{
    .name = "inotify",
    .image_kind = image::Fd::INOTIFY,
    .claims = claims_inotify,
    .dump = dump_inotify,
    .restore = restore_inotify,
};

}  // namespace ckpt::engine
