/* fd_fanotify: fanotify groups with marks of every kind, nothing queued at dump. Run as root
 * (a notification group without FID reporting, and FAN_UNLIMITED_QUEUE, need CAP_SYS_ADMIN).
 *
 *   fd 10: FAN_CLASS_NOTIF | FAN_NONBLOCK, event fds O_RDONLY: an inode mark on "file.txt"
 *          (FAN_MODIFY | FAN_CLOSE_WRITE), a mark on its folder (FAN_OPEN |
 *          FAN_EVENT_ON_CHILD), an ignore mark on "ignored.txt" (FAN_OPEN, surviving
 *          modification)
 *   fd 11: FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_UNLIMITED_QUEUE, blocking: an ignore-only
 *          mark (surviving modification) on the mount of the data folder and one on its
 *          file system (they report
 *          nothing, so nothing else on the machine queues events for the dump to refuse)
 *
 * State checked after restore: the fanotify lines of each fd's fdinfo are the same as before
 * the dump (group flags, event flags, every mark's object, mount id or device, masks and mark
 * flags); nothing is queued; writing file.txt reports FAN_OPEN, FAN_MODIFY and
 * FAN_CLOSE_WRITE with an fd on file.txt, opening other.txt reports FAN_OPEN, opening
 * ignored.txt reports nothing. Not in the new-pidns modes: a copy's writes would also be
 * events of the original's groups. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

static char file[4096], ignored[4096], other[4096];

/* The "fanotify" lines of fd's fdinfo. */
static void fanotify_lines(int fd, char* out, size_t size) {
    char path[64], text[8192];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if (test_read_text(path, text, sizeof text) < 0) test_fail("read %s: %s", path, strerror(errno));
    out[0] = 0;
    for (char* line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "fanotify", 8) == 0) {
            strncat(out, line, size - strlen(out) - 2);
            strcat(out, "\n");
        }
}

static void touch(const char* path, int flags, const char* data) {
    int fd = open(path, flags | O_CREAT, 0644);
    if (fd < 0) test_fail("open %s: %s", path, strerror(errno));
    if (data && write(fd, data, strlen(data)) != (ssize_t)strlen(data)) test_fail("write %s", path);
    close(fd);
}

/* The events queued on fd (non-blocking): the mask reported for each path, ORed. */
struct seen {
    unsigned long long file, other, ignored, unknown;
};
static struct seen read_events(int fd) {
    struct seen s = {0, 0, 0, 0};
    char buf[8192] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) test_fail("read fanotify: %s", n < 0 ? strerror(errno) : "end of file");
        struct fanotify_event_metadata* m = (void*)buf;
        for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
            char link[64], target[4096] = "";
            snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
            ssize_t len = m->fd >= 0 ? readlink(link, target, sizeof target - 1) : -1;
            if (len > 0) target[len] = 0;
            if (m->fd >= 0) close(m->fd);
            if (strcmp(target, file) == 0) s.file |= m->mask;
            else if (strcmp(target, other) == 0) s.other |= m->mask;
            else if (strcmp(target, ignored) == 0) s.ignored |= m->mask;
            else s.unknown |= m->mask;
        }
    }
    return s;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    /* Where the runner opens nothing (its opens would be events). */
    static char quiet[4096];
    test_data_path(quiet, sizeof quiet, "no-snapshot");
    if (mkdir(quiet, 0700) != 0 && errno != EEXIST) test_fail("mkdir %s: %s", quiet, strerror(errno));
    test_data_path(file, sizeof file, "no-snapshot/file.txt");
    test_data_path(ignored, sizeof ignored, "no-snapshot/ignored.txt");
    test_data_path(other, sizeof other, "no-snapshot/other.txt");
    touch(file, O_WRONLY, "before");
    touch(ignored, O_WRONLY, NULL);
    touch(other, O_WRONLY, NULL);

    int a = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
    int b = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_UNLIMITED_QUEUE, O_RDONLY);
    if (a < 0 || b < 0) test_fail("fanotify_init: %s", strerror(errno));
    if (dup2(a, 10) != 10 || dup2(b, 11) != 11) test_fail("dup2: %s", strerror(errno));
    close(a);
    close(b);
    if (fanotify_mark(10, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) != 0 ||
        fanotify_mark(10, FAN_MARK_ADD | FAN_MARK_ONLYDIR, FAN_OPEN | FAN_EVENT_ON_CHILD, AT_FDCWD, quiet) != 0 ||
        fanotify_mark(10, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN, AT_FDCWD,
                      ignored) != 0 ||
        /* Surviving modification: any write on the mount would clear them otherwise. */
        fanotify_mark(11, FAN_MARK_ADD | FAN_MARK_MOUNT | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN,
                      AT_FDCWD, test_data_dir()) != 0 ||
        fanotify_mark(11, FAN_MARK_ADD | FAN_MARK_FILESYSTEM | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY,
                      FAN_CLOSE_NOWRITE, AT_FDCWD, test_data_dir()) != 0)
        test_fail("fanotify_mark: %s", strerror(errno));
    static char before10[8192], before11[8192], after10[8192], after11[8192];
    fanotify_lines(10, before10, sizeof before10);
    fanotify_lines(11, before11, sizeof before11);
    if (!strstr(before11, "mnt_id:") || !strstr(before10, "ignored_mask:20"))
        test_fail("fdinfo does not show the marks as expected:\n%s%s", before10, before11);

    test_ready();
    test_wait_check();
    if (test_corrupt(1)) fanotify_mark(10, FAN_MARK_REMOVE, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file);
    if (test_corrupt(2))
        fanotify_mark(10, FAN_MARK_REMOVE | FAN_MARK_IGNORED_MASK, FAN_OPEN, AT_FDCWD, ignored);
    if (test_corrupt(3))
        fanotify_mark(11, FAN_MARK_REMOVE | FAN_MARK_MOUNT | FAN_MARK_IGNORED_MASK, FAN_OPEN, AT_FDCWD, test_data_dir());
    if (test_corrupt(4)) touch(other, O_RDONLY, NULL);

    fanotify_lines(10, after10, sizeof after10);
    fanotify_lines(11, after11, sizeof after11);
    CHECK(strcmp(before10, after10) == 0, "fd 10's marks changed:\nbefore:\n%safter:\n%s", before10, after10);
    CHECK(strcmp(before11, after11) == 0, "fd 11's marks changed:\nbefore:\n%safter:\n%s", before11, after11);
    int queued = -1;
    CHECK(ioctl(10, FIONREAD, &queued) == 0 && queued == 0, "fd 10 has %d bytes of events queued before any", queued);
    CHECK(ioctl(11, FIONREAD, &queued) == 0 && queued == 0, "fd 11 has %d bytes of events queued", queued);
    CHECK(fcntl(10, F_GETFL) & O_NONBLOCK, "fd 10 lost O_NONBLOCK");
    CHECK(!(fcntl(11, F_GETFL) & O_NONBLOCK), "fd 11 became O_NONBLOCK");

    touch(file, O_WRONLY | O_APPEND, "after");
    touch(ignored, O_RDONLY, NULL);
    touch(other, O_RDONLY, NULL);
    struct seen s = read_events(10);
    unsigned long long want = FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE;
    CHECK((s.file & want) == want, "file.txt reported mask %#llx, not all of %#llx", s.file, want);
    CHECK(s.other == FAN_OPEN, "other.txt reported mask %#llx, not FAN_OPEN alone", s.other);
    CHECK(s.ignored == 0, "ignored.txt reported mask %#llx: its ignore mark is gone", s.ignored);
    CHECK(s.unknown == 0, "events on files nobody touched (mask %#llx)", s.unknown);
    return test_finish();
}
