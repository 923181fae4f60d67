/* mem_mremap: regions moved, grown and shrunk with mremap.
 *
 * State checked after restore:
 *  - private anonymous regions: one moved to a new address (right after another anonymous
 *    region: still two mappings, not merged into one), one grown (old pages keep their data, a
 *    page touched in the new part too, the rest reads 0), one shrunk (the cut-off part is
 *    unmapped);
 *  - a private file mapping moved, so that its offset no longer follows its address: pages
 *    copied on write keep their data, the others show the file at the recorded offset
 *    (a pwrite to the file after restore is seen in them), its /proc/self/maps line;
 *  - a shared file mapping moved and grown, a shared anonymous region moved: content, and
 *    writes reach the file. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul

static unsigned char* map_rw(void* addr, size_t len, int flags, int fd, off_t off) {
    return test_mmap(addr, len, PROT_READ | PROT_WRITE, flags, fd, off);
}

static unsigned char* remap(void* old, size_t old_len, size_t new_len, int flags, void* to) {
    unsigned char* p = mremap(old, old_len, new_len, flags, to);
    if (p == MAP_FAILED) {
        test_fail("mremap %p %zu -> %zu: %s", old, old_len, new_len, strerror(errno));
        test_finish();
        _exit(1);
    }
    return p;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 8);
    const int anon = MAP_PRIVATE | MAP_ANONYMOUS;

    /* 64 pages reserved (PROT_NONE) to place moved regions in. */
    unsigned char* area = mmap(NULL, 64 * PAGE, PROT_NONE, anon, -1, 0);
    if (area == MAP_FAILED) test_fail("mmap: %s", strerror(errno));

    /* Moved: [neighbour 4 pages][moved 8 pages], the neighbour mapped after the move. */
    unsigned char* moved_from = map_rw(NULL, 8 * PAGE, anon, -1, 0);
    test_fill(moved_from, 8 * PAGE, 40);
    unsigned char* moved = remap(moved_from, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, area + 4 * PAGE);
    unsigned char* neighbour = map_rw(area, 4 * PAGE, anon | MAP_FIXED, -1, 0);
    test_fill(neighbour, 4 * PAGE, 41);

    /* Grown from 4 to 12 pages (moved if it must), page 6 touched afterwards. */
    unsigned char* grown = map_rw(NULL, 4 * PAGE, anon, -1, 0);
    test_fill(grown, 4 * PAGE, 42);
    grown = remap(grown, 4 * PAGE, 12 * PAGE, MREMAP_MAYMOVE, NULL);
    test_fill(grown + 6 * PAGE, PAGE, 43);

    /* Shrunk from 12 to 4 pages. */
    unsigned char* shrunk = map_rw(area + 16 * PAGE, 12 * PAGE, anon | MAP_FIXED, -1, 0);
    test_fill(shrunk, 12 * PAGE, 44);
    remap(shrunk, 12 * PAGE, 4 * PAGE, 0, NULL);

    /* A private file mapping (file pages 2-9) moved, pages 1 and 2 copied on write. */
    char path[4200];
    test_data_path(path, sizeof path, "mremap.bin");
    static unsigned char filebuf[16 * PAGE];
    test_fill(filebuf, sizeof filebuf, 45);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, filebuf, sizeof filebuf) != (ssize_t)sizeof filebuf)
        test_fail("write %s: %s", path, strerror(errno));
    unsigned char* pf = map_rw(NULL, 8 * PAGE, MAP_PRIVATE, fd, 2 * PAGE);
    test_fill(pf + PAGE, 2 * PAGE, 46);
    pf = remap(pf, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, area + 32 * PAGE);
    char moved_line[512] = "", neighbour_line[512] = "";
    test_vma_line(moved, moved_line, sizeof moved_line);
    test_vma_line(neighbour, neighbour_line, sizeof neighbour_line);
    char pf_line[512] = "";
    test_vma_line(pf, pf_line, sizeof pf_line);

    /* A shared file mapping (file pages 8-11) moved and grown to pages 8-15. */
    unsigned char* sf = map_rw(NULL, 4 * PAGE, MAP_SHARED, fd, 8 * PAGE);
    sf = remap(sf, 4 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, area + 48 * PAGE);
    test_fill(sf + 6 * PAGE, PAGE, 47);
    test_fill(filebuf + 14 * PAGE, PAGE, 47);
    close(fd);

    /* A shared anonymous region moved. */
    unsigned char* sa = map_rw(NULL, 4 * PAGE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    test_fill(sa, 4 * PAGE, 48);
    sa = remap(sa, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, area + 58 * PAGE);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) moved[PAGE] ^= 1;
    if (test_corrupt(2)) grown[8 * PAGE] = 1;
    if (test_corrupt(3)) map_rw(shrunk + 4 * PAGE, PAGE, anon | MAP_FIXED, -1, 0);
    if (test_corrupt(4)) pf[PAGE] ^= 1;
    if (test_corrupt(5)) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        map_rw(pf + 4 * PAGE, PAGE, MAP_PRIVATE | MAP_FIXED, fd, 0);
        close(fd);
    }
    if (test_corrupt(6)) sf[7 * PAGE] ^= 1;
    if (test_corrupt(7)) sa[3] ^= 1;
    if (test_corrupt(8)) {
        /* the two merged into one, as a restore in place gives */
        unsigned char* tmp = map_rw(NULL, 12 * PAGE, anon, -1, 0);
        memcpy(tmp, neighbour, 12 * PAGE);
        map_rw(neighbour, 12 * PAGE, anon | MAP_FIXED, -1, 0);
        memcpy(neighbour, tmp, 12 * PAGE);
    }

    static unsigned char expect[16 * PAGE];
    CHECK(test_verify(moved, 8 * PAGE, 40) < 0, "moved anonymous region: data differs");
    CHECK(test_verify(neighbour, 4 * PAGE, 41) < 0, "anonymous region before the moved one: data differs");
    /* Two mappings still: not merged into one (an mremap across both fails). */
    char line_now[512] = "";
    test_vma_line(moved, line_now, sizeof line_now);
    CHECK(strcmp(line_now, moved_line) == 0, "moved anonymous region: maps line '%s', was '%s'", line_now, moved_line);
    test_vma_line(neighbour, line_now, sizeof line_now);
    CHECK(strcmp(line_now, neighbour_line) == 0, "anonymous region before the moved one: maps line '%s', was '%s'",
          line_now, neighbour_line);
    test_fill(expect, 4 * PAGE, 42);
    CHECK(memcmp(grown, expect, 4 * PAGE) == 0, "grown anonymous region: old pages differ");
    CHECK(test_verify(grown + 6 * PAGE, PAGE, 43) < 0, "grown anonymous region: the new page written differs");
    CHECK(test_is_zero(grown + 4 * PAGE, 2 * PAGE) && test_is_zero(grown + 7 * PAGE, 5 * PAGE),
          "grown anonymous region: untouched new pages are not zero");
    test_fill(expect, 12 * PAGE, 44);
    CHECK(memcmp(shrunk, expect, 4 * PAGE) == 0, "shrunk anonymous region: data differs");
    char line[512];
    CHECK(test_vma_line(shrunk + 4 * PAGE, line, sizeof line) != 0, "the part cut off the shrunk region is mapped: %s",
          line);

    test_fill(expect, 2 * PAGE, 46);
    CHECK(memcmp(pf + PAGE, expect, 2 * PAGE) == 0, "moved private file mapping: copied pages differ");
    /* File pages 7 and 13 are written below (also by a copy restored beside this process, in
     * the modes that run both): not compared. */
    CHECK(memcmp(pf, filebuf + 2 * PAGE, PAGE) == 0 && memcmp(pf + 3 * PAGE, filebuf + 5 * PAGE, 2 * PAGE) == 0 &&
              memcmp(pf + 6 * PAGE, filebuf + 8 * PAGE, 2 * PAGE) == 0,
          "moved private file mapping: unwritten pages differ from the file at its offset");
    char now[512] = "";
    test_vma_line(pf, now, sizeof now);
    CHECK(strcmp(now, pf_line) == 0, "moved private file mapping: maps line '%s', was '%s'", now, pf_line);
    CHECK(memcmp(sf, filebuf + 8 * PAGE, 5 * PAGE) == 0 && memcmp(sf + 6 * PAGE, filebuf + 14 * PAGE, 2 * PAGE) == 0,
          "moved and grown shared file mapping: content differs");
    CHECK(test_verify(sa, 4 * PAGE, 48) < 0, "moved shared anonymous region: data differs");

    uint64_t token = test_now_ns() | 1;
    fd = open(path, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0 && pwrite(fd, &token, 8, 7 * PAGE) == 8, "pwrite %s: %s", path, strerror(errno));
    CHECK(*(volatile uint64_t*)(pf + 5 * PAGE) == token,
          "a write to the file is not seen in the moved private mapping's unwritten page");
    *(volatile uint64_t*)(sf + 5 * PAGE) = token + 1;
    uint64_t on_disk = 0;
    CHECK(fd >= 0 && pread(fd, &on_disk, 8, 13 * PAGE) == 8 && on_disk == token + 1,
          "a write through the moved shared mapping is not in the file");
    if (fd >= 0) close(fd);
    return test_finish();
}
