// ckpt-agent: started by spank_ckpt.so, not by users.
//
//   ckpt-agent run --job J --step S --node-id K --nodes N --node-name NAME --tasks T
//       --local-tasks L --interval SEC --root DIR --keep N [--full-every N] [--max-overhead PERCENT] [--compress LEVEL] --engine PATH
//       --uid U --gid G
//       --user NAME --restart-count R --task-fd FD [--set-timeout SEC] [--incarnation ID]
//       [--environment-fd FD] [--save-files-under DIR] [--step-command HASH]
//       [--site-root DIR] [--mpi-control @NAME --mpi-dir DIR] [-- SCRIPT ARGS...]
//   ckpt-agent find-restore --root DIR --job J --current-job J --step S --member M --uid U
//       --gid G [--set N] [--incarnation ID] [--step-command HASH]
//   ckpt-agent step-done --root DIR --job J --step S --uid U --gid G [--step-command HASH]
//       [--site-root DIR]
//   ckpt-agent relay --child PID --root DIR --job J --uid U --gid G
//
// Each starts as root (slurmstepd's plugin runs it) and becomes the job's user before it
// touches the job's folder (docs/security.md); `run` keeps a privileged half (privileged.h).
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <sys/prctl.h>

#include "agent.h"
#include "ckpt/base/log.h"
#include "ckpt/base/privilege.h"
#include "ckpt/base/strings.h"
#include "ckpt/slurm/options.h"
#include "job_folder.h"
#include "privileged.h"

namespace {

using namespace ckpt::slurm::agent;

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "ckpt-agent: %s\nusage: ckpt-agent run|find-restore --key value ... (started by "
                 "spank_ckpt.so; see slurm-plugin/README.md)\n",
                 why.c_str());
    return 2;
}

// The helper commands do nothing as root but this: from here on they are the job's user,
// without capabilities, and can gain none (no_new_privs).
bool become_job_user(uid_t uid, gid_t gid) {
    auto who = ckpt::privilege::user_identity(uid, gid);
    auto r = who ? ckpt::privilege::become_user(*who, 0) : ckpt::Result<void>(std::move(who).error());
    if (!r) {
        std::printf("error %s\n", r.error().message().c_str());
        return false;
    }
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage("no command");
    std::string cmd = argv[1];
    std::map<std::string, std::string> kv;
    std::vector<std::string> rest;
    int verbosity = 1;
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--") {
            rest.assign(argv + i + 1, argv + argc);
            break;
        }
        if (a == "-v" || a == "-vv") {
            verbosity = static_cast<int>(a.size()) - 1;
            continue;
        }
        if (!a.starts_with("--") || i + 1 >= argc) return usage("bad argument '" + a + "'");
        kv[a.substr(2)] = argv[++i];
    }
    ckpt::log::configure(verbosity);
    std::string missing;
    auto num = [&](const char* key, uint64_t def, bool required) -> uint64_t {
        auto it = kv.find(key);
        if (it == kv.end()) {
            if (required) missing = key;
            return def;
        }
        auto n = ckpt::parse_uint(it->second);
        if (!n) missing = key;
        return n ? *n : def;
    };
    auto str = [&](const char* key) {
        auto it = kv.find(key);
        if (it == kv.end()) missing = key;
        return it == kv.end() ? std::string() : it->second;
    };
    if (cmd == "run") {
        AgentConfig c;
        c.job = num("job", 0, true);
        c.step = static_cast<uint32_t>(num("step", 0, true));
        c.node_id = static_cast<uint32_t>(num("node-id", 0, true));
        c.nodes = static_cast<uint32_t>(num("nodes", 1, true));
        c.node_name = str("node-name");
        c.tasks_total = static_cast<uint32_t>(num("tasks", 1, true));
        c.local_tasks = static_cast<uint32_t>(num("local-tasks", 1, true));
        c.interval = num("interval", 0, true);
        c.root = str("root");
        c.keep = static_cast<uint32_t>(num("keep", 2, true));
        c.full_every = static_cast<uint32_t>(num("full-every", 8, false));
        if (c.full_every == 0) missing = "full-every";
        c.max_overhead = static_cast<uint32_t>(num("max-overhead", 25, false));
        if (c.max_overhead == 0 || c.max_overhead > 100) missing = "max-overhead";
        c.compress = static_cast<uint32_t>(num("compress", 0, false));
        if (c.compress > ckpt::slurm::kMaxCompressLevel) missing = "compress";
        c.engine = str("engine");
        c.uid = static_cast<uid_t>(num("uid", 0, true));
        c.gid = static_cast<gid_t>(num("gid", 0, true));
        c.user = str("user");
        c.restart_count = static_cast<uint32_t>(num("restart-count", 0, true));
        c.task_fd = static_cast<int>(num("task-fd", 0, true));
        c.set_timeout = num("set-timeout", 120, false);
        c.job_argv = rest;
        c.incarnation = kv.count("incarnation") ? kv["incarnation"] : "";
        if (kv.count("environment-fd"))
            c.environment_fd = static_cast<int>(num("environment-fd", 0, true));
        if (auto it = kv.find("save-files-under"); it != kv.end()) c.save_files_under = it->second;
        if (auto it = kv.find("step-command"); it != kv.end()) c.step_command = it->second;
        if (auto it = kv.find("site-root"); it != kv.end()) c.site_root = it->second;
        if (auto it = kv.find("mpi-control"); it != kv.end()) c.mpi_control = it->second;
        if (auto it = kv.find("mpi-dir"); it != kv.end()) c.mpi_dir = it->second;
        if (auto it = kv.find("local-dir"); it != kv.end()) c.local_root = it->second;
        if (auto it = kv.find("drain-hold"); it != kv.end()) c.drain_hold = it->second;
        if (c.mpi_control.empty() != c.mpi_dir.empty()) missing = c.mpi_dir.empty() ? "mpi-dir" : "mpi-control";
        if (!missing.empty()) return usage("run: --" + missing + " missing or bad");
        return run_agent_privileged(std::move(c));
    }
    if (cmd == "find-restore") {
        RestoreQuery q;
        q.root = str("root");
        q.job = num("job", 0, true);
        q.current_job = num("current-job", 0, true);
        q.step = static_cast<uint32_t>(num("step", 0, true));
        q.member = static_cast<int32_t>(num("member", 0, true));
        q.uid = static_cast<uid_t>(num("uid", 0, true));
        q.gid = static_cast<gid_t>(num("gid", 0, true));
        if (kv.count("set")) q.explicit_set = true, q.set = num("set", 0, true);
        q.incarnation = kv.count("incarnation") ? kv["incarnation"] : "";
        q.step_command = kv.count("step-command") ? kv["step-command"] : "";
        if (!missing.empty()) return usage("find-restore: --" + missing + " missing or bad");
        if (!become_job_user(q.uid, q.gid)) return 1;
        return find_restore(q);
    }
    if (cmd == "step-done") {
        std::string root = str("root");
        uint64_t job = num("job", 0, true);
        auto step = static_cast<uint32_t>(num("step", 0, true));
        auto uid = static_cast<uid_t>(num("uid", 0, true));
        auto gid = static_cast<gid_t>(num("gid", 0, true));
        if (!missing.empty()) return usage("step-done: --" + missing + " missing or bad");
        std::string command = kv.count("step-command") ? kv["step-command"] : "";
        // The job's folder, where only root may make it (job_folder.h).
        if (auto it = kv.find("site-root"); it != kv.end() && ckpt::slurm::same_folder(root, it->second))
            if (auto made = make_job_folder(it->second, job, uid, gid); !made) {
                std::printf("error %s\n", made.error().message().c_str());
                return 1;
            }
        if (!become_job_user(uid, gid)) return 1;
        return record_step_done(root, job, step, command);
    }
    if (cmd == "relay") {
        RelayConfig c;
        c.child = static_cast<pid_t>(num("child", 0, true));
        c.root = str("root");
        c.job = num("job", 0, true);
        c.uid = static_cast<uid_t>(num("uid", 0, true));
        c.gid = static_cast<gid_t>(num("gid", 0, true));
        if (!missing.empty()) return usage("relay: --" + missing + " missing or bad");
        // The relay only passes signals on to its child (slurmstepd's, later the user's) and
        // reads the job's folder: the user's rights suffice.
        if (!become_job_user(c.uid, c.gid)) return 1;
        return run_relay(c);
    }
    return usage("unknown command '" + cmd + "'");
}
