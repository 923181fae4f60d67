/* Every kind of traffic the quiesce protocol must stop cleanly, in one loop: small and large
 * (rendezvous) messages, blocking and non-blocking, ANY_SOURCE, a receive posted before a
 * collective and completed after it, probes, collectives on MPI_COMM_WORLD and on a split
 * communicator. Rank 0 prints one checksum, which must not depend on how often the ranks were
 * quiesced. Usage: mpi_stress ITERATIONS */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG (64 * 1024) /* doubles: 512 KiB, far above the eager limits */

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int iterations = argc > 1 ? atoi(argv[1]) : 100;
    if (rank == 0) fprintf(stderr, "stress: started\n"); /* a restored run never prints it */
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
    double* big_out = malloc(sizeof(double) * BIG);
    double* big_in = malloc(sizeof(double) * BIG);
    uint64_t h = 1469598103934665603ULL;
    for (int it = 0; it < iterations; ++it) {
        /* A receive posted before a collective, completed after it. */
        int early = -1;
        MPI_Request early_req;
        MPI_Irecv(&early, 1, MPI_INT, left, 7, MPI_COMM_WORLD, &early_req);

        /* Ring, small, blocking. */
        int token = rank * 1000 + it, got = -1;
        MPI_Sendrecv(&token, 1, MPI_INT, right, 1, &got, 1, MPI_INT, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (got != left * 1000 + it) {
            fprintf(stderr, "rank %d: ring got %d\n", rank, got);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        h = mix(h, (uint64_t)got);

        /* Large, rendezvous, non-blocking both ways, every few rounds. */
        if (it % 4 == 0) {
            for (int i = 0; i < BIG; ++i) big_out[i] = rank + it * 0.5 + i;
            MPI_Request r[2];
            MPI_Irecv(big_in, BIG, MPI_DOUBLE, left, 2, MPI_COMM_WORLD, &r[0]);
            MPI_Isend(big_out, BIG, MPI_DOUBLE, right, 2, MPI_COMM_WORLD, &r[1]);
            MPI_Waitall(2, r, MPI_STATUSES_IGNORE);
            for (int i = 0; i < BIG; i += 4096) {
                if (big_in[i] != left + it * 0.5 + i) {
                    fprintf(stderr, "rank %d: big[%d] = %g\n", rank, i, big_in[i]);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
            }
            h = mix(h, (uint64_t)big_in[BIG - 1]);
        }

        /* Large, blocking send against a blocking receive (odd ranks send first). */
        if (it % 8 == 3 && size % 2 == 0) {
            if (rank % 2) {
                MPI_Send(big_out, BIG, MPI_DOUBLE, left, 3, MPI_COMM_WORLD);
            } else {
                MPI_Recv(big_in, BIG, MPI_DOUBLE, right, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                h = mix(h, (uint64_t)big_in[17]);
            }
        }

        /* Collectives. */
        long sum = 0, mine = rank + it;
        MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        h = mix(h, (uint64_t)sum);
        long hsum = 0;
        MPI_Allreduce(&mine, &hsum, 1, MPI_LONG, MPI_SUM, half);
        h = mix(h, (uint64_t)hsum);
        int root_value = it * 3;
        MPI_Bcast(&root_value, 1, MPI_INT, it % size, MPI_COMM_WORLD);
        h = mix(h, (uint64_t)root_value);

        /* Master/worker: every rank reports to 0, which takes them in any order. */
        if (rank == 0) {
            long total = 0;
            for (int k = 1; k < size; ++k) {
                MPI_Status st;
                MPI_Probe(MPI_ANY_SOURCE, 4, MPI_COMM_WORLD, &st);
                long v;
                MPI_Recv(&v, 1, MPI_LONG, st.MPI_SOURCE, 4, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                total += v;
            }
            h = mix(h, (uint64_t)total);
        } else {
            long v = (long)rank * it;
            MPI_Ssend(&v, 1, MPI_LONG, 0, 4, MPI_COMM_WORLD);
        }

        /* The early receive's message. */
        int e = it + rank;
        MPI_Send(&e, 1, MPI_INT, right, 7, MPI_COMM_WORLD);
        MPI_Wait(&early_req, MPI_STATUS_IGNORE);
        if (early != it + left) {
            fprintf(stderr, "rank %d: early got %d\n", rank, early);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        h = mix(h, (uint64_t)early);
    }
    /* Every rank's hash, combined at rank 0. */
    uint64_t* all = malloc(sizeof(uint64_t) * size);
    MPI_Gather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        uint64_t total = 0;
        for (int i = 0; i < size; ++i) total = mix(total, all[i]);
        printf("stress ok: %d ranks, %d iterations, checksum %016llx\n", size, iterations, (unsigned long long)total);
    }
    MPI_Comm_free(&half);
    free(all);
    free(big_in);
    free(big_out);
    MPI_Finalize();
    return 0;
}
