/* mem_vmflags: mapping attributes that are not protections nor madvise advice.
 *
 * State checked after restore:
 *  - an mlock'ed region: still locked (VmFlags "lo"), its data kept, the unlocked pages
 *    beside it not locked;
 *  - an mseal'ed region (linux 6.10): still sealed (VmFlags "sl"; munmap and mprotect fail
 *    with EPERM), its data kept, the unsealed pages beside it not sealed (skipped, and said
 *    so, where the kernel has no mseal);
 *  - a region locked with MLOCK_ONFAULT, one page touched: still locked on fault ("lo" and
 *    "lf"), its untouched pages still not resident (a plain mlock would populate them);
 *  - read-ahead advice MADV_SEQUENTIAL ("sr") and MADV_RANDOM ("rr"), KSM's MADV_MERGEABLE
 *    ("mg", where the kernel has KSM), a MAP_NORESERVE mapping ("nr"), a MAP_DROPPABLE one
 *    ("dp", linux 6.11). */
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
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
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
    test_init(argc, argv, 9);

    /* pages 1-2 locked of 4 */
    unsigned char* locked = map(4 * PAGE);
    test_fill(locked, 4 * PAGE, 50);
    if (mlock(locked + PAGE, 2 * PAGE) != 0) test_fail("mlock: %s", strerror(errno));

    /* pages 0-1 sealed of 4 */
    unsigned char* sealed = map(4 * PAGE);
    test_fill(sealed, 4 * PAGE, 51);
    int have_mseal = syscall(SYS_mseal, sealed, 2 * PAGE, 0) == 0;
    if (!have_mseal) fprintf(stderr, "no mseal on this kernel (%s): not checked\n", strerror(errno));

    unsigned char* on_fault = map(4 * PAGE);
    if (syscall(SYS_mlock2, on_fault, 4 * PAGE, MLOCK_ONFAULT) != 0) test_fail("mlock2: %s", strerror(errno));
    on_fault[0] = 7;
    unsigned char* sequential = map(2 * PAGE);
    unsigned char* random_read = map(2 * PAGE);
    if (madvise(sequential, 2 * PAGE, MADV_SEQUENTIAL) != 0 || madvise(random_read, 2 * PAGE, MADV_RANDOM) != 0)
        test_fail("madvise: %s", strerror(errno));
    unsigned char* mergeable = map(2 * PAGE);
    int have_ksm = madvise(mergeable, 2 * PAGE, MADV_MERGEABLE) == 0;
    if (!have_ksm) fprintf(stderr, "no KSM on this kernel (%s): not checked\n", strerror(errno));
    unsigned char* noreserve = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (noreserve == MAP_FAILED) test_fail("mmap(MAP_NORESERVE): %s", strerror(errno));
    unsigned char* droppable = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
    if (droppable == MAP_FAILED) fprintf(stderr, "no MAP_DROPPABLE on this kernel (%s): not checked\n", strerror(errno));
    else droppable[0] = 1;

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) munlock(locked + PAGE, 2 * PAGE);
    if (test_corrupt(2)) locked[2 * PAGE + 1] ^= 1;
    if (test_corrupt(3)) mlock(locked, PAGE);
    unsigned char* check_sealed = test_corrupt(4) ? sealed + 2 * PAGE : sealed;
    if (test_corrupt(5)) sealed[PAGE + 9] ^= 1;
    if (test_corrupt(6)) madvise(sequential, 2 * PAGE, MADV_NORMAL);
    if (test_corrupt(7)) mlock(on_fault, 4 * PAGE); /* populated, no longer on fault */
    if (test_corrupt(8)) madvise(random_read, PAGE, MADV_NORMAL);
    if (test_corrupt(9) && have_ksm) madvise(mergeable, 2 * PAGE, MADV_UNMERGEABLE);
    if (test_corrupt(9) && !have_ksm) madvise(sequential, PAGE, MADV_NORMAL);

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

    unsigned char resident[4] = {0};
    CHECK(mincore(on_fault, 4 * PAGE, resident) == 0, "mincore: %s", strerror(errno));
    CHECK(test_has_vma_flag(on_fault, "lo") && test_has_vma_flag(on_fault, "lf"),
          "the region locked with MLOCK_ONFAULT is no longer locked on fault");
    CHECK(on_fault[0] == 7 && (resident[0] & 1) && !(resident[1] & 1) && !(resident[3] & 1),
          "the region locked on fault: pages resident %d%d%d%d, expected 1000", resident[0] & 1, resident[1] & 1,
          resident[2] & 1, resident[3] & 1);
    CHECK(test_has_vma_flag(sequential, "sr") && test_has_vma_flag(sequential + PAGE, "sr"), "MADV_SEQUENTIAL lost");
    CHECK(test_has_vma_flag(random_read, "rr") && test_has_vma_flag(random_read + PAGE, "rr"), "MADV_RANDOM lost");
    CHECK(!have_ksm || test_has_vma_flag(mergeable, "mg"), "MADV_MERGEABLE lost");
    CHECK(noreserve == MAP_FAILED || test_has_vma_flag(noreserve, "nr"), "MAP_NORESERVE lost");
    CHECK(droppable == MAP_FAILED || test_has_vma_flag(droppable, "dp"), "MAP_DROPPABLE lost");
    return test_finish();
}
