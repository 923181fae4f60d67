/* Benchmark workload: N processes, each holding MiB of touched random data.
 *   bench_workload READY_FILE MIB PROCS [mixed]
 *                                         set up, create READY_FILE, then sleep until killed;
 *                                         mixed: the memory as a program's rather than random,
 *                                         in 4 MiB stretches: a quarter zeros, a quarter
 *                                         structured (ascending int32 indices, doubles of few
 *                                         distinct values), half random;
 *                                         at each SIGUSR1 (PROCS 1) write 1 % of its pages at
 *                                         random, then create READY_FILE.N (N = 1, 2, ...)
 *   bench_workload --memcpy MIB           print this machine's memcpy bandwidth in GiB/s
 *   bench_workload --writer READY_FILE MIB HOT_PERCENT COUNTER_FILE
 *                                         one process: MIB of random data, then writes 64
 *                                         bytes into pages picked at random among the first
 *                                         HOT_PERCENT of them, as fast as it can, forever; the
 *                                         count of writes so far kept in COUNTER_FILE (8
 *                                         bytes, mapped shared: read by the benchmark while
 *                                         the process runs) every 256 writes
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fill_random(uint64_t *p, size_t words, uint64_t seed) {
    uint64_t x = seed | 1;
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
}

static int mixed;

/* Zeros, structured data or random data by 4 MiB stretch (mixed). */
static void fill_mixed(uint64_t *p, size_t words, uint64_t seed) {
    const size_t stretch = (4u << 20) / 8;
    for (size_t at = 0; at < words; at += stretch) {
        size_t n = words - at < stretch ? words - at : stretch;
        switch ((at / stretch) % 4) {
        case 0:
            memset(p + at, 0, n * 8);
            break;
        case 1: {
            /* Half ascending indices (a sparse matrix's columns), half doubles of a few
             * hundred distinct values (a coarse field). */
            uint32_t *idx = (uint32_t *)(p + at);
            for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)((at + i) / 3 + i % 3);
            double *d = (double *)(p + at + n / 2);
            uint64_t x = seed | 1;
            for (size_t i = 0; i < n / 2; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d[i] = 273.0 + (double)(x % 400) * 0.25;
            }
            break;
        }
        default:
            fill_random(p + at, n, seed + at);
        }
    }
}

static void *touched(size_t bytes, uint64_t seed) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mixed) fill_mixed(p, bytes / 8, seed);
    else fill_random(p, bytes / 8, seed);
    return p;
}

static volatile sig_atomic_t poked;
static void on_usr1(int sig) {
    (void)sig;
    poked = 1;
}

/* --writer: an application that keeps writing its memory (the benchmark of how much a
 * dump --leave-running slows it down). */
static int writer(const char *ready, size_t bytes, int hot_percent, const char *counter_file) {
    int fd = open(counter_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 4096) != 0) return 2;
    volatile uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counter == MAP_FAILED) return 2;
    close(fd);
    uint64_t *mine = touched(bytes, 100);
    size_t hot = bytes / 4096 * (size_t)hot_percent / 100;
    if (hot == 0) hot = 1;
    fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 2;
    close(fd);
    uint64_t x = 12345, n = 0;
    for (;;) {
        for (int k = 0; k < 256; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            uint64_t *p = mine + (x % hot) * 512 + (x >> 56) % 504;
            for (int w = 0; w < 8; w++) p[w] = x + (uint64_t)w;
        }
        n += 256;
        __atomic_store_n(counter, n, __ATOMIC_RELAXED);
    }
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--writer") == 0)
        return writer(argv[2], (size_t)atol(argv[3]) << 20, atoi(argv[4]), argv[5]);
    if (argc == 3 && strcmp(argv[1], "--memcpy") == 0) {
        size_t bytes = (size_t)atol(argv[2]) << 20;
        void *a = touched(bytes, 1), *b = touched(bytes, 2);
        double best = 1e9;
        for (int i = 0; i < 5; i++) {
            double t = now();
            memcpy(b, a, bytes);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("%.2f\n", bytes / best / (1 << 30));
        return 0;
    }
    if ((argc != 4 && argc != 5) || (argc == 5 && strcmp(argv[4], "mixed") != 0)) {
        fprintf(stderr, "usage: bench_workload READY_FILE MIB PROCS [mixed] | --memcpy MIB\n");
        return 2;
    }
    mixed = argc == 5;
    size_t bytes = (size_t)atol(argv[2]) << 20;
    int procs = atoi(argv[3]);
    int pipefd[2];
    if (pipe(pipefd) != 0) return 2;
    for (int i = 1; i < procs; i++) {
        if (fork() == 0) {
            close(pipefd[0]);
            touched(bytes, 100 + i);
            char c = 1;
            if (write(pipefd[1], &c, 1) != 1) return 2;
            close(pipefd[1]);
            for (;;) pause();
        }
    }
    close(pipefd[1]);
    signal(SIGUSR1, on_usr1);
    /* SIGUSR1 is taken only inside sigsuspend: a signal that came between a test of `poked`
     * and pause() would wait for the next one (a dump just before widens that window). */
    sigset_t usr1, waiting;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &waiting);
    sigdelset(&waiting, SIGUSR1);
    uint64_t *mine = touched(bytes, 100);
    for (int i = 1; i < procs; i++) {
        char c;
        if (read(pipefd[0], &c, 1) != 1) return 2;
    }
    close(pipefd[0]);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 2;
    close(fd);
    uint64_t x = 12345;
    for (int round = 1;; round++) {
        while (!poked) sigsuspend(&waiting);
        poked = 0;
        size_t pages = bytes / 4096;
        for (size_t n = 0; n < pages / 100; n++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            fill_random(mine + (x % pages) * 512, 512, x);
        }
        char name[4096];
        snprintf(name, sizeof name, "%s.%d", argv[1], round);
        fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return 2;
        close(fd);
    }
}
