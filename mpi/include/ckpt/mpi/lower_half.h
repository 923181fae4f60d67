/* What the lower half of a split rank owns, for a dump to leave out (the engine's
 * DumpOptions::exclude_threads, exclude_fds and exclude_memory; its signal handlers). Exported by libckpt_mpi (the
 * upper half, which carries the soname of the real libmpi); a program or tool inside the rank
 * finds them with dlsym(RTLD_DEFAULT, ...) as they exist only when the rank runs through ckpt.
 *
 * Each function fills up to `max` entries and returns how many there are (call again with a
 * bigger buffer if that is more than max). Before MPI_Init they return 0. */
#ifndef CKPT_MPI_LOWER_HALF_H
#define CKPT_MPI_LOWER_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ckpt_mpi_range {
    uint64_t start; /* [start, end) */
    uint64_t end;
};

/* Threads the lower half created that are still alive (kernel thread ids). */
size_t ckpt_mpi_lower_threads(pid_t* out, size_t max);
/* File descriptors the lower half opened that are still open, in increasing order. */
size_t ckpt_mpi_lower_fds(int* out, size_t max);
/* Address ranges the lower half mapped (its libraries, its libc's heap, its shared segments),
 * sorted and merged. */
size_t ckpt_mpi_lower_memory(struct ckpt_mpi_range* out, size_t max);

/* Signals whose handler the lower half installed and which still run code of the lower half
 * (Open MPI's backtrace printers): a restored rank gets them from its fresh lower half. */
size_t ckpt_mpi_lower_signals(int* out, size_t max);

typedef size_t (*ckpt_mpi_lower_signals_fn)(int*, size_t);
typedef size_t (*ckpt_mpi_lower_threads_fn)(pid_t*, size_t);
typedef size_t (*ckpt_mpi_lower_fds_fn)(int*, size_t);
typedef size_t (*ckpt_mpi_lower_memory_fn)(struct ckpt_mpi_range*, size_t);

#ifdef __cplusplus
}
#endif

#endif
