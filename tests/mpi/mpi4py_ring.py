"""A ring in Python with mpi4py, as a user would write it: mpi4py loads libmpi with dlopen
(through libckpt_mpi when LD_LIBRARY_PATH names it). Pickled objects (sendrecv: a matched
probe; allreduce, bcast), buffers (Sendrecv, Allreduce on array('d')), a duplicated
communicator and an attribute cached on it. Rank 0 prints the results; every rank checks."""
import sys
import time
import traceback
from array import array

from mpi4py import MPI



def abort_on_error(kind, value, tb):
    # A failed check on one rank would leave the others waiting: fail the whole job.
    traceback.print_exception(kind, value, tb)
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(1)


sys.excepthook = abort_on_error
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
if rank == 0:
    print("mpi4py_ring: started", file=sys.stderr, flush=True)  # a restored run never says it
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 100
# Milliseconds each rank sleeps per round: a run that must last, whatever the machine's speed
# (the results do not depend on it).
pause = int(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0
right, left = (rank + 1) % size, (rank - 1) % size

ring = comm.Dup()
keyval = MPI.Comm.Create_keyval()
ring.Set_attr(keyval, {"name": "ring", "rank": rank})
assert comm.Get_attr(MPI.TAG_UB) >= 32767

checksum = 0
out, got = array("d", [0.0]), array("d", [0.0])
for r in range(rounds):
    if pause:
        time.sleep(pause)
    # A pickled token around the ring, one hop per rank.
    if rank == 0:
        token = ring.sendrecv({"hops": 0, "round": r}, dest=right, source=left)
        assert token["hops"] == size - 1 and token["round"] == r, token
    else:
        token = ring.recv(source=left)
        token["hops"] += 1
        ring.send(token, dest=right)
    # Buffers: each rank passes its value to the right.
    out[0] = rank * 1.5 + r
    ring.Sendrecv(out, dest=right, recvbuf=got, source=left)
    assert got[0] == left * 1.5 + r, (got[0], left, r)
    total = ring.allreduce(rank + r)
    assert total == size * (size - 1) // 2 + size * r
    buf = array("d", [float(rank)])
    summed = array("d", [0.0])
    comm.Allreduce(buf, summed, op=MPI.SUM)
    assert summed[0] == size * (size - 1) / 2
    attr = ring.Get_attr(keyval)
    assert attr == {"name": "ring", "rank": rank}, attr
    checksum += total + int(got[0] * 2)

first = comm.bcast({"rounds": rounds, "checksum": checksum} if rank == 0 else None, root=0)
assert first["rounds"] == rounds, first
gathered = comm.gather(checksum, root=0)
ring.Delete_attr(keyval)
MPI.Comm.Free_keyval(keyval)
ring.Free()
if rank == 0:
    print(f"mpi4py ring ok: {size} ranks, {rounds} rounds, checksums {gathered}, MPI {MPI.Get_version()}")
