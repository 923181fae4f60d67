/* mem_thp: memory backed by transparent huge pages at the dump is backed by huge pages after
 * the restore (the restore advises MADV_HUGEPAGE before it writes the pages), in the root and
 * in a child (whose pages the restore writes while it makes other processes).
 *
 *   full    16 MiB, 2 MiB aligned, MADV_HUGEPAGE, every page written;
 *   sparse  16 MiB, 2 MiB aligned, MADV_HUGEPAGE, one 4 KiB page of every 2 MiB written: the
 *           huge pages' other pages are zero, which the image does not hold;
 *   child   a child with a full region of its own.
 *
 * Checked after restore, by each process itself: content, VmFlags "hg", and AnonHugePages of
 * each region (/proc/self/smaps) at least half of what it was before the dump (which must be
 * more than 0). When /sys/kernel/mm/transparent_hugepage/enabled is "never" no huge page can
 * exist: the AnonHugePages checks are skipped (said in the log), the rest is checked. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define HUGE (2ul << 20)
#define REGION (16ul << 20)

static int thp_never;

static char* huge_region(void) {
    char* raw = test_mmap(NULL, REGION + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char* at = (char*)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    CHECK(madvise(at, REGION, MADV_HUGEPAGE) == 0, "madvise(MADV_HUGEPAGE)");
    return at;
}

static unsigned long huge_kb(const void* at) {
    char v[64];
    test_smaps_field(at, "AnonHugePages", v, sizeof v);
    return strtoul(v, NULL, 10);
}

static void fill_sparse(char* at, uint64_t s) {
    for (unsigned long off = 0; off < REGION; off += HUGE) test_fill(at + off + 5 * PAGE, PAGE, s + off);
}

static void check_sparse(const char* who, const char* at, uint64_t s) {
    for (unsigned long off = 0; off < REGION; off += HUGE) {
        CHECK(test_is_zero(at + off, 5 * PAGE) && test_is_zero(at + off + 6 * PAGE, HUGE - 6 * PAGE),
              "%s: sparse region: zero pages of huge page %lu are not zero", who, off / HUGE);
        CHECK(test_verify(at + off + 5 * PAGE, PAGE, s + off) < 0, "%s: sparse region: page of huge page %lu changed",
              who, off / HUGE);
    }
}

/* The region's AnonHugePages after the restore against before the dump. */
static void check_huge(const char* who, const char* what, const void* at, unsigned long before, int corruption) {
    char flags[256];
    test_vma_flags(at, flags, sizeof flags);
    CHECK(strstr(flags, " hg") != NULL, "%s: %s lost MADV_HUGEPAGE (VmFlags:%s)", who, what, flags);
    if (thp_never) {
        fprintf(stderr, "%s: %s: transparent huge pages are disabled on this machine (\"never\"): "
                "AnonHugePages not checked\n", who, what);
        return;
    }
    unsigned long now = huge_kb(at);
    if (test_corrupt(corruption)) now = 0;
    fprintf(stderr, "%s: %s: AnonHugePages %lu kB before the dump, %lu kB after the restore\n", who, what, before, now);
    CHECK(before > 0, "%s: %s had no huge page before the dump (the test could not set up)", who, what);
    CHECK(now * 2 >= before && now > 0, "%s: %s: AnonHugePages %lu kB after the restore, %lu kB before the dump",
          who, what, now, before);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    char mode[128] = "";
    if (test_read_text("/sys/kernel/mm/transparent_hugepage/enabled", mode, sizeof mode) > 0)
        thp_never = strstr(mode, "[never]") != NULL;

    char* full = huge_region();
    test_fill(full, REGION, 11);
    char* sparse = huge_region();
    fill_sparse(sparse, 12);
    unsigned long full_before = huge_kb(full), sparse_before = huge_kb(sparse);

    test_sync_t sync;
    test_sync_init(&sync);
    pid_t kid = fork();
    if (kid == 0) {
        char* own = huge_region();
        test_fill(own, REGION, 13);
        unsigned long own_before = huge_kb(own);
        test_sync_signal(&sync);
        test_wait_check();
        if (test_corrupt(4)) own[PAGE] ^= 1;
        CHECK(test_verify(own, REGION, 13) < 0, "child: its region changed");
        check_huge("child", "its region", own, own_before, 3);
        test_child_exit();
    }
    test_sync_wait(&sync);

    test_ready();
    test_wait_check();
    if (test_corrupt(1)) full[3 * PAGE] ^= 1;
    CHECK(test_verify(full, REGION, 11) < 0, "full region changed");
    check_sparse("root", sparse, 12);
    check_huge("root", "full region", full, full_before, 2);
    check_huge("root", "sparse region", sparse, sparse_before, 2);
    kill(kid, SIGTERM);
    test_expect_child_ok(kid, "child");
    return test_finish();
}
