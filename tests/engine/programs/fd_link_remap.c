/* fd_link_remap: a file whose name was removed while a second link to it remains, dumped with
 * --link-remap (kept through a hidden link, not saved as a copy).
 *
 *   DATA/lr/name      a second link to DATA/other/second (8 KiB of known data), opened, mapped
 *                     and watched by that name, then unlinked
 *   fd 20             O_RDWR on it, at offset 1234
 *   a MAP_SHARED mapping of its 8 KiB (read-write)
 *   fd 21             inotify watching it (IN_MODIFY | IN_ATTRIB), added by the old name
 *
 * State checked after restore: fd 20 and the mapping are the very file (same inode as the
 * second name, named "DATA/lr/name (deleted)", one link: no hidden link left after a restore;
 * in the original after dump --leave-running, which keeps it until the restore, one hidden link
 * of that file and no other); fd 20's offset and flags; the mapping's content as at dump; a
 * byte written through the mapping is read through the second name, one written through the
 * second name is seen in the mapping; nothing queued on fd 21 after a restore (in the original
 * only the IN_ATTRIB of the dump's link), and a write through the second name is an IN_MODIFY
 * of its watch. A restored process is told from the original by its start time.
 *
 * Built with NO_WATCH (fd_link_remap_again): no inotify watch, so that the original can be
 * dumped twice (the first dump's link is an IN_ATTRIB event, which a watch would hold queued
 * and the second dump refuse); the second must reuse the first's hidden link (one link, not
 * two, at the original's check). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define SIZE 8192
#define SEED 7
#define PREFIX ".ckpt-link-remap."

static char dir[4096], name[4200], other_dir[4096], second[4200];

#ifndef NO_WATCH
static int queued(int fd) {
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}
#endif

/* Field 22 of /proc/self/stat: when the process was made (a restore makes it again). */
static unsigned long long start_time(void) {
    char text[1024];
    if (test_read_text("/proc/self/stat", text, sizeof text) < 0) return 0;
    char* p = strrchr(text, ')');
    for (int field = 2; p && field < 22; ++field) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* The hidden links in the folder of the old name: each must be a link of the file (dev, ino);
 * returns how many. */
static int hidden_links(dev_t dev, ino_t ino) {
    int n = 0;
    DIR* d = opendir(dir);
    if (!d) {
        test_fail("opendir %s: %s", dir, strerror(errno));
        return -1;
    }
    for (struct dirent* e; (e = readdir(d));) {
        if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0) continue;
        struct stat st;
        CHECK(fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_dev == dev &&
                  st.st_ino == ino,
              "%s/%s is not a link of the file", dir, e->d_name);
        ++n;
    }
    closedir(d);
    return n;
}

static void remove_hidden_links(void) {
    DIR* d = opendir(dir);
    if (!d) return;
    for (struct dirent* e; (e = readdir(d));)
        if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) == 0) unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

#ifndef NO_WATCH
/* Waits up to 2 s for events on fd 21; 1 when one of them is bit on watch wd. */
static int event_came(int wd, uint32_t bit) {
    char buf[4096] __attribute__((aligned(8)));
    for (int tries = 0; tries < 8; ++tries) {
        struct pollfd pfd = {.fd = 21, .events = POLLIN};
        if (poll(&pfd, 1, 2000) != 1) return 0;
        ssize_t len = read(21, buf, sizeof buf);
        for (ssize_t at = 0; at + (ssize_t)sizeof(struct inotify_event) <= len;) {
            struct inotify_event* e = (struct inotify_event*)(buf + at);
            if (e->wd == wd && (e->mask & bit)) return 1;
            at += (ssize_t)sizeof *e + e->len;
        }
    }
    return 0;
}
#endif

int main(int argc, char** argv) {
    test_init(argc, argv, 5);
    test_data_path(dir, sizeof dir, "lr");
    test_data_path(other_dir, sizeof other_dir, "other");
    mkdir(dir, 0755);
    mkdir(other_dir, 0755);
    snprintf(name, sizeof name, "%s/name", dir);
    snprintf(second, sizeof second, "%s/second", other_dir);
    unlink(name);
    unlink(second);
    remove_hidden_links();

    static unsigned char data[SIZE];
    test_fill(data, SIZE, SEED);
    /* Made under the second name first: the old name's is then the newest name of the inode,
     * the one the kernel finds again from the watch's file handle (a deleted one: the case
     * --link-remap keeps for inotify), while the second name stays. */
    int fd = open(second, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, SIZE) != SIZE) test_fail("making %s: %s", second, strerror(errno));
    close(fd);
    if (link(second, name) != 0) test_fail("link %s: %s", name, strerror(errno));
    fd = open(name, O_RDWR);
    if (fd < 0) test_fail("open %s: %s", name, strerror(errno));
    dup2(fd, 20);
    close(fd);
    lseek(20, 1234, SEEK_SET);
    unsigned char* map = test_mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, 20, 0);
#ifndef NO_WATCH
    int in = inotify_init1(IN_CLOEXEC);
    if (in < 0) test_fail("inotify_init1: %s", strerror(errno));
    dup2(in, 21);
    close(in);
    int wd = inotify_add_watch(21, name, IN_MODIFY | IN_ATTRIB);
    if (wd < 0) test_fail("inotify_add_watch %s: %s", name, strerror(errno));
#endif
    if (unlink(name) != 0) test_fail("unlink %s: %s", name, strerror(errno));
#ifndef NO_WATCH
    /* The IN_ATTRIB of link and unlink: read, so nothing is queued at dump. */
    char drain[4096] __attribute__((aligned(8)));
    while (queued(21) > 0) read(21, drain, sizeof drain);
#endif
    struct stat file;
    if (stat(second, &file) != 0) test_fail("stat %s: %s", second, strerror(errno));
    const unsigned long long born = start_time();

    test_ready();
    test_wait_check();
    const int restored = start_time() != born;
    if (test_corrupt(1)) {
        char fake[4300];
        snprintf(fake, sizeof fake, "%s/" PREFIX "0-0-0", dir);
        close(open(fake, O_WRONLY | O_CREAT, 0600));
    }

    /* The file itself, with no hidden link left after a restore. */
    int links = hidden_links(file.st_dev, file.st_ino);
    if (restored) CHECK(links == 0, "%d hidden link(s) left in %s after the restore", links, dir);
    else CHECK(links <= 1, "%d hidden links of the file in %s (one per dump would pile up)", links, dir);
    struct stat st;
    CHECK(fstat(20, &st) == 0 && st.st_dev == file.st_dev && st.st_ino == file.st_ino,
          "fd 20 is not the file %s any more (a copy?)", second);
    CHECK(st.st_nlink == (nlink_t)(1 + (links > 0 ? links : 0)), "the file has %lu links, expected %d",
          (unsigned long)st.st_nlink, 1 + links);
    char want[4300], got[4300] = "";
    snprintf(want, sizeof want, "%s (deleted)", name);
    if (test_corrupt(2)) snprintf(want, sizeof want, "%s/.ckpt-link-remap (deleted)", dir);
    ssize_t n = readlink("/proc/self/fd/20", got, sizeof got - 1);
    if (n > 0) got[n] = '\0';
    CHECK(strcmp(got, want) == 0, "fd 20 names '%s', expected '%s'", got, want);
    char line[4600] = "";
    test_vma_line(map, line, sizeof line);
    CHECK(strstr(line, want) != NULL, "the mapping is '%s', expected it of '%s'", line, want);
    off_t at = lseek(20, 0, SEEK_CUR);
    CHECK(at == (test_corrupt(3) ? 1235 : 1234), "fd 20 is at offset %lld, expected 1234", (long long)at);
    CHECK((fcntl(20, F_GETFL) & O_ACCMODE) == O_RDWR, "fd 20 is not O_RDWR");

#ifndef NO_WATCH
    /* Nothing of the restore's own on the watch (the original: the dump's link only). */
    if (restored) {
        CHECK(queued(21) == 0, "%d bytes of events queued on fd 21 after the restore", queued(21));
    } else {
        while (queued(21) > 0) {
            ssize_t len = read(21, drain, sizeof drain);
            for (ssize_t i = 0; i + (ssize_t)sizeof(struct inotify_event) <= len;) {
                struct inotify_event* e = (struct inotify_event*)(drain + i);
                CHECK(e->wd == wd && e->mask == IN_ATTRIB, "event %#x on watch %d queued in the original", e->mask,
                      e->wd);
                i += (ssize_t)sizeof *e + e->len;
            }
        }
    }
#endif

    /* The mapping is the file: its content, and writes both ways. */
    ptrdiff_t bad = test_verify(map, SIZE, SEED);
    CHECK(bad < 0, "the mapping differs from the file's data at %td", bad);
    int by_name = open(second, O_RDWR);
    CHECK(by_name >= 0, "open %s: %s", second, strerror(errno));
    unsigned char b = (unsigned char)~data[100], c = (unsigned char)~data[200], r = 0;
    if (!test_corrupt(4)) map[100] = b;
    CHECK(pread(by_name, &r, 1, 100) == 1 && r == b, "a write through the mapping did not reach %s", second);
    CHECK(pwrite(by_name, &c, 1, 200) == 1 && map[200] == c, "a write through %s did not reach the mapping", second);
    CHECK(pread(20, &r, 1, 200) == 1 && r == c, "a write through %s is not read through fd 20", second);
#ifndef NO_WATCH
    CHECK(event_came(test_corrupt(5) ? wd + 1 : wd, IN_MODIFY), "no IN_MODIFY on watch %d after a write to %s", wd,
          second);
#else
    CHECK(!test_corrupt(5), "corruption point 5");
#endif
    /* Back as it was (the runner's leave-running mode restores the file from its content). */
    map[100] = data[100];
    pwrite(by_name, &data[200], 1, 200);
    close(by_name);
    return test_finish();
}
