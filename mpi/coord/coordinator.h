// The coordinator of one step's ranks: drives the quiesce protocol over their control
// channels (include/ckpt/mpi/control.h) and hands back, for each parked rank, what its dump
// must leave out. Used by ckpt-mpi-coord (one node, mpirun) and, next, by the node agents.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
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

struct QuiesceTimes {
    std::chrono::nanoseconds to_seqs{}, to_reached{}, to_counts{}, to_parked{};
};

class Coordinator {
public:
    // Listens on a new socket at `path` (which must not exist; mode 0600) for `world_size` ranks.
    static Result<Coordinator> listen(const std::string& path, int world_size);

    // Until every rank said hello (or the deadline).
    Result<void> accept_ranks(std::chrono::milliseconds timeout);

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
    uint32_t cycle_ = 0;
    bool parked_ = false;
};

}  // namespace ckpt::mpi
