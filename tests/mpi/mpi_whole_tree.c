/* A job for the whole-tree test (run_whole_tree.py): every step an allreduce and a token passed
 * around the ring; rank 0 prints each step and, at the end, whether the sum is the one
 * expected. A rank stops the job when a token comes back wrong. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int c, char** v) {
    MPI_Init(&c, &v);
    int r, n; MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Comm_size(MPI_COMM_WORLD, &n);
    long total = 0, expect = 0;
    const int steps = c > 1 ? atoi(v[1]) : 60;
    for (int step = 1; step <= steps; ++step) {
        long mine = (long)(r + 1) * step, sum = 0;
        MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        int token = step, got = 0;
        MPI_Sendrecv(&token, 1, MPI_INT, (r + 1) % n, 0, &got, 1, MPI_INT, (r + n - 1) % n, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (got != step) { fprintf(stderr, "rank %d: ring token %d at step %d\n", r, got, step); MPI_Abort(MPI_COMM_WORLD, 2); }
        total += sum; expect += (long)n * (n + 1) / 2 * step;
        if (r == 0) { printf("step %d\n", step); fflush(stdout); }
        usleep(200000);
    }
    if (r == 0) printf("RESULT %s %ld %ld\n", total == expect ? "OK" : "WRONG", total, expect);
    MPI_Finalize();
    return total == expect ? 0 : 1;
}
