// Automatic restart, in the task process (root) just before slurmstepd execs the user's
// program: when the job was requeued (or asks for --checkpoint-restore) and this step has a
// committed set that verifies, the task execs `ckpt-engine restore` of its member's images
// instead; the engine stays as the launcher of the restored tree, forwards signals to it and
// exits with its status, so to Slurm the task is the restored program. Its stdio is this
// run's, which the restored tree's fds 0-2 are bound to (they were dumped as external).
//
// The lookup runs in a helper (ckpt-agent find-restore) so that HDF5 never loads into
// slurmstepd. A set that exists but cannot be used fails the task with one line in the job's
// output: the job must not silently start over.
//
// The batch step's task also gets its signal relay here (batch_relay.cpp): it stays the
// task's pid, with the script's shell, or the engine's restore, as its child.
#include <fmt/format.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/slurm/submit_options.h"
#include "ckpt/base/fd.h"
#include "ckpt/mpi/control.h"
#include "plugin_state.h"

extern "C" {
#include <slurm/slurm.h>
}

namespace ckpt::slurm::spank {

// The most a restored task's courier sends: its restart count and, for an MPI rank, the
// task's environment.
constexpr size_t kCourierMax = 256 * 1024;

Result<void> become_restorer(const std::string& who, const std::string& engine,
                             const std::string& dir, const std::string& as,
                             const std::optional<RelaySpec>& relay, bool mpi_rank);

Result<void> prepare_task_launch(spank_t sp, const JobSettings& settings) {
    uint32_t job = 0, step = 0, task = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    spank_get_item(sp, S_TASK_GLOBAL_ID, &task);
    spank_get_item(sp, S_JOB_UID, &uid);
    spank_get_item(sp, S_JOB_GID, &gid);
    if (step == SLURM_EXTERN_CONT || step == SLURM_INTERACTIVE_STEP) return ok();
    auto relay = batch_relay_spec(sp, settings);
    auto launch = [&]() { return relay ? fork_behind_relay(*relay) : ok(); };
    // A set of this job and step can only have been written by an earlier run (a step id runs
    // once per run), so its existence is what marks a restart.
    if (!settings.restore && !settings.restart) return launch();
    std::string step_text = step == SLURM_BATCH_SCRIPT ? "batch" : std::to_string(step);
    uint64_t source = settings.restore ? settings.restore->job_id : job;
    std::vector<std::string> args = {
        agent_path(), "find-restore",         "--root",        settings.dir,
        "--job",      std::to_string(source), "--current-job", std::to_string(job),
        "--step",     std::to_string(step),   "--member",      std::to_string(task),
        "--uid",      std::to_string(uid),            "--gid",         std::to_string(gid)};
    char incarnation[64];
    if (spank_getenv(sp, kIncarnationJobEnv, incarnation, sizeof incarnation) == ESPANK_SUCCESS)
        args.insert(args.end(), {"--incarnation", incarnation});
    if (std::string command = step_command_of(sp); !command.empty())
        args.insert(args.end(), {"--step-command", command});
    if (settings.restore && settings.restore->set) {
        args.push_back("--set");
        args.push_back(std::to_string(*settings.restore->set));
    }
    auto out = run_helper(args);
    std::string who = fmt::format("ckpt: job {} step {} task {}", job, step_text, task);
    // Stdio is not the task's yet: what the job's output must show is said in task_init.
    if (!out) {
        slurm_error("%s: cannot restore from job %llu: %s", who.c_str(),
                    static_cast<unsigned long long>(source), out.error().message().c_str());
        state().task_note = fmt::format(
            "{}: cannot restore from job {}: {}; the task fails "
            "rather than start over",
            who, source, out.error().message());
        state().task_exit = 1;
        return ok();
    }
    const std::string& line = *out;
    slurm_info("%s: %s", who.c_str(), line.c_str());
    if (line.starts_with("fresh ")) {
        if (settings.restore)
            state().task_note =
                fmt::format("{}: starting from the beginning: {}", who, line.substr(6));
        return launch();
    }
    if (line.starts_with("skip ")) {
        state().task_note = fmt::format("{}: not run again: {}", who, line.substr(5));
        state().task_exit = 0;
        return ok();
    }
    bool mpi_rank = line.starts_with("restore-mpi ");
    if (!line.starts_with("restore ") && !mpi_rank) return error("ckpt-agent find-restore said '{}'", line);
    std::string rest = line.substr(mpi_rank ? 12 : 8);
    size_t sp_at = rest.find(' ');
    std::string seq = rest.substr(0, sp_at), dir = rest.substr(sp_at + 1);
    who += fmt::format(": job {} checkpoint set {}", source, seq);
    slurm_info("%s: restoring from job %llu set %s", who.c_str(),
               static_cast<unsigned long long>(source), seq.c_str());

    return become_restorer(who, engine_path(), dir, fmt::format("{}:{}", uid, gid), relay, mpi_rank);
}

namespace {

// An MPI rank's restorer: the restored rank, parked where it was dumped, waits on its control
// channel for the new launch's environment (docs/mpi.md, "Restart"); it gets a new channel
// whose first record is that environment, at fd `at` for the engine's --inherit-fd.
bool give_rank_its_launch(const char* env, size_t len, int at) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return false;
    mpi::control::Header h{static_cast<uint32_t>(mpi::control::Msg::Restarted), 0};
    std::string record(reinterpret_cast<const char*>(&h), sizeof h);
    record.append(env, len);
    int size = static_cast<int>(record.size()) + 4096;
    ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    bool sent = ::send(sv[0], record.data(), record.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(record.size());
    ::close(sv[0]);  // the record stays queued for the rank
    std::pair<int, int> move[] = {{sv[1], at}};
    bool placed = sent && place_fds_for_exec(move);
    if (sv[1] != at) ::close(sv[1]);
    return placed;
}

}  // namespace

// The task's stdio is set up by slurmstepd only after task_init_privileged, and task_init
// runs as the user, who cannot restore. So the task forks: the child goes on along Slurm's
// path and, in task_init, sends its fds 0-2 and the job's SLURM_RESTART_COUNT back over a
// socket and exits; the task itself (the pid slurmstepd waits for, still root) takes them
// and execs the engine's restore (the batch step's task first forks behind its relay).
Result<void> become_restorer(const std::string& who, const std::string& engine,
                             const std::string& dir, const std::string& as,
                             const std::optional<RelaySpec>& relay, bool mpi_rank) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return sys_error("socketpair");
    pid_t child = ::fork();
    if (child < 0) return sys_error("fork");
    if (child == 0) {
        ::close(sv[0]);
        state().stdio_courier = sv[1];
        state().courier_sends_environment = mpi_rank;
        return ok();  // on to task_init (send_stdio_to_restorer)
    }
    ::close(sv[1]);
    // "SLURM_RESTART_COUNT=N", a NUL, and for an MPI rank the task's environment (NAME=VALUE
    // strings, each ended by a NUL).
    std::vector<char> payload(kCourierMax + 1, '\0');
    int rcvbuf = static_cast<int>(kCourierMax) + 4096;
    ::setsockopt(sv[0], SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))];
    iovec iov{payload.data(), kCourierMax};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    while ((n = ::recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
    cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(3 * sizeof(int)) || (msg.msg_flags & MSG_TRUNC)) {
        std::fprintf(stderr, "%s: the task's stdio never arrived (status %#x): not restored\n",
                     who.c_str(), status);
        ::_exit(1);
    }
    int fds[3];
    std::memcpy(fds, CMSG_DATA(c), sizeof fds);
    std::pair<int, int> moves[] = {{fds[0], 0}, {fds[1], 1}, {fds[2], 2}};
    if (!place_fds_for_exec(moves)) {
        std::fprintf(stderr, "%s: the task's stdio: %s: not restored\n", who.c_str(), strerror(errno));
        ::_exit(1);
    }
    for (int i = 0; i < 3; ++i)
        if (fds[i] > 2) ::close(fds[i]);
    if (std::string_view(payload.data()).starts_with("SLURM_RESTART_COUNT="))
        ::setenv("SLURM_RESTART_COUNT", payload.data() + 20, 1);
    size_t first = std::strlen(payload.data()) + 1;
    if (mpi_rank && (static_cast<size_t>(n) <= first ||
                     !give_rank_its_launch(payload.data() + first, static_cast<size_t>(n) - first, 3))) {
        std::fprintf(stderr, "%s: the MPI rank's new launch environment: %s: not restored\n", who.c_str(),
                     static_cast<size_t>(n) <= first ? "never arrived" : strerror(errno));
        ::_exit(1);
    }
    std::fprintf(stderr, "%s: restoring from %s\n", who.c_str(), dir.c_str());
    std::fflush(stderr);
    // The engine forwards signals to the restored tree: none may stay blocked from slurmstepd.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (relay) {
        if (auto r = fork_behind_relay(*relay); !r) {
            std::fprintf(stderr, "%s: %s: not restored\n", who.c_str(), r.error().message().c_str());
            ::_exit(1);
        }
    }
    std::vector<const char*> argv = {engine.c_str(), "restore", "-D", dir.c_str(), "--new-pidns", "--restore-as",
                                     as.c_str()};
    std::string inherit = fmt::format("fd[3]:{}", mpi::control::kControlFdKey);
    if (mpi_rank) argv.insert(argv.end(), {"--inherit-fd", inherit.c_str()});
    argv.push_back(nullptr);
    ::execv(argv[0], const_cast<char* const*>(argv.data()));
    std::fprintf(stderr, "%s: exec %s: %s\n", who.c_str(), engine.c_str(), strerror(errno));
    ::_exit(1);
}

Result<void> send_stdio_to_restorer(spank_t sp) {
    auto& st = state();
    if (!st.task_note.empty()) {
        std::fprintf(stderr, "%s\n", st.task_note.c_str());
        std::fflush(stderr);
    }
    if (st.task_exit) ::_exit(*st.task_exit);
    int sock = std::exchange(state().stdio_courier, -1);
    if (sock < 0) return ok();
    char restart[32] = "0";
    if (spank_getenv(sp, "SLURM_RESTART_COUNT", restart, sizeof restart) != ESPANK_SUCCESS)
        std::strcpy(restart, "0");
    std::string payload = std::string("SLURM_RESTART_COUNT=") + restart;
    payload.push_back('\0');
    if (st.courier_sends_environment) {
        char** env = nullptr;
        if (spank_get_item(sp, S_JOB_ENV, &env) == ESPANK_SUCCESS)
            for (; env && *env; ++env) payload.append(*env).push_back('\0');
        int sndbuf = static_cast<int>(payload.size()) + 4096;
        ::setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    int fds[3] = {0, 1, 2};
    ssize_t n = send_with_fds(sock, payload.data(), payload.size(), fds, 0);
    // This process was only the courier: the restorer is the task.
    ::_exit(n > 0 ? 0 : 1);
}

}  // namespace ckpt::slurm::spank
