/* tree_fill: a tree of 13 processes whose pages are inherited copy-on-write down two levels,
 * restored with every process's pages in place before any child of it is made (the restore
 * fills pages in the background while it makes the next processes).
 *
 *   root      64 MiB private anonymous region R, every page written (seed of R)
 *   |- c0..c3 each writes its own stripe of R (64 pages) and fills a 16 MiB region of its
 *   |         own, Ci (seed of ci), then forks two grandchildren
 *   |  `- g0, g1  each writes its own stripe of R and of Ci, and fills 4 MiB of its own
 *
 * Pages nobody wrote after a fork are not in the child's image: the restore keeps them from
 * the fork of the restored parent. A child made before its parent's pages were written would
 * see zeros or a part of them.
 *
 * Checked after restore, by every process itself: every page of R as it saw it (its own
 * stripe, the stripe its parent wrote before forking it, the root's data elsewhere); every
 * page of its parent's region Ci, likewise; its own region. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define R_PAGES 16384ul /* 64 MiB */
#define C_PAGES 4096ul  /* 16 MiB */
#define G_PAGES 1024ul  /* 4 MiB */
#define STRIPE 64ul
#define CHILDREN 4
#define GRANDCHILDREN 2

static char* root_region;
static char* child_region;
static char* own_region;

/* Who writes which stripe: child i pages [256 + 512 i, +STRIPE) of R; grandchild j of child
 * i pages [4096 + 1024 i + 128 j, +STRIPE) of R and [1024 + 256 j, +STRIPE) of Ci. */
static unsigned long r_stripe(int child, int grandchild) {
    return grandchild < 0 ? 256 + 512ul * child : 4096 + 1024ul * child + 128ul * grandchild;
}
static uint64_t seed(int region, int child, int grandchild, unsigned long page) {
    return ((uint64_t)region * 1000 + (uint64_t)(child + 1) * 10 + (uint64_t)(grandchild + 1)) * 1000003u + page;
}

static void fill_pages(char* base, unsigned long first, unsigned long n, int region, int child, int grandchild) {
    for (unsigned long p = first; p < first + n; p++) test_fill(base + p * PAGE, PAGE, seed(region, child, grandchild, p));
}

/* The seed page p of R must have for process (child, grandchild): -1 -1 is the root. */
static uint64_t r_want(int child, int grandchild, unsigned long p) {
    if (child >= 0 && p >= r_stripe(child, -1) && p < r_stripe(child, -1) + STRIPE) return seed(1, child, -1, p);
    if (grandchild >= 0 && p >= r_stripe(child, grandchild) && p < r_stripe(child, grandchild) + STRIPE)
        return seed(1, child, grandchild, p);
    return seed(1, -1, -1, p);
}

static void check_region(const char* who, const char* what, const char* base, unsigned long pages, int region,
                         int child, int grandchild) {
    unsigned long bad = 0, first = 0;
    for (unsigned long p = 0; p < pages; p++) {
        uint64_t want;
        if (region == 1) {
            want = r_want(child, grandchild, p);
        } else if (region == 2 && grandchild >= 0 && p >= 1024 + 256ul * grandchild &&
                   p < 1024 + 256ul * grandchild + STRIPE) {
            want = seed(2, child, grandchild, p);
        } else if (region == 2) {
            want = seed(2, child, -1, p);
        } else {
            want = seed(3, child, grandchild, p);
        }
        if (test_verify(base + p * PAGE, PAGE, want) >= 0 && bad++ == 0) first = p;
    }
    CHECK(bad == 0, "%s: %lu pages of %s have the wrong content, the first is page %lu", who, bad, what, first);
}

static void grandchild(int child, int g) {
    char who[48];
    snprintf(who, sizeof who, "grandchild %d.%d", child, g);
    fill_pages(root_region, r_stripe(child, g), STRIPE, 1, child, g);
    fill_pages(child_region, 1024 + 256ul * g, STRIPE, 2, child, g);
    own_region = test_mmap(NULL, G_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill_pages(own_region, 0, G_PAGES, 3, child, g);
}

static void child(int i, test_sync_t* up) {
    char who[48];
    snprintf(who, sizeof who, "child %d", i);
    fill_pages(root_region, r_stripe(i, -1), STRIPE, 1, i, -1);
    child_region = test_mmap(NULL, C_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill_pages(child_region, 0, C_PAGES, 2, i, -1);
    pid_t kids[GRANDCHILDREN];
    for (int g = 0; g < GRANDCHILDREN; g++) {
        test_sync_t sync;
        test_sync_init(&sync);
        kids[g] = fork();
        if (kids[g] == 0) {
            char gwho[48];
            snprintf(gwho, sizeof gwho, "grandchild %d.%d", i, g);
            grandchild(i, g);
            test_sync_signal(&sync);
            test_wait_check();
            if (test_corrupt(3) && i == 3 && g == 1) child_region[(1024 + 256 * g + 10) * PAGE] ^= 1;
            check_region(gwho, "the root's region", root_region, R_PAGES, 1, i, g);
            check_region(gwho, "its parent's region", child_region, C_PAGES, 2, i, g);
            check_region(gwho, "its own region", own_region, G_PAGES, 3, i, g);
            test_child_exit();
        }
        test_sync_wait(&sync);
    }
    test_sync_signal(up);
    test_wait_check();
    if (test_corrupt(2) && i == 2) child_region[3000 * PAGE + 7] ^= 1;
    check_region(who, "the root's region", root_region, R_PAGES, 1, i, -1);
    check_region(who, "its own region", child_region, C_PAGES, 2, i, -1);
    for (int g = 0; g < GRANDCHILDREN; g++) {
        kill(kids[g], SIGTERM);
        test_expect_child_ok(kids[g], "grandchild");
    }
    test_child_exit();
}

int main(int argc, char** argv) {
    test_init(argc, argv, 3);
    root_region = test_mmap(NULL, R_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill_pages(root_region, 0, R_PAGES, 1, -1, -1);
    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        test_sync_t sync;
        test_sync_init(&sync);
        kids[i] = fork();
        if (kids[i] == 0) child(i, &sync);
        test_sync_wait(&sync);
    }
    test_ready();
    test_wait_check();
    if (test_corrupt(1)) root_region[12345 * PAGE] ^= 1;
    check_region("root", "its region", root_region, R_PAGES, 1, -1, -1);
    for (int i = 0; i < CHILDREN; i++) {
        kill(kids[i], SIGTERM);
        test_expect_child_ok(kids[i], "child");
    }
    return test_finish();
}
