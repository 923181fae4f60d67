// ckpt-agent relay: the batch step's task, with the script's shell (or, on a restart, the
// engine's restore) as its only child.
//
// Slurm delivers the batch warning (sbatch --signal=B:SIG@SECS, scancel --batch --signal) to
// the batch step's task pid alone. The agents never see it, so without the relay a job whose
// batch script computes itself would get no final checkpoint. The relay takes the task's
// place: a warning signal (SIGUSR1/SIGUSR2, the ones the agents treat as Slurm's warning)
// first asks the step's lead agent for a final set (the preempt-request file) and reaches the
// shell once that set committed or failed, so a trap in the script runs after the
// checkpoint; every other signal is passed on at once. The relay exits as its child did.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <vector>

#include "agent.h"
#include "ckpt/base/log.h"
#include "ckpt/set/store.h"
#include "ckpt/slurm/coordination.h"

namespace ckpt::slurm::agent {

namespace {

auto logger() { return log::get("slurm"); }

uint64_t now_ms() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// The signals a launcher passes on (the same set as the engine's restore forwards).
constexpr int kRelayed[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT,
                            SIGUSR1, SIGUSR2, SIGCONT, SIGALRM};

bool is_warning(int sig) { return sig == SIGUSR1 || sig == SIGUSR2; }

// The final set asked for on a warning, and the signals held until it ended.
struct FinalSet {
    uint64_t before = 0;  // the newest set when asked: the final one is numbered above
    uint64_t asked_ms = 0;
    std::vector<int> held;
};

class Relay {
public:
    explicit Relay(const RelayConfig& cfg) : cfg_(cfg) {}

    int run() {
        sigset_t set;
        sigemptyset(&set);
        for (int sig : kRelayed) sigaddset(&set, sig);
        sigaddset(&set, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &set, nullptr);
        UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
        UniqueFd child_fd(static_cast<int>(::syscall(SYS_pidfd_open, cfg_.child, 0)));
        if (!sigfd || !child_fd) {
            // Without them the relay can still be a plain parent: wait and mirror.
            say_error(sys_error("relay for {}: signalfd/pidfd_open", cfg_.child));
            return mirror(wait_child());
        }
        for (;;) {
            pollfd fds[2] = {{sigfd.get(), POLLIN, 0}, {child_fd.get(), POLLIN, 0}};
            int timeout = final_ ? 200 : -1;
            if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
                say_error(sys_error("relay: poll"));
                return mirror(wait_child());
            }
            if (fds[1].revents) return mirror(wait_child());
            signalfd_siginfo si;
            while (::read(sigfd.get(), &si, sizeof si) == sizeof si) on_signal(static_cast<int>(si.ssi_signo));
            if (final_) check_final_set();
        }
    }

private:
    void on_signal(int sig) {
        if (sig == SIGCHLD) return;
        if (!is_warning(sig)) {
            ::kill(cfg_.child, sig);
            return;
        }
        if (!final_) {
            auto asked = ask_final_set();
            if (!asked) {
                say_error(asked.error());
                ::kill(cfg_.child, sig);
                return;
            }
            final_ = std::move(*asked);
        }
        final_->held.push_back(sig);
    }

    Result<FinalSet> ask_final_set() {
        std::string dir = fmt::format("{}/{}", cfg_.root, cfg_.job);
        UniqueFd job_fd = CKPT_TRY_CTX(open_folder(dir, cfg_.uid), "final checkpoint");
        FinalSet f;
        if (auto st = set::JobStore::open(cfg_.root, cfg_.job); st) {
            f.before = st->index().max_seq();
            store_ = std::move(*st);
        }
        CKPT_TRY_CTX(write_file_at(job_fd.get(), kPreemptRequest, ""),
                     "final checkpoint");
        job_fd_ = std::move(job_fd);
        f.asked_ms = now_ms();
        say(fmt::format("Slurm's warning signal reached the batch script's launcher: final "
                        "checkpoint asked for (sets after {}); the signal follows it",
                        f.before));
        return f;
    }

    void check_final_set() {
        uint64_t waited = now_ms() - final_->asked_ms;
        std::string outcome;
        if (!store_)
            if (auto st = set::JobStore::open(cfg_.root, cfg_.job); st) store_ = std::move(*st);
        if (store_) {
            if (auto s = set_ended_after(*store_, final_->before); s)
                outcome = s->state == set::SetState::Committed
                              ? fmt::format("set {} committed", s->seq)
                              : fmt::format("set {} failed: {}", s->seq, s->failure);
        }
        bool untaken = ::faccessat(job_fd_.get(), kPreemptRequest, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
        if (outcome.empty() && untaken && waited > cfg_.take_timeout_s * 1000)
            outcome = fmt::format("no agent took the request within {} s", cfg_.take_timeout_s);
        if (outcome.empty() && waited > cfg_.set_timeout_s * 1000)
            outcome = fmt::format("no set ended within {} s", cfg_.set_timeout_s);
        if (outcome.empty()) return;
        say(fmt::format("final checkpoint: {}; passing the signal on to the script", outcome));
        for (int sig : final_->held) ::kill(cfg_.child, sig);
        final_.reset();
    }

    int wait_child() {
        int status = 0;
        while (::waitpid(cfg_.child, &status, 0) < 0) {
            if (errno != EINTR) return 1 << 8;
        }
        return status;
    }

    // Exits as the child did: with its code, or killed by its signal (without a core file
    // of the relay's own).
    static int mirror(int status) {
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        int sig = WTERMSIG(status);
        rlimit none{0, 0};
        ::setrlimit(RLIMIT_CORE, &none);
        ::signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
        ::kill(::getpid(), sig);
        return 128 + sig;
    }

    // The relay has no stdio of the job's: it speaks in the batch lead agent's log.
    void say(const std::string& line) {
        open_log_once();
        logger()->info("relay: {}", line);
    }
    void say_error(const Error& e) {
        open_log_once();
        logger()->error("relay: {}", e.message());
    }
    void open_log_once() {
        if (log_open_) return;
        auto agents = make_agents_folder(fmt::format("{}/{}", cfg_.root, cfg_.job));
        if (!agents) return;
        open_log(agents->get(), fmt::format("step-{}.node-0.log", step_name(kBatchStep)));
        log_open_ = true;
    }

    RelayConfig cfg_;
    std::optional<FinalSet> final_;
    std::optional<set::JobStore> store_;
    UniqueFd job_fd_;
    bool log_open_ = false;
};

}  // namespace

int run_relay(const RelayConfig& cfg) {
    Relay r(cfg);
    return r.run();
}

}  // namespace ckpt::slurm::agent
