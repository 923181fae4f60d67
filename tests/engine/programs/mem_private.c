/* mem_private: private memory of every kind keeps its content, holes and protections.
 *
 * State checked after restore:
 *  - private anonymous memory: touched pages keep their pattern, never-touched pages read 0;
 *  - the brk heap: program break unchanged, heap content kept;
 *  - mprotect'd pages: r--, --- (content kept under PROT_NONE) and rw- around a guard gap;
 *  - MADV_DONTNEED holes read as zeros, the pages around them keep their data;
 *  - a transparent-huge-page region (MADV_HUGEPAGE, flag "hg" kept) with its content;
 *  - a 64 MiB region of random data, by checksum;
 *  - a private file mapping with copy-on-write pages: modified pages keep the private
 *    data, the others show the file, and the file itself is unchanged. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define SPARSE_PAGES 256
#define HEAP_BYTES (1ul << 20)
#define DONTNEED_PAGES 16
#define THP_BYTES (4ul << 20)
#define BIG_BYTES (64ul << 20)
#define FILE_PAGES 16

static void expect_perms(const void* addr, const char* want, const char* what) {
    char perms[5];
    test_vma_perms(addr, perms);
    CHECK(strcmp(perms, want) == 0, "%s at %p: protection %s, expected %s", what, addr, perms,
          want);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 10);

    /* Sparse anonymous memory: even pages written, odd pages never touched. */
    unsigned char* sparse = test_mmap(NULL, SPARSE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < SPARSE_PAGES; i += 2) test_fill(sparse + i * PAGE, PAGE, 100 + i);

    /* brk heap. */
    unsigned char* heap = sbrk((intptr_t)HEAP_BYTES);
    if (heap == (void*)-1) test_fail("sbrk: %s", strerror(errno));
    test_fill(heap, HEAP_BYTES, 2);

    /* Protections: r-- | --- | guard gap (---) | rw-. */
    unsigned char* prot = test_mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(prot, 4 * PAGE, 3);
    mprotect(prot, PAGE, PROT_READ);
    mprotect(prot + PAGE, PAGE, PROT_NONE);  /* data hidden behind PROT_NONE */
    munmap(prot + 2 * PAGE, PAGE);           /* a real gap */
    mmap(prot + 2 * PAGE, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

    /* MADV_DONTNEED holes. */
    unsigned char* holes = test_mmap(NULL, DONTNEED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(holes, DONTNEED_PAGES * PAGE, 4);
    madvise(holes + 4 * PAGE, 4 * PAGE, MADV_DONTNEED);

    /* Transparent huge pages: a 2 MiB-aligned region with MADV_HUGEPAGE. */
    unsigned char* thp_raw = test_mmap(NULL, THP_BYTES + (2ul << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char* thp =
        (unsigned char*)(((uintptr_t)thp_raw + (2ul << 20) - 1) & ~((2ul << 20) - 1));
    madvise(thp, THP_BYTES, MADV_HUGEPAGE);
    test_fill(thp, THP_BYTES, 5);

    /* 64 MiB of random data. */
    unsigned char* big = test_mmap(NULL, BIG_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    test_fill(big, BIG_BYTES, 6);
    uint64_t big_hash = test_hash(big, BIG_BYTES);

    /* Private file mapping with two copy-on-write pages. */
    char path[4200];
    test_data_path(path, sizeof path, "private.bin");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    static unsigned char filebuf[FILE_PAGES * PAGE];
    test_fill(filebuf, sizeof filebuf, 7);
    if (fd < 0 || write(fd, filebuf, sizeof filebuf) != (ssize_t)sizeof filebuf)
        test_fail("write %s: %s", path, strerror(errno));
    unsigned char* fmap = mmap(NULL, sizeof filebuf, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fmap == MAP_FAILED) test_fail("mmap %s: %s", path, strerror(errno));
    close(fd);
    test_fill(fmap + 2 * PAGE, 2 * PAGE, 8);

    void* brk_end = sbrk(0);
    test_ready();
    test_wait_check();

    if (test_corrupt(1)) sparse[5 * PAGE - 1] ^= 1;
    if (test_corrupt(2)) sparse[3 * PAGE + 7] = 1;
    if (test_corrupt(3)) heap[HEAP_BYTES / 2] ^= 0x80;
    if (test_corrupt(4)) mprotect(prot, PAGE, PROT_READ | PROT_WRITE);
    if (test_corrupt(5)) holes[5 * PAGE] = 9;
    if (test_corrupt(6)) madvise(thp, THP_BYTES, MADV_NOHUGEPAGE);
    if (test_corrupt(7)) big[BIG_BYTES - 5] ^= 4;
    if (test_corrupt(8)) memcpy(fmap + 2 * PAGE, filebuf + 2 * PAGE, PAGE);
    if (test_corrupt(9)) sbrk(PAGE);
    if (test_corrupt(10)) {
        mprotect(prot + PAGE, PAGE, PROT_READ | PROT_WRITE);
        prot[PAGE + 10] ^= 1;
        mprotect(prot + PAGE, PAGE, PROT_NONE);
    }

    for (size_t i = 0; i < SPARSE_PAGES; i++) {
        unsigned char* page = sparse + i * PAGE;
        if (i % 2 == 0)
            CHECK(test_verify(page, PAGE, 100 + i) < 0, "anonymous page %zu lost its data", i);
        else
            CHECK(test_is_zero(page, PAGE), "never-touched anonymous page %zu is not zero", i);
    }

    CHECK(sbrk(0) == brk_end, "program break moved: %p, expected %p", sbrk(0), brk_end);
    ptrdiff_t bad = test_verify(heap, HEAP_BYTES, 2);
    CHECK(bad < 0, "brk heap differs at offset %td", bad);

    expect_perms(prot, "r--p", "read-only page");
    expect_perms(prot + PAGE, "---p", "PROT_NONE page");
    expect_perms(prot + 3 * PAGE, "rw-p", "writable page after the guard");
    char line[512];
    CHECK(test_vma_line(prot + PAGE, line, sizeof line) == 0 &&
              test_vma_line(prot + 2 * PAGE, line, sizeof line) == 0,
          "PROT_NONE pages are no longer mapped");
    mprotect(prot + PAGE, PAGE, PROT_READ);
    CHECK(test_verify(prot, 2 * PAGE, 3) < 0, "data of the r-- / --- pages changed");
    mprotect(prot + PAGE, PAGE, PROT_NONE);
    /* test_fill of 4 pages then checking page 3 alone: compare against a fresh fill. */
    static unsigned char expect4[4 * PAGE];
    test_fill(expect4, sizeof expect4, 3);
    CHECK(memcmp(prot + 3 * PAGE, expect4 + 3 * PAGE, PAGE) == 0, "rw- page after the gap changed");

    static unsigned char expect_holes[DONTNEED_PAGES * PAGE];
    test_fill(expect_holes, sizeof expect_holes, 4);
    CHECK(test_is_zero(holes + 4 * PAGE, 4 * PAGE), "MADV_DONTNEED hole is not zero");
    CHECK(memcmp(holes, expect_holes, 4 * PAGE) == 0 &&
              memcmp(holes + 8 * PAGE, expect_holes + 8 * PAGE, 8 * PAGE) == 0,
          "pages around the MADV_DONTNEED hole changed");

    char flags[256];
    test_vma_flags(thp, flags, sizeof flags);
    CHECK(strstr(flags, " hg") != NULL, "THP region lost MADV_HUGEPAGE (VmFlags:%s)", flags);
    CHECK(test_verify(thp, THP_BYTES, 5) < 0, "THP region data changed");

    CHECK(test_hash(big, BIG_BYTES) == big_hash, "64 MiB random region checksum differs");

    static unsigned char expect_cow[2 * PAGE];
    test_fill(expect_cow, sizeof expect_cow, 8);
    CHECK(memcmp(fmap + 2 * PAGE, expect_cow, sizeof expect_cow) == 0,
          "copy-on-write pages of the private file mapping lost their data");
    CHECK(memcmp(fmap, filebuf, 2 * PAGE) == 0 &&
              memcmp(fmap + 4 * PAGE, filebuf + 4 * PAGE, (FILE_PAGES - 4) * PAGE) == 0,
          "unmodified pages of the private file mapping differ from the file");
    static unsigned char ondisk[FILE_PAGES * PAGE];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && read(fd, ondisk, sizeof ondisk) == (ssize_t)sizeof ondisk &&
              memcmp(ondisk, filebuf, sizeof ondisk) == 0,
          "the file behind the private mapping changed");
    if (fd >= 0) close(fd);

    return test_finish();
}
