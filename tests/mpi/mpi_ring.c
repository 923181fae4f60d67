/* Passes a counter around a ring of ranks N times; rank 0 checks the total. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int rounds = argc > 1 ? atoi(argv[1]) : 10;
    long value = 0;
    for (int r = 0; r < rounds; ++r) {
        if (rank == 0) {
            value += r + 1;
            MPI_Send(&value, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
            MPI_Recv(&value, 1, MPI_LONG, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(&value, 1, MPI_LONG, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            value += r + 1;
            MPI_Send(&value, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) {
        long expect = (long)size * rounds * (rounds + 1) / 2;
        if (value != expect) {
            printf("ring FAILED: got %ld, expected %ld\n", value, expect);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("ring ok: %d ranks, %d rounds, sum %ld\n", size, rounds, value);
    }
    MPI_Finalize();
    return 0;
}
