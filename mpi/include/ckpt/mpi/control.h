// The control channel between a rank's upper half and the coordinator that quiesces the
// ranks of a step (docs/mpi.md, "Quiesce protocol"). One AF_UNIX SOCK_SEQPACKET connection
// per rank: every message is one record, a Header followed by its payload. The rank connects
// to the path in CKPT_MPI_CONTROL at MPI_Init; without it the rank is never quiesced.
//
// One cycle: Intent -> Seqs (every rank) -> Targets -> Reached (every rank) -> Stop ->
// Sent (every rank) -> Expect -> Quiesced (every rank) -> Resume. Abort, at any point after
// Intent, ends the cycle on every rank: the ranks go on as if none had begun.
//
// Targets may be raised while ranks head for them: a rank held at a collective beyond its
// communicator's target, which still has to reach a target elsewhere (program order runs
// through that collective), asks with Raise; the coordinator sends new Targets (a higher
// generation) to every rank, and only Reached of the newest generation counts.
#pragma once

#include <cstdint>

namespace ckpt::mpi::control {

inline constexpr uint32_t kVersion = 1;
inline constexpr const char* kSocketEnv = "CKPT_MPI_CONTROL";
// The largest record either side sends: the per-peer counts of 65536 ranks and then some.
inline constexpr uint32_t kMaxRecord = 1u << 20;

enum class Msg : uint32_t {
    Hello = 1,  // rank -> coordinator: Hello
    Intent,     // coordinator -> rank: a cycle begins
    Seqs,       // rank -> coordinator: CommSeq[], its collective count per communicator
    Targets,    // coordinator -> rank: uint64_t generation, CommSeq[], the count every member stops at
    Reached,    // rank -> coordinator: uint64_t generation; at every target, inside no collective
    Stop,       // coordinator -> rank: no point-to-point call may start
    Sent,       // rank -> coordinator: uint64_t[world size], messages sent to each rank
    Expect,     // coordinator -> rank: uint64_t[world size], messages each rank sent it
    Quiesced,   // rank -> coordinator: Quiesced, then its lower half's resources
    Resume,     // coordinator -> rank: go on
    Abort,      // coordinator -> rank: the cycle is abandoned; go on
    Bye,        // rank -> coordinator: MPI_Finalize; it is never quiesced again
    Raise,      // rank -> coordinator: CommSeq, the count it must reach on that communicator
    Restarted,  // restorer -> restored rank (on the fd it was parked on): the new launch's
                // environment, "NAME=VALUE" strings each ended by a NUL
};

// The key under which a dump records the fd a parked rank waits on; a restorer gives the
// restored rank its end of a new channel under this key (the engine's --inherit-fd).
inline constexpr const char* kControlFdKey = "mpi-control";

struct Header {
    uint32_t type = 0;   // Msg
    uint32_t cycle = 0;  // the cycle this message belongs to (0 for Hello and Bye)
};

struct Hello {
    uint32_t version = kVersion;
    int32_t rank = -1;  // in MPI_COMM_WORLD
    int32_t size = 0;
    int32_t pid = 0;
};

struct CommSeq {
    uint64_t key = 0;  // the communicator, named alike on every member (see Comm::quiesce_key)
    uint64_t seq = 0;  // collectives entered on it so far
};

// What a dump of the parked rank must leave out (the lower half), and where the rank is
// parked: the fd it waits on for Resume, to be given back at restore.
struct Quiesced {
    int32_t control_fd = -1;
    uint32_t nthreads = 0;  // followed by int32_t tids[nthreads]
    uint32_t nfds = 0;      // then int32_t fds[nfds]
    uint32_t nranges = 0;   // then uint64_t [start, end) pairs [nranges]
};

}  // namespace ckpt::mpi::control
