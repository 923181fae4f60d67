/* fd_fifos: named pipes (FIFOs) in the program's data folder, with data queued at dump.
 *
 *   "link":  parent writes fd 31 (O_WRONLY, O_NONBLOCK) -> child reads fd 30 (O_RDONLY),
 *            capacity set to 256 KiB, 100000 bytes queued
 *   "self":  parent holds fd 40 O_RDWR, 3000 bytes queued
 *   "gone":  parent holds fd 50 O_RDWR and fd 51 O_RDONLY (two descriptions), 700 bytes
 *            queued, then the FIFO's name is unlinked
 *   "quiet": parent holds fd 60 O_RDONLY|O_NONBLOCK only; its writer closed: nothing queued
 *
 * State checked after restore: every fd is still a FIFO with its access mode and status
 * flags, linked ones still at their path (the same inode as a new open of that path), the
 * unlinked one named "PATH (deleted)" in /proc with no link, its two descriptions one FIFO;
 * the queued bytes come out in order; the ends are connected (data written after restore
 * reaches the other process, and a new open of the path by name joins the same FIFO);
 * F_GETPIPE_SZ is kept; a FIFO whose writers all closed says end of file (the restore kept
 * no end of its own). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define LINK_BYTES 100000
#define LINK_SIZE (256 * 1024)
#define SELF_BYTES 3000
#define GONE_BYTES 700

static char link_path[4096], self_path[4096], gone_path[4096], quiet_path[4096];

static void open_at(const char* path, int flags, int at) {
    int fd = open(path, flags);
    if (fd < 0) test_fail("open %s: %s", path, strerror(errno));
    if (fd != at) {
        dup2(fd, at);
        close(fd);
    }
}

static void make_fifo(char* path, const char* name) {
    test_data_path(path, 4096, name);
    unlink(path);
    if (mkfifo(path, 0640) != 0) test_fail("mkfifo %s: %s", path, strerror(errno));
}

static int is_fifo_fd(int fd, int accmode, int status_flags) {
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fl >= 0 && (fl & O_ACCMODE) == accmode &&
           (fl & (O_NONBLOCK | O_APPEND)) == status_flags;
}

static int same_file_as_path(int fd, const char* path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int queued(int fd) {
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 9);
    signal(SIGPIPE, SIG_IGN);
    make_fifo(link_path, "link.fifo");
    make_fifo(self_path, "self.fifo");
    make_fifo(gone_path, "gone.fifo");
    make_fifo(quiet_path, "quiet.fifo");

    /* "link": the child's reader first (non-blocking open, then blocking reads). */
    open_at(link_path, O_RDONLY | O_NONBLOCK, 30);
    fcntl(30, F_SETFL, 0);
    open_at(link_path, O_WRONLY | O_NONBLOCK, 31);
    fcntl(31, F_SETPIPE_SZ, LINK_SIZE);
    int link_size = fcntl(31, F_GETPIPE_SZ);
    static unsigned char linkbuf[LINK_BYTES];
    test_fill(linkbuf, sizeof linkbuf, 1);
    if (write(31, linkbuf, sizeof linkbuf) != (ssize_t)sizeof linkbuf) test_fail("write link: %s", strerror(errno));

    open_at(self_path, O_RDWR, 40);
    static unsigned char selfbuf[SELF_BYTES];
    test_fill(selfbuf, sizeof selfbuf, 2);
    if (write(40, selfbuf, sizeof selfbuf) != (ssize_t)sizeof selfbuf) test_fail("write self: %s", strerror(errno));

    open_at(gone_path, O_RDWR, 50);
    open_at(gone_path, O_RDONLY | O_NONBLOCK, 51);
    static unsigned char gonebuf[GONE_BYTES];
    test_fill(gonebuf, sizeof gonebuf, 3);
    if (write(50, gonebuf, sizeof gonebuf) != (ssize_t)sizeof gonebuf) test_fail("write gone: %s", strerror(errno));
    if (unlink(gone_path) != 0) test_fail("unlink %s: %s", gone_path, strerror(errno));

    open_at(quiet_path, O_RDONLY | O_NONBLOCK, 60);
    open_at(quiet_path, O_WRONLY, 61);
    close(61);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        close(31);
        close(40);
        close(50);
        close(51);
        close(60);
        test_sync_signal(&started);
        test_wait_check();
        if (test_corrupt(5)) read(30, linkbuf, 1);
        static unsigned char got[LINK_BYTES];
        CHECK(is_fifo_fd(30, O_RDONLY, 0), "child: fd 30 is not the FIFO's blocking read end");
        CHECK(same_file_as_path(30, link_path), "child: fd 30 is not the FIFO at %s", link_path);
        CHECK(test_read_all(30, got, LINK_BYTES) && test_verify(got, LINK_BYTES, 1) < 0,
              "child: the data queued in the link FIFO changed");
        unsigned char token[8];
        CHECK(test_read_all(30, token, 8) && memcmp(token, "after-rs", 8) == 0,
              "child: nothing written after restore arrived through the link FIFO");
        CHECK(test_read_all(30, token, 6) && memcmp(token, "byname", 6) == 0,
              "child: a writer opening the FIFO by its name after restore did not reach it");
        test_child_exit();
    }
    close(30);
    test_sync_wait(&started);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) write(40, "z", 1);
    if (test_corrupt(2)) fcntl(31, F_SETPIPE_SZ, 2 * LINK_SIZE);
    if (test_corrupt(3)) fcntl(31, F_SETFL, 0);
    if (test_corrupt(4)) read(51, gonebuf, 1);
    if (test_corrupt(6)) open_at(quiet_path, O_WRONLY | O_NONBLOCK, 62); /* a writer: no end of file */
    if (test_corrupt(7)) {
        close(40);
        open_at(link_path, O_RDWR, 40); /* another FIFO at fd 40 */
    }
    if (test_corrupt(8)) close(open(gone_path, O_CREAT | O_WRONLY, 0600));
    if (test_corrupt(9)) unlink(self_path);

    CHECK(is_fifo_fd(31, O_WRONLY, O_NONBLOCK), "fd 31 is not the link FIFO's non-blocking write end");
    CHECK(fcntl(31, F_GETPIPE_SZ) == link_size, "link FIFO capacity %d, expected %d", fcntl(31, F_GETPIPE_SZ),
          link_size);
    CHECK(is_fifo_fd(40, O_RDWR, 0) && same_file_as_path(40, self_path), "fd 40 is not the self FIFO, O_RDWR");
    CHECK(queued(40) == SELF_BYTES, "the self FIFO holds %d bytes, expected %d", queued(40), SELF_BYTES);
    static unsigned char got[SELF_BYTES];
    CHECK(test_read_all(40, got, SELF_BYTES) && memcmp(got, selfbuf, SELF_BYTES) == 0,
          "the data queued in the self FIFO changed");

    /* The unlinked FIFO: no name, named "PATH (deleted)", two descriptions of one FIFO. */
    struct stat a, b;
    CHECK(fstat(50, &a) == 0 && fstat(51, &b) == 0 && S_ISFIFO(a.st_mode) && a.st_nlink == 0 &&
              a.st_dev == b.st_dev && a.st_ino == b.st_ino && (a.st_mode & 07777) == 0640,
          "fds 50 and 51 are not one unlinked FIFO of mode 0640");
    CHECK(access(gone_path, F_OK) != 0, "the unlinked FIFO's name %s exists again", gone_path);
    char want[4200], link_text[4200] = "";
    snprintf(want, sizeof want, "%s (deleted)", gone_path);
    ssize_t ln = readlink("/proc/self/fd/50", link_text, sizeof link_text - 1);
    if (ln > 0) link_text[ln] = 0;
    CHECK(strcmp(link_text, want) == 0, "fd 50 is named '%s', expected '%s'", link_text, want);
    CHECK(is_fifo_fd(50, O_RDWR, 0) && is_fifo_fd(51, O_RDONLY, O_NONBLOCK), "fds 50/51: access mode or flags changed");
    unsigned char gone_got[GONE_BYTES];
    CHECK(test_read_all(51, gone_got, GONE_BYTES) && memcmp(gone_got, gonebuf, GONE_BYTES) == 0 && queued(50) == 0,
          "the data queued in the unlinked FIFO changed");
    CHECK(write(50, "w", 1) == 1 && read(51, gone_got, 1) == 1 && gone_got[0] == 'w',
          "a write through fd 50 did not come out of fd 51");

    /* No writer anywhere: end of file at once. */
    char c;
    CHECK(is_fifo_fd(60, O_RDONLY, O_NONBLOCK) && read(60, &c, 1) == 0, "the FIFO without writers did not say end of file");

    kill(child, SIGTERM);
    CHECK(write(31, "after-rs", 8) == 8, "cannot write the link FIFO after restore");
    int byname = open(link_path, O_WRONLY | O_NONBLOCK);
    CHECK(byname >= 0 && write(byname, "byname", 6) == 6, "cannot open and write the link FIFO by name after restore");
    if (byname >= 0) close(byname);
    test_expect_child_ok(child, "child");
    return test_finish();
}
