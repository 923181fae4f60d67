! A Fortran MPI program (the mpif.h/mpi module bindings). ckpt supports the C bindings only:
! through ckpt's libmpi its first MPI call must stop it with "ckpt: mpi_init_ (the Fortran
! bindings) is not supported by ckpt", never a loader error or a half-working library.
program mpi_fortran
  use mpi
  implicit none
  integer :: ierr, rank, total
  call MPI_Init(ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
  call MPI_Allreduce(rank, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  print '(a,i0,a,i0)', 'fortran rank ', rank, ' sum ', total
  print '(a)', 'MPI_Init returned'
  call MPI_Finalize(ierr)
end program mpi_fortran
