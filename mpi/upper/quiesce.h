// The quiesce protocol of a rank (docs/mpi.md, "Quiesce protocol"; wire format in
// include/ckpt/mpi/control.h): bring every rank of a step to a point where no collective is
// half done and no message is in flight (each pair's sent and received counts equal, every
// message that arrived pulled into the upper half), park there for the dump, and go on.
//
// The application's thread does all MPI work (we grant at most MPI_THREAD_FUNNELED); a
// control thread only reads the coordinator's messages and answers Intent, which must be
// answered even while the application's thread is blocked inside a collective of the lower
// half or computing. Everything else happens at the application's next MPI call, or in the
// loops of blocking calls, which never block inside the lower half on a peer (blocking
// receives, probes and waits are non-blocking calls plus a progress loop).
//
// Fast path cost: one relaxed load per point-to-point call; a counter increment and a fence
// per collective.
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstdint>

#include "objects.h"

namespace ckpt::mpi {

// Non-zero while a quiesce cycle runs on this rank.
extern std::atomic<uint32_t> g_quiesce_active;

// Messages sent to and received from each world rank (the drain's bookkeeping).
extern uint64_t* g_sent;
extern uint64_t* g_received;

// After the lower half's MPI_Init: names the predefined communicators, connects the control
// channel when CKPT_MPI_CONTROL is set. At MPI_Finalize: says goodbye.
void quiesce_after_init();
void quiesce_before_finalize();

// A communicator made or freed by the application (freed ones keep their count: the other
// members may still be behind).
void register_comm(Comm* c);
void retire_comm(Comm* c);
// Its size and world ranks again (after a restart's replay).
void refresh_comm(Comm* c);

inline int world_rank_of(const Comm* c, int rank) { return c->world_of ? c->world_of[rank] : rank; }

inline void count_sent(const Comm* c, int dest) {
    if (dest >= 0 && dest < c->size)  // not MPI_PROC_NULL, nor a rank the lower half refuses
        ++g_sent[world_rank_of(c, dest)];
}
inline void count_received(const Comm* c, const MPI_Status& st) {
    if (st.MPI_SOURCE >= 0 && !st._cancelled)
        ++g_received[world_rank_of(c, st.MPI_SOURCE)];
}

// At the start of every point-to-point call: a rank told to stop quiesces here, parks, and
// returns when resumed.
void p2p_entry_slow();
inline void p2p_entry() {
    if (g_quiesce_active.load(std::memory_order_relaxed)) [[unlikely]]
        p2p_entry_slow();
}

// In the loop of a blocking call that waits for the lower half: protocol work, then returns.
void waiting_slow();
inline void waiting() {
    if (g_quiesce_active.load(std::memory_order_relaxed)) [[unlikely]]
        waiting_slow();
}

// Around every collective call (and communicator creation) on `comm`.
class CollectiveScope {
public:
    explicit CollectiveScope(MPI_Comm comm);
    ~CollectiveScope();
    CollectiveScope(const CollectiveScope&) = delete;
    CollectiveScope& operator=(const CollectiveScope&) = delete;

private:
    Comm* c_;
};

// Requests the drain must see complete: every posted request is linked while active.
void link_active(Request* r);
void unlink_active(Request* r);

}  // namespace ckpt::mpi
