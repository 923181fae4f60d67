// What the lower half owns: threads, fds and memory (see include/ckpt/mpi/lower_half.h).
#pragma once

namespace ckpt::mpi {

// Snapshot of the process's fds and mappings before the lower half is loaded.
void resources_before_lower();
// The shim's own records (threads it started, fds and mappings made through it).
void resources_attach_shim(void* shim);
// What appeared between resources_before_lower() and now (MPI_Init done) is the lower half's.
void resources_after_init();

}  // namespace ckpt::mpi
