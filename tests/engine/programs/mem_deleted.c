/* mem_deleted: mappings of files deleted (unlinked) while mapped.
 *
 * State checked after restore:
 *  - a deleted file mapped MAP_SHARED twice at overlapping offsets (A: pages 0-15, B: pages
 *    8-15) and MAP_PRIVATE once (P: pages 4-11, two pages copied on write), no fd left:
 *    the content of each; a write through A is seen through B, in P's unwritten pages and
 *    by a child that maps the file too (one object, across processes); a write to P is not;
 *  - a second deleted file mapped MAP_SHARED read-only from an O_RDONLY fd: its content, and
 *    the mapping still refuses mprotect(PROT_WRITE) (EACCES);
 *  - the deleted names do not come back.
 *
 * Built with DELETED_LINKED (mem_deleted_linked, for engine.negative.mem-deleted-linked):
 * the deleted name of A's file has a second link, so the file is still reachable by
 * others: a copy would lose the sharing with them, the dump must refuse the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul

static volatile uint64_t* word(unsigned char* p) { return (volatile uint64_t*)p; }

static int wait_for(volatile uint64_t* w, uint64_t value) {
    for (int i = 0; i < 5000; i++) {
        if (*w == value) return 1;
        usleep(1000);
    }
    return 0;
}

static int make_file(const char* path, const unsigned char* data, size_t len, int flags) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) test_fail("write %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) test_fail("open %s: %s", path, strerror(errno));
    return fd;
}

int main(int argc, char** argv) {
    test_init(argc, argv, 6);

    char path[4200], ro_path[4200];
    test_data_path(path, sizeof path, "deleted.bin");
    test_data_path(ro_path, sizeof ro_path, "deleted_ro.bin");
    static unsigned char filebuf[16 * PAGE], robuf[4 * PAGE];
    test_fill(filebuf, sizeof filebuf, 20);
    test_fill(robuf, sizeof robuf, 23);

    int fd = make_file(path, filebuf, sizeof filebuf, O_RDWR);
#ifdef DELETED_LINKED
    char other[4200];
    test_data_path(other, sizeof other, "other-link.bin");
    unlink(other);
    if (link(path, other) != 0) test_fail("link %s: %s", other, strerror(errno));
#endif
    unsigned char* A = test_mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    unsigned char* B = test_mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 8 * PAGE);
    unsigned char* P = test_mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 4 * PAGE);
    test_fill(P, 2 * PAGE, 21);
    volatile unsigned char sink = 0;
    for (size_t i = 2; i < 8; i++) sink += P[i * PAGE];
    (void)sink;
    test_fill(A + 9 * PAGE, PAGE, 22);
    test_fill(filebuf + 9 * PAGE, PAGE, 22);
    close(fd);
    int rofd = make_file(ro_path, robuf, sizeof robuf, O_RDONLY);
    unsigned char* R = test_mmap(NULL, 4 * PAGE, PROT_READ, MAP_SHARED, rofd, 0);
    close(rofd);
    if (unlink(path) != 0 || unlink(ro_path) != 0) test_fail("unlink: %s", strerror(errno));

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        test_sync_signal(&started);
        test_wait_check();
        /* (file pages 10, 13 and 14 are written after restore) */
        CHECK(memcmp(B, filebuf + 8 * PAGE, 2 * PAGE) == 0 && memcmp(B + 3 * PAGE, filebuf + 11 * PAGE, 2 * PAGE) == 0,
              "child: shared mapping B: content differs");
        CHECK(wait_for(word(B + 5 * PAGE), *word(B + 4 * PAGE) ^ 0x5a5a),
              "child: the parent's write after restore is not seen");
        *word(B + 6 * PAGE) = *word(B + 5 * PAGE) + 1;
        test_child_exit();
    }
    test_sync_wait(&started);
    test_ready();
    test_wait_check();

    if (test_corrupt(1)) A[3 * PAGE + 5] ^= 1;
    if (test_corrupt(2)) {
        static unsigned char copy[8 * PAGE];
        memcpy(copy, B, sizeof copy);
        mmap(B, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        memcpy(B, copy, sizeof copy);
    }
    if (test_corrupt(3)) memcpy(P, filebuf + 4 * PAGE, PAGE);
    if (test_corrupt(4)) robuf[1] ^= 1;
    if (test_corrupt(5)) close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    if (test_corrupt(6)) *word(A + 4 * PAGE) ^= 1;

    CHECK(memcmp(A, filebuf, 16 * PAGE) == 0, "shared mapping A of the deleted file: content differs");
    CHECK(memcmp(B, filebuf + 8 * PAGE, 8 * PAGE) == 0, "shared mapping B of the deleted file: content differs");
    static unsigned char expect[2 * PAGE];
    test_fill(expect, sizeof expect, 21);
    CHECK(memcmp(P, expect, 2 * PAGE) == 0, "private mapping of the deleted file: copied pages lost their data");
    CHECK(memcmp(P + 2 * PAGE, filebuf + 6 * PAGE, 6 * PAGE) == 0,
          "private mapping of the deleted file: unwritten pages differ from the file");
    CHECK(memcmp(R, robuf, sizeof robuf) == 0, "read-only shared mapping of a deleted file: content differs");
    errno = 0;
    CHECK(mprotect(R, 4 * PAGE, PROT_READ | PROT_WRITE) != 0 && errno == EACCES,
          "read-only shared mapping of a deleted file: mprotect(PROT_WRITE) gave %s, expected EACCES",
          errno ? strerror(errno) : "success");
    CHECK(access(path, F_OK) != 0 && access(ro_path, F_OK) != 0, "a deleted file came back by name");

    uint64_t token = test_now_ns() | 1;
    *word(A + 10 * PAGE) = token;
    CHECK(*word(B + 2 * PAGE) == token, "a write through A is not seen through B");
    CHECK(*word(P + 6 * PAGE) == token, "a write through A is not seen in P's unwritten page");
    *word(P + PAGE) = token + 2;
    CHECK(*word(A + 5 * PAGE) != token + 2, "a write to a private page reached the shared mapping");
    /* The child waits for word 5 of B to become word 4 ^ 0x5a5a, then answers in word 6. */
    *word(A + 13 * PAGE) = *word(A + 12 * PAGE) ^ 0x5a5a;
    kill(child, SIGTERM);
    CHECK(wait_for(word(A + 14 * PAGE), *word(A + 13 * PAGE) + 1),
          "the child's write after restore is not seen by the parent");
    test_expect_child_ok(child, "child");
    return test_finish();
}
