// Blocking point-to-point. Sends go to the lower half as they are (a send completes once its
// receiver drains it, so it cannot hold a quiesce up); receives and probes are non-blocking
// calls plus a progress loop that takes part in a quiesce, since a rank waiting for a peer
// that parked must park too. Messages held since a quiesce are matched first.
#include <mpi.h>

#include <cstdlib>
#include <vector>

#include "abi_impl.h"
#include "drained.h"
#include "quiesce.h"
#include "runtime.h"

namespace ckpt::mpi {

int post_from_drained(DrainedMessage* m, void* buf, int count, MPI_Datatype type, int source, int tag,
                      MPI_Comm comm, MPI_Request* req);

namespace {

// The lower half's entry is looked up after p2p_entry(), which may park the rank: after a
// restart the lower half is another library (a pointer taken before would be the dead one's).
template <class LowerSend>
int send(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm,
         LowerSend LowerFns::*fn) {
    p2p_entry();
    count_sent(obj<Comm>(comm), dest);
    return (g_lower.*fn)(buf, count, in(type), dest, tag, in(comm));
}

}  // namespace

namespace impl {

int Send(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm) {
    return send(buf, count, type, dest, tag, comm, &LowerFns::Send);
}

int Ssend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm) {
    return send(buf, count, type, dest, tag, comm, &LowerFns::Ssend);
}

int Rsend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm) {
    return send(buf, count, type, dest, tag, comm, &LowerFns::Rsend);
}

int Recv(void* buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm, MPI_Status* status) {
    MPI_Request req = MPI_REQUEST_NULL;
    int rc = Irecv(buf, count, type, source, tag, comm, &req);
    if (rc != MPI_SUCCESS)
        return rc;
    return Wait(&req, status);
}

int Sendrecv(const void* sendbuf, int sendcount, MPI_Datatype sendtype, int dest, int sendtag, void* recvbuf,
             int recvcount, MPI_Datatype recvtype, int source, int recvtag, MPI_Comm comm, MPI_Status* status) {
    MPI_Request req = MPI_REQUEST_NULL;
    int rc = Irecv(recvbuf, recvcount, recvtype, source, recvtag, comm, &req);
    if (rc != MPI_SUCCESS)
        return rc;
    rc = Send(sendbuf, sendcount, sendtype, dest, sendtag, comm);
    int rc2 = Wait(&req, status);
    return rc != MPI_SUCCESS ? rc : rc2;
}

int Sendrecv_replace(void* buf, int count, MPI_Datatype type, int dest, int sendtag, int source, int recvtag,
                     MPI_Comm comm, MPI_Status* status) {
    // The outgoing contents, packed, so that the receive may land in buf meanwhile.
    int bytes = 0;
    int rc = g_lower.Pack_size(count, in(type), in(comm), &bytes);
    if (rc != MPI_SUCCESS)
        return rc;
    std::vector<char> packed(bytes > 0 ? bytes : 1);
    int position = 0;
    rc = g_lower.Pack(buf, count, in(type), packed.data(), bytes, &position, in(comm));
    if (rc != MPI_SUCCESS)
        return rc;
    return Sendrecv(packed.data(), position, MPI_PACKED, dest, sendtag, buf, count, type, source, recvtag, comm,
                    status);
}

int Iprobe(int source, int tag, MPI_Comm comm, int* flag, MPI_Status* status) {
    p2p_entry();
    if (g_drained_head) [[unlikely]]
        if (DrainedMessage* m = find_drained(obj<Comm>(comm), source, tag)) {
            *flag = 1;
            if (status != MPI_STATUS_IGNORE)
                drained_status(m, status);
            return MPI_SUCCESS;
        }
    return g_lower.Iprobe(source, tag, in(comm), flag, status);
}

int Probe(int source, int tag, MPI_Comm comm, MPI_Status* status) {
    for (;;) {
        int flag = 0;
        int rc = Iprobe(source, tag, comm, &flag, status);
        if (flag || rc != MPI_SUCCESS)
            return rc;
        waiting();
    }
}

}  // namespace impl
}  // namespace ckpt::mpi
