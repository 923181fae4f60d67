// The step's ckpt-agent on this node, seen from slurmstepd (root): forked and exec'd when
// the first local task is forked, fed each task's pid through a pipe, stopped when the step
// ends. slurmstepd SIGKILLs an exec'd helper as soon as the step's last task exits, so the
// agent keeps everything crash-safe; exit() here stops it if it is still there.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/slurm/submit_options.h"
#include "plugin_state.h"

extern "C" {
#include <slurm/slurm.h>  // SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT
}

namespace ckpt::slurm::spank {

namespace {

std::string on_path(const std::string& configured, const char* name) {
    if (!configured.empty()) return configured;
    const char* path = std::getenv("PATH");
    std::string dirs = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        std::string cand = dirs.substr(start, end - start) + "/" + name;
        if (::access(cand.c_str(), X_OK) == 0) return cand;
        start = end + 1;
    }
    return std::string("/usr/local/bin/") + name;
}

template <typename T>
T item(spank_t sp, spank_item_t which, T fallback) {
    T v = fallback;
    if (spank_get_item(sp, which, &v) != ESPANK_SUCCESS) return fallback;
    return v;
}

std::string job_env(spank_t sp, const char* name) {
    char buf[256];
    if (spank_getenv(sp, name, buf, sizeof buf) != ESPANK_SUCCESS) return "";
    return buf;
}

// The step's environment as Slurm built it (the batch step's is the job's), in a memory
// file for the agent to save: NAME=value entries, each ended by a NUL.
Result<UniqueFd> environment_file(spank_t sp) {
    char** env = nullptr;
    spank_err_t rc = spank_get_item(sp, S_JOB_ENV, &env);
    if (rc != ESPANK_SUCCESS) return error("spank_get_item(S_JOB_ENV): {}", spank_strerror(rc));
    std::string text;
    for (char** e = env; e && *e; ++e) text.append(*e).push_back('\0');
    return memory_file("ckpt-job-environment", text);
}

// In the forked child: a clean process for exec (own session, default signals, no
// inherited fds but the pipe as fd 3 and the environment file as fd 4, stdio on /dev/null
// until the agent opens its log).
[[noreturn]] void exec_agent(int feed, int environment, const std::vector<std::string>& args) {
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
    std::pair<int, int> moves[] = {{feed, 3}, {environment, 4}};
    if (!place_fds_for_exec(std::span(moves, environment >= 0 ? 2 : 1))) ::_exit(127);
    int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    ::close_range(environment >= 0 ? 5 : 4, ~0u, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
}

Result<void> start_agent(spank_t sp, const JobSettings& settings) {
    uint32_t job = item<uint32_t>(sp, S_JOB_ID, 0), step = item<uint32_t>(sp, S_JOB_STEPID, 0);
    uint32_t node = item<uint32_t>(sp, S_JOB_NODEID, 0);
    std::string user = CKPT_TRY(job_user(sp));
    // SLURMD_NODENAME is the batch node's in srun steps (research note): only trusted for
    // the batch step.
    std::string node_name = job_env(sp, "SLURMD_NODENAME");
    if (node_name.empty() && std::getenv("SLURMD_NODENAME"))
        node_name = std::getenv("SLURMD_NODENAME");
    if (node_name.empty() || step != SLURM_BATCH_SCRIPT) node_name = fmt::format("node{}", node);
    // The batch step is one task on one node; Slurm leaves the counts at 0 there.
    bool batch = step == SLURM_BATCH_SCRIPT;
    uint32_t nodes = batch ? 1 : std::max(1u, item<uint32_t>(sp, S_JOB_NNODES, 1));
    uint32_t tasks = batch ? 1 : std::max(1u, item<uint32_t>(sp, S_JOB_TOTAL_TASK_COUNT, 1));
    uint32_t local = batch ? 1 : std::max(1u, item<uint32_t>(sp, S_JOB_LOCAL_TASK_COUNT, 1));
    std::string restart_env = job_env(sp, "SLURM_RESTART_COUNT");
    std::string restart = restart_env.empty() ? std::string("0") : restart_env;
    std::vector<std::string> args = {
        agent_path(),      "run",
        "--job",           std::to_string(job),
        "--step",          std::to_string(step),
        "--node-id",       std::to_string(node),
        "--nodes",         std::to_string(nodes),
        "--node-name",     node_name,
        "--tasks",         std::to_string(tasks),
        "--local-tasks",   std::to_string(local),
        "--interval",      std::to_string(settings.interval),
        "--root",          settings.dir,
        "--keep",          std::to_string(settings.keep),
        "--full-every",    std::to_string(state().site.full_every),
        "--max-overhead",  std::to_string(state().site.max_overhead),
        "--engine",        engine_path(),
        "--uid",           std::to_string(item<uid_t>(sp, S_JOB_UID, 0)),
        "--gid",           std::to_string(item<gid_t>(sp, S_JOB_GID, 0)),
        "--user",          user,
        "--restart-count", restart,
        "--task-fd",       "3",
        "--incarnation",   job_env(sp, kIncarnationJobEnv),
        "--site-root",     state().site.root,
    };
    if (state().site.compress) args.insert(args.end(), {"--compress", std::to_string(state().site.compress)});
    if (std::string command = step_command_of(sp); !command.empty())
        args.insert(args.end(), {"--step-command", command});
    if (!state().site.local_dir.empty()) {
        // This slurmd's own name (slurmd puts it into its environment, which slurmstepd
        // inherits; the job's SLURMD_NODENAME is not trusted for this), else the host's.
        std::string self = std::getenv("SLURMD_NODENAME") ? std::getenv("SLURMD_NODENAME") : "";
        if (self.empty()) {
            char host[256] = {};
            if (::gethostname(host, sizeof host - 1) == 0) self = host;
        }
        std::string local = CKPT_TRY_CTX(expand_local_dir(state().site.local_dir, self), "local_dir");
        args.insert(args.end(), {"--local-dir", local});
        if (!state().site.drain_hold.empty()) args.insert(args.end(), {"--drain-hold", state().site.drain_hold});
    }
    if (!state().mpi_control.empty())
        args.insert(args.end(), {"--mpi-control", state().mpi_control, "--mpi-dir", state().site.mpi_dir});
    UniqueFd environment;
    if (step == SLURM_BATCH_SCRIPT) {
        if (auto f = environment_file(sp); f) {
            environment = std::move(*f);
            args.insert(args.end(), {"--environment-fd", "4"});
        } else {
            slurm_error("ckpt: job %u: the job's environment is not saved: %s", job,
                        f.error().message().c_str());
        }
        int argc = 0;
        char** argv = nullptr;
        bool have_argv = spank_get_item(sp, S_JOB_ARGV, &argc, &argv) == ESPANK_SUCCESS;
        // slurmd's copy of the script (which the shell keeps open) lives in the job's spool
        // folder, deleted when the job ends: the dumps save what is open there.
        if (have_argv && argc > 0 && argv[0][0] == '/') {
            std::string script = argv[0];
            args.push_back("--save-files-under");
            args.push_back(script.substr(0, script.rfind('/')));
        }
        if (have_argv && argc > 1) {
            args.push_back("--");
            for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
        }
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe");
    pid_t pid = ::fork();
    if (pid < 0) return sys_error("fork ckpt-agent");
    if (pid == 0) exec_agent(fds[0], environment ? environment.get() : -1, args);
    ::close(fds[0]);
    auto& s = state();
    s.agent_pid = pid;
    s.agent_feed = fds[1];
    s.agent_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    slurm_info("ckpt: job %u step %s node %u: ckpt-agent started (pid %d, run %s)", job,
               step == SLURM_BATCH_SCRIPT ? "batch" : std::to_string(step).c_str(), node, pid,
               restart.c_str());
    return ok();
}

bool agent_gone(int pidfd, int wait_ms) {
    pollfd p{pidfd, POLLIN, 0};
    return ::poll(&p, 1, wait_ms) > 0;
}

}  // namespace

std::string agent_path() { return on_path(state().site.agent, "ckpt-agent"); }
std::string engine_path() { return on_path(state().site.engine, "ckpt-engine"); }

Result<void> agent_task_forked(spank_t sp, const JobSettings& settings) {
    uint32_t step = item<uint32_t>(sp, S_JOB_STEPID, 0);
    if (step == SLURM_EXTERN_CONT || step == SLURM_INTERACTIVE_STEP) return ok();
    if (state().agent_pid < 0) {
        // Without its agent the job runs on unprotected; it must not fail for that.
        if (auto r = start_agent(sp, settings); !r) {
            slurm_error("ckpt: no checkpoints for this step: %s", r.error().message().c_str());
            state().agent_pid = 0;  // not again for the next task
            return ok();
        }
    }
    pid_t task = item<pid_t>(sp, S_TASK_PID, 0);
    uint32_t global = item<uint32_t>(sp, S_TASK_GLOBAL_ID, 0);
    std::string line = fmt::format("{} {}\n", task, global);
    if (state().agent_feed >= 0 &&
        ::write(state().agent_feed, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
        slurm_error("ckpt: telling ckpt-agent of task %d: %m", task);
    return ok();
}

Result<void> agent_step_exit(spank_t sp, const JobSettings& settings) {
    auto& s = state();
    if (s.agent_feed >= 0) ::close(s.agent_feed), s.agent_feed = -1;
    if (s.agent_pid > 0 && s.agent_pidfd >= 0) {
        // Never signal a bare pid here: slurmstepd may have reaped the agent already.
        if (!agent_gone(s.agent_pidfd, 0)) {
            ::syscall(SYS_pidfd_send_signal, s.agent_pidfd, SIGTERM, nullptr, 0);
            if (!agent_gone(s.agent_pidfd, 3000)) {
                ::syscall(SYS_pidfd_send_signal, s.agent_pidfd, SIGKILL, nullptr, 0);
                agent_gone(s.agent_pidfd, 1000);
            }
        }
        ::waitpid(s.agent_pid, nullptr, WNOHANG);
        ::close(s.agent_pidfd);
        s.agent_pidfd = -1;
    }
    // A step that finished well is recorded, so that a re-run of the batch script does not
    // run it again (slurm-plugin/README.md, "Restart"). Node 0 records it for the step.
    uint32_t step = item<uint32_t>(sp, S_JOB_STEPID, 0);
    if (s.agent_pid <= 0 || step == SLURM_BATCH_SCRIPT || item<uint32_t>(sp, S_JOB_NODEID, 1) != 0)
        return ok();
    for (int st : s.task_status)
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return ok();
    if (s.task_status.empty()) return ok();
    std::string job = std::to_string(item<uint32_t>(sp, S_JOB_ID, 0));
    std::vector<std::string> args = {agent_path(), "step-done",
                                     "--root",     settings.dir,
                                     "--job",      job,
                                     "--step",     std::to_string(step),
                                     "--uid",      std::to_string(item<uid_t>(sp, S_JOB_UID, 0)),
                                     "--gid",      std::to_string(item<gid_t>(sp, S_JOB_GID, 0)),
                                     "--site-root", state().site.root};
    if (std::string command = step_command_of(sp); !command.empty())
        args.insert(args.end(), {"--step-command", command});
    auto out = run_helper(args);
    if (!out)
        slurm_error("ckpt: job %s step %u: %s", job.c_str(), step, out.error().message().c_str());
    return ok();
}

std::string step_command_of(spank_t sp) {
    int argc = 0;
    char** argv = nullptr;
    if (item<uint32_t>(sp, S_JOB_STEPID, 0) == SLURM_BATCH_SCRIPT ||
        spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc <= 0)
        return "";
    return step_command(std::vector<std::string>(argv, argv + argc));
}

Result<std::string> run_helper(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return sys_error("pipe");
    pid_t pid = ::fork();
    if (pid < 0) return sys_error("fork {}", args[0]);
    if (pid == 0) {
        ::dup2(fds[1], 1);
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    std::string out = read_to_end(fds[0]);
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    while (!out.empty() && out.back() == '\n') out.pop_back();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return out;
    if (out.starts_with("error ")) return error("{}", out.substr(6));
    return error("{} {} failed (status {:#x}): {}", args[0], args[1], status, out);
}

}  // namespace ckpt::slurm::spank
