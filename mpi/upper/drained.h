// Messages a quiesce pulled out of the lower half (they had arrived, no receive had matched
// them yet): the upper half holds them, in arrival order, and the next receives and probes
// that match them take them from here before asking the lower half.
#pragma once

#include <mpi.h>

#include <cstddef>

#include "objects.h"

namespace ckpt::mpi {

struct DrainedMessage {
    Comm* comm = nullptr;  // kept alive by a reference
    int source = 0;        // rank in comm
    int tag = 0;
    std::size_t bytes = 0;  // packed (MPI_BYTE) contents
    char* data = nullptr;
    DrainedMessage* next = nullptr;
};

extern DrainedMessage* g_drained_head;

// First held message matching a receive (source and tag may be the wildcards), or nullptr.
DrainedMessage* find_drained(const Comm* comm, int source, int tag);
// Receives the message a lower-half probe found (status `probed`) as bytes into a new held
// message, counted as received, not listed yet; `why` names the caller in a fatal error.
DrainedMessage* pull_message(Comm* comm, const MPI_Status& probed, const char* why);
// Adds one at the end of the list.
void append_drained(DrainedMessage* m);
// Takes m out of the list (a matched probe owns it then); a no-op when it is not in it.
void unlink_drained(DrainedMessage* m);
// Copies m into the receive buffer (as MPI_Recv would: MPI_ERR_TRUNCATE when it does not fit),
// fills the status, removes (if listed) and frees m. Returns the MPI error code.
int deliver_drained(DrainedMessage* m, void* buf, int count, MPI_Datatype type, MPI_Status* status);
// The status a probe reports for m, leaving it held.
void drained_status(const DrainedMessage* m, MPI_Status* status);

}  // namespace ckpt::mpi
