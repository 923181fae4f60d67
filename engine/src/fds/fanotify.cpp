// fanotify groups: the group's init flags and event file flags, and every mark with its mask,
// ignored mask and mark flags. An inode mark names its object by a file handle (fdinfo),
// turned into a path at dump as inotify's watches are; a mount mark by the mount's id, turned
// into its mount point from the process's mount table; a filesystem mark by the file
// system's device, turned into a mount of its root. The restore makes a group with the same
// flags and marks those paths again (the mount and the file system found again by path).
//
// Refused by name: events queued at dump (reading them would take them from the process),
// permission classes (FAN_CLASS_CONTENT, FAN_CLASS_PRE_CONTENT: an event read but not yet
// answered holds a process of the system in the kernel, and that cannot be made again),
// marks on deleted files.
#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "fd_kind.h"
#include "restore_task.h"

namespace ckpt::engine {
namespace {

bool claims_fanotify(const FdProbe& probe) { return probe.link == "anon_inode:[fanotify]"; }

// Group flags a restore may ask for: the notification class and what events report. The
// permission classes are refused (see above). FAN_CLOEXEC is kept as the group had it (fdinfo
// shows it; the fd's own close-on-exec is the fd table's).
constexpr uint32_t kClassMask = FAN_CLASS_NOTIF | FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT;
constexpr uint32_t kGroupFlags = FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS | FAN_ENABLE_AUDIT |
                                 FAN_REPORT_TID | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME |
                                 FAN_REPORT_TARGET_FID | FAN_REPORT_PIDFD;
// Mark flags fdinfo shows (fanotify's user-visible ones) that a mark is added with again.
constexpr uint32_t kMarkFlags = FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE | FAN_MARK_IGNORE;

// The mount point of the mount with id mnt_id in pid's mount table.
Result<std::string> mount_point(pid_t pid, uint64_t mnt_id) {
    std::string table = CKPT_TRY(read_file(proc_path(pid, "mountinfo")));
    for (auto line : split(table, '\n')) {
        // "36 35 98:0 /mnt1 /mnt/parent rw,noatime ..."
        auto f = split(line, ' ');
        if (f.size() < 5) continue;
        if (auto id = parse_uint(f[0]); id && *id == mnt_id) return unescape_mount_path(f[4]);
    }
    return error_code(ENOENT, "no mount {} in the mount table of pid {}", mnt_id, pid);
}

// The path of a mount of the file system sdev whose root is its root.
Result<std::string> filesystem_path(uint64_t sdev) {
    UniqueFd mnt = CKPT_TRY(mount_of(sdev));
    return read_link("/proc/self/fd/" + std::to_string(mnt.get()));
}

Result<uint64_t> hex_field(std::string_view line, std::string_view key) {
    auto v = fdinfo_value(line, key);
    if (!v) return error("fanotify: no '{}' in fdinfo line '{}'", key, line);
    return parse_uint(v->substr(0, v->find(' ')), 16).context("fanotify: '{}' in fdinfo line '{}'", key, line);
}

Result<void> dump_fanotify(const FdProbe& probe, image::Fd* f) {
    f->set_description_id(CKPT_TRY(probe.description_id(CKPT_TRY(probe.stat_target()))));
    {
        UniqueFd mine = CKPT_TRY(probe.take());
        int queued = 0;
        if (ioctl(mine.get(), FIONREAD, &queued) != 0) return sys_error("fanotify: FIONREAD");
        if (queued > 0)
            return error_code(EBUSY, "fanotify: {} bytes of events are queued, which cannot be saved without taking "
                                     "them from the process; refused (dump again once they are read)",
                              queued);
    }
    std::string text = CKPT_TRY(probe.fdinfo_text());
    auto* st = f->mutable_fanotify();
    bool group_seen = false;
    for (auto line : split(text, '\n')) {
        if (starts_with(line, "fanotify flags:")) {
            uint64_t flags = CKPT_TRY(hex_field(line, "flags:")), event_flags = CKPT_TRY(hex_field(line, "event-flags:"));
            if ((flags & kClassMask) != FAN_CLASS_NOTIF)
                return error_code(ENOTSUP, "fanotify: a permission group (FAN_CLASS_{}): events waiting for an answer "
                                           "cannot be saved; refused",
                                  (flags & kClassMask) == FAN_CLASS_CONTENT ? "CONTENT" : "PRE_CONTENT");
            if (flags & ~static_cast<uint64_t>(kGroupFlags | kClassMask))
                return error_code(ENOTSUP, "fanotify: group flags {:#x} not supported: refused",
                                  flags & ~static_cast<uint64_t>(kGroupFlags | kClassMask));
            st->set_init_flags(static_cast<uint32_t>(flags));
            st->set_event_flags(static_cast<uint32_t>(event_flags));
            group_seen = true;
            continue;
        }
        if (!starts_with(line, "fanotify ")) continue;
        uint64_t mask = CKPT_TRY(hex_field(line, "mask:")), ignored = CKPT_TRY(hex_field(line, "ignored_mask:"));
        // An ignore mark whose ignored mask a modification cleared: it reports and ignores
        // nothing (and fanotify_mark cannot make a mark of nothing).
        if (mask == 0 && ignored == 0) continue;
        auto* m = st->add_marks();
        m->set_mask(mask);
        m->set_ignored_mask(ignored);
        uint64_t mflags = CKPT_TRY(hex_field(line, "mflags:"));
        if (mflags & ~static_cast<uint64_t>(kMarkFlags))
            return error_code(ENOTSUP, "fanotify: mark flags {:#x} not supported: refused (fdinfo '{}')",
                              mflags & ~static_cast<uint64_t>(kMarkFlags), line);
        m->set_mark_flags(static_cast<uint32_t>(mflags));
        if (fdinfo_value(line, "ino:")) {
            uint64_t sdev = CKPT_TRY(hex_field(line, "sdev:")), type = CKPT_TRY(hex_field(line, "fhandle-type:"));
            auto handle = fdinfo_value(line, "f_handle:");
            if (!handle) return error("fanotify: no file handle in fdinfo line '{}' (a kernel without CONFIG_FHANDLE?)", line);
            m->set_type(image::FanotifyMark::INODE);
            m->set_path(CKPT_TRY_CTX(path_of_file_handle(sdev, static_cast<uint32_t>(type), handle->substr(0, handle->find(' '))),
                                     "fanotify inode mark"));
        } else if (fdinfo_value(line, "mnt_id:")) {
            m->set_type(image::FanotifyMark::MOUNT);
            m->set_path(CKPT_TRY_CTX(mount_point(probe.pid, CKPT_TRY(hex_field(line, "mnt_id:"))), "fanotify mount mark"));
        } else if (fdinfo_value(line, "sdev:")) {
            m->set_type(image::FanotifyMark::FILESYSTEM);
            m->set_path(CKPT_TRY_CTX(filesystem_path(CKPT_TRY(hex_field(line, "sdev:"))), "fanotify filesystem mark"));
        } else {
            return error_code(ENOTSUP, "fanotify: a mark of an unknown kind (fdinfo '{}'): refused", line);
        }
    }
    if (!group_seen) return error("fanotify: no 'fanotify flags:' line in fdinfo");
    return ok();
}

Result<UniqueFd> make_fanotify(const image::FanotifyState& s) {
    if ((s.init_flags() & kClassMask) != FAN_CLASS_NOTIF || (s.init_flags() & ~(kGroupFlags | kClassMask)))
        return error_code(EINVAL, "fanotify: group flags {:#x} (image is corrupt or from a newer engine)", s.init_flags());
    UniqueFd fd(fanotify_init(s.init_flags(), s.event_flags()));
    if (!fd) return sys_error("fanotify_init({:#x}, {:#x})", s.init_flags(), s.event_flags());
    if (fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) return sys_error("fanotify: F_SETFD");
    // fdinfo lists a group's marks newest first: added again oldest first, they come back in
    // the same order.
    for (auto it = s.marks().rbegin(); it != s.marks().rend(); ++it) {
        const image::FanotifyMark& m = *it;
        unsigned type = 0;
        switch (m.type()) {
            case image::FanotifyMark::INODE: type = FAN_MARK_INODE | FAN_MARK_DONT_FOLLOW; break;
            case image::FanotifyMark::MOUNT: type = FAN_MARK_MOUNT; break;
            case image::FanotifyMark::FILESYSTEM: type = FAN_MARK_FILESYSTEM; break;
            default: return error_code(EINVAL, "fanotify: a mark of unknown type {} (image is corrupt)", static_cast<int>(m.type()));
        }
        if (m.mark_flags() & ~kMarkFlags)
            return error_code(EINVAL, "fanotify: mark flags {:#x} (image is corrupt)", m.mark_flags());
        if (m.mask() == 0 && m.ignored_mask() == 0)
            return error_code(EINVAL, "fanotify: a mark of no event on {} (image is corrupt)", m.path());
        if (m.path().empty() || m.path()[0] != '/')
            return error_code(EINVAL, "fanotify: mark path '{}' is not absolute (image is corrupt)", m.path());
        auto mark = [&](unsigned flags, uint64_t mask) -> Result<void> {
            if (fanotify_mark(fd.get(), FAN_MARK_ADD | type | flags, mask, AT_FDCWD, m.path().c_str()) != 0)
                return sys_error("fanotify_mark({}, flags {:#x}, mask {:#x})", m.path(), type | flags, mask);
            return ok();
        };
        const unsigned evictable = m.mark_flags() & FAN_MARK_EVICTABLE;
        if (m.mask()) CKPT_TRY(mark(evictable, m.mask()));
        if (m.ignored_mask()) {
            // FAN_MARK_IGNORE (the newer form) or the older ignored mask, as the mark had.
            unsigned how = (m.mark_flags() & FAN_MARK_IGNORE)
                               ? FAN_MARK_IGNORE
                               : FAN_MARK_IGNORED_MASK | (m.mark_flags() & FAN_MARK_IGNORED_SURV_MODIFY);
            CKPT_TRY(mark(evictable | how, m.ignored_mask()));
        }
    }
    return fd;
}

Result<void> restore_fanotify(RestoreTask& t, const image::Fd& f) {
    return install_description(t, f, [&] { return make_fanotify(f.fanotify()); }, true);
}

}  // namespace

extern const FdKind kFanotifyKind{
    .name = "fanotify",
    .image_kind = image::Fd::FANOTIFY,
    .claims = claims_fanotify,
    .dump = dump_fanotify,
    .restore = restore_fanotify,
};

}  // namespace ckpt::engine
