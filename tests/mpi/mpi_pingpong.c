/* Small-message ping-pong between ranks 0 and 1: prints the one-way latency (half a round
 * trip) for MPI_Send/MPI_Recv and for MPI_Isend/MPI_Irecv/MPI_Wait, the bandwidth of a stream
 * of 64 KiB messages and the latency of an 8-byte MPI_Allreduce. Run it with and without
 * libckpt_mpi on the library path to see the wrapper's cost (docs/mpi.md). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static double pingpong(int rank, int iters, int nonblocking) {
    char buf[8] = {0};
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i) {
        if (nonblocking) {
            MPI_Request r;
            if (rank == 0) {
                MPI_Isend(buf, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD, &r);
                MPI_Wait(&r, MPI_STATUS_IGNORE);
                MPI_Irecv(buf, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD, &r);
                MPI_Wait(&r, MPI_STATUS_IGNORE);
            } else {
                MPI_Irecv(buf, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD, &r);
                MPI_Wait(&r, MPI_STATUS_IGNORE);
                MPI_Isend(buf, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD, &r);
                MPI_Wait(&r, MPI_STATUS_IGNORE);
            }
        } else if (rank == 0) {
            MPI_Send(buf, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
        }
    }
    return (MPI_Wtime() - t0) / iters / 2 * 1e6;
}

/* Cost of one call that does no communication (to MPI_PROC_NULL), in ns: the best of 5 runs,
 * so that the wrapper's cost shows on a busy machine. */
static double call_cost(int iters, int nonblocking) {
    char buf[8] = {0};
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
        double t0 = MPI_Wtime();
        for (int i = 0; i < iters; ++i) {
            if (nonblocking) {
                MPI_Request r;
                MPI_Isend(buf, 8, MPI_BYTE, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &r);
                MPI_Wait(&r, MPI_STATUS_IGNORE);
            } else {
                MPI_Send(buf, 8, MPI_BYTE, MPI_PROC_NULL, 0, MPI_COMM_WORLD);
            }
        }
        double t = (MPI_Wtime() - t0) / iters * 1e9;
        if (t < best)
            best = t;
    }
    return best;
}

/* Rank 0 streams `iters` 64 KiB messages to rank 1, which acknowledges the last: MB/s. */
static double bandwidth(int rank, int iters) {
    enum { kSize = 64 * 1024 };
    static char buf[kSize];
    char ack = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i) {
        if (rank == 0)
            MPI_Send(buf, kSize, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
        else
            MPI_Recv(buf, kSize, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    if (rank == 0)
        MPI_Recv(&ack, 1, MPI_BYTE, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    else
        MPI_Send(&ack, 1, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
    return (double)kSize * iters / (MPI_Wtime() - t0) / 1e6;
}

static double allreduce_us(int iters) {
    double in = 1.0, out = 0.0;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i)
        MPI_Allreduce(&in, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return (MPI_Wtime() - t0) / iters * 1e6;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    if (size != 2) {
        if (rank == 0)
            printf("pingpong FAILED: needs 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    pingpong(rank, iters / 10 + 1, 0); /* warm-up */
    double blocking = pingpong(rank, iters, 0);
    double nonblocking = pingpong(rank, iters, 1);
    double send_ns = call_cost(iters * 10, 0), isend_wait_ns = call_cost(iters * 10, 1);
    double mbps = bandwidth(rank, iters / 20 + 1), reduce = allreduce_us(iters);
    if (rank == 0)
        printf("calls to MPI_PROC_NULL: %.1f ns MPI_Send, %.1f ns MPI_Isend+MPI_Wait\n", send_ns, isend_wait_ns);
    if (rank == 0)
        printf("pingpong: 8 bytes, %d round trips: %.3f us one way (Send/Recv), %.3f us (Isend/Irecv/Wait)\n", iters,
               blocking, nonblocking);
    if (rank == 0)
        printf("stream: 64 KiB messages: %.1f MB/s; allreduce: 8 bytes: %.3f us\n", mbps, reduce);
    MPI_Finalize();
    return 0;
}
