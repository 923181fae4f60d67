/* thp_disable: each process's PR_SET_THP_DISABLE setting survives, and is in place before the
 * restore writes the process's pages.
 *
 * State checked after restore:
 *  - the root disabled transparent huge pages: PR_GET_THP_DISABLE still says so, and its
 *    MADV_HUGEPAGE region, filled before the dump, is backed by no huge page;
 *  - a child that cleared the setting it inherited from the root still has it cleared;
 *  - a child that disabled them except where advised (linux 6.18; on older kernels it keeps
 *    the inherited setting) still has that mode. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "testlib.h"

#define REGION (4ul << 20)
#define THP_DISABLE_EXCEPT_ADVISED (1 << 1)

static int thp_setting(void) { return prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0); }

/* The setting recorded before the dump must be the one after restore. */
static void check_setting(int corruption, int want, const char* who) {
    if (test_corrupt(corruption)) prctl(PR_SET_THP_DISABLE, want ? 0 : 1, 0, 0, 0);
    int got = thp_setting();
    CHECK(got == want, "%s: PR_GET_THP_DISABLE %d, expected %d", who, got, want);
}

static pid_t child(int thp_arg, unsigned long thp_flags, int corruption, const char* who) {
    test_sync_t started;
    test_sync_init(&started);
    pid_t pid = fork();
    if (pid != 0) {
        test_sync_wait(&started);
        return pid;
    }
    if (prctl(PR_SET_THP_DISABLE, thp_arg, thp_flags, 0, 0) != 0 && !(thp_flags && errno == EINVAL))
        test_fail("%s: PR_SET_THP_DISABLE: %s", who, strerror(errno));
    int want = thp_setting();
    test_sync_signal(&started);
    test_wait_check();
    check_setting(corruption, want, who);
    test_child_exit();
}

int main(int argc, char** argv) {
    test_init(argc, argv, 3);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0) test_fail("PR_SET_THP_DISABLE: %s", strerror(errno));
    int want = thp_setting();
    CHECK(want == 1, "PR_GET_THP_DISABLE %d right after setting it", want);

    /* A huge-page-aligned region asking for huge pages, filled with data. */
    unsigned char* raw = mmap(NULL, REGION + (2ul << 20), PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        test_fail("mmap: %s", strerror(errno));
        return test_finish();
    }
    unsigned char* region = (unsigned char*)(((unsigned long)raw + (2ul << 20) - 1) & ~((2ul << 20) - 1));
    madvise(region, REGION, MADV_HUGEPAGE);
    test_fill(region, REGION, 11);

    pid_t cleared = child(0, 0, 2, "child that cleared it");
    pid_t advised = child(1, THP_DISABLE_EXCEPT_ADVISED, 3, "child that kept advised regions");

    test_ready();
    test_wait_check();

    check_setting(1, want, "root");
    CHECK(test_verify(region, REGION, 11) < 0, "root: the MADV_HUGEPAGE region's data changed");
    char huge[64];
    test_smaps_field(region, "AnonHugePages", huge, sizeof huge);
    CHECK(huge[0] && strtoul(huge, NULL, 10) == 0,
          "root: THP disabled, yet its MADV_HUGEPAGE region has huge pages (AnonHugePages:%s)", huge);

    kill(cleared, SIGTERM);
    kill(advised, SIGTERM);
    test_expect_child_ok(cleared, "child that cleared it");
    test_expect_child_ok(advised, "child that kept advised regions");
    return test_finish();
}
