/* Calls a function libckpt_mpi does not support (one-sided MPI_Win_create): through ckpt the
 * rank must stop with "ckpt: MPI_Win_create is not supported by ckpt", never carry on. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    static int window[16];
    MPI_Win win;
    MPI_Win_create(window, sizeof window, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    printf("MPI_Win_create returned\n");
    MPI_Win_free(&win);
    MPI_Finalize();
    return 0;
}
