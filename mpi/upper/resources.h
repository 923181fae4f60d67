// What the lower half owns: threads, fds and memory (see include/ckpt/mpi/lower_half.h).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace ckpt::mpi {

// Snapshot of the process's fds and mappings before the lower half is loaded.
void resources_before_lower();
// The shim's own records (threads it started, fds and mappings made through it).
void resources_attach_shim(void* shim);
// What appeared between resources_before_lower() and now (MPI_Init done) is the lower half's.
void resources_after_init();

// The lower half's mappings a dump must leave out: shared segments and files of this launch.
// The rest of its memory (its libraries, its libc's heap and thread stacks, which the
// dynamic linker's and libc's shared lists still point into) is carried as dead weight.
std::vector<std::pair<uint64_t, uint64_t>> lower_memory_to_leave_out();

}  // namespace ckpt::mpi
