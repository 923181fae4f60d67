/* A halo exchange on a grid split by columns: the halo columns travel as an MPI_Type_vector
 * (Isend/Irecv/Waitall on even steps, Sendrecv on odd ones); every fourth step the left halo
 * is received through a struct type made at that step from its absolute address (from
 * MPI_BOTTOM) and freed while the receive is pending, as HPL does with its panels. The result
 * is gathered with an MPI_Type_contiguous block and rank 0 compares every cell with a serial
 * computation. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 12
#define LC 6 /* columns per rank */
#define MOD 1000003L

static long step_cell(const long* g, int ld, int i, int j, int gj) {
    long up = i > 0 ? g[(i - 1) * ld + j] : 0, down = i < ROWS - 1 ? g[(i + 1) * ld + j] : 0;
    return (3 * g[i * ld + j] + g[i * ld + j - 1] + g[i * ld + j + 1] + up + down + i + gj) % MOD;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) fprintf(stderr, "halo: started\n"); /* a restored run never prints it */
    int steps = argc > 1 ? atoi(argv[1]) : 50;
    const int ld = LC + 2;
    long* a = calloc(ROWS * ld, sizeof(long));
    long* b = calloc(ROWS * ld, sizeof(long));
    for (int i = 0; i < ROWS; ++i)
        for (int j = 1; j <= LC; ++j)
            a[i * ld + j] = (i * 31 + (rank * LC + j - 1) * 17) % 101;

    MPI_Datatype column, block;
    MPI_Type_vector(ROWS, 1, ld, MPI_LONG, &column);
    MPI_Type_commit(&column);
    MPI_Type_contiguous(ROWS * LC, MPI_LONG, &block);
    MPI_Type_commit(&block);
    int left = rank > 0 ? rank - 1 : MPI_PROC_NULL, right = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;

    for (int s = 0; s < steps; ++s) {
        /* halo columns 0 and LC+1 are zero at the grid's edges (MPI_PROC_NULL leaves them) */
        if (s % 2 == 0) {
            MPI_Request r[4];
            if (s % 4 == 0) {
                MPI_Datatype at_left;
                MPI_Aint where;
                int one = 1;
                MPI_Get_address(&a[0], &where);
                MPI_Type_create_struct(1, &one, &where, &column, &at_left);
                MPI_Type_commit(&at_left);
                MPI_Irecv(MPI_BOTTOM, 1, at_left, left, 1, MPI_COMM_WORLD, &r[0]);
                MPI_Type_free(&at_left); /* the pending receive keeps it */
            } else {
                MPI_Irecv(&a[0], 1, column, left, 1, MPI_COMM_WORLD, &r[0]);
            }
            MPI_Irecv(&a[LC + 1], 1, column, right, 2, MPI_COMM_WORLD, &r[1]);
            MPI_Isend(&a[LC], 1, column, right, 1, MPI_COMM_WORLD, &r[2]);
            MPI_Isend(&a[1], 1, column, left, 2, MPI_COMM_WORLD, &r[3]);
            MPI_Waitall(4, r, MPI_STATUSES_IGNORE);
            for (int k = 0; k < 4; ++k)
                if (r[k] != MPI_REQUEST_NULL) {
                    printf("halo FAILED: request %d not released\n", k);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
        } else {
            MPI_Sendrecv(&a[LC], 1, column, right, 1, &a[0], 1, column, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Sendrecv(&a[1], 1, column, left, 2, &a[LC + 1], 1, column, right, 2, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
        }
        for (int i = 0; i < ROWS; ++i)
            for (int j = 1; j <= LC; ++j)
                b[i * ld + j] = step_cell(a, ld, i, j, rank * LC + j - 1);
        long* t = a;
        a = b;
        b = t;
    }

    long mine[ROWS * LC], local = 0, total = 0;
    for (int i = 0; i < ROWS; ++i)
        for (int j = 0; j < LC; ++j) {
            mine[i * LC + j] = a[i * ld + j + 1];
            local += mine[i * LC + j];
        }
    long* all = rank == 0 ? malloc(sizeof(long) * ROWS * LC * size) : NULL;
    MPI_Gather(mine, 1, block, all, 1, block, 0, MPI_COMM_WORLD);
    MPI_Allreduce(&local, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    if (rank == 0) {
        int C = LC * size, gld = C + 2;
        long* g = calloc(ROWS * gld, sizeof(long));
        long* h = calloc(ROWS * gld, sizeof(long));
        for (int i = 0; i < ROWS; ++i)
            for (int j = 1; j <= C; ++j)
                g[i * gld + j] = (i * 31 + (j - 1) * 17) % 101;
        for (int s = 0; s < steps; ++s) {
            for (int i = 0; i < ROWS; ++i)
                for (int j = 1; j <= C; ++j)
                    h[i * gld + j] = step_cell(g, gld, i, j, j - 1);
            long* t = g;
            g = h;
            h = t;
        }
        long sum = 0;
        for (int r = 0; r < size; ++r)
            for (int i = 0; i < ROWS; ++i)
                for (int j = 0; j < LC; ++j) {
                    long want = g[i * gld + r * LC + j + 1], got = all[r * ROWS * LC + i * LC + j];
                    sum += want;
                    if (want != got) {
                        printf("halo FAILED: rank %d cell %d,%d: %ld, expected %ld\n", r, i, j, got, want);
                        MPI_Abort(MPI_COMM_WORLD, 1);
                    }
                }
        if (sum != total) {
            printf("halo FAILED: allreduce %ld, expected %ld\n", total, sum);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("halo ok: %d ranks, %d steps, checksum %ld\n", size, steps, total);
    }
    MPI_Type_free(&column);
    MPI_Type_free(&block);
    if (column != MPI_DATATYPE_NULL || block != MPI_DATATYPE_NULL) {
        printf("halo FAILED: freed datatypes are not MPI_DATATYPE_NULL\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return 0;
}
