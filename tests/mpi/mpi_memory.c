/* A rank with MB MiB of touched memory that keeps communicating (an allreduce every 10 ms)
 * until it is killed: what the checkpoint benchmark dumps (tests/bench/mpi_bench.sh).
 *   mpi_memory MB */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    size_t bytes = (size_t)(argc > 1 ? atoi(argv[1]) : 256) << 20;
    unsigned char* mem = malloc(bytes);
    if (!mem) MPI_Abort(MPI_COMM_WORLD, 1);
    /* Not zero pages and not all alike: page data the dump must write. */
    for (size_t i = 0; i < bytes; i += 64) mem[i] = (unsigned char)(i >> 6);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) fprintf(stderr, "memory: %zu MiB per rank touched\n", bytes >> 20);
    for (;;) {
        uint64_t mine = mem[(size_t)rand() % bytes], all = 0;
        MPI_Allreduce(&mine, &all, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
