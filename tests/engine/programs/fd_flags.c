/* fd_flags: what an open file description carries besides its file and offset.
 *
 * State checked after restore:
 *  - file status flags, every bit of F_GETFL and of /proc/self/fdinfo "flags:" as before the
 *    dump, on: a regular file O_RDWR|O_APPEND|O_NONBLOCK|O_NOATIME (fd 10), O_RDONLY|O_DIRECT
 *    (fd 11, where the file system allows it), O_WRONLY|O_DSYNC (fd 12), O_RDWR|O_SYNC (fd 13),
 *    O_LARGEFILE everywhere the kernel sets it; memfds (fds 14-16); a named and an unlinked
 *    POSIX shared memory object (fds 17, 18: shm_open's O_NOFOLLOW|O_CLOEXEC, O_NONBLOCK
 *    and O_APPEND added); pipes (O_NONBLOCK fd 20, O_DIRECT packet mode fd 25, O_ASYNC);
 *  - memfd seals with the content: fd 14 SHRINK|GROW|WRITE|SEAL (a read-only shared mapping
 *    of it made after the seals), fd 15 FUTURE_WRITE|SHRINK (a writable shared mapping made
 *    before the seal still writes; write() and a new writable mapping are refused), fd 16
 *    made without MFD_ALLOW_SEALING (F_SEAL_SEAL only); a memfd script (fd 19) still runs
 *    with execveat (its fd memfd_create's own file, which counts no writer);
 *  - owners and signals of O_ASYNC pipes: fd 22 F_SETOWN(pid) + F_SETSIG(SIGRTMIN+3),
 *    fd 24 F_SETOWN(-pgid), fd 26 F_SETOWN_EX(F_OWNER_TID, a second thread); data written
 *    after restore makes the kernel queue the chosen signal for the owner (si_fd, POLL_IN);
 *  - fd 10's file, written before the dump: its st_mtim did not change (the restore does not
 *    write or touch files it opens again);
 *  - an unlinked file opened twice (fds 30, 31: two descriptions, written through 30, read
 *    through 31): mode 0646, uid and gid 65534 as before (not the restorer's), same content
 *    through both, both offsets, and still one file (a write through one is read by the other). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define SEALED_BYTES (64 * 1024)
#define FUTURE_BYTES (4 * 4096)
#define DELETED_BYTES 20000
#define DELETED_READ 5000
#define SIG_PID (SIGRTMIN + 3)
#define SIG_TID (SIGRTMIN + 5)

struct flags_fd {
    int fd;
    int getfl;
    unsigned fdinfo; /* "flags:" of /proc/self/fdinfo, close-on-exec included */
};
static struct flags_fd flagged[24];
static int nflagged;

static void place(int fd, int target) {
    if (fd < 0) test_fail("open for fd %d: %s", target, strerror(errno));
    if (fd != target) {
        dup3(fd, target, (fcntl(fd, F_GETFD) & FD_CLOEXEC) ? O_CLOEXEC : 0);
        close(fd);
    }
}

static unsigned fdinfo_flags(int fd) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if (test_read_text(path, text, sizeof text) < 0) return ~0u;
    char* at = strstr(text, "flags:");
    return at ? (unsigned)strtoul(at + 6, NULL, 8) : ~0u;
}

static void remember_flags(int fd) {
    struct flags_fd* f = &flagged[nflagged++];
    f->fd = fd;
    f->getfl = fcntl(fd, F_GETFL);
    f->fdinfo = fdinfo_flags(fd);
}

static void check_flags(const struct flags_fd* f) {
    int now = fcntl(f->fd, F_GETFL);
    CHECK(now == f->getfl, "fd %d: F_GETFL %#o, expected %#o", f->fd, now, f->getfl);
    unsigned info = fdinfo_flags(f->fd);
    CHECK(info == f->fdinfo, "fd %d: fdinfo flags 0%o, expected 0%o", f->fd, info, f->fdinfo);
}

static void make_pipe(int rd, int wr, int flags) {
    int p[2];
    if (pipe2(p, flags) != 0) test_fail("pipe2: %s", strerror(errno));
    place(p[0], rd);
    place(p[1], wr);
}

/* O_ASYNC with an owner and a signal: the owner set before O_ASYNC, as programs do. */
static void make_async(int fd, int sig) {
    if (sig && fcntl(fd, F_SETSIG, sig) != 0) test_fail("F_SETSIG: %s", strerror(errno));
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) != 0) test_fail("O_ASYNC: %s", strerror(errno));
}

/* Waits up to 3 s for sig; returns its siginfo's fd (-1 when none came, -2 when it came
 * without one, as SIGIO of an fd without F_SETSIG does). */
static int wait_signal(int sig, int* code) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    struct timespec ts = {3, 0};
    siginfo_t si;
    if (sigtimedwait(&set, &si, &ts) != sig) return -1;
    *code = si.si_code;
    return si.si_code == POLL_IN ? si.si_fd : -2;
}

static pid_t owner_tid;
static pthread_mutex_t tid_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tid_known = PTHREAD_COND_INITIALIZER;
static volatile int tid_got_fd = -2, tid_got_code;

/* The owner thread of fd 26: waits for its signal after the restore. */
static void* owner_thread(void* arg) {
    (void)arg;
    pthread_mutex_lock(&tid_lock);
    owner_tid = (pid_t)syscall(SYS_gettid);
    pthread_cond_signal(&tid_known);
    pthread_mutex_unlock(&tid_lock);
    for (;;) {
        int code = 0;
        int fd = wait_signal(SIG_TID, &code);
        if (fd != -1) {
            tid_got_code = code;
            tid_got_fd = fd;
            return NULL;
        }
    }
}

int main(int argc, char** argv) {
    test_init(argc, argv, 17);
    /* The signals O_ASYNC queues stay pending until taken with sigtimedwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGIO);
    sigaddset(&sigs, SIG_PID);
    sigaddset(&sigs, SIG_TID);
    sigaddset(&sigs, SIGRTMIN + 4); /* corruption 9 sends it */
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t thread;
    pthread_mutex_lock(&tid_lock);
    pthread_create(&thread, NULL, owner_thread, NULL);
    while (!owner_tid) pthread_cond_wait(&tid_known, &tid_lock);
    pthread_mutex_unlock(&tid_lock);

    static unsigned char content[8192], sealed[SEALED_BYTES], buf[SEALED_BYTES], deleted_content[DELETED_BYTES];
    char path[512], deleted[512], shm_name[64];
    test_data_path(path, sizeof path, "flags.bin");
    test_data_path(deleted, sizeof deleted, "deleted.bin");
    test_fill(content, sizeof content, 1);
    test_fill(sealed, sizeof sealed, 5);
    test_fill(deleted_content, sizeof deleted_content, 6);

    /* Regular files. */
    place(open(path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_NONBLOCK | O_NOATIME, 0644), 10);
    if (write(10, content, sizeof content) != (ssize_t)sizeof content) test_fail("write: %s", strerror(errno));
    int direct = open(path, O_RDONLY | O_DIRECT);
    place(direct >= 0 ? direct : open(path, O_RDONLY), 11); /* O_DIRECT where the file system allows it */
    place(open(path, O_WRONLY | O_DSYNC), 12);
    place(open(path, O_RDWR | O_SYNC | O_CLOEXEC), 13);
    lseek(13, 300, SEEK_SET);

    /* memfds and their seals. */
    place(memfd_create("ckpt-sealed", MFD_ALLOW_SEALING), 14);
    if (write(14, sealed, sizeof sealed) != (ssize_t)sizeof sealed) test_fail("write memfd: %s", strerror(errno));
    if (fcntl(14, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        test_fail("F_ADD_SEALS: %s", strerror(errno));
    fcntl(14, F_SETFL, O_NONBLOCK);
    const unsigned char* sealed_map = mmap(NULL, SEALED_BYTES, PROT_READ, MAP_SHARED, 14, 0);
    if (sealed_map == MAP_FAILED) test_fail("mmap sealed memfd: %s", strerror(errno));
    place(memfd_create("ckpt-future", MFD_ALLOW_SEALING | MFD_CLOEXEC), 15);
    if (ftruncate(15, FUTURE_BYTES) != 0) test_fail("ftruncate: %s", strerror(errno));
    unsigned char* future_map = mmap(NULL, FUTURE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, 15, 0);
    if (future_map == MAP_FAILED) test_fail("mmap future memfd: %s", strerror(errno));
    test_fill(future_map, FUTURE_BYTES, 7);
    if (fcntl(15, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK) != 0)
        test_fail("F_ADD_SEALS(FUTURE_WRITE): %s", strerror(errno));
    place(memfd_create("ckpt-plain", 0), 16);
    if (write(16, "plain", 5) != 5) test_fail("write: %s", strerror(errno));
    fcntl(16, F_SETFL, O_APPEND);
    /* A memfd holding a script, executed through its fd (execveat AT_EMPTY_PATH): its fd is
     * memfd_create's own file, which counts no writer (one opened again would: ETXTBSY). */
    place(memfd_create("ckpt-script", 0), 19); /* not close-on-exec: the interpreter opens /dev/fd/19 */
    if (write(19, "#!/bin/true\n", 12) != 12) test_fail("write script memfd: %s", strerror(errno));
    int seals[3] = {fcntl(14, F_GET_SEALS), fcntl(15, F_GET_SEALS), fcntl(16, F_GET_SEALS)};

    /* POSIX shared memory: a named object (kept: the restore opens it by name; the same
     * name for every run of this work folder) and an unlinked one. */
    snprintf(shm_name, sizeof shm_name, "/ckpt-fd_flags-%016llx",
             (unsigned long long)test_hash(test_data_dir(), strlen(test_data_dir())));
    place(shm_open(shm_name, O_RDWR | O_CREAT | O_TRUNC, 0600), 17);
    {
        /* For the test driver, which unlinks it once the test is over. */
        char names[512];
        test_data_path(names, sizeof names, "posix-shm-names");
        FILE* f = fopen(names, "w");
        if (!f || fprintf(f, "%s\n", shm_name) < 0 || fclose(f) != 0) test_fail("write %s", names);
    }
    if (ftruncate(17, 4096) != 0) test_fail("ftruncate shm: %s", strerror(errno));
    fcntl(17, F_SETFL, O_NONBLOCK | O_APPEND);
    char unlinked_name[80];
    snprintf(unlinked_name, sizeof unlinked_name, "%s-unlinked", shm_name);
    place(shm_open(unlinked_name, O_RDWR | O_CREAT | O_EXCL, 0600), 18);
    shm_unlink(unlinked_name);
    if (pwrite(18, "shm", 3, 100) != 3) test_fail("write shm: %s", strerror(errno));
    fcntl(18, F_SETFL, O_NONBLOCK);

    /* Pipes: O_NONBLOCK, packet mode, and O_ASYNC with owners and signals. */
    make_pipe(20, 21, O_NONBLOCK);
    make_pipe(22, 23, 0);
    if (fcntl(22, F_SETOWN, getpid()) != 0) test_fail("F_SETOWN: %s", strerror(errno));
    make_async(22, SIG_PID);
    make_pipe(24, 25, O_DIRECT);
    if (fcntl(24, F_SETOWN, -getpgrp()) != 0) test_fail("F_SETOWN(-pgid): %s", strerror(errno));
    make_async(24, 0);
    make_pipe(26, 27, 0);
    struct f_owner_ex tid_owner = {F_OWNER_TID, owner_tid};
    if (fcntl(26, F_SETOWN_EX, &tid_owner) != 0) test_fail("F_SETOWN_EX: %s", strerror(errno));
    make_async(26, SIG_TID);

    /* An unlinked file opened twice, written through one description, read through the other. */
    mode_t old_umask = umask(0);
    place(open(deleted, O_RDWR | O_CREAT | O_TRUNC, 0646), 30);
    umask(old_umask);
    place(open(deleted, O_RDWR), 31);
    if (fchown(30, 65534, 65534) != 0) test_fail("fchown: %s", strerror(errno));
    if (write(30, deleted_content, sizeof deleted_content) != (ssize_t)sizeof deleted_content)
        test_fail("write: %s", strerror(errno));
    if (read(31, buf, DELETED_READ) != DELETED_READ || memcmp(buf, deleted_content, DELETED_READ) != 0)
        test_fail("read through the second open");
    unlink(deleted);
    struct stat deleted_st;
    fstat(30, &deleted_st);

    int order[] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) remember_flags(order[i]);
    struct stat file_st;
    fstat(10, &file_st);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) fcntl(10, F_SETFL, O_NONBLOCK | O_NOATIME);
    if (test_corrupt(2)) fcntl(20, F_SETFL, 0);
    if (test_corrupt(3)) fcntl(17, F_SETFL, O_APPEND);
    if (test_corrupt(4)) seals[0] &= ~F_SEAL_GROW;
    if (test_corrupt(5)) sealed[100] ^= 1;
    if (test_corrupt(6)) seals[1] = F_SEAL_SHRINK;
    if (test_corrupt(7)) seals[2] = 0;
    if (test_corrupt(8)) fcntl(22, F_SETOWN, 0);
    if (test_corrupt(9)) fcntl(22, F_SETSIG, SIGRTMIN + 4);
    if (test_corrupt(10)) fcntl(24, F_SETOWN, getpid());
    if (test_corrupt(11)) {
        struct f_owner_ex pid_owner = {F_OWNER_PID, getpid()};
        fcntl(26, F_SETOWN_EX, &pid_owner);
    }
    if (test_corrupt(12)) {
        struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
        futimens(10, times);
    }
    if (test_corrupt(13)) fchmod(30, 0600);
    if (test_corrupt(14)) fchown(31, 0, 0);
    if (test_corrupt(15)) lseek(31, 1, SEEK_CUR);
    if (test_corrupt(16)) fcntl(25, F_SETFL, 0);
    if (test_corrupt(17)) place(open("/proc/self/fd/19", O_RDWR), 19); /* a writer: ETXTBSY */

    /* 4. mtime first: nothing below writes fd 10's file. */
    struct stat st;
    fstat(10, &st);
    CHECK(st.st_mtim.tv_sec == file_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == file_st.st_mtim.tv_nsec,
          "%s: mtime %lld.%09ld, before the dump %lld.%09ld", path, (long long)st.st_mtim.tv_sec,
          st.st_mtim.tv_nsec, (long long)file_st.st_mtim.tv_sec, file_st.st_mtim.tv_nsec);

    /* 1. Status flags, every bit. */
    for (int i = 0; i < nflagged; i++) check_flags(&flagged[i]);
    CHECK(lseek(13, 0, SEEK_CUR) == 300, "fd 13: offset %lld", (long long)lseek(13, 0, SEEK_CUR));

    /* 2. Seals and content. */
    CHECK(fcntl(14, F_GET_SEALS) == seals[0], "fd 14: seals %#x, expected %#x", fcntl(14, F_GET_SEALS), seals[0]);
    CHECK(fcntl(15, F_GET_SEALS) == seals[1], "fd 15: seals %#x, expected %#x", fcntl(15, F_GET_SEALS), seals[1]);
    CHECK(fcntl(16, F_GET_SEALS) == seals[2], "fd 16: seals %#x, expected %#x", fcntl(16, F_GET_SEALS), seals[2]);
    CHECK(pread(14, buf, SEALED_BYTES, 0) == SEALED_BYTES && memcmp(buf, sealed, SEALED_BYTES) == 0 &&
              memcmp(sealed_map, sealed, SEALED_BYTES) == 0,
          "the sealed memfd's content changed");
    CHECK(pwrite(14, "x", 1, 0) < 0 && errno == EPERM, "the sealed memfd took a write");
    CHECK(ftruncate(14, 10) != 0 && ftruncate(14, SEALED_BYTES * 2) != 0, "the sealed memfd changed size");
    CHECK(mprotect((void*)sealed_map, SEALED_BYTES, PROT_READ | PROT_WRITE) != 0,
          "the read-only mapping of the sealed memfd can be made writable");
    CHECK(test_verify(future_map, FUTURE_BYTES, 7) < 0, "the FUTURE_WRITE memfd's content changed");
    future_map[0] ^= 0xff; /* the mapping made before the seal still writes */
    unsigned char first = 0;
    CHECK(pread(15, &first, 1, 0) == 1 && first == future_map[0], "the FUTURE_WRITE mapping no longer writes");
    future_map[0] ^= 0xff;
    CHECK(pwrite(15, "x", 1, 0) < 0 && errno == EPERM, "the FUTURE_WRITE memfd took a write()");
    void* again = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 15, 0);
    CHECK(again == MAP_FAILED, "the FUTURE_WRITE memfd took a new writable mapping");
    char plain[8] = {0};
    CHECK(pread(16, plain, sizeof plain, 0) == 5 && memcmp(plain, "plain", 5) == 0, "fd 16: content changed");
    char shm[3] = {0};
    CHECK(pread(18, shm, 3, 100) == 3 && memcmp(shm, "shm", 3) == 0, "fd 18: content changed");

    /* 3. Owners and signals: data arriving queues the chosen signal for the owner. */
    struct f_owner_ex ex;
    CHECK(fcntl(22, F_GETOWN) == getpid() && fcntl(22, F_GETSIG) == SIG_PID, "fd 22: owner %d signal %d",
          fcntl(22, F_GETOWN), fcntl(22, F_GETSIG));
    CHECK(fcntl(24, F_GETOWN) == -getpgrp(), "fd 24: owner %d, expected %d", fcntl(24, F_GETOWN), -getpgrp());
    CHECK(fcntl(26, F_GETOWN_EX, &ex) == 0 && ex.type == F_OWNER_TID && ex.pid == owner_tid,
          "fd 26: owner type %d pid %d, expected thread %d", ex.type, ex.pid, owner_tid);
    int code = 0;
    CHECK(write(23, "a", 1) == 1 && wait_signal(SIG_PID, &code) == 22 && code == POLL_IN,
          "no signal %d for fd 22 when data arrived", SIG_PID);
    CHECK(write(25, "b", 1) == 1 && wait_signal(SIGIO, &code) != -1, "no SIGIO for fd 24's process group");
    CHECK(write(27, "c", 1) == 1, "cannot write fd 27");
    for (int i = 0; i < 300 && tid_got_fd == -2; i++) usleep(10000);
    CHECK(tid_got_fd == 26 && tid_got_code == POLL_IN, "the owner thread got no signal %d for fd 26", SIG_TID);

    /* 5. The unlinked file opened twice. */
    struct stat a, b;
    fstat(30, &a);
    fstat(31, &b);
    CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_nlink == 0, "fds 30 and 31: not one unlinked file");
    CHECK((a.st_mode & 07777) == (deleted_st.st_mode & 07777) && (b.st_mode & 07777) == (deleted_st.st_mode & 07777),
          "unlinked file: mode %o, expected %o", a.st_mode & 07777, deleted_st.st_mode & 07777);
    CHECK(a.st_uid == deleted_st.st_uid && a.st_gid == deleted_st.st_gid && b.st_uid == deleted_st.st_uid &&
              b.st_gid == deleted_st.st_gid,
          "unlinked file: owner %u:%u, expected %u:%u", b.st_uid, b.st_gid, deleted_st.st_uid, deleted_st.st_gid);
    CHECK(lseek(30, 0, SEEK_CUR) == DELETED_BYTES && lseek(31, 0, SEEK_CUR) == DELETED_READ,
          "unlinked file: offsets %lld and %lld, expected %d and %d", (long long)lseek(30, 0, SEEK_CUR),
          (long long)lseek(31, 0, SEEK_CUR), DELETED_BYTES, DELETED_READ);
    static unsigned char rest[DELETED_BYTES];
    CHECK(read(31, rest, DELETED_BYTES) == DELETED_BYTES - DELETED_READ &&
              memcmp(rest, deleted_content + DELETED_READ, DELETED_BYTES - DELETED_READ) == 0,
          "unlinked file: content read through fd 31 changed");
    CHECK(write(30, "tail", 4) == 4 && read(31, rest, 8) == 4 && memcmp(rest, "tail", 4) == 0,
          "unlinked file: a write through fd 30 is not read through fd 31");
    pid_t child = fork();
    if (child == 0) {
        char* argv_true[] = {"true", NULL};
        char* envp_none[] = {NULL};
        syscall(SYS_execveat, 19, "", argv_true, envp_none, AT_EMPTY_PATH);
        _exit(100 + errno);
    }
    int status = -1;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the memfd script at fd 19 did not run: %s",
          WIFEXITED(status) && WEXITSTATUS(status) > 100 ? strerror(WEXITSTATUS(status) - 100) : "killed");
    return test_finish();
}
