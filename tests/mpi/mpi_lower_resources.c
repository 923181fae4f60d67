/* Through libckpt_mpi: after MPI_Init the lower half's threads, fds and memory ranges (what a
 * dump must leave out) are listed, plausible, and none of them is the application's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/mpi/lower_half.h"

static int failed;
#define CHECK(c, ...)                                   \
    do {                                                \
        if (!(c)) {                                     \
            failed = 1;                                 \
            fprintf(stderr, "lower resources: " __VA_ARGS__); \
            fputc('\n', stderr);                        \
        }                                               \
    } while (0)

static int in_ranges(const struct ckpt_mpi_range* r, size_t n, uint64_t a) {
    for (size_t i = 0; i < n; ++i)
        if (a >= r[i].start && a < r[i].end)
            return 1;
    return 0;
}

int main(int argc, char** argv) {
    int provided = -1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    CHECK(provided == MPI_THREAD_FUNNELED, "MPI_THREAD_MULTIPLE answered with %d, not FUNNELED", provided);

    ckpt_mpi_lower_threads_fn threads_fn = (ckpt_mpi_lower_threads_fn)dlsym(RTLD_DEFAULT, "ckpt_mpi_lower_threads");
    ckpt_mpi_lower_fds_fn fds_fn = (ckpt_mpi_lower_fds_fn)dlsym(RTLD_DEFAULT, "ckpt_mpi_lower_fds");
    ckpt_mpi_lower_memory_fn memory_fn = (ckpt_mpi_lower_memory_fn)dlsym(RTLD_DEFAULT, "ckpt_mpi_lower_memory");
    ckpt_mpi_lower_signals_fn signals_fn = (ckpt_mpi_lower_signals_fn)dlsym(RTLD_DEFAULT, "ckpt_mpi_lower_signals");
    if (!threads_fn || !fds_fn || !memory_fn || !signals_fn) {
        printf("lower resources FAILED: not running through libckpt_mpi\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    pid_t tids[64];
    size_t nt = threads_fn(tids, 64);
    CHECK(nt >= 1 && nt <= 64, "%zu threads", nt);
    for (size_t i = 0; i < nt && i < 64; ++i) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d", (int)tids[i]);
        CHECK(tids[i] != getpid(), "the main thread is listed");
        CHECK(access(path, F_OK) == 0, "thread %d is not ours", (int)tids[i]);
    }

    int fds[256];
    size_t nf = fds_fn(fds, 256);
    CHECK(nf >= 1 && nf <= 256, "%zu fds", nf);
    int sockets = 0;
    for (size_t i = 0; i < nf && i < 256; ++i) {
        struct stat st;
        CHECK(fds[i] > 2, "stdio fd %d is listed", fds[i]);
        CHECK(fstat(fds[i], &st) == 0, "fd %d is not open", fds[i]);
        if (S_ISSOCK(st.st_mode))
            ++sockets;
    }
    CHECK(sockets >= 1, "no socket among %zu fds (the PMIx connection at least)", nf);
    int mine = open("/proc/self/status", O_RDONLY); /* the application's own fd */
    size_t nf2 = fds_fn(fds, 256);
    for (size_t i = 0; i < nf2 && i < 256; ++i)
        CHECK(fds[i] != mine, "the application's fd %d is listed", mine);
    close(mine);

    struct ckpt_mpi_range ranges[512];
    size_t nm = memory_fn(ranges, 512);
    CHECK(nm >= 1 && nm <= 512, "%zu memory ranges", nm);
    size_t bytes = 0;
    for (size_t i = 0; i < nm && i < 512; ++i) {
        CHECK(ranges[i].start < ranges[i].end, "empty range");
        CHECK(i == 0 || ranges[i - 1].end < ranges[i].start, "ranges not sorted and merged");
        bytes += ranges[i].end - ranges[i].start;
    }
    /* The real libmpi's code is the lower half's; the application's code, heap and stack not. */
    FILE* maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int libmpi_seen = 0, upper_seen = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) != 2)
            continue;
        if (strstr(line, "libopen-pal.so") || strstr(line, "libmpi.so.40.")) {
            libmpi_seen = 1;
            CHECK(in_ranges(ranges, nm, a), "lower half library not listed: %s", line);
        }
        if (strstr(line, "/upper/libmpi.so.40")) {
            upper_seen = 1;
            CHECK(!in_ranges(ranges, nm, a), "upper half listed: %s", line);
        }
    }
    fclose(maps);
    CHECK(libmpi_seen && upper_seen, "both halves should be mapped");
    int on_stack = 0;
    void* on_heap = malloc(64);
    CHECK(!in_ranges(ranges, nm, (uint64_t)(uintptr_t)&main), "main() is listed");
    CHECK(!in_ranges(ranges, nm, (uint64_t)(uintptr_t)&on_stack), "the stack is listed");
    CHECK(!in_ranges(ranges, nm, (uint64_t)(uintptr_t)on_heap), "the heap is listed");
    free(on_heap);

    /* Open MPI installs its backtrace printers (SIGSEGV and others) from the lower half. */
    int sigs[64];
    size_t ns = signals_fn(sigs, 64);
    int segv = 0;
    for (size_t i = 0; i < ns && i < 64; ++i) {
        struct sigaction sa;
        CHECK(sigaction(sigs[i], NULL, &sa) == 0 && sa.sa_handler != SIG_DFL, "signal %d has no handler", sigs[i]);
        segv |= sigs[i] == SIGSEGV;
    }
    CHECK(segv, "SIGSEGV's handler is not listed (%zu signals)", ns);
    signal(SIGUSR2, SIG_IGN); /* the application's own */
    ns = signals_fn(sigs, 64);
    for (size_t i = 0; i < ns && i < 64; ++i)
        CHECK(sigs[i] != SIGUSR2, "the application's SIGUSR2 is listed");

    MPI_Barrier(MPI_COMM_WORLD);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && !any)
        printf("lower resources ok: %zu threads, %zu fds (%d sockets), %zu ranges, %zu KiB, %zu signals\n", nt, nf,
               sockets, nm, bytes / 1024, ns);
    if (rank == 0 && any)
        printf("lower resources FAILED\n");
    MPI_Finalize();
    return any;
}
