/* Allreduce and Reduce loops with user operations on derived datatypes: a commutative one on
 * pairs (sum, max) that checks it is called with the application's datatype handle, and a
 * non-commutative one (2x2 matrix product mod p) whose result depends on rank order. Also asks
 * for MPI_THREAD_MULTIPLE, which must be answered (not refused). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define P 1000003L

static MPI_Datatype pair_type, mat_type;
static int bad_type;

static void pair_op(void* in, void* inout, int* len, MPI_Datatype* dt) {
    if (*dt != pair_type)
        bad_type = 1;
    long *a = in, *b = inout;
    for (int i = 0; i < *len; ++i) {
        b[2 * i] += a[2 * i];
        if (a[2 * i + 1] > b[2 * i + 1])
            b[2 * i + 1] = a[2 * i + 1];
    }
}

static void mat_mul(const long* x, const long* y, long* out) { /* out = x * y */
    long r[4] = {(x[0] * y[0] + x[1] * y[2]) % P, (x[0] * y[1] + x[1] * y[3]) % P,
                 (x[2] * y[0] + x[3] * y[2]) % P, (x[2] * y[1] + x[3] * y[3]) % P};
    for (int k = 0; k < 4; ++k)
        out[k] = r[k];
}

static void mat_op(void* in, void* inout, int* len, MPI_Datatype* dt) {
    if (*dt != mat_type)
        bad_type = 1;
    long *a = in, *b = inout;
    for (int i = 0; i < *len; ++i)
        mat_mul(&a[4 * i], &b[4 * i], &b[4 * i]); /* inout = in * inout: lower ranks first */
}

static void mat_of(int r, int it, long* m) {
    m[0] = r + 1;
    m[1] = it % 7 + 1;
    m[2] = (r * 3 + it) % 5;
    m[3] = r + it + 2;
}

int main(int argc, char** argv) {
    int provided = -1, queried = -2;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Query_thread(&queried);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) fprintf(stderr, "userop: started\n"); /* a restored run never prints it */
    if (provided < MPI_THREAD_FUNNELED || queried != provided) {
        printf("userop FAILED: thread level %d (queried %d)\n", provided, queried);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int iters = argc > 1 ? atoi(argv[1]) : 300;
    MPI_Type_contiguous(2, MPI_LONG, &pair_type);
    MPI_Type_commit(&pair_type);
    MPI_Type_contiguous(4, MPI_LONG, &mat_type);
    MPI_Type_commit(&mat_type);
    MPI_Op pair, mat;
    MPI_Op_create(pair_op, 1, &pair);
    MPI_Op_create(mat_op, 0, &mat);
    int commute = -1;
    MPI_Op_commutative(mat, &commute);

    long checksum = 0;
    int errors = commute != 0;
    for (int it = 0; it < iters; ++it) {
        long v[4], r[4];
        for (int k = 0; k < 2; ++k) {
            v[2 * k] = rank + it + k;
            v[2 * k + 1] = (rank * 7 + it + k) % 13;
        }
        MPI_Allreduce(v, r, 2, pair_type, pair, MPI_COMM_WORLD);
        for (int k = 0; k < 2; ++k) {
            long sum = 0, max = 0;
            for (int q = 0; q < size; ++q) {
                sum += q + it + k;
                long m = (q * 7 + it + k) % 13;
                if (m > max)
                    max = m;
            }
            errors += r[2 * k] != sum || r[2 * k + 1] != max;
            checksum += r[2 * k] + r[2 * k + 1];
        }

        long m[4], prod[4], want[4] = {1, 0, 0, 1}, one[4];
        mat_of(rank, it, m);
        for (int q = 0; q < size; ++q) {
            mat_of(q, it, one);
            mat_mul(want, one, want);
        }
        if (it % 2)
            MPI_Allreduce(m, prod, 1, mat_type, mat, MPI_COMM_WORLD);
        else
            MPI_Reduce(m, prod, 1, mat_type, mat, it % size, MPI_COMM_WORLD);
        if (it % 2 || rank == it % size)
            for (int k = 0; k < 4; ++k)
                errors += prod[k] != want[k];
        checksum = (checksum + want[0] + want[3]) % P;

        double d = rank * 0.5 + it, dmax = 0;
        MPI_Allreduce(&d, &dmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        errors += dmax != (size - 1) * 0.5 + it;
    }
    errors += bad_type;
    int all_errors = 0;
    MPI_Reduce(&errors, &all_errors, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Op_free(&pair);
    MPI_Op_free(&mat);
    MPI_Type_free(&pair_type);
    MPI_Type_free(&mat_type);
    if (rank == 0) {
        if (all_errors || pair != MPI_OP_NULL) {
            printf("userop FAILED: %d wrong results%s\n", all_errors, bad_type ? " (wrong datatype handle)" : "");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("userop ok: %d ranks, %d iterations, checksum %ld\n", size, iters, checksum);
    }
    MPI_Finalize();
    return 0;
}
