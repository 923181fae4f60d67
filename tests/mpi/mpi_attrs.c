/* Attribute caching as a library would use it: keyvals with copy and delete callbacks, copied
 * by MPI_Comm_dup, deleted on overwrite, MPI_Comm_delete_attr, MPI_Comm_free and (on
 * MPI_COMM_SELF) MPI_Finalize; the predefined callbacks; a keyval freed while in use; the
 * MPI-1 names; predefined attributes (MPI_TAG_UB, MPI_HOST, ...). Then rounds of traffic
 * that check every attribute each round, so that a checkpoint taken in between must bring
 * them back with the same values. Every rank checks its results. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int errors;
#define CHECK(c)                                                                 \
    do {                                                                         \
        if (!(c)) {                                                              \
            ++errors;                                                            \
            fprintf(stderr, "attrs: check failed line %d: %s\n", __LINE__, #c); \
        }                                                                        \
    } while (0)

/* A cached object: a library's per-communicator state. */
struct state {
    int magic;
    int generation; /* 0 on the original communicator, +1 per copy */
    long uses;
};
static int copies, deletes;
static MPI_Comm last_deleted_from = MPI_COMM_NULL;

static int copy_state(MPI_Comm comm, int keyval, void* extra, void* in, void* out, int* flag) {
    (void)comm;
    (void)keyval;
    CHECK(extra == (void*)&copies);
    const struct state* s = in;
    CHECK(s->magic == 0x5eed);
    struct state* n = malloc(sizeof *n);
    *n = (struct state){.magic = 0x5eed, .generation = s->generation + 1, .uses = 0};
    *(void**)out = n;
    *flag = 1;
    ++copies;
    return MPI_SUCCESS;
}

static int delete_state(MPI_Comm comm, int keyval, void* value, void* extra) {
    (void)keyval;
    CHECK(extra == (void*)&copies);
    struct state* s = value;
    CHECK(s->magic == 0x5eed);
    s->magic = 0;
    if (s->generation > 0) /* copies are ours to free; the original is static */
        free(s);
    last_deleted_from = comm;
    ++deletes;
    return MPI_SUCCESS;
}

static int finalize_hook(MPI_Comm comm, int keyval, void* value, void* extra) {
    (void)keyval;
    (void)extra;
    CHECK(comm == MPI_COMM_SELF);
    if (*(int*)value == 0)
        printf("attrs: MPI_COMM_SELF delete callback ran at MPI_Finalize\n");
    return MPI_SUCCESS;
}

static int predefined_int(MPI_Comm comm, int keyval, int* flag) {
    int* v = NULL;
    MPI_Comm_get_attr(comm, keyval, &v, flag);
    return *flag ? *v : -1;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) fprintf(stderr, "attrs: started\n"); /* a restored run never prints it */
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);

    /* Predefined attributes. */
    int flag = 0;
    void* v = NULL;
    int tag_ub = predefined_int(MPI_COMM_WORLD, MPI_TAG_UB, &flag);
    CHECK(flag && tag_ub >= 32767);
    int host = predefined_int(MPI_COMM_WORLD, MPI_HOST, &flag);
    CHECK(flag && (host == MPI_PROC_NULL || (host >= 0 && host < size)));
    int io = predefined_int(MPI_COMM_WORLD, MPI_IO, &flag);
    CHECK(flag && (io == MPI_ANY_SOURCE || io == MPI_PROC_NULL || (io >= 0 && io < size)));
    predefined_int(MPI_COMM_WORLD, MPI_WTIME_IS_GLOBAL, &flag);
    CHECK(flag);
    CHECK(MPI_Comm_set_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub) != MPI_SUCCESS); /* Open MPI: MPI_ERR_OTHER */
    CHECK(MPI_Comm_get_attr(MPI_COMM_WORLD, 123456789, &v, &flag) != MPI_SUCCESS);

    /* Keyvals: one with callbacks, one never copied, one copied as is. */
    static struct state world_state = {.magic = 0x5eed, .generation = 0, .uses = 0};
    int k_state, k_nocopy, k_dup;
    MPI_Comm_create_keyval(copy_state, delete_state, &k_state, &copies);
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &k_nocopy, NULL);
    MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, &k_dup, NULL);
    CHECK(k_state != k_nocopy && k_nocopy != k_dup && k_state != MPI_KEYVAL_INVALID);
    int predefined[] = {MPI_TAG_UB, MPI_HOST, MPI_IO, MPI_WTIME_IS_GLOBAL, MPI_APPNUM, MPI_LASTUSEDCODE,
                        MPI_UNIVERSE_SIZE};
    for (size_t i = 0; i < sizeof predefined / sizeof predefined[0]; ++i)
        CHECK(k_state != predefined[i] && k_nocopy != predefined[i] && k_dup != predefined[i]);
    MPI_Comm_set_attr(MPI_COMM_WORLD, k_state, &world_state);
    MPI_Comm_set_attr(MPI_COMM_WORLD, k_nocopy, (void*)(intptr_t)7);
    MPI_Comm_set_attr(MPI_COMM_WORLD, k_dup, (void*)(intptr_t)(1000 + rank));

    /* Dup copies what the callbacks say. */
    MPI_Comm dup;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    CHECK(copies == 1);
    struct state* s = NULL;
    MPI_Comm_get_attr(dup, k_state, &s, &flag);
    CHECK(flag && s != &world_state && s->magic == 0x5eed && s->generation == 1);
    MPI_Comm_get_attr(dup, k_nocopy, &v, &flag);
    CHECK(!flag);
    MPI_Comm_get_attr(dup, k_dup, &v, &flag);
    CHECK(flag && (intptr_t)v == 1000 + rank);
    /* A dup of the dup: the second generation. */
    MPI_Comm dup2;
    MPI_Comm_dup(dup, &dup2);
    MPI_Comm_get_attr(dup2, k_state, &s, &flag);
    CHECK(flag && s->generation == 2 && copies == 2);

    /* Overwrite and explicit delete call the delete callback with the old value. */
    static struct state replacement = {.magic = 0x5eed, .generation = 0, .uses = 0};
    MPI_Comm_set_attr(dup2, k_state, &replacement);
    CHECK(deletes == 1 && last_deleted_from == dup2);
    MPI_Comm_delete_attr(dup2, k_state);
    CHECK(deletes == 2);
    MPI_Comm_get_attr(dup2, k_state, &s, &flag);
    CHECK(!flag);
    replacement.magic = 0x5eed;

    /* A keyval freed while an attribute uses it: the attribute lives on until deleted. */
    int k_early;
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, delete_state, &k_early, &copies);
    MPI_Comm_set_attr(dup2, k_early, &replacement);
    MPI_Comm_free_keyval(&k_early);
    CHECK(k_early == MPI_KEYVAL_INVALID);
    MPI_Comm_free(&dup2);
    CHECK(deletes == 3 && dup2 == MPI_COMM_NULL);

    /* The MPI-1 names (deprecated, still used by old libraries). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    int k_old;
    MPI_Keyval_create(MPI_NULL_COPY_FN, MPI_NULL_DELETE_FN, &k_old, NULL);
    MPI_Attr_put(dup, k_old, (void*)(intptr_t)99);
    MPI_Attr_get(dup, k_old, &v, &flag);
    CHECK(flag && (intptr_t)v == 99);
    MPI_Attr_get(MPI_COMM_WORLD, MPI_TAG_UB, &v, &flag);
    CHECK(flag && *(int*)v == tag_ub);
    MPI_Attr_delete(dup, k_old);
    MPI_Attr_get(dup, k_old, &v, &flag);
    CHECK(!flag);
    MPI_Keyval_free(&k_old);
#pragma GCC diagnostic pop

    /* A library's finalize hook on MPI_COMM_SELF. */
    static int hook_rank;
    hook_rank = rank;
    int k_hook;
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, finalize_hook, &k_hook, NULL);
    MPI_Comm_set_attr(MPI_COMM_SELF, k_hook, &hook_rank);

    /* Traffic, checking every attribute each round (a checkpoint falls in here). */
    long checksum = 0;
    for (int r = 0; r < rounds; ++r) {
        MPI_Comm_get_attr(MPI_COMM_WORLD, k_state, &s, &flag);
        CHECK(flag && s == &world_state && s->magic == 0x5eed);
        s->uses++;
        MPI_Comm_get_attr(dup, k_state, &s, &flag);
        CHECK(flag && s->generation == 1 && s->magic == 0x5eed);
        s->uses++;
        MPI_Comm_get_attr(dup, k_dup, &v, &flag);
        CHECK(flag && (intptr_t)v == 1000 + rank);
        MPI_Comm_get_attr(MPI_COMM_WORLD, k_nocopy, &v, &flag);
        CHECK(flag && (intptr_t)v == 7);
        CHECK(predefined_int(dup, MPI_TAG_UB, &flag) >= 32767 && flag);
        int in = rank + r, sum = 0, from = -1;
        MPI_Allreduce(&in, &sum, 1, MPI_INT, MPI_SUM, dup);
        CHECK(sum == size * (size - 1) / 2 + size * r);
        MPI_Sendrecv(&rank, 1, MPI_INT, (rank + 1) % size, r & 0x7fff, &from, 1, MPI_INT, (rank + size - 1) % size,
                     r & 0x7fff, dup, MPI_STATUS_IGNORE);
        CHECK(from == (rank + size - 1) % size);
        checksum += sum + from;
    }
    MPI_Comm_get_attr(dup, k_state, &s, &flag);
    CHECK(flag && s->uses == rounds);
    CHECK(world_state.uses == rounds);

    /* Freeing the dup deletes its copies; the world's stay until MPI_Finalize. */
    int before = deletes;
    MPI_Comm_free(&dup);
    CHECK(deletes == before + 1);
    MPI_Comm_free_keyval(&k_nocopy);
    MPI_Comm_free_keyval(&k_dup);
    MPI_Comm_free_keyval(&k_hook);

    long total = 0;
    int all_errors = 0;
    MPI_Reduce(&checksum, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&errors, &all_errors, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        if (all_errors)
            printf("attrs FAILED: %d checks failed\n", all_errors);
        else
            printf("attrs ok: %d ranks, %d rounds, checksum %ld, %d copies, %d deletes\n", size, rounds, total,
                   copies, deletes);
        fflush(stdout);
    }
    MPI_Finalize();
    return all_errors ? 1 : 0;
}
