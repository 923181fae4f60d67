/* fd_files: regular files and devices behind file descriptors.
 *
 * State checked after restore, fd by fd (numbers kept, with gaps):
 *  - fd 10: O_RDWR file at offset 1234; fd 11: O_WRONLY|O_APPEND on the same file;
 *    fd 12: O_RDONLY|O_CLOEXEC (FD_CLOEXEC kept), fd 47: dup of fd 10 sharing its offset
 *    (a seek on one moves the other); path, inode, flags, offset and content are the same;
 *  - fd 13: a file deleted while open, with 100 KiB of content, still unlinked (nlink 0) and
 *    still in the same directory (its old name may have been taken since, so the name is
 *    not compared), with its mode and its modification time (set to 2009, to the ns);
 *  - fds 20, 21, 22: /dev/null, /dev/zero, /dev/urandom (same device numbers, they work);
 *  - fd 30: a folder of 200 files read halfway with getdents64: the rest of the listing comes
 *    after restore, every name once (a lost position would list the first ones again);
 *  - after restore, writing through the O_APPEND fd still appends. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "testlib.h"

#define FILE_BYTES 8192
#define DELETED_BYTES (100 * 1024)

struct expect_fd {
    int fd;
    int flags; /* O_ACCMODE | O_APPEND */
    int cloexec;
    off_t offset;
    struct stat st;
    char path[PATH_MAX];
};

static struct expect_fd fds[8];
static int nfds;

/* Moves fd to number target, keeping its close-on-exec flag. */
static void place(int fd, int target) {
    if (fd != target) {
        dup3(fd, target, (fcntl(fd, F_GETFD) & FD_CLOEXEC) ? O_CLOEXEC : 0);
        close(fd);
    }
}

static void remember(int fd) {
    struct expect_fd* e = &fds[nfds++];
    e->fd = fd;
    e->flags = fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND);
    e->cloexec = fcntl(fd, F_GETFD) & FD_CLOEXEC;
    e->offset = lseek(fd, 0, SEEK_CUR);
    fstat(fd, &e->st);
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, e->path, sizeof e->path - 1);
    e->path[n > 0 ? n : 0] = '\0';
}

static void check_fd(const struct expect_fd* e) {
    int flags = fcntl(e->fd, F_GETFL);
    if (flags < 0) {
        test_fail("fd %d is closed", e->fd);
        return;
    }
    CHECK((flags & (O_ACCMODE | O_APPEND)) == e->flags, "fd %d: flags %#x, expected %#x", e->fd,
          flags & (O_ACCMODE | O_APPEND), e->flags);
    CHECK((fcntl(e->fd, F_GETFD) & FD_CLOEXEC) == e->cloexec, "fd %d: close-on-exec changed", e->fd);
    off_t off = lseek(e->fd, 0, SEEK_CUR);
    CHECK(off == e->offset || S_ISCHR(e->st.st_mode), "fd %d: offset %lld, expected %lld", e->fd,
          (long long)off, (long long)e->offset);
    struct stat st;
    fstat(e->fd, &st);
    /* a deleted file comes back as a new (unlinked) file with the saved content */
    int same_inode = e->st.st_nlink == 0 || (st.st_ino == e->st.st_ino && st.st_dev == e->st.st_dev);
    CHECK(same_inode && st.st_rdev == e->st.st_rdev &&
              (st.st_mode & S_IFMT) == (e->st.st_mode & S_IFMT) && st.st_nlink == e->st.st_nlink,
          "fd %d: another file (inode %lu rdev %u:%u nlink %lu)", e->fd, (unsigned long)st.st_ino,
          major(st.st_rdev), minor(st.st_rdev), (unsigned long)st.st_nlink);
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", e->fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    if (e->st.st_nlink == 0) {
        /* deleted: same directory, still "(deleted)" */
        char* slash = strrchr(e->path, '/');
        size_t dir_len = slash ? (size_t)(slash - e->path) + 1 : 0;
        CHECK(strncmp(path, e->path, dir_len) == 0 && strstr(path, " (deleted)"),
              "fd %d: names '%s', expected a deleted file in the directory of '%s'", e->fd, path,
              e->path);
        CHECK((st.st_mode & 07777) == (e->st.st_mode & 07777), "fd %d: mode %o, expected %o", e->fd,
              st.st_mode & 07777, e->st.st_mode & 07777);
        CHECK(st.st_mtim.tv_sec == e->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == e->st.st_mtim.tv_nsec,
              "fd %d: modified at %lld.%09ld, expected %lld.%09ld", e->fd, (long long)st.st_mtim.tv_sec,
              st.st_mtim.tv_nsec, (long long)e->st.st_mtim.tv_sec, e->st.st_mtim.tv_nsec);
    } else {
        CHECK(strcmp(path, e->path) == 0, "fd %d: names '%s', expected '%s'", e->fd, path, e->path);
    }
}

#define DIR_FILES 200

/* Reads up to max entries of fd 30 with getdents64 (a small buffer each time, so that the
 * kernel's position moves entry by entry), counting each "f<N>" name in seen[N]; returns how
 * many entries it read, -1 on an error or a name it does not know. */
static int read_dir_entries(int fd, int max, int seen[DIR_FILES]) {
    static union {
        struct dirent64 d;
        char bytes[2 * sizeof(struct dirent64)];
    } buf;
    int n = 0;
    while (n < max) {
        long got = syscall(SYS_getdents64, fd, buf.bytes, 64);
        if (got < 0) return -1;
        if (got == 0) break;
        for (long at = 0; at < got;) {
            struct dirent64* d = (struct dirent64*)(buf.bytes + at);
            at += d->d_reclen;
            n++;
            if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0) continue;
            int i = d->d_name[0] == 'f' ? atoi(d->d_name + 1) : -1;
            if (i < 0 || i >= DIR_FILES) return -1;
            seen[i]++;
        }
    }
    return n;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 10);
    static unsigned char content[FILE_BYTES], deleted_content[DELETED_BYTES], buf[DELETED_BYTES];
    char path[PATH_MAX], deleted[PATH_MAX];
    test_data_path(path, sizeof path, "regular.bin");
    test_data_path(deleted, sizeof deleted, "deleted.bin");
    test_fill(content, sizeof content, 1);
    test_fill(deleted_content, sizeof deleted_content, 2);

    place(open(path, O_RDWR | O_CREAT | O_TRUNC, 0640), 10);
    if (write(10, content, sizeof content) != (ssize_t)sizeof content) test_fail("write: %s", strerror(errno));
    lseek(10, 1234, SEEK_SET);
    place(open(path, O_WRONLY | O_APPEND), 11);
    place(open(path, O_RDONLY | O_CLOEXEC), 12);
    lseek(12, 77, SEEK_SET);
    dup2(10, 47);
    place(open(deleted, O_RDWR | O_CREAT | O_TRUNC, 0600), 13);
    if (write(13, deleted_content, sizeof deleted_content) != (ssize_t)sizeof deleted_content)
        test_fail("write: %s", strerror(errno));
    const struct timespec deleted_times[2] = {{0, UTIME_OMIT}, {1234567890, 123456789}};
    if (futimens(13, deleted_times) != 0) test_fail("futimens: %s", strerror(errno));
    unlink(deleted);
    lseek(13, 4096, SEEK_SET);
    place(open("/dev/null", O_WRONLY), 20);
    place(open("/dev/zero", O_RDONLY), 21);
    place(open("/dev/urandom", O_RDONLY | O_CLOEXEC), 22);
    char dir[PATH_MAX], entry[PATH_MAX + 16];
    test_data_path(dir, sizeof dir, "listing");
    mkdir(dir, 0755);
    for (int i = 0; i < DIR_FILES; i++) {
        snprintf(entry, sizeof entry, "%s/f%d", dir, i);
        close(open(entry, O_WRONLY | O_CREAT, 0600));
    }
    place(open(dir, O_RDONLY | O_DIRECTORY), 30);
    static int seen[DIR_FILES];
    int first_half = read_dir_entries(30, DIR_FILES / 2, seen);
    if (first_half < DIR_FILES / 2) test_fail("the listing of %s stopped at %d entries", dir, first_half);
    int order[] = {10, 11, 12, 13, 20, 21, 22, 47};
    for (int i = 0; i < 8; i++) remember(order[i]);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) lseek(10, 1000, SEEK_SET);
    if (test_corrupt(2)) fcntl(11, F_SETFL, 0);
    if (test_corrupt(3)) fcntl(12, F_SETFD, 0);
    if (test_corrupt(4)) {
        close(47);
        open(path, O_RDWR); /* lowest free number is not 47: place it */
        place(open(path, O_RDWR), 47);
        lseek(47, 1234, SEEK_SET);
    }
    if (test_corrupt(5)) pwrite(13, "x", 1, 500);
    if (test_corrupt(6)) place(open("/dev/null", O_RDONLY), 21);
    if (test_corrupt(7)) close(22);
    if (test_corrupt(8)) pwrite(10, "y", 1, 100);
    if (test_corrupt(9)) lseek(30, 0, SEEK_SET);
    if (test_corrupt(10)) {
        const struct timespec later[2] = {{0, UTIME_OMIT}, {1234567890, 123456790}};
        futimens(13, later);
    }

    for (int i = 0; i < nfds; i++) check_fd(&fds[i]);

    /* fd 47 and fd 10 share one open file description: a seek on one moves the other */
    lseek(47, 2000, SEEK_SET);
    CHECK(lseek(10, 0, SEEK_CUR) == 2000, "fds 10 and 47 no longer share their offset");
    CHECK(pread(10, buf, FILE_BYTES, 0) == FILE_BYTES && memcmp(buf, content, FILE_BYTES) == 0,
          "content of %s changed", path);
    CHECK(pread(13, buf, DELETED_BYTES, 0) == DELETED_BYTES &&
              memcmp(buf, deleted_content, DELETED_BYTES) == 0,
          "content of the deleted file changed");
    char zero[64];
    memset(zero, 1, sizeof zero);
    CHECK(read(21, zero, sizeof zero) == sizeof zero && zero[0] == 0 && zero[63] == 0,
          "/dev/zero does not read zeros");
    CHECK(write(20, "x", 1) == 1, "/dev/null is not writable");
    CHECK(read(22, buf, 16) == 16, "/dev/urandom does not read");
    CHECK(write(11, "END", 3) == 3 && lseek(11, 0, SEEK_CUR) == FILE_BYTES + 3,
          "O_APPEND fd does not append any more");
    int rest = read_dir_entries(30, 10 * DIR_FILES, seen);
    int once = 0;
    for (int i = 0; i < DIR_FILES; i++) once += seen[i] == 1;
    CHECK(rest >= 0 && once == DIR_FILES && first_half + rest == DIR_FILES + 2,
          "the folder's listing went on wrong after restore: %d entries before, %d after, %d of %d names once",
          first_half, rest, once, DIR_FILES);
    ftruncate(10, FILE_BYTES); /* leave the file as it was for the next check */
    return test_finish();
}
