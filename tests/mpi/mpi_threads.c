/* Asks for MPI_THREAD_MULTIPLE, does not look at what it got, and sends from a second thread
 * while the first one receives. Open MPI alone grants MULTIPLE and the run succeeds; ckpt
 * grants FUNNELED at most, so the second thread's first call must stop the rank with
 * "ckpt: MPI_Send was called from a thread other than the one that initialized MPI", never
 * run on an upper half that does not lock. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>

static int rank;

static void* sender(void* arg) {
    (void)arg;
    int value = 1000 + rank;
    MPI_Send(&value, 1, MPI_INT, 1 - rank, 7, MPI_COMM_WORLD);
    return NULL;
}

int main(int argc, char** argv) {
    int provided = 0, size = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        fprintf(stderr, "FAIL: needs 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    pthread_t t;
    pthread_create(&t, NULL, sender, NULL);
    int got = 0;
    MPI_Recv(&got, 1, MPI_INT, 1 - rank, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    pthread_join(t, NULL);
    printf("rank %d got %d from its peer's second thread: returned\n", rank, got);
    MPI_Finalize();
    return 0;
}
