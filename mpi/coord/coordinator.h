// The coordinator of one step's ranks: drives the quiesce protocol over their control
// channels (include/ckpt/mpi/control.h) and hands back, for each parked rank, what its dump
// must leave out. Used by ckpt-mpi-coord (one node, mpirun) and by the lead agent of a Slurm
// step, whose ranks on every node reach it through relays (relay.h).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::mpi {

// A rank parked by a quiesce: the dump's exclusions and the fd it waits on.
struct ParkedRank {
    int rank = -1;
    pid_t pid = 0;
    int control_fd = -1;
    std::vector<pid_t> lower_threads;
    std::vector<int> lower_fds;
    std::vector<std::pair<uint64_t, uint64_t>> lower_memory;  // [start, end)
};

// The engine's dump options that leave a parked rank's lower half out and record the fd it
// waits on as the external resource control::kControlFdKey.
std::vector<std::string> dump_exclusion_args(const ParkedRank& p);

// A parked rank as one line of text ("RANK PID CONTROL_FD TIDS FDS RANGES", lists
// comma-separated or "-", ranges START-END in hex), for an agent's two halves; the reader
// takes numbers only.
std::string encode_parked(const ParkedRank& p);
Result<ParkedRank> decode_parked(std::string_view line);

// A rank's thread ids as its own pid namespace numbers them -> as this process sees them
// (a restored rank runs in a pid namespace of its own).
Result<std::vector<pid_t>> host_tids(pid_t pid, const std::vector<pid_t>& inner);

// A socket address for `name`: a path, or "@name" for the abstract namespace (no file, so no
// folder the ranks and the coordinator must share; the peer's uid is what is checked).
Result<socklen_t> unix_address(const std::string& name, sockaddr_un* out);

struct QuiesceTimes {
    std::chrono::nanoseconds to_seqs{}, to_reached{}, to_counts{}, to_parked{};
};

class Coordinator {
public:
    // Listens on a new socket at `path` (which must not exist; mode 0600; "@name": abstract)
    // for `world_size` ranks. With `relayed`, every rank comes through a relay of this very
    // process (relay.h; a connection from any other process is refused): its hello carries
    // the rank's pid as the rank's node sees it and its parked report the rank's threads as
    // that node numbers them.
    static Result<Coordinator> listen(const std::string& path, int world_size, bool relayed = false);

    // Takes the connections and hellos that came, until every rank said hello or the
    // deadline (0: what is there now). Connections not yet introduced are kept for the next call.
    Result<void> accept_ranks(std::chrono::milliseconds timeout);
    // Ranks that said hello.
    int connected_ranks() const;

    // One cycle: every rank parked with no collective half done and no message in flight.
    // On failure (a rank gone, finalized, the deadline) the cycle is aborted on every rank,
    // which goes on, and the error names the ranks and the phase.
    Result<std::vector<ParkedRank>> quiesce(std::chrono::milliseconds timeout, QuiesceTimes* times = nullptr);
    // Lets parked ranks go on.
    Result<void> resume();

    // Ranks still connected and not finalized.
    int live_ranks() const;
    // Waits until every rank said goodbye or closed its channel.
    Result<void> wait_finished(std::chrono::milliseconds timeout);

    const std::string& path() const { return path_; }

private:
    struct Rank {
        UniqueFd fd;
        int rank = -1;
        pid_t pid = 0;
        bool relayed = false;   // through a relay of this process (pid and threads are the node's)
        bool gone = false;      // channel closed
        bool finalized = false; // said Bye
    };
    Coordinator() = default;

    Result<void> send_all(uint32_t type, const void* payload, size_t len);
    Result<void> send_to(Rank& r, uint32_t type, const void* payload, size_t len);
    // Reads one record of `type` for the current cycle from every rank; `take(rank, payload)`
    // receives its payload. Anything else (goodbye, end of file, another type) fails.
    template <class Take>
    Result<void> collect(uint32_t type, const char* phase, std::chrono::steady_clock::time_point deadline, Take&& take);
    void abort_cycle();
    void finalized(Rank& r);
    Result<void> reach_targets(std::map<uint64_t, uint64_t>& targets, std::chrono::steady_clock::time_point deadline);

    std::string path_;
    UniqueFd listener_;
    int world_size_ = 0;
    std::vector<Rank> ranks_;  // by world rank once accepted
    // Connections whose hello has not come yet, with their peer's pid.
    std::vector<std::pair<UniqueFd, pid_t>> pending_;
    uint32_t cycle_ = 0;
    bool parked_ = false;
    bool relayed_ = false;
};

}  // namespace ckpt::mpi
