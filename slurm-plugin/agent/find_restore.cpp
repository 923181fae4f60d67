// `ckpt-agent find-restore`: run by spank_ckpt.so in a starting task (root, before the
// user's program is exec'd), so that slurmstepd itself never loads HDF5. It decides what the
// task becomes (slurm-plugin/README.md, "Restart"):
//   restore SET DIR   the newest committed set of this step that verifies (or the set asked
//                     for): DIR is this task's member image folder
//   restore-mpi SET DIR  the same, and the member is an MPI rank (kMpiRankMarker): its
//                     restorer hands it a new control channel and the launch's environment
//   skip REASON       the step finished (exit 0) before the newest committed set was begun:
//                     a re-run batch script does not run it again
//   fresh REASON      nothing to restore: the task starts from the beginning
// or exits 1 with the error (a set exists but cannot be used: the task must fail, loudly).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "agent.h"
#include "ckpt/set/store.h"
#include "ckpt/slurm/coordination.h"

namespace ckpt::slurm::agent {

namespace {

using set::JobStore;
using set::SetRecord;
using set::SetState;

struct Decision {
    std::string line;
};

// Whether a checkpoint of a step (its id and command) stands for the starting step. In a
// requeued job: the same command when both are known, since the script re-run may number its
// steps differently (a step left out by a test in the script, concurrent sruns). Else (and
// for a restore into another job, whose steps' argv often hold their own job id) the same id.
bool same_step(uint32_t step_id, const std::string& command, const RestoreQuery& q) {
    if (q.job == q.current_job && !command.empty() && !q.step_command.empty())
        return command == q.step_command;
    return step_id == q.step;
}

// When the step with this id was recorded finished, if it ran what the starting step runs
// (0: never).
uint64_t step_done_ns(const JobStore& st, const RestoreQuery& q) {
    auto dir = open_folder(st.dir() + "/" + kAgentsDir, std::nullopt);
    if (!dir) return 0;
    auto text = read_file_at(dir->get(), step_done_name(q.step));
    if (!text) return 0;
    auto body = unseal(*text, step_done_name(q.step));
    if (!body) return 0;
    Fields f = parse_fields(*body);
    if (!same_step(q.step, field(f, "command").value_or(""), q)) return 0;
    auto t = uint_field(f, "time_ns", "step record");
    return t ? *t : 0;
}

Result<Decision> decide(const RestoreQuery& q) {
    auto opened = JobStore::open(q.root, q.job);
    if (!opened) {
        if (opened.error().code() == ENOENT)
            return Decision{fmt::format("fresh job {} has no checkpoints in {}", q.job, q.root)};
        return std::move(opened).error();
    }
    const JobStore& st = *opened;
    const auto& job = st.index().job;
    // A reused job id: the folder is an earlier job's (its writer moves it aside).
    if (q.job == q.current_job && !q.incarnation.empty() && !job.incarnation.empty() &&
        job.incarnation != q.incarnation)
        return Decision{fmt::format(
            "fresh {} holds an earlier job {} (incarnation {}, this job is {}): the job id was "
            "reused; not restoring from it",
            st.dir(), q.job, job.incarnation, q.incarnation)};
    // Whose they are comes from the folder's owner (JobStore::open refuses a folder of
    // anyone but this process's user, which is the job's), never from the index's record.
    const SetRecord* newest = st.index().newest_committed();
    if (uint64_t done = step_done_ns(st, q); done && newest && done < newest->start_ns)
        return Decision{fmt::format("skip step {} finished before set {} was taken",
                                    step_name(q.step), newest->seq)};

    std::string why;
    for (auto it = st.index().sets.rbegin(); it != st.index().sets.rend(); ++it) {
        const SetRecord& s = *it;
        if (q.explicit_set && s.seq != q.set) continue;
        bool ours = same_step(s.step_id, s.step_command, q);
        if (s.state != SetState::Committed || !ours) {
            if (q.explicit_set)
                return !ours
                           ? Decision{fmt::format("fresh set {} is of step {}, not of step {}",
                                                  s.seq, step_name(s.step_id), step_name(q.step))}
                           : Result<Decision>(error("job {} set {} is {}, not committed", q.job,
                                                    s.seq, set::to_string(s.state)));
            continue;
        }
        if (auto v = st.verify_set(s.seq); !v) {
            why += fmt::format("; {}", v.error().message());
            if (q.explicit_set) break;
            continue;
        }
        for (const auto& m : s.members)
            if (m.member_id == q.member) {
                // The marker is one of the member's files: the set's checksums cover it.
                bool rank = std::any_of(m.files.begin(), m.files.end(),
                                        [](const set::FileRecord& f) { return f.name == kMpiRankMarker; });
                return Decision{fmt::format("{} {} {}/{}", rank ? "restore-mpi" : "restore", s.seq, st.dir(),
                                            m.image_dir)};
            }
        return error("job {} set {} has no member {}", q.job, s.seq, q.member);
    }
    if (q.explicit_set && why.empty())
        return error_code(ENOENT, "job {} has no set {}", q.job, q.set);
    if (!why.empty())
        return error("job {} step {}: no committed set verifies{}", q.job, step_name(q.step), why);
    return Decision{
        fmt::format("fresh job {} has no committed set of step {}", q.job, step_name(q.step))};
}

}  // namespace

int find_restore(const RestoreQuery& q) {
    auto d = decide(q);
    if (!d) {
        std::printf("error %s\n", d.error().message().c_str());
        return 1;
    }
    std::printf("%s\n", d->line.c_str());
    return 0;
}

}  // namespace ckpt::slurm::agent
