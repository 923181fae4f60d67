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

// Matched probes: the message is received into the upper half at once (as a quiesce drains
// one), so nothing matched is left in the lower half for a checkpoint to lose.
int Improbe(int source, int tag, MPI_Comm comm, int* flag, MPI_Message* message, MPI_Status* status) {
    p2p_entry();
    Comm* c = obj<Comm>(comm);
    DrainedMessage* m = g_drained_head ? find_drained(c, source, tag) : nullptr;
    if (m) {
        unlink_drained(m);
    } else {
        MPI_Status st{};
        int rc = g_lower.Iprobe(source, tag, in(comm), flag, &st);
        if (rc != MPI_SUCCESS || !*flag)
            return rc;
        if (st.MPI_SOURCE == MPI_PROC_NULL) {
            *message = MPI_MESSAGE_NO_PROC;
            if (status != MPI_STATUS_IGNORE)
                *status = st;
            return rc;
        }
        m = pull_message(c, st, "MPI_Improbe");
    }
    *flag = 1;
    if (status != MPI_STATUS_IGNORE)
        drained_status(m, status);
    *message = handle<MPI_Message>(new Message{.matched = m});
    return MPI_SUCCESS;
}

int Mprobe(int source, int tag, MPI_Comm comm, MPI_Message* message, MPI_Status* status) {
    for (;;) {
        int flag = 0;
        int rc = Improbe(source, tag, comm, &flag, message, status);
        if (flag || rc != MPI_SUCCESS)
            return rc;
        waiting();
    }
}

namespace {
// The matched message behind *message, which becomes MPI_MESSAGE_NULL; nullptr for
// MPI_MESSAGE_NO_PROC (a probe of MPI_PROC_NULL).
int take_matched(MPI_Message* message, DrainedMessage** m) {
    *m = nullptr;
    if (*message == MPI_MESSAGE_NULL)
        return raise_error(MPI_COMM_WORLD, MPI_ERR_REQUEST);
    if (*message != MPI_MESSAGE_NO_PROC) {
        Message* msg = obj<Message>(*message);
        *m = msg->matched;
        delete msg;
    }
    *message = MPI_MESSAGE_NULL;
    return MPI_SUCCESS;
}
}  // namespace

int Mrecv(void* buf, int count, MPI_Datatype type, MPI_Message* message, MPI_Status* status) {
    p2p_entry();
    DrainedMessage* m = nullptr;
    if (int rc = take_matched(message, &m); rc != MPI_SUCCESS)
        return rc;
    if (!m)  // as a receive from MPI_PROC_NULL
        return Recv(buf, count, type, MPI_PROC_NULL, MPI_ANY_TAG, MPI_COMM_SELF, status);
    return deliver_drained(m, buf, count, type, status);
}

int Imrecv(void* buf, int count, MPI_Datatype type, MPI_Message* message, MPI_Request* req) {
    p2p_entry();
    DrainedMessage* m = nullptr;
    if (int rc = take_matched(message, &m); rc != MPI_SUCCESS)
        return rc;
    if (!m)
        return Irecv(buf, count, type, MPI_PROC_NULL, MPI_ANY_TAG, MPI_COMM_SELF, req);
    return post_from_drained(m, buf, count, type, m->source, m->tag, handle<MPI_Comm>(m->comm), req);
}

}  // namespace impl
}  // namespace ckpt::mpi
