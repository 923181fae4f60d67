/* An MPI job with state worth checkpointing, unmodified (nothing of ckpt in it): a 1-D heat
 * diffusion over a ring of ranks. Every rank holds a slice of the rod and exchanges its edge
 * cells with its neighbours every step; every 10 steps the ranks agree on the rod's
 * checksum (an allreduce). At the end rank 0 prints the final checksum and writes it to
 * ANSWER_FILE: a run that was checkpointed, killed and restored must write the same bits
 * as one that was not.
 *
 *   mpi-job STEPS MS_PER_STEP ANSWER_FILE      (under srun --mpi=pmix or mpirun)
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CELLS 4096 /* per rank */

static uint64_t fold(const double* v, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; ++i) {
        uint64_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        h = (h ^ bits) * 1099511628211ull;
    }
    return h;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 4) {
        if (rank == 0) fprintf(stderr, "usage: mpi-job STEPS MS_PER_STEP ANSWER_FILE\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int steps = atoi(argv[1]), ms = atoi(argv[2]);
    double* rod = calloc(CELLS + 2, sizeof *rod);
    double* next = calloc(CELLS + 2, sizeof *next);
    for (int i = 1; i <= CELLS; ++i) rod[i] = (double)((rank * CELLS + i) % 97) / 7.0;
    char host[MPI_MAX_PROCESSOR_NAME];
    int len;
    MPI_Get_processor_name(host, &len);
    printf("start: rank %d of %d on %s\n", rank, size, host);
    fflush(stdout);
    int left = (rank + size - 1) % size, right = (rank + 1) % size;
    for (int step = 1; step <= steps; ++step) {
        MPI_Sendrecv(&rod[1], 1, MPI_DOUBLE, left, 0, &rod[CELLS + 1], 1, MPI_DOUBLE, right, 0, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        MPI_Sendrecv(&rod[CELLS], 1, MPI_DOUBLE, right, 1, &rod[0], 1, MPI_DOUBLE, left, 1, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
        for (int i = 1; i <= CELLS; ++i) next[i] = rod[i] + 0.25 * (rod[i - 1] - 2 * rod[i] + rod[i + 1]);
        double* t = rod;
        rod = next;
        next = t;
        if (step % 10 == 0 || step == steps) {
            uint64_t mine = fold(&rod[1], CELLS), all = 0;
            MPI_Allreduce(&mine, &all, 1, MPI_UINT64_T, MPI_BXOR, MPI_COMM_WORLD);
            if (rank == 0 && (step % 50 == 0 || step == steps)) {
                printf("step %d of %d: checksum %016llx\n", step, steps, (unsigned long long)all);
                fflush(stdout);
            }
            if (step == steps && rank == 0) {
                FILE* f = fopen(argv[3], "w");
                if (!f || fprintf(f, "%016llx\n", (unsigned long long)all) < 0 || fclose(f) != 0) {
                    perror(argv[3]);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
            }
        }
        if (ms > 0) {
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    free(rod);
    free(next);
    MPI_Finalize();
    return 0;
}
