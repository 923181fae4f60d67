/* fd_inotify: inotify instances with watches, nothing queued at dump.
 *
 *   fd 10: watches the data folder (IN_CREATE|IN_DELETE), a file in it (IN_MODIFY|IN_ONESHOT),
 *          a symlink itself (IN_ATTRIB, added with IN_DONT_FOLLOW), with watch numbers given
 *          up in between (2 and 3 were removed: the watches are 1, 4 and 5)
 *   fd 11: O_NONBLOCK, shared with the child, watches the file (IN_CLOSE_WRITE)
 *
 * State checked after restore: each fd's inotify lines in /proc/self/fdinfo are the same
 * (watch numbers, inodes, masks, file handles); nothing is queued (no event of the restore's
 * own); creating and deleting a file in the folder, writing the file and touching the link
 * report the right watch numbers and names; the one-shot watch fires once; the child's close
 * after writing reaches fd 11 (one description); O_NONBLOCK of fd 11 is kept. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static char dir[4096], file[4200], link_path[4200];

static void place(int fd, int at) {
    if (fd < 0) test_fail("inotify_init1: %s", strerror(errno));
    dup2(fd, at);
    close(fd);
}

static int watch(int fd, const char* path, uint32_t mask) {
    int wd = inotify_add_watch(fd, path, mask);
    if (wd < 0) test_fail("inotify_add_watch %s: %s", path, strerror(errno));
    return wd;
}

/* The "inotify wd:..." lines of fd's fdinfo, concatenated. */
static void watch_lines(int fd, char* out, size_t size) {
    char path[64], text[8192];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    out[0] = '\0';
    if (test_read_text(path, text, sizeof text) < 0) return;
    for (char* line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "inotify ", 8) == 0 && strlen(out) + strlen(line) + 2 < size) {
            strcat(out, line);
            strcat(out, "\n");
        }
}

static int queued(int fd) {
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

/* Waits up to 2 s for the next event on fd (10 or 11; a read may bring several, kept for the
 * next call); 1 when it came with this wd, mask bit and name. */
static int next_event(int fd, int wd, uint32_t bit, const char* name) {
    static char buf[2][4096] __attribute__((aligned(8)));
    static ssize_t len[2], at[2];
    int i = fd == 10 ? 0 : 1;
    if (at[i] >= len[i]) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 2000) != 1) return 0;
        len[i] = read(fd, buf[i], sizeof buf[i]);
        at[i] = 0;
        if (len[i] < (ssize_t)sizeof(struct inotify_event)) return 0;
    }
    struct inotify_event* e = (struct inotify_event*)(buf[i] + at[i]);
    at[i] += (ssize_t)sizeof *e + e->len;
    if (e->wd != wd || !(e->mask & bit)) return 0;
    return name ? e->len > 0 && strcmp(e->name, name) == 0 : e->len == 0;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    test_data_path(dir, sizeof dir, "watched");
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(link_path, sizeof link_path, "%s/link", dir);
    close(open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    unlink(link_path);
    if (symlink("file", link_path) != 0) test_fail("symlink: %s", strerror(errno));

    place(inotify_init1(0), 10);
    place(inotify_init1(IN_NONBLOCK), 11);
    int wd_dir = watch(10, dir, IN_CREATE | IN_DELETE);
    inotify_rm_watch(10, watch(10, "/", IN_ACCESS));
    inotify_rm_watch(10, watch(10, "/tmp", IN_ACCESS));
    int wd_file = watch(10, file, IN_MODIFY | IN_ONESHOT);
    int wd_link = watch(10, link_path, IN_ATTRIB | IN_DONT_FOLLOW);
    int wd_close = watch(11, file, IN_CLOSE_WRITE);
    /* The IN_IGNORED events of the removed watches: read, so nothing is queued at dump. */
    char drain[4096] __attribute__((aligned(8)));
    while (queued(10) > 0) read(10, drain, sizeof drain);
    char before10[2048], before11[2048];
    watch_lines(10, before10, sizeof before10);
    watch_lines(11, before11, sizeof before11);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        close(10);
        test_sync_signal(&started);
        test_wait_check();
        int fd = open(file, O_WRONLY);
        CHECK(fd >= 0 && write(fd, "c", 1) == 1, "child: cannot write %s", file);
        close(fd);
        test_child_exit();
    }
    test_sync_wait(&started);

    test_ready();
    test_wait_check();
    if (test_corrupt(1)) inotify_rm_watch(10, wd_link);
    if (test_corrupt(2)) inotify_add_watch(10, dir, IN_CREATE | IN_DELETE | IN_MOVED_TO);
    if (test_corrupt(3)) fcntl(11, F_SETFL, 0);
    if (test_corrupt(4)) close(open(file, O_RDONLY)), inotify_add_watch(10, file, IN_CLOSE_NOWRITE);
    if (test_corrupt(5)) inotify_rm_watch(11, wd_close);

    char after[2048];
    watch_lines(10, after, sizeof after);
    CHECK(strcmp(after, before10) == 0, "fd 10's watches changed:\n%s-- now --\n%s", before10, after);
    watch_lines(11, after, sizeof after);
    CHECK(strcmp(after, before11) == 0, "fd 11's watches changed:\n%s-- now --\n%s", before11, after);
    CHECK(queued(10) == 0 && queued(11) == 0, "events queued after restore: %d and %d bytes", queued(10), queued(11));
    CHECK(fcntl(11, F_GETFL) & O_NONBLOCK, "fd 11 lost O_NONBLOCK");

    char made[4200];
    snprintf(made, sizeof made, "%s/new", dir);
    close(open(made, O_WRONLY | O_CREAT, 0600));
    CHECK(next_event(10, wd_dir, IN_CREATE, "new"), "no IN_CREATE of 'new' on watch %d", wd_dir);
    unlink(made);
    CHECK(next_event(10, wd_dir, IN_DELETE, "new"), "no IN_DELETE of 'new' on watch %d", wd_dir);
    int fd = open(file, O_WRONLY);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1 && write(fd, "y", 1) == 1, "cannot write %s", file);
    CHECK(next_event(10, wd_file, IN_MODIFY, NULL), "no IN_MODIFY on the one-shot watch %d", wd_file);
    CHECK(next_event(10, wd_file, IN_IGNORED, NULL), "the one-shot watch %d did not end with IN_IGNORED", wd_file);
    close(fd);
    CHECK(next_event(11, wd_close, IN_CLOSE_WRITE, NULL), "no IN_CLOSE_WRITE on fd 11's watch %d", wd_close);
    struct timeval times[2] = {{1, 0}, {2, 0}};
    CHECK(lutimes(link_path, times) == 0 && next_event(10, wd_link, IN_ATTRIB, NULL),
          "no IN_ATTRIB on the symlink's own watch %d", wd_link);

    kill(child, SIGTERM);
    test_expect_child_ok(child, "child");
    CHECK(next_event(11, wd_close, IN_CLOSE_WRITE, NULL), "the child's close did not reach fd 11 (watch %d)", wd_close);
    return test_finish();
}
