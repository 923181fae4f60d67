/* fd_kinds: fd kinds an outside conformance suite found wrong or wrongly refused (issue 11).
 *
 *  - /proc files of the process itself and of its child: fd 20 on /proc/self/status read 10
 *    bytes in (offset 10), fd 21 on /proc/CHILD/stat. After restore each must be a /proc
 *    file of the same process (the restored one): fd 20's link is /proc/<self>/status and its
 *    offset 10; fd 21 reads the child's stat (its comm "fdkinds-child").
 *  - an epoll (fd 26) watching two fds of one eventfd (22, 23: a dup), two fds of one pipe
 *    read end (24, 25: a dup) and two opens of /proc/self/mounts (30, 31): every registration
 *    with its events and data (fdinfo), and the ready set (the eventfd and the pipe).
 *  - O_PATH fds: fd 40 on a regular file, fd 41 on a directory (O_DIRECTORY), fd 42 on a
 *    symlink itself (O_PATH|O_NOFOLLOW): the same flags, the same inode (the link itself for
 *    42, whose target is read through it). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

struct reg {
    int fd;
    unsigned events;
    unsigned long long data;
};
static const struct reg regs[] = {
    {22, EPOLLIN, 0x1111}, {23, EPOLLIN | EPOLLET, 0x2222}, {24, EPOLLIN, 0x3333},
    {25, EPOLLIN | EPOLLONESHOT, 0x4444}, {30, EPOLLPRI, 0x5555}, {31, EPOLLPRI | EPOLLERR, 0x6666},
};
#define NREGS (sizeof regs / sizeof regs[0])
#define EPFD 26

static void move_fd(int from, int to) {
    if (from != to) {
        if (dup2(from, to) < 0) test_fail("dup2 %d -> %d: %s", from, to, strerror(errno));
        close(from);
    }
}

static void fd_link(int fd, char* out, size_t size) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* The pid /proc shows for this process ("/proc/self" -> "N"). */
static void self_in_proc(char* out, size_t size) {
    ssize_t n = readlink("/proc/self", out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

static void check_epoll_fdinfo(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", EPFD);
    if (test_read_text(path, buf, sizeof buf) <= 0) {
        test_fail("reading %s", path);
        return;
    }
    int found = 0;
    for (char* line = strstr(buf, "tfd:"); line; line = strstr(line + 1, "tfd:")) {
        int tfd = -1;
        unsigned events = 0;
        unsigned long long data = 0;
        if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &events, &data) != 3) {
            test_fail("epoll fdinfo line unparsed: %.60s", line);
            continue;
        }
        size_t i;
        for (i = 0; i < NREGS; ++i)
            if (regs[i].fd == tfd) break;
        if (i == NREGS) {
            test_fail("epoll watches fd %d, which was never registered", tfd);
            continue;
        }
        /* fdinfo shows the events with EPOLLERR|EPOLLHUP the kernel adds, and the flags */
        unsigned want = regs[i].events | EPOLLERR | EPOLLHUP;
        CHECK((events & ~(unsigned)(EPOLLERR | EPOLLHUP)) == (want & ~(unsigned)(EPOLLERR | EPOLLHUP)),
              "epoll target fd %d: events %#x, registered %#x", tfd, events, regs[i].events);
        CHECK(data == regs[i].data, "epoll target fd %d: data %#llx, registered %#llx", tfd, data, regs[i].data);
        found++;
    }
    CHECK(found == (int)NREGS, "epoll has %d targets, %zu were registered", found, NREGS);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 6);
    char dir[512], file[600], sub[600], link[600];
    snprintf(dir, sizeof dir, "%s", test_data_dir());
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    int w = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (w < 0 || write(w, "content", 7) != 7) test_fail("creating %s: %s", file, strerror(errno));
    close(w);
    mkdir(sub, 0755);
    unlink(link);
    if (symlink("file", link) != 0) test_fail("symlink: %s", strerror(errno));

    /* The child: named, then waits forever (killed at the end). */
    test_sync_t sync;
    test_sync_init(&sync);
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_NAME, "fdkinds-child");
        test_sync_signal(&sync);
        for (;;) pause();
    }
    test_sync_wait(&sync);

    /* /proc files. */
    move_fd(open("/proc/self/status", O_RDONLY), 20);
    char head[10];
    if (read(20, head, sizeof head) != sizeof head) test_fail("reading /proc/self/status: %s", strerror(errno));
    char child_stat[64];
    snprintf(child_stat, sizeof child_stat, "/proc/%d/stat", (int)child);
    move_fd(open(child_stat, O_RDONLY), 21);

    /* epoll on two fds of one file, three times. */
    move_fd(eventfd(3, 0), 22);
    dup2(22, 23);
    int p[2];
    if (pipe(p) != 0) test_fail("pipe: %s", strerror(errno));
    move_fd(p[0], 24);
    dup2(24, 25);
    move_fd(p[1], 27);
    if (write(27, "x", 1) != 1) test_fail("write pipe: %s", strerror(errno));
    move_fd(open("/proc/self/mounts", O_RDONLY), 30);
    move_fd(open("/proc/self/mounts", O_RDONLY), 31);
    move_fd(epoll_create1(0), EPFD);
    for (size_t i = 0; i < NREGS; ++i) {
        struct epoll_event ev = {.events = regs[i].events, .data.u64 = regs[i].data};
        if (epoll_ctl(EPFD, EPOLL_CTL_ADD, regs[i].fd, &ev) != 0)
            test_fail("epoll_ctl ADD fd %d: %s", regs[i].fd, strerror(errno));
    }

    /* O_PATH fds. */
    move_fd(open(file, O_PATH), 40);
    move_fd(open(sub, O_PATH | O_DIRECTORY), 41);
    move_fd(open(link, O_PATH | O_NOFOLLOW), 42);
    int flags_before[3];
    struct stat st_before[3];
    for (int i = 0; i < 3; ++i) {
        flags_before[i] = fcntl(40 + i, F_GETFL);
        if (fstat(40 + i, &st_before[i]) != 0) test_fail("fstat fd %d: %s", 40 + i, strerror(errno));
    }
    CHECK(S_ISLNK(st_before[2].st_mode), "fd 42 is not on the symlink itself");

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) lseek(20, 0, SEEK_SET);
    if (test_corrupt(2)) move_fd(open("/proc/self/stat", O_RDONLY), 21);
    if (test_corrupt(3)) epoll_ctl(EPFD, EPOLL_CTL_DEL, 23, NULL);
    if (test_corrupt(4)) move_fd(open(link, O_PATH), 42);
    if (test_corrupt(5)) move_fd(open(sub, O_PATH), 41);
    if (test_corrupt(6)) epoll_ctl(EPFD, EPOLL_CTL_DEL, 30, NULL);

    /* /proc files. */
    char me[32], want[96], got[512];
    self_in_proc(me, sizeof me);
    snprintf(want, sizeof want, "/proc/%s/status", me);
    fd_link(20, got, sizeof got);
    CHECK(strcmp(got, want) == 0, "fd 20 is '%s', not '%s'", got, want);
    CHECK(lseek(20, 0, SEEK_CUR) == 10, "fd 20 is at offset %ld, not 10", (long)lseek(20, 0, SEEK_CUR));
    struct stat a, b;
    CHECK(fstat(20, &a) == 0 && stat("/proc/self/status", &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
          "fd 20 is not /proc/self/status");
    char text[1024];
    ssize_t n = pread(21, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    CHECK(strstr(text, "(fdkinds-child)") != NULL, "fd 21 does not read the child's stat: '%.80s'", text);
    if (test_proc_is_ours()) {
        snprintf(want, sizeof want, "/proc/%d/stat", (int)child);
        fd_link(21, got, sizeof got);
        CHECK(strcmp(got, want) == 0, "fd 21 is '%s', not '%s'", got, want);
    }

    /* epoll. */
    check_epoll_fdinfo();
    struct epoll_event evs[16];
    int ready = epoll_wait(EPFD, evs, 16, 0);
    unsigned long long seen = 0;
    for (int i = 0; i < ready; ++i) {
        for (size_t j = 0; j < NREGS; ++j)
            if (evs[i].data.u64 == regs[j].data) seen |= 1ull << j;
    }
    /* the eventfd twice and the pipe twice are readable; the mounts are quiet */
    CHECK(ready == 4 && seen == 0xf, "epoll reports %d ready (mask %#llx), want the 4 of the eventfd and the pipe",
          ready, seen);

    /* O_PATH. */
    const char* names[3] = {file, sub, link};
    for (int i = 0; i < 3; ++i) {
        int fd = 40 + i;
        int fl = fcntl(fd, F_GETFL);
        CHECK(fl == flags_before[i], "fd %d: flags %#o, were %#o", fd, fl, flags_before[i]);
        struct stat s;
        CHECK(fstat(fd, &s) == 0 && s.st_ino == st_before[i].st_ino && s.st_dev == st_before[i].st_dev &&
                  (s.st_mode & S_IFMT) == (st_before[i].st_mode & S_IFMT),
              "fd %d is not on %s as it was", fd, names[i]);
        fd_link(fd, got, sizeof got);
        CHECK(strcmp(got, names[i]) == 0, "fd %d is '%s', not '%s'", fd, got, names[i]);
    }
    char target[64];
    n = readlinkat(42, "", target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    CHECK(strcmp(target, "file") == 0, "fd 42 reads link '%s', not 'file'", target);

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return test_finish();
}
