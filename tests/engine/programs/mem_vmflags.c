/* mem_vmflags: mapping attributes that are not protections nor madvise advice.
 *
 * State checked after restore:
 *  - an mlock'ed region: still locked (VmFlags "lo"), its data kept, the unlocked pages
 *    beside it not locked;
 *  - an mseal'ed region (linux 6.10): still sealed (VmFlags "sl"; munmap and mprotect fail
 *    with EPERM), its data kept, the unsealed pages beside it not sealed (skipped, and said
 *    so, where the kernel has no mseal). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#ifndef SYS_mseal
#define SYS_mseal 462
#endif

static unsigned char* map(size_t len) {
    unsigned char* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        test_fail("mmap %zu bytes: %s", len, strerror(errno));
        test_finish();
        _exit(1);
    }
    return p;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 5);

    /* pages 1-2 locked of 4 */
    unsigned char* locked = map(4 * PAGE);
    test_fill(locked, 4 * PAGE, 50);
    if (mlock(locked + PAGE, 2 * PAGE) != 0) test_fail("mlock: %s", strerror(errno));

    /* pages 0-1 sealed of 4 */
    unsigned char* sealed = map(4 * PAGE);
    test_fill(sealed, 4 * PAGE, 51);
    int have_mseal = syscall(SYS_mseal, sealed, 2 * PAGE, 0) == 0;
    if (!have_mseal) fprintf(stderr, "no mseal on this kernel (%s): not checked\n", strerror(errno));

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) munlock(locked + PAGE, 2 * PAGE);
    if (test_corrupt(2)) locked[2 * PAGE + 1] ^= 1;
    if (test_corrupt(3)) mlock(locked, PAGE);
    unsigned char* check_sealed = test_corrupt(4) ? sealed + 2 * PAGE : sealed;
    if (test_corrupt(5)) sealed[PAGE + 9] ^= 1;

    CHECK(test_verify(locked, 4 * PAGE, 50) < 0, "mlock'ed region: data differs");
    CHECK(test_has_vma_flag(locked + PAGE, "lo") && test_has_vma_flag(locked + 2 * PAGE, "lo"), "mlock'ed pages are no longer locked");
    CHECK(!test_has_vma_flag(locked, "lo") && !test_has_vma_flag(locked + 3 * PAGE, "lo"), "pages beside the mlock'ed ones are locked");

    CHECK(test_verify(sealed, 4 * PAGE, 51) < 0, "mseal'ed region: data differs");
    if (have_mseal) {
        CHECK(test_has_vma_flag(check_sealed, "sl"), "mseal'ed pages are no longer sealed (VmFlags)");
        errno = 0;
        CHECK(mprotect(check_sealed, PAGE, PROT_READ) != 0 && errno == EPERM,
              "mprotect of an mseal'ed page: %s, expected EPERM", errno ? strerror(errno) : "success");
        errno = 0;
        CHECK(munmap(check_sealed + PAGE, PAGE) != 0 && errno == EPERM,
              "munmap of an mseal'ed page: %s, expected EPERM", errno ? strerror(errno) : "success");
        CHECK(!test_has_vma_flag(sealed + 2 * PAGE, "sl"), "pages beside the mseal'ed ones are sealed");
    }
    return test_finish();
}
