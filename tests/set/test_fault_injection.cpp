// Fault injection: a writer process (set_crash_writer) is SIGKILLed at random points
// while it writes members, commits and applies retention, 200 times in a row on the same
// job, each time as a new run (as a requeue would) or as the same run restarted. The
// writer reports each step on stdout; the kill is aimed after a random number of steps
// plus a random delay, so every phase is hit however loaded the machine is. After every
// kill:
//   - the index opens;
//   - every set marked committed has all its members, every file whole, every checksum
//     right (no committed set with a missing or short member);
//   - the newest committed set verifies and is at least as new as every commit the writer
//     reported (a reported commit is never lost).
// CKPT_FAULT_SEED=N replays a sequence; CKPT_FAULT_RUNS=N changes the count.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "ckpt/base/strings.h"
#include "set_test_util.h"

using namespace ckpt;
using namespace ckpt::set;
using namespace ckpt::set::testing;

namespace {

class Writer {
public:
    Writer(const std::string& root, uint64_t job, uint32_t run, uint32_t seed) {
        int out[2], err[2];
        if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(out[1], 1);
            ::dup2(err[1], 2);
            std::string j = std::to_string(job), r = std::to_string(run), s = std::to_string(seed);
            ::execl(CKPT_CRASH_WRITER_BIN, "set_crash_writer", root.c_str(), j.c_str(), r.c_str(),
                    s.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ::close(out[1]);
        ::close(err[1]);
        out_ = out[0];
        err_ = err[0];
    }
    ~Writer() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (out_ >= 0) ::close(out_);
        if (err_ >= 0) ::close(err_);
    }
    bool started() const { return pid_ > 0; }

    // Reads the next progress line; false on timeout or end of output.
    bool next_event(std::string* line) {
        for (;;) {
            if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
                *line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                note(*line);
                return true;
            }
            pollfd pfd{out_, POLLIN, 0};
            if (::poll(&pfd, 1, 20000) != 1) return false;
            char chunk[256];
            ssize_t n = ::read(out_, chunk, sizeof chunk);
            if (n <= 0) return false;
            buf_.append(chunk, static_cast<size_t>(n));
        }
    }

    // SIGKILL, reap, and take in what it reported before dying. Returns its wait status.
    int kill_and_reap() {
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        reaped_ = true;
        std::string line;
        while (next_event(&line)) {
        }
        return status;
    }
    std::string errors() {
        std::string s;
        char chunk[512];
        ssize_t n;
        while ((n = ::read(err_, chunk, sizeof chunk)) > 0) s.append(chunk, static_cast<size_t>(n));
        return s;
    }
    uint64_t last_commit() const { return last_commit_; }
    bool began_a_set() const { return began_; }

private:
    void note(const std::string& line) {
        if (line.starts_with("commit ")) last_commit_ = *parse_uint(line.substr(7));
        if (line.starts_with("begin ")) began_ = true;
    }
    pid_t pid_ = -1;
    int out_ = -1, err_ = -1;
    bool reaped_ = false, began_ = false;
    std::string buf_;
    uint64_t last_commit_ = 0;
};

TEST(FaultInjection, SigkilledWriterLeavesAUsableIndex) {
    uint32_t seed = static_cast<uint32_t>(std::random_device{}());
    if (const char* s = std::getenv("CKPT_FAULT_SEED"))
        seed = static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
    int runs = 200;
    if (const char* s = std::getenv("CKPT_FAULT_RUNS")) runs = std::atoi(s);
    std::printf("seed %u (CKPT_FAULT_SEED=%u replays the same kill points)\n", seed, seed);
    std::mt19937 rng(seed);
    TempRoot root;
    constexpr uint64_t kJob = 555;

    uint64_t newest_before = 0, reported_commit = 0;
    int half_written = 0, commits_seen = 0;
    uint32_t run = 0;
    for (int i = 0; i < runs; ++i) {
        SCOPED_TRACE(fmt::format("kill {} (seed {})", i, seed));
        if (rng() % 4 != 0)
            ++run;  // mostly a requeued run; sometimes the same run's agent restarting
        Writer w(root.path(), kJob, run, rng());
        ASSERT_TRUE(w.started());
        std::string line;
        ASSERT_TRUE(w.next_event(&line) && line == "ready")
            << "writer did not start: " << line << w.errors();
        // A set is 3 to 6 events; aim anywhere in the first two sets or so.
        for (uint32_t steps = rng() % 13; steps > 0; --steps)
            ASSERT_TRUE(w.next_event(&line)) << "writer stopped: " << w.errors();
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
        int status = w.kill_and_reap();
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            << "writer ended on its own: " << w.errors();
        if (w.last_commit()) {
            ++commits_seen;
            reported_commit = w.last_commit();
        }

        auto st = JobStore::open(root.path(), kJob);
        ASSERT_TRUE(st.ok()) << st.error().message();
        const Index& idx = st->index();
        for (const SetRecord& s : idx.sets) {
            if (s.state == SetState::Writing) ++half_written;
            if (s.state != SetState::Committed) continue;
            ASSERT_EQ(s.members.size(), s.expected_members) << "set " << s.seq;
            auto v = st->verify_set(s.seq);
            ASSERT_TRUE(v.ok()) << v.error().message();
        }
        const SetRecord* newest = idx.newest_committed();
        uint64_t newest_seq = newest ? newest->seq : 0;
        ASSERT_GE(newest_seq, newest_before) << "a committed set was lost";
        ASSERT_GE(newest_seq, reported_commit) << "a reported commit is not in the index";
        newest_before = newest_seq;
        if (newest) {
            auto nv = st->newest_verified();
            ASSERT_TRUE(nv.ok()) << nv.error().message();
            EXPECT_EQ(*nv, newest_seq);
        }
    }
    std::printf(
        "%d kills: %d after a reported commit, %d left a set half-written; newest committed set "
        "%llu\n",
        runs, commits_seen, half_written, static_cast<unsigned long long>(newest_before));
    // The kills must have landed both inside sets and after commits, or this proved nothing.
    EXPECT_GT(commits_seen, runs / 4);
    EXPECT_GT(half_written, runs / 10);
    // And a repair of what is left agrees with the index.
    auto folder = JobStore::open_folder(root.path(), kJob);
    ASSERT_TRUE(folder.ok());
    auto rep = folder->repair();
    ASSERT_TRUE(rep.ok()) << rep.error().message();
    auto after = JobStore::open(root.path(), kJob);
    ASSERT_TRUE(after.ok());
    ASSERT_NE(after->index().newest_committed(), nullptr);
    EXPECT_GE(after->index().newest_committed()->seq, newest_before);
}

}  // namespace
