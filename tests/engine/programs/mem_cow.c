/* mem_cow: pages a parent and its forked children still share copy-on-write stay shared
 * after the restore, and every page written by either side since the fork has that side's
 * content.
 *
 *   parent: 64 MiB of private anonymous memory, every page filled, and a 4 MiB private
 *           mapping of a file of its own, 960 of its 1024 pages written (private copies),
 *           the last 64 left as the file's pages; then three children are forked.
 *   after the fork: the parent writes anon pages [0, 512) and file pages [0, 32); child i
 *           writes anon pages [1024 + 512 i, 1536 + 512 i), file pages [100 + 32 i, 132 + 32 i)
 *           and a few single pages; child 2 also drops anon pages [4096, 4352) (MADV_DONTNEED:
 *           zeros for it, the parent's data for the others); child 1 writes a page of the
 *           file the parent had left to the file.
 *
 * Checked after the restore, by every process itself:
 *   content  every page of both mappings as that process last saw it: its own writes, zeros
 *            where it dropped pages, the data from before the fork elsewhere (a child does
 *            not see the parent's later writes, nor the parent a child's);
 *   sharing  the pages nobody wrote since the fork are shared again: /proc/self/smaps
 *            Shared_Clean + Shared_Dirty of each mapping covers at least 99% of them (of the
 *            file mapping, of its copied pages); and, as
 *            root with the tree's own /proc, each child's anonymous pages nobody wrote are the
 *            same physical pages as the parent's (/proc/self/pagemap against
 *            /proc/PPID/pagemap, at least 99% of them; 1% is left for pages swapped out).
 *            Before the engine kept them shared, a restored child had copies of its own:
 *            nothing shared, and the tree used 4 x 68 MiB instead of about 70 MiB.
 *   forks    the parent's mappings that no child keeps are left out of the children's forks
 *            at restore (MADV_DONTFORK for the time of each fork): afterwards they are
 *            inherited by a fork again and none has VmFlags "dc", while a mapping the parent
 *            itself left out of forks still is left out. The parent maps `later` (64 pages)
 *            and `kept_out` (4 pages, MADV_DONTFORK) after the forks; after the restore it
 *            forks a new child that reads `later` and anonymous pages, and finds `kept_out`
 *            not mapped. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define ANON_PAGES 16384ul /* 64 MiB */
#define FILE_PAGES 1024ul  /* 4 MiB */
#define FILE_LEFT 960ul    /* pages [FILE_LEFT, FILE_PAGES) stay the file's */
#define CHILDREN 3

enum { SEED_ORIG = 1, SEED_FILE = 2, SEED_PRIV = 3, SEED_PARENT = 10, SEED_CHILD = 20 };

static char* anon;
static char* filemap;
#define LATER_PAGES 64ul
#define KEPT_OUT_PAGES 4ul
static char* later;    /* mapped after the forks: no child keeps it */
static char* kept_out; /* MADV_DONTFORK by the parent itself */

/* The parent's mappings made after the forks, apart from each other (a hole between them,
 * so that no mapping lies next to the one left out of forks). */
static void map_after_forks(void) {
    char* around = test_mmap(NULL, (KEPT_OUT_PAGES + 2) * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(around, PAGE);
    munmap(around + (KEPT_OUT_PAGES + 1) * PAGE, PAGE);
    kept_out = around + PAGE;
    test_fill(kept_out, KEPT_OUT_PAGES * PAGE, 77);
    CHECK(madvise(kept_out, KEPT_OUT_PAGES * PAGE, MADV_DONTFORK) == 0, "madvise(MADV_DONTFORK)");
    later = test_mmap(NULL, LATER_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(later, LATER_PAGES * PAGE, 78);
}


/* role: -1 for the parent, 0..CHILDREN-1 for a child. */
static int anon_written(int role, unsigned long p) {
    if (role < 0) return p < 512;
    if (p >= 1024 + 512ul * role && p < 1536 + 512ul * role) return 1;
    return p == 8000ul + role || p == 12000ul + 7 * role;
}
static int anon_dropped(int role, unsigned long p) { return role == 2 && p >= 4096 && p < 4352; }
static int file_written(int role, unsigned long p) {
    if (role < 0) return p < 32;
    if (p >= 100 + 32ul * role && p < 132 + 32ul * role) return 1;
    return role == 1 && p == 970;
}
static uint64_t seed(int kind, int role, unsigned long p) { return (uint64_t)(kind + role + 1) * 1000003u + p; }

/* Writes what role writes after the fork. */
static void write_after_fork(int role) {
    for (unsigned long p = 0; p < ANON_PAGES; p++) {
        if (anon_written(role, p)) test_fill(anon + p * PAGE, PAGE, seed(SEED_CHILD, role, p));
    }
    for (unsigned long p = 0; p < FILE_PAGES; p++)
        if (file_written(role, p)) test_fill(filemap + p * PAGE, PAGE, seed(SEED_CHILD, role, p + ANON_PAGES));
    if (role == 2) madvise(anon + 4096 * PAGE, 256 * PAGE, MADV_DONTNEED);
}

static void check_content(const char* who, int role) {
    unsigned long bad = 0, first = 0;
    for (unsigned long p = 0; p < ANON_PAGES; p++) {
        const char* at = anon + p * PAGE;
        int ok;
        if (anon_dropped(role, p)) ok = test_is_zero(at, PAGE);
        else if (anon_written(role, p)) ok = test_verify(at, PAGE, seed(SEED_CHILD, role, p)) < 0;
        else ok = test_verify(at, PAGE, seed(SEED_ORIG, 0, p)) < 0;
        if (!ok && bad++ == 0) first = p;
    }
    CHECK(bad == 0, "%s: %lu anonymous pages have the wrong content, the first is page %lu", who, bad, first);
    bad = 0;
    for (unsigned long p = 0; p < FILE_PAGES; p++) {
        const char* at = filemap + p * PAGE;
        uint64_t want = file_written(role, p) ? seed(SEED_CHILD, role, p + ANON_PAGES)
                        : p < FILE_LEFT       ? seed(SEED_PRIV, 0, p)
                                              : seed(SEED_FILE, 0, p);
        if (test_verify(at, PAGE, want) >= 0 && bad++ == 0) first = p;
    }
    CHECK(bad == 0, "%s: %lu pages of the private file mapping have the wrong content, the first is page %lu",
          who, bad, first);
}

static unsigned long shared_kb(const void* addr) {
    char clean[64], dirty[64];
    test_smaps_field(addr, "Shared_Clean", clean, sizeof clean);
    test_smaps_field(addr, "Shared_Dirty", dirty, sizeof dirty);
    return strtoul(clean, NULL, 10) + strtoul(dirty, NULL, 10);
}

/* Pages of the mapping that role shares with another process of the tree for sure: the
 * ones it never wrote or dropped since the fork, and for a child not the parent's either
 * (the parent's new copies are its own; the child keeps the old one). */
static void check_shared(const char* who, int role) {
    unsigned long want = 0;
    for (unsigned long p = 0; p < ANON_PAGES; p++)
        want += !anon_written(role, p) && !anon_dropped(role, p) && (role < 0 || !anon_written(-1, p));
    if (test_corrupt(3)) want = ANON_PAGES + 1;
    unsigned long have = shared_kb(anon) / 4;
    CHECK(have * 100 >= want * 99, "%s: %lu of its anonymous pages are shared, expected at least %lu of %lu", who,
          have, want * 99 / 100, want);
    /* Copied pages only: the file's own pages are shared only once another process of the
     * tree has touched them since the restore. */
    want = 0;
    for (unsigned long p = 0; p < FILE_LEFT; p++)
        want += !file_written(role, p) && (role < 0 || !file_written(-1, p));
    have = shared_kb(filemap) / 4;
    CHECK(have * 100 >= want * 99, "%s: %lu pages of its private file mapping are shared, expected at least %lu of %lu",
          who, have, want * 99 / 100, want);
    char pss[64];
    test_smaps_field(anon, "Pss", pss, sizeof pss);
    fprintf(stderr, "%s: anonymous mapping Pss %s, shared %lu kB\n", who, pss, shared_kb(anon));
}

/* A child's anonymous pages nobody wrote since the fork are the parent's frames. */
static void check_same_frames(const char* who, int role) {
    if (!test_proc_is_ours() || geteuid() != 0) return; /* frame numbers read 0 otherwise */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)getppid());
    int mine = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), theirs = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(mine >= 0 && theirs >= 0, "%s: cannot open the page maps", who);
    unsigned long want = 0, same = 0;
    for (unsigned long p = 0; mine >= 0 && theirs >= 0 && p < ANON_PAGES; p++) {
        if (anon_written(role, p) || anon_dropped(role, p) || anon_written(-1, p)) continue;
        uint64_t a = 0, b = 0;
        off_t off = (off_t)(((uintptr_t)anon / PAGE + p) * 8);
        if (pread(mine, &a, 8, off) != 8 || pread(theirs, &b, 8, off) != 8) break;
        const uint64_t pfn = (1ull << 55) - 1, present = 1ull << 63;
        if (test_corrupt(4) && p == 7000) b ^= 1;
        want++;
        same += (a & present) && (b & present) && (a & pfn) && (a & pfn) == (b & pfn);
    }
    /* A corruption above changes one page: the check must then be exact. */
    unsigned long need = test_corrupt(4) ? want : want * 99 / 100;
    CHECK(want > 0 && same >= need, "%s: %lu of %lu pages nobody wrote are the parent's frames (need %lu)", who, same,
          want, need);
    if (mine >= 0) close(mine);
    if (theirs >= 0) close(theirs);
}

/* After the restore: fork flags as the parent left them, and a new child inherits them. */
static void check_forks(void) {
    CHECK(!test_has_vma_flag(anon, "dc") && !test_has_vma_flag(filemap, "dc") && !test_has_vma_flag(later, "dc"),
          "parent: a mapping it never left out of forks has VmFlags dc");
    CHECK(test_has_vma_flag(kept_out, "dc"), "parent: the mapping it left out of forks (MADV_DONTFORK) lost VmFlags dc");
    pid_t kid = fork();
    if (kid == 0) {
        int bad = test_verify(later, LATER_PAGES * PAGE, 78) >= 0 || test_verify(anon + 9000 * PAGE, PAGE, seed(SEED_ORIG, 0, 9000)) >= 0 ||
                  madvise(kept_out, PAGE, MADV_NORMAL) == 0;
        _exit(bad ? 1 : 0);
    }
    CHECK(kid > 0, "fork after the restore");
    if (kid > 0) test_expect_child_ok(kid, "child forked after the restore (reads `later` and anonymous pages, "
                                           "finds the mapping left out of forks not mapped)");
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    anon = test_mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned long p = 0; p < ANON_PAGES; p++) test_fill(anon + p * PAGE, PAGE, seed(SEED_ORIG, 0, p));

    char path[4096];
    test_data_path(path, sizeof path, "mem_cow.data");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0, "open %s", path);
    static char page[PAGE];
    for (unsigned long p = 0; p < FILE_PAGES; p++) {
        test_fill(page, PAGE, seed(SEED_FILE, 0, p));
        if (write(fd, page, PAGE) != (ssize_t)PAGE) test_fail("write %s", path);
    }
    filemap = test_mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    for (unsigned long p = 0; p < FILE_LEFT; p++) test_fill(filemap + p * PAGE, PAGE, seed(SEED_PRIV, 0, p));
    for (unsigned long p = FILE_LEFT; p < FILE_PAGES; p++) (void)*(volatile char*)(filemap + p * PAGE);

    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        test_sync_t sync;
        test_sync_init(&sync);
        kids[i] = fork();
        if (kids[i] == 0) {
            char who[32];
            snprintf(who, sizeof who, "child %d", i);
            write_after_fork(i);
            test_sync_signal(&sync);
            test_wait_check();
            if (test_corrupt(2) && i == 1) anon[1024 * PAGE + 600 * PAGE] ^= 1;
            check_content(who, i);
            check_shared(who, i);
            check_same_frames(who, i);
            test_child_exit();
        }
        test_sync_wait(&sync);
    }
    write_after_fork(-1);
    map_after_forks();

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) anon[9000 * PAGE] ^= 1;
    check_content("parent", -1);
    check_shared("parent", -1);
    check_forks();
    for (int i = 0; i < CHILDREN; i++) {
        kill(kids[i], SIGTERM);
        test_expect_child_ok(kids[i], "child");
    }
    return test_finish();
}
