// The ranks of a Slurm step run on several nodes; the step's coordinator (coordinator.h)
// runs in the lead agent, on node 0. Every node's agent runs a Relay: the node's ranks
// connect to it as they would to a coordinator (CKPT_MPI_CONTROL names its abstract AF_UNIX
// socket; only the job's user is accepted and a rank's pid is the kernel's word, from
// SO_PEERCRED), and it carries each rank's channel over its own TCP connection to the lead's
// Relay, which connects it to the coordinator as if the rank were local (docs/mpi.md, "Under
// Slurm"). On the way the relay does what only the rank's node can: it puts the rank's pid
// in its hello, translates the thread ids of its parked report, and remembers what the
// node's dump of each parked rank must leave out.
//
// A node's relay proves itself to the lead with the step's token (random, in the job's own
// folder, which only the job's user and root can read); TCP frames are a 32-bit length in
// network order, then one control record.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "ckpt/base/result.h"
#include "coordinator.h"

namespace ckpt::mpi {

struct LeadAddress {
    std::string host;  // the lead's host name (this node's own name: the loopback address)
    uint16_t port = 0;
    std::string token;  // 32 hex digits
};

class Relay {
public:
    // Listens for this node's ranks at `rank_socket` ("@name": abstract) and starts the
    // relay's thread. Ranks that connect before the lead is known wait.
    static Result<std::unique_ptr<Relay>> start(const std::string& rank_socket);
    ~Relay();
    Relay(const Relay&) = delete;
    Relay& operator=(const Relay&) = delete;

    // The lead only: accepts the nodes' relays on a TCP port of this host and connects every
    // rank they carry to the coordinator at `coordinator_socket`; this node's ranks go the
    // same way. Returns where the nodes reach it (token included).
    Result<LeadAddress> serve_as_lead(const std::string& coordinator_socket);
    // Where the lead's relay is.
    void set_lead(const LeadAddress& lead);
    bool has_lead() const;

    // This node's ranks parked now, by pid (as this node sees it); their threads as this node
    // numbers them.
    std::map<pid_t, ParkedRank> parked() const;
    // This node's ranks connected now: pid -> rank.
    std::map<pid_t, int> ranks() const;

    struct State;

private:
    Relay() = default;
    std::unique_ptr<State> state_;
};

}  // namespace ckpt::mpi
