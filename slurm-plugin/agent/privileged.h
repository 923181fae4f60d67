// The agent's two halves (docs/security.md). `ckpt-agent run` starts as root in slurmstepd;
// its privileged half keeps root only to do what the job's user cannot: run the engine's
// dumps of the step's tasks with the capabilities ptrace and /proc/PID/map_files need, make
// the job's folder in a root-owned checkpoint root, and move it aside. Everything that reads
// or writes the job's checkpoint folder (index, manifests, requests, reports, logs,
// retention) is the unprivileged half's: a child that became the job's user before it ran
// a line of that code.
//
// The halves talk over a SOCK_SEQPACKET socket pair, one message per request and answer:
//   user -> privileged   "log" with one fd       the user's log file, for the engines' stderr
//   user -> privileged   "dump SEQ ID..."        dump these local members of set SEQ; then
//                        "rank PARKED" lines      this node's parked MPI ranks, and what
//                                                 their dumps leave out (mpi encode_parked)
//   privileged -> user   "dumped SEQ" then one line per member: "ID ok", "ID ok rank R"
//                        (the member is MPI rank R) or "ID <failure>"
//   user -> privileged   "aside NAME"            move the job folder to NAME in the root
//   privileged -> user   "ok" or "error <text>"
// The privileged half takes from the user half no path, no pid and no file name: members are
// named by the task ids slurmstepd gave it, image folders are made from the job id and the
// set number, the new name of a folder must have one fixed form.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent.h"
#include "coordinator.h"

namespace ckpt::slurm::agent {

// The root half of `ckpt-agent run`: forks the unprivileged half (run_agent, as the user)
// and serves it until it exits; returns its exit status.
int run_agent_privileged(AgentConfig cfg);

// The unprivileged half's end of the channel.
class PrivilegedChannel {
public:
    explicit PrivilegedChannel(int fd) : fd_(fd) {}
    bool valid() const { return fd_ >= 0; }
    // Engines write their messages into this file from now on.
    Result<void> send_log(int log_fd);
    // Dumps the local members of set seq. A member whose process is one of the parked ranks
    // is dumped without its lower half; one that maps ckpt's libmpi but is not parked fails.
    // With incremental_sets(), the dumps leave write trackers, and with parent (an older set
    // of this run) each member whose folder is in that set saves only the pages written since;
    // a full set names tracked (the newest set whose dumps left the trackers), whose records
    // let the engine recognise them.
    struct Dumped {
        std::string failure;  // "" when done
        int mpi_rank = -1;    // the member is this MPI rank
    };
    Result<std::map<int32_t, Dumped>> dump(uint64_t seq, const std::vector<int32_t>& members,
                                           const std::vector<mpi::ParkedRank>& parked, uint64_t parent,
                                           uint64_t tracked);
    Result<void> move_aside(const std::string& to);

private:
    Result<std::string> ask(const std::string& request, int pass_fd = -1);
    int fd_;
};

}  // namespace ckpt::slurm::agent
