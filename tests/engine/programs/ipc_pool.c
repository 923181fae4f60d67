/* ipc_pool: the kernel objects of a Python multiprocessing.Pool, without Python. A parent and
 * WORKERS forked workers share one task pipe (every worker reads it) and one result pipe
 * (every worker writes it); messages are framed (4-byte length, then the payload), and a
 * worker reads a whole message while holding a lock. The lock is a POSIX semaphore from
 * sem_open, unlinked at once (as multiprocessing does under fork: every process maps the
 * deleted /dev/shm/sem.* file MAP_SHARED); a second one counts the tasks done, and a
 * shm_open'ed and unlinked object holds a counter and a progress word beside it.
 *
 * State at dump: TASKS_BEFORE tasks done (their results queued, unread, in the result pipe,
 * written by several workers), then one message half written into the task pipe: one worker
 * holds the lock, has read the header and part of the payload and is blocked in read() for
 * the rest; the others are blocked in sem_wait on the lock.
 *
 * Checked after restore: the parent writes the rest of that message and TASKS_AFTER more
 * (of sizes up to beyond the pipe's capacity), then one stop message per worker. Every task
 * comes back exactly once with the checksum of exactly its payload (message boundaries kept,
 * nothing lost or duplicated in either pipe); the semaphore that counts tasks, the counter
 * in shared memory and the lock's value agree with that; every worker exits cleanly. If the
 * semaphores or the counter came back as one copy per process, workers read the task pipe at
 * once (garbage framing), hang on their own copy of the lock, or the counts differ. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define WORKERS 4
#define TASKS_BEFORE 24
#define TASKS_AFTER 300
#define TASKS (TASKS_BEFORE + 1 + TASKS_AFTER)
#define MAX_PAYLOAD (160 * 1024)
#define TIMEOUT_S 20

struct result {
    uint32_t id;
    uint32_t worker;
    uint64_t hash;
};

struct shared {
    _Atomic uint64_t done;     /* tasks finished, counted by the workers */
    _Atomic uint32_t reading;  /* a worker is inside a message (header read) */
    _Atomic uint32_t stop_seen;
};

static sem_t* lock_sem;
static sem_t* done_sem;
static struct shared* shm;
static int task_pipe[2], result_pipe[2];

/* Payload of task id: its length and bytes are a function of the id. The partial task is
 * TASKS_BEFORE; some later ones are bigger than the pipe (the writer blocks in the middle). */
static size_t payload_len(uint32_t id) {
    if (id == TASKS_BEFORE) return 3000;
    if (id % 97 == 5) return MAX_PAYLOAD - (id % 7) * 1000;
    return 1 + (id * 2654435761u) % 5000;
}

static void make_payload(uint32_t id, unsigned char* buf) { test_fill(buf, payload_len(id), 1000 + id); }

static sem_t* open_unlinked_sem(const char* what, unsigned value) {
    char name[64];
    snprintf(name, sizeof name, "/ckpt-ipc-pool-%d-%s", getpid(), what);
    sem_t* s = sem_open(name, O_CREAT | O_EXCL, 0600, value);
    if (s == SEM_FAILED) {
        test_fail("sem_open %s: %s", name, strerror(errno));
        exit(test_finish());
    }
    sem_unlink(name);
    return s;
}

/* Reads exactly n bytes (a pipe may give less than asked). */
static int read_full(int fd, void* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char*)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void* buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char*)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static void worker(uint32_t me) {
    close(task_pipe[1]);
    close(result_pipe[0]);
    unsigned char* buf = malloc(MAX_PAYLOAD);
    for (;;) {
        /* One-second waits (a dump and restore in the middle costs at most one of them). */
        int rc = -1;
        for (int tries = 0; tries < TIMEOUT_S && rc != 0; tries++) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            while ((rc = sem_timedwait(lock_sem, &ts)) != 0 && errno == EINTR) {
            }
        }
        if (rc != 0) {
            test_fail("worker %u: lock not taken in %d s: %s", me, TIMEOUT_S, strerror(errno));
            break;
        }
        uint32_t len;
        if (read_full(task_pipe[0], &len, sizeof len) != 0) {
            test_fail("worker %u: task pipe closed", me);
            sem_post(lock_sem);
            break;
        }
        if (len == 0) { /* stop */
            atomic_fetch_add(&shm->stop_seen, 1);
            sem_post(lock_sem);
            break;
        }
        if (len > MAX_PAYLOAD + 8) {
            test_fail("worker %u: message length %u: framing lost", me, len);
            sem_post(lock_sem);
            break;
        }
        atomic_store(&shm->reading, 1);
        /* The partial message: read what is there, then block in read() for the rest. */
        if (read_full(task_pipe[0], buf, len) != 0) {
            test_fail("worker %u: task pipe closed inside a message", me);
            sem_post(lock_sem);
            break;
        }
        atomic_store(&shm->reading, 0);
        sem_post(lock_sem);
        /* Payload: id (4 bytes), then the data. */
        struct result r = {0, me, 0};
        memcpy(&r.id, buf, sizeof r.id);
        r.hash = test_hash(buf + 4, len - 4);
        if (write_full(result_pipe[1], &r, sizeof r) != 0) {
            test_fail("worker %u: result pipe closed", me);
            break;
        }
        atomic_fetch_add(&shm->done, 1);
        sem_post(done_sem);
    }
    free(buf);
    test_child_exit();
}

/* Task message: length, id, payload. */
static unsigned char* task_message(uint32_t id, size_t* size) {
    size_t plen = payload_len(id);
    unsigned char* m = malloc(8 + plen);
    uint32_t len = (uint32_t)(4 + plen);
    memcpy(m, &len, 4);
    memcpy(m + 4, &id, 4);
    make_payload(id, m + 8);
    *size = 8 + plen;
    return m;
}

static int send_task(uint32_t id) {
    size_t n;
    unsigned char* m = task_message(id, &n);
    int r = write_full(task_pipe[1], m, n);
    free(m);
    return r;
}

/* Reads the result pipe until `want` results came or nothing came for TIMEOUT_S. */
static void collect(struct result* got, unsigned* count, unsigned want) {
    while (*count < want) {
        struct pollfd p = {result_pipe[0], POLLIN, 0};
        int r = poll(&p, 1, TIMEOUT_S * 1000);
        if (r <= 0) {
            test_fail("results: only %u of %u after waiting %d s", *count, want, TIMEOUT_S);
            return;
        }
        if (read_full(result_pipe[0], &got[*count], sizeof got[0]) != 0) {
            test_fail("results: pipe closed after %u", *count);
            return;
        }
        ++*count;
    }
}

int main(int argc, char** argv) {
    test_init(argc, argv, 4);
    lock_sem = open_unlinked_sem("lock", 1);
    done_sem = open_unlinked_sem("done", 0);
    char name[64];
    snprintf(name, sizeof name, "/ckpt-ipc-pool-%d-counter", getpid());
    int sfd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (sfd < 0 || ftruncate(sfd, 4096) != 0) {
        test_fail("shm_open %s: %s", name, strerror(errno));
        return test_finish();
    }
    shm_unlink(name);
    shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    close(sfd);
    if (shm == MAP_FAILED || pipe(task_pipe) != 0 || pipe(result_pipe) != 0) {
        test_fail("set-up: %s", strerror(errno));
        return test_finish();
    }

    pid_t pids[WORKERS];
    for (uint32_t w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) worker(w);
    }
    close(task_pipe[0]);
    close(result_pipe[1]);

    /* Before the dump: TASKS_BEFORE whole tasks, done; their results stay queued. */
    for (uint32_t id = 0; id < TASKS_BEFORE; id++)
        if (send_task(id) != 0) test_fail("task %u: write: %s", id, strerror(errno));
    uint64_t t0 = test_now_ns();
    while (atomic_load(&shm->done) < TASKS_BEFORE && test_now_ns() - t0 < TIMEOUT_S * 1000000000ull) usleep(1000);
    CHECK(atomic_load(&shm->done) == TASKS_BEFORE, "before the dump: %lu tasks done of %d",
          (unsigned long)atomic_load(&shm->done), TASKS_BEFORE);
    /* Then half of one message: a worker takes it and blocks in read() for the rest. */
    size_t partial_size;
    unsigned char* partial = task_message(TASKS_BEFORE, &partial_size);
    size_t first_part = 8 + 1234;
    if (write_full(task_pipe[1], partial, first_part) != 0) test_fail("partial task: write: %s", strerror(errno));
    t0 = test_now_ns();
    while (!atomic_load(&shm->reading) && test_now_ns() - t0 < TIMEOUT_S * 1000000000ull) usleep(1000);
    CHECK(atomic_load(&shm->reading), "before the dump: no worker took the partial task");
    usleep(100000); /* the worker is now blocked in read() */

    test_ready();
    test_wait_check();

    struct result* got = calloc(TASKS + WORKERS, sizeof *got);
    unsigned count = 0;
    /* The rest of the partial message, then the tasks after restore, reading results as
     * they come (a message bigger than the pipe blocks until a worker takes it). */
    if (write_full(task_pipe[1], partial + first_part, partial_size - first_part) != 0)
        test_fail("partial task: write the rest: %s", strerror(errno));
    free(partial);
    for (uint32_t id = TASKS_BEFORE + 1; id < TASKS && !test_failed(); id++) {
        if (send_task(id) != 0) test_fail("task %u: write: %s", id, strerror(errno));
        struct pollfd p = {result_pipe[0], POLLIN, 0};
        while (count < TASKS && poll(&p, 1, 0) == 1 && read_full(result_pipe[0], &got[count], sizeof got[0]) == 0)
            count++;
    }
    collect(got, &count, TASKS);
    if (test_corrupt(1) && count) count--;
    uint32_t stop = 0;
    for (int w = 0; w < WORKERS; w++)
        if (write_full(task_pipe[1], &stop, sizeof stop) != 0) test_fail("stop: write: %s", strerror(errno));

    /* Every task exactly once, with the hash of exactly its payload. */
    unsigned char* seen = calloc(TASKS, 1);
    unsigned char* buf = malloc(MAX_PAYLOAD);
    unsigned by_worker[WORKERS] = {0};
    for (unsigned i = 0; i < count; i++) {
        uint32_t id = got[i].id;
        if (id >= TASKS || got[i].worker >= WORKERS) {
            test_fail("result %u: task %u from worker %u: no such task or worker", i, id, got[i].worker);
            continue;
        }
        CHECK(!seen[id], "task %u came back twice", id);
        seen[id] = 1;
        by_worker[got[i].worker]++;
        make_payload(id, buf);
        uint64_t want_hash = test_hash(buf, payload_len(id));
        if (test_corrupt(2) && id == TASKS_BEFORE) want_hash ^= 1;
        CHECK(got[i].hash == want_hash, "task %u (worker %u): payload differs (%s)", id, got[i].worker,
              id == TASKS_BEFORE ? "the message half written at dump" : "written after restore");
    }
    for (uint32_t id = 0; id < TASKS; id++) CHECK(seen[id], "task %u never came back", id);

    for (int w = 0; w < WORKERS; w++) test_expect_child_ok(pids[w], "worker");
    uint64_t done = atomic_load(&shm->done);
    if (test_corrupt(3)) done++;
    CHECK(done == TASKS, "shared counter: %lu tasks done, want %d (one object for all processes?)",
          (unsigned long)done, TASKS);
    int v = -1;
    sem_getvalue(done_sem, &v);
    if (test_corrupt(4)) v--;
    CHECK(v == TASKS, "counting semaphore: %d, want %d (one object for all processes?)", v, TASKS);
    sem_getvalue(lock_sem, &v);
    CHECK(v == 1, "lock semaphore: %d at the end, want 1", v);
    CHECK(atomic_load(&shm->stop_seen) == WORKERS, "stop messages seen: %u of %d",
          atomic_load(&shm->stop_seen), WORKERS);
    uint32_t extra;
    CHECK(read(result_pipe[0], &extra, sizeof extra) == 0,
          "result pipe: data after the last result");
    return test_finish();
}
