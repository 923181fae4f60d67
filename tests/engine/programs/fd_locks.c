/* fd_locks: file locks held through fds, dumped with --file-locks.
 *
 *   fd 10: flock(LOCK_EX) on "flock.bin"; fd 11: flock(LOCK_SH) on "shared.bin", a description
 *          the child holds too (inherited)
 *   fd 12: POSIX write lock on bytes [100, 200) and read lock on [300, EOF) of "posix.bin"
 *   fd 13: OFD write lock on all of "ofd.bin"
 *   fd 14: a read lease (F_SETLEASE F_RDLCK) on "rlease.bin", opened read-only
 *   fd 15: a write lease (F_SETLEASE F_WRLCK) on "wlease.bin"
 *   child: POSIX write lock on [0, 10) of "posix.bin" through its own open
 *
 * The leases: F_GETLEASE says the same after restore, and the checker's non-blocking opens
 * that conflict with them (any open of the write-leased file, a write open of the read-leased
 * one) fail with EWOULDBLOCK while a read open of the read-leased file succeeds.
 *
 * State checked after restore, by a process forked for the purpose (it opens each file
 * again, so it is no owner of any lock): each lock conflicts exactly where it did (F_GETLK /
 * F_OFD_GETLK report its type, range and, for POSIX locks, the owner's pid; flock with
 * LOCK_NB says EWOULDBLOCK), and nothing else is locked; the shared flock is still one lock
 * (the child unlocking it through its fd frees it for everyone). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static char flock_path[4096], shared_path[4096], posix_path[4096], ofd_path[4096];
static char rlease_path[4096], wlease_path[4096];

/* Whether a non-blocking open of path with flags fails because of a lease. */
static int lease_blocks(const char* path, int flags) {
    int fd = open(path, flags | O_NONBLOCK);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EWOULDBLOCK;
}

static void open_at(const char* path, int at) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0) test_fail("open %s: %s", path, strerror(errno));
    if (ftruncate(fd, 4096) != 0) test_fail("ftruncate %s: %s", path, strerror(errno));
    if (fd != at) {
        dup2(fd, at);
        close(fd);
    }
}

static void set_lock(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) != 0) test_fail("fcntl lock fd %d [%ld+%ld]: %s", fd, (long)start, (long)len, strerror(errno));
}

/* What a write (or read) lock of [start, start+len) would conflict with: its type, range and
 * pid in *fl (F_UNLCK: nothing). */
static struct flock probe(const char* path, int cmd, short type, off_t start, off_t len) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    int fd = open(path, O_RDWR);
    if (fd < 0 || fcntl(fd, cmd, &fl) != 0) fl.l_type = -1;
    if (fd >= 0) close(fd);
    return fl;
}

static int flock_busy(const char* path, int how) {
    int fd = open(path, O_RDWR);
    int busy = flock(fd, how | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return busy;
}

/* Run in a process of its own, after the restore: every lock as the outside world sees it. */
static void check_from_outside(pid_t owner, pid_t child) {
    CHECK(flock_busy(flock_path, LOCK_SH), "the exclusive flock on %s is gone", flock_path);
    CHECK(flock_busy(shared_path, LOCK_EX) && !flock_busy(shared_path, LOCK_SH),
          "the shared flock on %s is not a shared lock any more", shared_path);
    struct flock fl = probe(posix_path, F_GETLK, F_RDLCK, 150, 1);
    CHECK(fl.l_type == F_WRLCK && fl.l_start == 100 && fl.l_len == 100 && fl.l_pid == owner,
          "POSIX write lock [100, 200): F_GETLK says type %d [%ld+%ld] pid %d", fl.l_type, (long)fl.l_start,
          (long)fl.l_len, fl.l_pid);
    fl = probe(posix_path, F_GETLK, F_WRLCK, 5000, 10);
    CHECK(fl.l_type == F_RDLCK && fl.l_start == 300 && fl.l_len == 0 && fl.l_pid == owner,
          "POSIX read lock [300, EOF): F_GETLK says type %d [%ld+%ld] pid %d", fl.l_type, (long)fl.l_start,
          (long)fl.l_len, fl.l_pid);
    fl = probe(posix_path, F_GETLK, F_RDLCK, 300, 100);
    CHECK(fl.l_type == F_UNLCK, "a read lock conflicts with the read lock on [300, EOF)");
    fl = probe(posix_path, F_GETLK, F_WRLCK, 200, 100);
    CHECK(fl.l_type == F_UNLCK, "[200, 300) of %s is locked (type %d pid %d)", posix_path, fl.l_type, fl.l_pid);
    fl = probe(posix_path, F_GETLK, F_WRLCK, 0, 5);
    CHECK(fl.l_type == F_WRLCK && fl.l_start == 0 && fl.l_len == 10 && fl.l_pid == child,
          "the child's POSIX lock [0, 10): F_GETLK says type %d [%ld+%ld] pid %d (child %d)", fl.l_type,
          (long)fl.l_start, (long)fl.l_len, fl.l_pid, child);
    CHECK(lease_blocks(wlease_path, O_RDONLY), "a read open of %s is not refused: its write lease is gone", wlease_path);
    CHECK(lease_blocks(rlease_path, O_RDWR), "a write open of %s is not refused: its read lease is gone", rlease_path);
    CHECK(!lease_blocks(rlease_path, O_RDONLY), "a read open of %s is refused: more than a read lease", rlease_path);
    fl = probe(ofd_path, F_OFD_GETLK, F_RDLCK, 7, 1);
    CHECK(fl.l_type == F_WRLCK && fl.l_start == 0 && fl.l_len == 0 && fl.l_pid == -1,
          "the OFD write lock on %s: F_OFD_GETLK says type %d [%ld+%ld] pid %d", ofd_path, fl.l_type,
          (long)fl.l_start, (long)fl.l_len, fl.l_pid);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 7);
    test_data_path(flock_path, sizeof flock_path, "flock.bin");
    test_data_path(shared_path, sizeof shared_path, "shared.bin");
    test_data_path(posix_path, sizeof posix_path, "posix.bin");
    test_data_path(ofd_path, sizeof ofd_path, "ofd.bin");
    open_at(flock_path, 10);
    open_at(shared_path, 11);
    open_at(posix_path, 12);
    open_at(ofd_path, 13);
    if (flock(10, LOCK_EX) != 0 || flock(11, LOCK_SH) != 0) test_fail("flock: %s", strerror(errno));
    set_lock(12, F_SETLK, F_WRLCK, 100, 100);
    set_lock(12, F_SETLK, F_RDLCK, 300, 0);
    set_lock(13, F_OFD_SETLK, F_WRLCK, 0, 0);
    /* Leases: a lease break sends the holder SIGIO, whose default would end it. */
    signal(SIGIO, SIG_IGN);
    /* Where the runner opens nothing (it would break the leases). */
    char quiet[4096];
    test_data_path(quiet, sizeof quiet, "no-snapshot");
    if (mkdir(quiet, 0700) != 0 && errno != EEXIST) test_fail("mkdir %s: %s", quiet, strerror(errno));
    test_data_path(rlease_path, sizeof rlease_path, "no-snapshot/rlease.bin");
    test_data_path(wlease_path, sizeof wlease_path, "no-snapshot/wlease.bin");
    open_at(rlease_path, 14);
    close(14);
    int ro = open(rlease_path, O_RDONLY);
    if (ro < 0 || dup2(ro, 14) != 14) test_fail("open %s read-only as fd 14: %s", rlease_path, strerror(errno));
    close(ro);
    open_at(wlease_path, 15);
    if (fcntl(14, F_SETLEASE, F_RDLCK) != 0 || fcntl(15, F_SETLEASE, F_WRLCK) != 0)
        test_fail("F_SETLEASE: %s", strerror(errno));

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        close(10);
        close(12);
        close(13);
        close(14);
        close(15);
        int own = open(posix_path, O_RDWR);
        if (own < 0) test_fail("child: open: %s", strerror(errno));
        dup2(own, 20);
        close(own);
        set_lock(20, F_SETLK, F_WRLCK, 0, 10);
        test_sync_signal(&started);
        test_wait_check();
        if (test_corrupt(4)) set_lock(20, F_SETLK, F_UNLCK, 0, 10);
        /* Told by the parent (a byte on fd 0 would do, but stdin is the runner's): wait for
         * SIGUSR1 from the checker, then free the shared flock for everyone. */
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        int sig = 0;
        sigwait(&usr1, &sig);
        CHECK(flock(11, LOCK_UN) == 0, "child: flock(LOCK_UN): %s", strerror(errno));
        test_child_exit();
    }
    test_sync_wait(&started);

    test_ready();
    test_wait_check();
    if (test_corrupt(1)) flock(10, LOCK_UN);
    if (test_corrupt(2)) set_lock(12, F_SETLK, F_UNLCK, 100, 100);
    if (test_corrupt(3)) set_lock(13, F_OFD_SETLK, F_UNLCK, 0, 0);
    if (test_corrupt(5)) set_lock(12, F_SETLK, F_WRLCK, 200, 100);
    if (test_corrupt(6)) fcntl(15, F_SETLEASE, F_UNLCK);
    if (test_corrupt(7)) fcntl(14, F_SETLEASE, F_UNLCK);
    CHECK(fcntl(14, F_GETLEASE) == F_RDLCK, "F_GETLEASE of fd 14 is %d, not F_RDLCK", fcntl(14, F_GETLEASE));
    CHECK(fcntl(15, F_GETLEASE) == F_WRLCK, "F_GETLEASE of fd 15 is %d, not F_WRLCK", fcntl(15, F_GETLEASE));

    kill(child, SIGTERM);
    usleep(100 * 1000); /* the child's corruption point, if any, comes first */
    pid_t checker = fork();
    if (checker == 0) {
        check_from_outside(getppid(), child);
        kill(child, SIGUSR1);
        usleep(200 * 1000);
        CHECK(!flock_busy(shared_path, LOCK_EX), "the shared flock is still held after the child unlocked it");
        test_child_exit();
    }
    test_expect_child_ok(checker, "checker");
    test_expect_child_ok(child, "child");
    return test_finish();
}
