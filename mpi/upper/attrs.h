// Attribute caching on communicators (attrs.cpp): what communicator creation and freeing and
// MPI_Finalize owe the attributes, per the standard.
#pragma once

#include <mpi.h>

namespace ckpt::mpi {

// MPI_Comm_dup: each attribute of `from` whose copy callback says so is set on `to`.
int copy_comm_attrs(MPI_Comm from, MPI_Comm to);
// MPI_Comm_free and MPI_Finalize: every attribute's delete callback, last set first; stops at
// the first callback that fails and returns its error.
int delete_comm_attrs(MPI_Comm comm);

}  // namespace ckpt::mpi
