/* mem_multimap: one object mapped several times keeps its content and stays one object.
 *
 * State checked after restore:
 *  - a file mapped MAP_SHARED twice at overlapping offsets (A: pages 0-15, B: pages 8-15)
 *    and MAP_PRIVATE once (P: pages 4-11, two of them copied on write): the content of
 *    each, a write through A seen through B (and back), a write through A seen in a page of
 *    P never written (still the file's page) and in the file, a write to P not in the file;
 *  - a MAP_SHARED|MAP_ANONYMOUS region duplicated with mremap(old_size = 0): both views
 *    show one object, still shared anonymous memory ("/dev/zero (deleted)" in maps, not a
 *    memfd), a write through one is seen through the other;
 *  - a memfd (no fd left) mapped MAP_SHARED twice (whole, and its second half) and
 *    MAP_PRIVATE once (one page copied): the same, through each pair. */
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

static volatile uint64_t* word(unsigned char* p) { return (volatile uint64_t*)p; }

/* A private anonymous copy in place of [p, p + len): what a restore that lost the sharing
 * would give (corruption points). */
static void unshare(unsigned char* p, size_t len) {
    static unsigned char copy[16 * PAGE];
    memcpy(copy, p, len);
    map_rw(p, len, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    memcpy(p, copy, len);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 7);

    /* The file: 16 pages of seed 10. */
    char path[4200];
    test_data_path(path, sizeof path, "multi.bin");
    static unsigned char filebuf[16 * PAGE];
    test_fill(filebuf, sizeof filebuf, 10);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, filebuf, sizeof filebuf) != (ssize_t)sizeof filebuf)
        test_fail("write %s: %s", path, strerror(errno));
    unsigned char* A = map_rw(NULL, 16 * PAGE, MAP_SHARED, fd, 0);
    unsigned char* B = map_rw(NULL, 8 * PAGE, MAP_SHARED, fd, 8 * PAGE);
    unsigned char* P = map_rw(NULL, 8 * PAGE, MAP_PRIVATE, fd, 4 * PAGE);
    test_fill(P, 2 * PAGE, 11);                 /* P pages 0-1 (file 4-5): private copies */
    volatile unsigned char sink = 0;
    for (size_t i = 2; i < 8; i++) sink += P[i * PAGE];  /* the rest: file pages, read */
    (void)sink;
    test_fill(A + 9 * PAGE, PAGE, 12);          /* file page 9: through A */
    test_fill(filebuf + 9 * PAGE, PAGE, 12);    /* what the file holds now */
    close(fd);

    /* Shared anonymous memory, seen twice. */
    unsigned char* S = map_rw(NULL, 8 * PAGE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    test_fill(S, 8 * PAGE, 13);
    unsigned char* S2 = mremap(S, 0, 8 * PAGE, MREMAP_MAYMOVE);
    if (S2 == MAP_FAILED) {
        test_fail("mremap(old_size 0): %s", strerror(errno));
        return test_finish();
    }

    /* A memfd mapped three times, its fd closed. */
    int mfd = memfd_create("multimap", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, 8 * PAGE) != 0) test_fail("memfd: %s", strerror(errno));
    unsigned char* M1 = map_rw(NULL, 8 * PAGE, MAP_SHARED, mfd, 0);
    unsigned char* M2 = map_rw(NULL, 4 * PAGE, MAP_SHARED, mfd, 4 * PAGE);
    unsigned char* MP = map_rw(NULL, 8 * PAGE, MAP_PRIVATE, mfd, 0);
    test_fill(M1, 8 * PAGE, 14);
    test_fill(MP, PAGE, 15);                    /* MP page 0: a private copy */
    for (size_t i = 1; i < 8; i++) sink += MP[i * PAGE];
    close(mfd);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) A[3 * PAGE + 5] ^= 1;
    if (test_corrupt(2)) unshare(B, 8 * PAGE);
    if (test_corrupt(3)) unshare(S2, 8 * PAGE);
    if (test_corrupt(4)) memcpy(MP, M1, PAGE);
    if (test_corrupt(5)) unshare(M2, 4 * PAGE);
    if (test_corrupt(6)) unshare(P + 6 * PAGE, PAGE);
    if (test_corrupt(7)) {
        /* S2 as a memfd's mapping, as a restore from a memfd gives */
        int m = memfd_create("ckpt-shmem", MFD_CLOEXEC);
        if (m >= 0 && ftruncate(m, 8 * PAGE) == 0 && pwrite(m, S2, 8 * PAGE, 0) == (ssize_t)(8 * PAGE))
            map_rw(S2, 8 * PAGE, MAP_SHARED | MAP_FIXED, m, 0);
        if (m >= 0) close(m);
    }

    /* Content as at dump. */
    /* File pages 10 and 11 are written below (also by a copy restored beside this process,
     * in the modes that run both): not compared. */
    CHECK(memcmp(A, filebuf, 10 * PAGE) == 0 && memcmp(A + 12 * PAGE, filebuf + 12 * PAGE, 4 * PAGE) == 0,
          "shared file mapping A: content differs");
    CHECK(memcmp(B, filebuf + 8 * PAGE, 2 * PAGE) == 0 && memcmp(B + 4 * PAGE, filebuf + 12 * PAGE, 4 * PAGE) == 0,
          "shared file mapping B: content differs");
    static unsigned char expect[8 * PAGE];
    test_fill(expect, 2 * PAGE, 11);
    CHECK(memcmp(P, expect, 2 * PAGE) == 0, "private file mapping: copied pages lost their data");
    CHECK(memcmp(P + 2 * PAGE, filebuf + 6 * PAGE, 4 * PAGE) == 0,
          "private file mapping: pages never written differ from the file");
    test_fill(expect, 8 * PAGE, 13);
    CHECK(memcmp(S, expect, 8 * PAGE) == 0, "shared anonymous region: content differs");
    CHECK(memcmp(S2, expect, 8 * PAGE) == 0, "shared anonymous region (mremap copy): content differs");
    char line[512] = "";
    const char* anon_name = "/dev/zero (deleted)";
    test_vma_line(S2, line, sizeof line);
    CHECK(strlen(line) > strlen(anon_name) && strcmp(line + strlen(line) - strlen(anon_name), anon_name) == 0,
          "shared anonymous region is no longer shared anonymous memory: %s", line);
    test_fill(expect, 8 * PAGE, 14);
    CHECK(memcmp(M1, expect, 8 * PAGE) == 0, "memfd mapping M1: content differs");
    CHECK(memcmp(M2, expect + 4 * PAGE, 4 * PAGE) == 0, "memfd mapping M2: content differs");
    CHECK(memcmp(MP + PAGE, expect + PAGE, 7 * PAGE) == 0, "private memfd mapping: unwritten pages differ");
    test_fill(expect, PAGE, 15);
    CHECK(memcmp(MP, expect, PAGE) == 0, "private memfd mapping: copied page lost its data");

    /* Still one object each. */
    uint64_t token = test_now_ns() | 1;
    *word(A + 10 * PAGE) = token;
    CHECK(*word(B + 2 * PAGE) == token, "a write through A (file page 10) is not seen through B");
    CHECK(*word(P + 6 * PAGE) == token, "a write through A (file page 10) is not seen in P's unwritten page");
    *word(B + 3 * PAGE) = token + 1;
    CHECK(*word(A + 11 * PAGE) == token + 1, "a write through B (file page 11) is not seen through A");
    *word(P) = token + 2;
    CHECK(*word(A + 4 * PAGE) != token + 2, "a write to a private page reached the shared mapping");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t on_disk = 0;
    CHECK(fd >= 0 && pread(fd, &on_disk, 8, 10 * PAGE) == 8 && on_disk == token,
          "a write through A is not in %s", path);
    if (fd >= 0) close(fd);
    *word(S + 5 * PAGE) = token + 3;
    CHECK(*word(S2 + 5 * PAGE) == token + 3, "a write through the shared anonymous region is not seen in its copy");
    *word(S2 + 6 * PAGE) = token + 4;
    CHECK(*word(S + 6 * PAGE) == token + 4, "a write through the mremap copy is not seen in the region");
    *word(M2 + PAGE) = token + 5;
    CHECK(*word(M1 + 5 * PAGE) == token + 5, "a write through M2 is not seen through M1");
    CHECK(*word(MP + 5 * PAGE) == token + 5, "a write through M2 is not seen in MP's unwritten page");
    *word(MP + 2 * PAGE) = token + 6;
    CHECK(*word(M1 + 2 * PAGE) != token + 6, "a write to a private memfd page reached the memfd");
    return test_finish();
}
