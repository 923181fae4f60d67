/* The stand-in for Open MPI's Fortran bindings (generated stubs: mpi/gen/gen_fortran_stubs.py).
   Every Fortran MPI entry point ends here: ckpt's libmpi implements the C bindings only, and a
   Fortran program must stop at its first MPI call with a message that says so, not run on
   half a library. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((visibility("default"), noreturn)) void ckpt_mpi_fortran_unsupported(const char* name);

void ckpt_mpi_fortran_unsupported(const char* name) {
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "ckpt: %s (the Fortran bindings) is not supported by ckpt: only the C "
                     "bindings are; run this program without ckpt's libmpi (srun "
                     "--checkpoint-mpi=never, which leaves its ranks uncheckpointed)\n",
                     name);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
    abort();
}
