/* Communicators and groups: split (with reversed keys and an MPI_UNDEFINED colour), split_type, dup,
 * create from a group, and the blocking collectives on them; every rank checks its results. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int errors;
#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            ++errors;                                                        \
            fprintf(stderr, "split: rank check failed line %d: %s\n", __LINE__, #c); \
        }                                                                    \
    } while (0)

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) fprintf(stderr, "split: started\n"); /* a restored run never prints it */
    int rounds = argc > 1 ? atoi(argv[1]) : 20;

    /* Split by parity, ranks reversed inside each half. */
    MPI_Comm half, dup;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, -rank, &half);
    int hrank, hsize;
    MPI_Comm_rank(half, &hrank);
    MPI_Comm_size(half, &hsize);
    int expect_size = (size + 1 - rank % 2) / 2;
    CHECK(hsize == expect_size);
    CHECK(hrank == expect_size - 1 - rank / 2);
    MPI_Comm_dup(half, &dup);
    int cmp = -1;
    MPI_Comm_compare(half, dup, &cmp);
    CHECK(cmp == MPI_CONGRUENT);
    CHECK(dup != half && dup != MPI_COMM_NULL);

    long checksum = 0;
    for (int r = 0; r < rounds; ++r) {
        /* Allreduce and Bcast on the halves */
        int sum = 0, want = 0;
        MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, dup);
        for (int q = rank % 2; q < size; q += 2)
            want += q;
        CHECK(sum == want);
        int token = hrank == r % hsize ? 1000 * r + rank : -1;
        MPI_Bcast(&token, 1, MPI_INT, r % hsize, half);
        int root_world = rank % 2 + 2 * (hsize - 1 - r % hsize);
        CHECK(token == 1000 * r + root_world);
        checksum += sum + token;

        /* Gather, Scatter, Allgather, Alltoall on the world */
        int root = r % size;
        int* all = malloc(sizeof(int) * size * size);
        int* back = malloc(sizeof(int) * size * size);
        int mine = rank * rank + r;
        MPI_Gather(&mine, 1, MPI_INT, all, 1, MPI_INT, root, MPI_COMM_WORLD);
        if (rank == root)
            for (int q = 0; q < size; ++q)
                CHECK(all[q] == q * q + r);
        int got = -1;
        MPI_Scatter(all, 1, MPI_INT, &got, 1, MPI_INT, root, MPI_COMM_WORLD);
        CHECK(got == mine);
        MPI_Allgather(&mine, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD);
        for (int q = 0; q < size; ++q)
            CHECK(all[q] == q * q + r);
        for (int q = 0; q < size; ++q)
            all[q] = rank * 100 + q + r;
        MPI_Alltoall(all, 1, MPI_INT, back, 1, MPI_INT, MPI_COMM_WORLD);
        for (int q = 0; q < size; ++q)
            CHECK(back[q] == q * 100 + rank + r);

        /* The v variants: rank q contributes q+1 values */
        int counts[64], displs[64], n = 0;
        for (int q = 0; q < size; ++q) {
            counts[q] = q + 1;
            displs[q] = n;
            n += q + 1;
        }
        int vals[64];
        for (int k = 0; k <= rank; ++k)
            vals[k] = rank * 10 + k + r;
        MPI_Allgatherv(vals, rank + 1, MPI_INT, all, counts, displs, MPI_INT, MPI_COMM_WORLD);
        for (int q = 0; q < size; ++q)
            for (int k = 0; k <= q; ++k)
                CHECK(all[displs[q] + k] == q * 10 + k + r);
        MPI_Gatherv(vals, rank + 1, MPI_INT, back, counts, displs, MPI_INT, root, MPI_COMM_WORLD);
        if (rank == root)
            for (int q = 0; q < size; ++q)
                CHECK(back[displs[q]] == q * 10 + r);
        int recv[64];
        MPI_Scatterv(all, counts, displs, MPI_INT, recv, rank + 1, MPI_INT, root, MPI_COMM_WORLD);
        for (int k = 0; k <= rank; ++k)
            CHECK(recv[k] == rank * 10 + k + r);
        /* Alltoallv: rank sends q+1 values to rank q */
        int scounts[64], sdispls[64], rcounts[64], rdispls[64], sn = 0, rn = 0;
        for (int q = 0; q < size; ++q) {
            scounts[q] = q + 1;
            sdispls[q] = sn;
            sn += q + 1;
            rcounts[q] = rank + 1;
            rdispls[q] = rn;
            rn += rank + 1;
        }
        for (int q = 0; q < size; ++q)
            for (int k = 0; k <= q; ++k)
                all[sdispls[q] + k] = rank * 1000 + q * 10 + k;
        MPI_Alltoallv(all, scounts, sdispls, MPI_INT, back, rcounts, rdispls, MPI_INT, MPI_COMM_WORLD);
        for (int q = 0; q < size; ++q)
            for (int k = 0; k <= rank; ++k)
                CHECK(back[rdispls[q] + k] == q * 1000 + rank * 10 + k);
        free(all);
        free(back);
        MPI_Barrier(MPI_COMM_WORLD);
    }

    /* Groups: the first and last ranks form a communicator; others get MPI_COMM_NULL. */
    MPI_Group world_group, ends, rest;
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    int gsize = -1, grank = -1;
    MPI_Group_size(world_group, &gsize);
    MPI_Group_rank(world_group, &grank);
    CHECK(gsize == size && grank == rank);
    int pick[2] = {0, size - 1};
    MPI_Group_incl(world_group, 2, pick, &ends);
    MPI_Group_excl(world_group, 2, pick, &rest);
    int rest_size = -1;
    MPI_Group_size(rest, &rest_size);
    CHECK(rest_size == size - 2);
    int in_ends[2] = {0, 1}, out_world[2];
    MPI_Group_translate_ranks(ends, 2, in_ends, world_group, out_world);
    CHECK(out_world[0] == 0 && out_world[1] == size - 1);
    MPI_Comm ends_comm;
    MPI_Comm_create(MPI_COMM_WORLD, ends, &ends_comm);
    if (rank == 0 || rank == size - 1) {
        CHECK(ends_comm != MPI_COMM_NULL);
        int s = 0;
        MPI_Allreduce(&rank, &s, 1, MPI_INT, MPI_SUM, ends_comm);
        CHECK(s == size - 1);
        MPI_Comm_free(&ends_comm);
    } else {
        CHECK(ends_comm == MPI_COMM_NULL);
    }
    /* All ranks share this node's memory. */
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int nsize = -1, nrank = -1;
    MPI_Comm_size(node, &nsize);
    MPI_Comm_rank(node, &nrank);
    CHECK(nsize == size && nrank == rank);
    MPI_Comm_free(&node);
    MPI_Comm none;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 1, 0, &none);
    CHECK((rank == 0) == (none == MPI_COMM_NULL));
    if (none != MPI_COMM_NULL)
        MPI_Comm_free(&none);
    MPI_Group_free(&ends);
    MPI_Group_free(&rest);
    MPI_Group_free(&world_group);
    CHECK(world_group == MPI_GROUP_NULL);

    /* Errors are returned, not fatal, once asked; the handler reads back as set. */
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(dup, &eh);
    CHECK(eh == MPI_ERRORS_RETURN);
    MPI_Errhandler_free(&eh);
    int rc = MPI_Send(&rank, 1, MPI_INT, size + 5, 0, dup); /* invalid rank */
    int cls = -1;
    MPI_Error_class(rc, &cls);
    CHECK(rc != MPI_SUCCESS && cls == MPI_ERR_RANK);
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    CHECK(len > 0);

    MPI_Comm_free(&dup);
    MPI_Comm_free(&half);
    CHECK(half == MPI_COMM_NULL && dup == MPI_COMM_NULL);
    int all_errors = 0;
    MPI_Allreduce(&errors, &all_errors, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    long total = 0;
    MPI_Reduce(&checksum, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        if (all_errors) {
            printf("split FAILED: %d checks failed\n", all_errors);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("split ok: %d ranks, %d rounds, checksum %ld\n", size, rounds, total);
    }
    MPI_Finalize();
    return 0;
}
