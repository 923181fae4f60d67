/* A Linux AIO context (io_setup): its ring is a mapping, "/[aio] (deleted)" in maps, at the
 * address that is also the context's id.
 *
 * Set-up: a context of 8 events; four reads of a file of the program's own submitted (a
 * buffered read completes at once, inside io_submit), the first two reaped, the other two
 * left completed and unreaped in the ring. Built with AIO_INFLIGHT (mem_aio_inflight), a poll
 * request (IOCB_CMD_POLL) on the read end of an empty pipe is submitted too: it stays in
 * flight until the pipe is written.
 *
 * Checked afterwards: the ring is still mapped at the context's id; io_getevents returns the
 * two unreaped events (their data, iocb and result) and their buffers hold the file's bytes;
 * a new read submitted on the same id completes and is reaped; io_destroy succeeds. With
 * AIO_INFLIGHT the poll completes once the pipe is written.
 *
 * The engine refuses a dump of any AIO context (engine.negative.mem-aio, docs/engine.md
 * "Memory"), so only the modes without a dump run this program's checks. */
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define NREAD 4
#define REAPED 2
#define CHUNK 512

static long io_setup(unsigned n, aio_context_t* ctx) { return syscall(SYS_io_setup, n, ctx); }
static long io_destroy(aio_context_t ctx) { return syscall(SYS_io_destroy, ctx); }
static long io_submit(aio_context_t ctx, long n, struct iocb** iocbs) { return syscall(SYS_io_submit, ctx, n, iocbs); }
static long io_getevents(aio_context_t ctx, long min, long max, struct io_event* ev, struct timespec* t) {
    return syscall(SYS_io_getevents, ctx, min, max, ev, t);
}

static struct iocb cbs[NREAD + 1];
static char bufs[NREAD + 1][CHUNK];
static char content[(NREAD + 1) * CHUNK];

static void prep_read(int i, int fd) {
    memset(&cbs[i], 0, sizeof cbs[i]);
    cbs[i].aio_data = 0x1000 + (uint64_t)i;
    cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    cbs[i].aio_fildes = (uint32_t)fd;
    cbs[i].aio_buf = (uint64_t)(uintptr_t)bufs[i];
    cbs[i].aio_nbytes = CHUNK;
    cbs[i].aio_offset = (int64_t)i * CHUNK;
}

/* Checks one reaped event: read i, CHUNK bytes, the file's bytes in its buffer. */
static void check_event(const char* when, const struct io_event* e, int i) {
    CHECK(e->data == 0x1000 + (uint64_t)i && e->obj == (uint64_t)(uintptr_t)&cbs[i] && e->res == CHUNK && e->res2 == 0,
          "%s: event (data %#llx obj %#llx res %lld res2 %lld), read %d expected", when, (unsigned long long)e->data,
          (unsigned long long)e->obj, (long long)e->res, (long long)e->res2, i);
    CHECK(memcmp(bufs[i], content + i * CHUNK, CHUNK) == 0, "%s: read %d's buffer does not hold the file's bytes", when,
          i);
}

int main(int argc, char** argv) {
    test_init(argc, argv, 2);
    char path[4096];
    test_data_path(path, sizeof path, "aio-data");
    test_fill(content, sizeof content, 0xa10);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, content, sizeof content) != (ssize_t)sizeof content) {
        test_fail("file %s: %s", path, strerror(errno));
        return test_finish();
    }
    aio_context_t ctx = 0;
    if (io_setup(8, &ctx) != 0) {
        test_fail("io_setup: %s", strerror(errno));
        return test_finish();
    }
    struct iocb* list[NREAD];
    for (int i = 0; i < NREAD; i++) {
        prep_read(i, fd);
        list[i] = &cbs[i];
    }
    long n = io_submit(ctx, NREAD, list);
    CHECK(n == NREAD, "io_submit of %d reads: %ld (%s)", NREAD, n, strerror(errno));
    struct io_event ev[8];
    struct timespec wait = {5, 0};
    n = io_getevents(ctx, REAPED, REAPED, ev, &wait);
    CHECK(n == REAPED, "io_getevents: %ld (%s)", n, strerror(errno));
    for (int i = 0; i < n; i++) check_event("before", &ev[i], i);
#ifdef AIO_INFLIGHT
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) test_fail("pipe2: %s", strerror(errno));
    static struct iocb poll_cb;
    poll_cb.aio_data = 0x2000;
    poll_cb.aio_lio_opcode = IOCB_CMD_POLL;
    poll_cb.aio_fildes = (uint32_t)p[0];
    poll_cb.aio_buf = POLLIN;
    struct iocb* pl = &poll_cb;
    CHECK(io_submit(ctx, 1, &pl) == 1, "io_submit of a poll: %s", strerror(errno));
#endif
    char line[512];
    CHECK(test_vma_line((void*)(uintptr_t)ctx, line, sizeof line) == 0 && strstr(line, "/[aio]"),
          "no /[aio] mapping at the context id %#llx", (unsigned long long)ctx);

    test_ready();
    test_wait_check();

    if (test_corrupt(1)) io_getevents(ctx, 1, 1, ev, &wait); /* an unreaped event lost */
    if (test_corrupt(2)) io_destroy(ctx);                    /* the context gone */
    CHECK(test_vma_line((void*)(uintptr_t)ctx, line, sizeof line) == 0 && strstr(line, "/[aio]"),
          "no /[aio] mapping at the context id %#llx after restore", (unsigned long long)ctx);
    struct timespec none = {0, 0};
    n = io_getevents(ctx, 0, 8, ev, &none);
    CHECK(n == NREAD - REAPED, "io_getevents: %ld unreaped events (%s), %d expected", n, n < 0 ? strerror(errno) : "",
          NREAD - REAPED);
    for (int i = 0; i < n && i < NREAD - REAPED; i++) check_event("after", &ev[i], REAPED + i);
    prep_read(NREAD, fd);
    struct iocb* one = &cbs[NREAD];
    CHECK(io_submit(ctx, 1, &one) == 1, "io_submit on the context after restore: %s", strerror(errno));
    n = io_getevents(ctx, 1, 1, ev, &wait);
    CHECK(n == 1, "io_getevents of the new read: %ld (%s)", n, strerror(errno));
    if (n == 1) check_event("new read", &ev[0], NREAD);
#ifdef AIO_INFLIGHT
    CHECK(write(p[1], "x", 1) == 1, "write to the polled pipe: %s", strerror(errno));
    n = io_getevents(ctx, 1, 1, ev, &wait);
    CHECK(n == 1 && ev[0].data == 0x2000 && (ev[0].res & POLLIN), "the poll's event: %ld (data %#llx res %lld)", n,
          (unsigned long long)ev[0].data, (long long)ev[0].res);
#endif
    CHECK(io_destroy(ctx) == 0, "io_destroy: %s", strerror(errno));
    close(fd);
    unlink(path);
    return test_finish();
}
