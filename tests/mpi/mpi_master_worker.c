/* Master/worker: rank 0 hands out tasks and collects results from whichever worker finishes
 * first, with Iprobe on MPI_ANY_SOURCE/MPI_ANY_TAG (then Recv from the probed source) on even
 * results and an Irecv from MPI_ANY_SOURCE polled with Test on odd ones; workers answer with
 * Isend + Wait. The total is checked against the serial one. */
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

enum { TAG_TASK = 1, TAG_STOP = 2, TAG_RESULT = 10 };

static long work(long task) { return (task * task) % 997 + task; }

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long ntasks = argc > 1 ? atol(argv[1]) : 200;
    if (rank == 0) {
        long next = 0, done = 0, total = 0;
        int* per_worker = calloc(size, sizeof(int));
        for (int w = 1; w < size; ++w) {
            if (next < ntasks) {
                MPI_Send(&next, 1, MPI_LONG, w, TAG_TASK, MPI_COMM_WORLD);
                ++next;
            } else {
                MPI_Send(&next, 1, MPI_LONG, w, TAG_STOP, MPI_COMM_WORLD);
            }
        }
        while (done < ntasks) {
            long res[2];
            MPI_Status st;
            if (done % 2 == 0) {
                int flag = 0;
                while (!flag) {
                    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
                    if (!flag)
                        sched_yield();
                }
                int count = -1;
                MPI_Get_count(&st, MPI_LONG, &count);
                if (count != 2 || st.MPI_TAG < TAG_RESULT) {
                    printf("master/worker FAILED: probed %d longs with tag %d\n", count, st.MPI_TAG);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                MPI_Recv(res, 2, MPI_LONG, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, &st);
            } else {
                MPI_Request req;
                int flag = 0;
                MPI_Irecv(res, 2, MPI_LONG, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &req);
                while (!flag) {
                    MPI_Test(&req, &flag, &st);
                    if (!flag)
                        sched_yield();
                }
                if (req != MPI_REQUEST_NULL) {
                    printf("master/worker FAILED: completed request not released\n");
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
            }
            if (res[1] != work(res[0]) || st.MPI_TAG != TAG_RESULT + (int)(res[0] % 5)) {
                printf("master/worker FAILED: task %ld gave %ld (tag %d)\n", res[0], res[1], st.MPI_TAG);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            total += res[1];
            ++done;
            ++per_worker[st.MPI_SOURCE];
            int tag = next < ntasks ? TAG_TASK : TAG_STOP;
            MPI_Send(&next, 1, MPI_LONG, st.MPI_SOURCE, tag, MPI_COMM_WORLD);
            if (tag == TAG_TASK)
                ++next;
        }
        long want = 0;
        for (long t = 0; t < ntasks; ++t)
            want += work(t);
        if (total != want) {
            printf("master/worker FAILED: total %ld, expected %ld\n", total, want);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        printf("master/worker ok: %d workers, %ld tasks, total %ld\n", size - 1, ntasks, total);
        free(per_worker);
    } else {
        for (;;) {
            long task;
            MPI_Status st;
            MPI_Recv(&task, 1, MPI_LONG, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
            if (st.MPI_TAG == TAG_STOP)
                break;
            long res[2] = {task, work(task)};
            MPI_Request req;
            MPI_Isend(res, 2, MPI_LONG, 0, TAG_RESULT + (int)(task % 5), MPI_COMM_WORLD, &req);
            MPI_Wait(&req, MPI_STATUS_IGNORE);
        }
    }
    MPI_Finalize();
    return 0;
}
