// ckpt-mpi-coord: quiesces the ranks of one MPI run again and again (a stress test and the
// quiesce benchmark), outside Slurm: start it, then run the ranks with CKPT_MPI_CONTROL set
// to its socket and libckpt_mpi on their library path (docs/mpi.md).
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "coordinator.h"

using namespace std::chrono;

namespace {

int usage(const char* why) {
    std::fprintf(stderr,
                 "ckpt-mpi-coord: %s\n"
                 "usage: ckpt-mpi-coord --socket PATH --ranks N [--cycles K] [--min-cycles K] [--interval-ms MS]\n"
                 "                      [--hold-ms MS] [--timeout-ms MS] [--dump DIR --engine PATH [--incremental]\n"
                 "                      [--kill-after-dump]] [-v]\n"
                 "  quiesces the N ranks of one run up to K times (default: until they finish), MS apart,\n"
                 "  holding them parked for --hold-ms each time; prints the quiesce latencies; fails if\n"
                 "  a cycle fails for any other reason than the ranks finishing, or fewer than --min-cycles\n"
                 "  completed. With --dump, each parked cycle dumps every rank (lower half left out) into\n"
                 "  DIR/set-C/rank-R with the engine, and writes C to DIR/latest when all succeeded;\n"
                 "  --incremental leaves write trackers and dumps each set after the first against the\n"
                 "  one before it (only the pages written since); --kill-after-dump kills the ranks (a\n"
                 "  node failure) after the dump of cycle K (the first without --cycles) and ends\n",
                 why);
    return 2;
}

// Dumps every parked rank (in parallel) into dir/rank-N, leaving its lower half out and
// recording the fd it waits on as external resource "mpi-control". Returns "" or an error.
// With incremental, every dump leaves a write tracker, and with a parent set (prev_dir, not
// empty) saves only the pages written since that set's dump of the same rank.
std::string dump_ranks(const std::vector<ckpt::mpi::ParkedRank>& parked, const std::string& engine,
                       const std::string& dir, bool incremental, const std::string& prev_dir) {
    if (mkdir(dir.c_str(), 0700) != 0) return dir + ": " + std::strerror(errno);
    std::vector<pid_t> children;
    std::string failure;
    for (const auto& p : parked) {
        std::vector<std::string> args = {engine, "dump", "-t", std::to_string(p.pid), "-D",
                                         dir + "/rank-" + std::to_string(p.rank), "--leave-running",
                                         "--external-stdio", "--file-locks"};
        for (auto& a : ckpt::mpi::dump_exclusion_args(p)) args.push_back(std::move(a));
        if (incremental) args.push_back("--track-mem");
        if (incremental && !prev_dir.empty())
            args.insert(args.end(), {"--prev-images-dir", prev_dir + "/rank-" + std::to_string(p.rank)});
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_t child = 0;
        int rc = posix_spawn(&child, engine.c_str(), nullptr, nullptr, argv.data(), environ);
        if (rc != 0) {
            failure = engine + ": " + std::strerror(rc);
            break;
        }
        children.push_back(child);
    }
    for (size_t i = 0; i < children.size(); ++i) {
        int st = 0;
        waitpid(children[i], &st, 0);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && failure.empty())
            failure = "the dump of rank " + std::to_string(parked[i].rank) + " failed";
    }
    return failure;
}

double ms(nanoseconds d) { return duration<double, std::milli>(d).count(); }

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
    std::string socket_path, dump_dir, engine;
    long ranks = 0, cycles = -1, min_cycles = 0, interval_ms = 0, hold_ms = 0, timeout_ms = 30000;
    int verbosity = 0;
    bool kill_after_dump = false, incremental = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](long* out) {
            if (i + 1 >= argc) return false;
            auto v = ckpt::parse_int(argv[++i]);
            if (!v || *v < 0) return false;
            *out = *v;
            return true;
        };
        if (a == "--socket" && i + 1 < argc) socket_path = argv[++i];
        else if (a == "--ranks") { if (!value(&ranks)) return usage("--ranks wants a number"); }
        else if (a == "--cycles") { if (!value(&cycles)) return usage("--cycles wants a number"); }
        else if (a == "--min-cycles") { if (!value(&min_cycles)) return usage("--min-cycles wants a number"); }
        else if (a == "--interval-ms") { if (!value(&interval_ms)) return usage("--interval-ms wants a number"); }
        else if (a == "--hold-ms") { if (!value(&hold_ms)) return usage("--hold-ms wants a number"); }
        else if (a == "--timeout-ms") { if (!value(&timeout_ms)) return usage("--timeout-ms wants a number"); }
        else if (a == "--dump" && i + 1 < argc) dump_dir = argv[++i];
        else if (a == "--engine" && i + 1 < argc) engine = argv[++i];
        else if (a == "--kill-after-dump") kill_after_dump = true;
        else if (a == "--incremental") incremental = true;
        else if (a == "-v") ++verbosity;
        else return usage(("unknown option " + a).c_str());
    }
    if (socket_path.empty() || ranks <= 0) return usage("--socket and --ranks are required");
    if (dump_dir.empty() != engine.empty()) return usage("--dump and --engine go together");
    if ((incremental || kill_after_dump) && dump_dir.empty()) return usage("--incremental and --kill-after-dump need --dump");
    ckpt::log::configure(verbosity);

    auto coord = ckpt::mpi::Coordinator::listen(socket_path, static_cast<int>(ranks));
    if (!coord) {
        std::fprintf(stderr, "ckpt-mpi-coord: %s\n", coord.error().message().c_str());
        return 1;
    }
    auto accepted = coord->accept_ranks(milliseconds(timeout_ms));
    unlink(socket_path.c_str());
    if (!accepted) {
        std::fprintf(stderr, "ckpt-mpi-coord: %s\n", accepted.error().message().c_str());
        return 1;
    }
    std::vector<double> total, seqs, reached, counts;
    std::string ended;
    bool failed = false;
    for (long c = 0; cycles < 0 || c < cycles; ++c) {
        if (interval_ms) std::this_thread::sleep_for(milliseconds(interval_ms));
        if (coord->live_ranks() < ranks) break;
        ckpt::mpi::QuiesceTimes t;
        auto parked = coord->quiesce(milliseconds(timeout_ms), &t);
        if (!parked) {
            ended = parked.error().message();
            failed = ended.find("MPI_Finalize") == std::string::npos;
            break;
        }
        total.push_back(ms(t.to_parked));
        seqs.push_back(ms(t.to_seqs));
        reached.push_back(ms(t.to_reached));
        counts.push_back(ms(t.to_counts));
        if (!dump_dir.empty()) {
            std::string set = dump_dir + "/set-" + std::to_string(total.size());
            auto dump_start = steady_clock::now();
            std::string prev = total.size() > 1 ? dump_dir + "/set-" + std::to_string(total.size() - 1) : "";
            std::string failure = dump_ranks(*parked, engine, set, incremental, prev);
            double dump_ms = ms(steady_clock::now() - dump_start);
            if (!failure.empty()) {
                ended = failure;
                failed = true;
                (void)coord->resume();
                break;
            }
            FILE* f = std::fopen((dump_dir + "/latest").c_str(), "we");
            if (f) {
                std::fprintf(f, "%zu\n", total.size());
                std::fclose(f);
            }
            std::printf("dumped %ld ranks into %s in %.1f ms\n", ranks, set.c_str(), dump_ms);
            std::fflush(stdout);
            if (kill_after_dump && (cycles < 0 || c + 1 == cycles)) {
                // As a node failure would: the ranks die parked, the set is all that is left.
                for (const auto& p : *parked) kill(p.pid, SIGKILL);
                std::printf("killed the ranks\n");
                return 0;
            }
        }
        if (hold_ms) std::this_thread::sleep_for(milliseconds(hold_ms));
        if (auto r = coord->resume(); !r) {
            ended = r.error().message();
            failed = true;
            break;
        }
    }
    auto fin = coord->wait_finished(milliseconds(timeout_ms));
    std::printf("quiesce: %zu cycles of %ld ranks: to parked median %.3f ms, p90 %.3f ms, max %.3f ms "
                "(counts %.3f, targets reached %.3f, collective counts %.3f)\n",
                total.size(), ranks, percentile(total, 0.5), percentile(total, 0.9), percentile(total, 1.0),
                percentile(counts, 0.5), percentile(reached, 0.5), percentile(seqs, 0.5));
    if (!ended.empty()) std::printf("last cycle: %s\n", ended.c_str());
    if (!fin) {
        std::fprintf(stderr, "ckpt-mpi-coord: %s\n", fin.error().message().c_str());
        return 1;
    }
    if (failed) {
        std::fprintf(stderr, "ckpt-mpi-coord: a quiesce failed: %s\n", ended.c_str());
        return 1;
    }
    if (static_cast<long>(total.size()) < min_cycles) {
        std::fprintf(stderr, "ckpt-mpi-coord: %zu cycles completed, fewer than %ld\n", total.size(), min_cycles);
        return 1;
    }
    return 0;
}
