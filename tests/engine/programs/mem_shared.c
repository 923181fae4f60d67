/* mem_shared_anon / mem_shared_file (one source, SHARED_FILE selects): a MAP_SHARED region
 * shared by a parent and its child is one object again after restore.
 *
 * State checked after restore:
 *  - both processes see the data written before the dump (the child wrote half of it);
 *  - a value written after restore by one process is seen by the other, both ways;
 *  - mem_shared_file: the mapping is of the same file, and what is written through it after
 *    restore reaches the file (pread sees it). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define PAGE 4096ul
#define PAGES 64
#define LEN (PAGES * PAGE)
/* page 62: token from the parent after restore; page 63: answer from the child */
#define TOKEN_OFF (62 * PAGE)
#define ANSWER_OFF (63 * PAGE)

static volatile uint64_t* word_at(unsigned char* base, size_t off) {
    return (volatile uint64_t*)(base + off);
}

static int wait_for_value(volatile uint64_t* w, uint64_t value) {
    for (int i = 0; i < 5000; i++) { /* 5 s */
        if (*w == value) return 1;
        usleep(1000);
    }
    return 0;
}

static void check_content(unsigned char* mem, const char* who) {
    CHECK(test_verify(mem, 30 * PAGE, 1) < 0, "%s: pages written by the parent changed", who);
    CHECK(test_verify(mem + 30 * PAGE, 30 * PAGE, 2) < 0, "%s: pages written by the child changed",
          who);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    unsigned char* mem;
    char path[4200] = "";
    (void)path;
#ifdef SHARED_FILE
    test_data_path(path, sizeof path, "shared.bin");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || ftruncate(fd, LEN) != 0) test_fail("create %s: %s", path, strerror(errno));
    mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
#else
    mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
#endif
    if (mem == MAP_FAILED) {
        test_fail("mmap: %s", strerror(errno));
        return test_finish();
    }
    test_fill(mem, 30 * PAGE, 1);

    test_sync_t started;
    test_sync_init(&started);
    pid_t child = fork();
    if (child == 0) {
        test_fill(mem + 30 * PAGE, 30 * PAGE, 2);
        test_sync_signal(&started);
        test_wait_check();
        if (test_corrupt(3)) mem[30 * PAGE] ^= 1;
        check_content(mem, "child");
        uint64_t token = *word_at(mem, TOKEN_OFF);
        CHECK(token != 0, "child: no token from the parent after restore");
        if (test_corrupt(4)) token = 0;
        *word_at(mem, ANSWER_OFF) = token + 1;
        test_child_exit();
    }
    test_sync_wait(&started);
    test_ready();
    test_wait_check();

    if (test_corrupt(1)) mem[5] ^= 1;
    check_content(mem, "parent");
    /* A token no earlier run can have left behind. */
    uint64_t token = test_now_ns() | 1;
    if (test_corrupt(2)) {
        /* write into a private copy instead: the child must not see it */
        mmap(mem + TOKEN_OFF, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0);
    }
    *word_at(mem, TOKEN_OFF) = token;
    kill(child, SIGTERM);
    CHECK(wait_for_value(word_at(mem, ANSWER_OFF), token + 1),
          "the child's answer written after restore is not visible to the parent");
    test_expect_child_ok(child, "child");
#ifdef SHARED_FILE
    uint64_t on_disk = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && pread(fd, &on_disk, 8, ANSWER_OFF) == 8 && on_disk == token + 1,
          "value written through the shared mapping after restore is not in %s", path);
    if (fd >= 0) close(fd);
#endif
    return test_finish();
}
