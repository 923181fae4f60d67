/* mem_unreadable: memory the engine cannot simply read or write as it is mapped.
 *
 * State checked after restore:
 *  - PROT_NONE regions holding data: private anonymous, a private file mapping with pages
 *    copied on write, shared anonymous memory (data written, then mprotect(PROT_NONE));
 *    protection still ---, data back after mprotect(PROT_READ);
 *  - guard pages (MADV_GUARD_INSTALL, linux 6.13) in a private anonymous region, in a
 *    private file mapping and in shared anonymous memory (linux 6.15): still guards (a read
 *    faults with SIGSEGV), the pages around them keep their data (skipped, and said so,
 *    where the kernel has no guard pages);
 *  - a file mapped MAP_SHARED PROT_READ|PROT_WRITE from an O_RDWR fd, and one mapped
 *    PROT_READ from an O_RDWR fd, both files then chmod 0444: content, a write through the
 *    first reaches the file, the second can still be made writable (mprotect). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

static unsigned char* map(size_t len, int prot, int flags, int fd, off_t off) {
    unsigned char* p = mmap(NULL, len, prot, flags, fd, off);
    if (p == MAP_FAILED) {
        test_fail("mmap %zu bytes: %s", len, strerror(errno));
        test_finish();
        _exit(1);
    }
    return p;
}

static sigjmp_buf fault_jmp;
static void on_segv(int sig) {
    (void)sig;
    siglongjmp(fault_jmp, 1);
}

/* True when reading addr faults. */
static int faults(const volatile unsigned char* addr) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, &old);
    int faulted = 1;
    if (sigsetjmp(fault_jmp, 1) == 0) {
        (void)*addr;
        faulted = 0;
    }
    sigaction(SIGSEGV, &old, NULL);
    return faulted;
}

static int make_file(const char* name, char* path, size_t size, uint64_t seed, size_t len) {
    static unsigned char buf[16 * PAGE];
    test_data_path(path, size, name);
    test_fill(buf, len, seed);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf, len) != (ssize_t)len) test_fail("write %s: %s", path, strerror(errno));
    return fd;
}

static void expect_perms(const void* addr, const char* want, const char* what) {
    char perms[5];
    test_vma_perms(addr, perms);
    CHECK(strcmp(perms, want) == 0, "%s: protection %s, expected %s", what, perms, want);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    char path[4200];

    /* PROT_NONE with data. */
    unsigned char* none_anon = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(none_anon, 4 * PAGE, 30);
    mprotect(none_anon, 4 * PAGE, PROT_NONE);
    int fd = make_file("none.bin", path, sizeof path, 31, 8 * PAGE);
    unsigned char* none_file = map(8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    test_fill(none_file + 2 * PAGE, 3 * PAGE, 32);
    mprotect(none_file, 8 * PAGE, PROT_NONE);
    unsigned char* none_shared = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    test_fill(none_shared, 4 * PAGE, 33);
    mprotect(none_shared, 4 * PAGE, PROT_NONE);

    /* Guard pages: pages 2-3 of an anonymous region, page 1 of a private file mapping. */
    unsigned char* guarded = map(8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(guarded, 8 * PAGE, 34);
    int have_guards = madvise(guarded + 2 * PAGE, 2 * PAGE, MADV_GUARD_INSTALL) == 0;
    fd = make_file("guarded.bin", path, sizeof path, 35, 4 * PAGE);
    unsigned char* guarded_file = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    test_fill(guarded_file + 2 * PAGE, PAGE, 36);
    int have_file_guards = have_guards && madvise(guarded_file + PAGE, PAGE, MADV_GUARD_INSTALL) == 0;
    unsigned char* guarded_shared = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    test_fill(guarded_shared, 4 * PAGE, 40);
    int have_shared_guards = have_guards && madvise(guarded_shared + 2 * PAGE, PAGE, MADV_GUARD_INSTALL) == 0;
    if (have_guards && !have_shared_guards) fprintf(stderr, "no guard pages in shared mappings here: not checked\n");
    if (!have_guards) fprintf(stderr, "no guard pages on this kernel (%s): not checked\n", strerror(errno));

    /* Writable shared file mappings of files made read-only afterwards. */
    char rw_path[4200], ro_path[4200];
    fd = make_file("chmod_rw.bin", rw_path, sizeof rw_path, 37, 4 * PAGE);
    unsigned char* rw = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    test_fill(rw + PAGE, PAGE, 38);
    fd = make_file("chmod_ro.bin", ro_path, sizeof ro_path, 39, 4 * PAGE);
    unsigned char* ro = map(4 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (chmod(rw_path, 0444) != 0 || chmod(ro_path, 0444) != 0) test_fail("chmod: %s", strerror(errno));

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) {
        mprotect(none_anon, PAGE, PROT_READ | PROT_WRITE);
        none_anon[7] ^= 1;
        mprotect(none_anon, PAGE, PROT_NONE);
    }
    if (test_corrupt(2)) mprotect(none_file, 8 * PAGE, PROT_READ);
    if (test_corrupt(3)) {
        mprotect(none_shared, PAGE, PROT_READ | PROT_WRITE);
        none_shared[PAGE - 1] ^= 1;
        mprotect(none_shared, PAGE, PROT_NONE);
    }
    if (test_corrupt(4)) {
        /* the guards gone: what a restore that lost them gives */
        if (have_guards) {
            mmap(guarded + 2 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        } else {
            guarded[0] ^= 1;
        }
    }
    if (test_corrupt(5)) guarded_file[2 * PAGE] ^= 1;
    if (test_corrupt(6)) {
        mprotect(ro, 4 * PAGE, PROT_READ);
        munmap(ro, 4 * PAGE);
        fd = open(ro_path, O_RDONLY | O_CLOEXEC);
        mmap(ro, 4 * PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
        close(fd);
    }
    if (test_corrupt(7)) rw[PAGE + 3] ^= 1;
    if (test_corrupt(8)) {
        if (have_shared_guards)
            madvise(guarded_shared + 2 * PAGE, PAGE, 103 /* MADV_GUARD_REMOVE */);
        else
            guarded_shared[0] ^= 1;
    }

    static unsigned char expect[8 * PAGE];
    expect_perms(none_anon, "---p", "PROT_NONE anonymous region");
    mprotect(none_anon, 4 * PAGE, PROT_READ);
    CHECK(test_verify(none_anon, 4 * PAGE, 30) < 0, "PROT_NONE anonymous region: data differs");

    expect_perms(none_file, "---p", "PROT_NONE private file mapping");
    mprotect(none_file, 8 * PAGE, PROT_READ);
    test_fill(expect, 8 * PAGE, 31);
    test_fill(expect + 2 * PAGE, 3 * PAGE, 32);
    CHECK(memcmp(none_file, expect, 8 * PAGE) == 0, "PROT_NONE private file mapping: data differs");

    expect_perms(none_shared, "---s", "PROT_NONE shared anonymous region");
    mprotect(none_shared, 4 * PAGE, PROT_READ);
    CHECK(test_verify(none_shared, 4 * PAGE, 33) < 0, "PROT_NONE shared anonymous region: data differs");

    test_fill(expect, 8 * PAGE, 34);
    CHECK(memcmp(guarded, expect, 2 * PAGE) == 0 && memcmp(guarded + 4 * PAGE, expect + 4 * PAGE, 4 * PAGE) == 0,
          "pages around the guard pages: data differs");
    if (have_guards) {
        CHECK(faults(guarded + 2 * PAGE) && faults(guarded + 3 * PAGE + 100),
              "guard pages of the anonymous region no longer fault");
    } else {
        CHECK(memcmp(guarded + 2 * PAGE, expect + 2 * PAGE, 2 * PAGE) == 0, "anonymous region: data differs");
    }
    test_fill(expect, 4 * PAGE, 35);
    test_fill(expect + 2 * PAGE, PAGE, 36);
    CHECK(memcmp(guarded_file, expect, PAGE) == 0 && memcmp(guarded_file + 2 * PAGE, expect + 2 * PAGE, 2 * PAGE) == 0,
          "private file mapping around its guard page: data differs");
    if (have_file_guards) CHECK(faults(guarded_file + PAGE), "guard page of the private file mapping no longer faults");
    test_fill(expect, 4 * PAGE, 40);
    CHECK(memcmp(guarded_shared, expect, 2 * PAGE) == 0 && memcmp(guarded_shared + 3 * PAGE, expect + 3 * PAGE, PAGE) == 0,
          "shared anonymous region around its guard page: data differs");
    if (have_shared_guards)
        CHECK(faults(guarded_shared + 2 * PAGE), "guard page of the shared anonymous region no longer faults");

    test_fill(expect, 4 * PAGE, 37);
    test_fill(expect + PAGE, PAGE, 38);
    /* (page 2 is written below, also by a copy restored beside this process in the modes
     * that run both) */
    CHECK(memcmp(rw, expect, 2 * PAGE) == 0 && memcmp(rw + 3 * PAGE, expect + 3 * PAGE, PAGE) == 0,
          "writable shared mapping of a file now 0444: content differs");
    uint64_t token = test_now_ns() | 1;
    *(volatile uint64_t*)(rw + 2 * PAGE) = token;
    fd = open(rw_path, O_RDONLY | O_CLOEXEC);
    uint64_t on_disk = 0;
    CHECK(fd >= 0 && pread(fd, &on_disk, 8, 2 * PAGE) == 8 && on_disk == token,
          "a write through the shared mapping of a file now 0444 is not in the file");
    if (fd >= 0) close(fd);
    test_fill(expect, 4 * PAGE, 39);
    CHECK(memcmp(ro, expect, 4 * PAGE) == 0, "read-only shared mapping of a file now 0444: content differs");
    CHECK(mprotect(ro, 4 * PAGE, PROT_READ | PROT_WRITE) == 0,
          "shared mapping of a file opened O_RDWR (now 0444) cannot be made writable: %s", strerror(errno));
    return test_finish();
}
