#include "privileged.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "ckpt/base/log.h"
#include "ckpt/base/privilege.h"
#include "ckpt/base/strings.h"
#include "ckpt/set/model.h"
#include "ckpt/slurm/options.h"
#include "job_folder.h"
#include "local_tasks.h"

namespace ckpt::slurm::agent {

namespace {

auto logger() { return log::get("slurm"); }

constexpr size_t kMaxMessage = 192 * 1024;  // a dump request names every local rank's exclusions

// Whether rel (plain names) is a folder beneath the job folder. The job folder is the user's:
// no link is followed, there or in it (root only looks; the engine opens it as the user).
bool folder_in_job(const std::string& job_dir, const std::string& rel) {
    UniqueFd job(::open(job_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!job) return false;
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    return UniqueFd(static_cast<int>(::syscall(SYS_openat2, job.get(), rel.c_str(), &how, sizeof how))).valid();
}

Result<void> send_message(int sock, const std::string& text, int pass_fd = -1) {
    const std::span<const int> fds = pass_fd >= 0 ? std::span<const int>(&pass_fd, 1) : std::span<const int>();
    while (send_with_fds(sock, text.data(), text.size(), fds, MSG_NOSIGNAL) < 0)
        if (errno != EINTR) return sys_error("send to the agent's other half");
    return ok();
}

// One message; an fd passed with it lands in *passed (else -1). EOF is ECONNRESET.
Result<std::string> receive_message(int sock, UniqueFd* passed = nullptr) {
    std::string text(kMaxMessage, '\0');
    iovec iov{text.data(), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    while ((n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0)
        if (errno != EINTR) return sys_error("receive from the agent's other half");
    if (n == 0) return error_code(ECONNRESET, "the agent's other half closed the channel");
    text.resize(static_cast<size_t>(n));
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) continue;
        int fd;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        if (passed) *passed = UniqueFd(fd);
        else ::close(fd);
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return error("message from the agent's other half truncated");
    return text;
}

// The capabilities an engine dump keeps as the user: /proc/PID/map_files needs
// CAP_CHECKPOINT_RESTORE; tracing a task that is not the engine's descendant needs
// CAP_SYS_PTRACE where Yama restricts ptrace.
privilege::CapSet dump_capabilities() {
    privilege::CapSet caps = privilege::cap_bit(CAP_CHECKPOINT_RESTORE);
    if (privilege::yama_ptrace_scope() >= 1) caps |= privilege::cap_bit(CAP_SYS_PTRACE);
    return caps;
}

class PrivilegedHalf {
public:
    explicit PrivilegedHalf(AgentConfig cfg) : cfg_(std::move(cfg)), feed_(cfg_.task_fd) {
        launcher_ = ::getppid();  // slurmstepd, which forked this agent
        if (!cfg_.mpi_dir.empty()) {
            char* r = ::realpath(cfg_.mpi_dir.c_str(), nullptr);
            mpi_dir_ = r ? r : cfg_.mpi_dir;
            ::free(r);
        }
        agent_exe_ = exe_of(::getpid());
        engine_exe_ = cfg_.engine;
        if (char* r = ::realpath(cfg_.engine.c_str(), nullptr)) {
            engine_exe_ = r;
            ::free(r);
        }
    }

    int run() {
        auto who = privilege::user_identity(cfg_.uid, cfg_.gid);
        if (!who) {
            logger()->error("job {}: {}", cfg_.job, who.error().message());
            return 1;
        }
        who_ = std::move(*who);
        // What only root may do in the site's root, before the user's half looks for it.
        if (!cfg_.site_root.empty() && same_folder(cfg_.root, cfg_.site_root)) {
            auto made = make_job_folder(cfg_.site_root, cfg_.job, cfg_.uid, cfg_.gid);
            if (!made) note_ = made.error().message();
            else note_ = *made;
        }
        // The same for the node-local folder (local_dir=, the admin's), where root owns it.
        if (!cfg_.local_root.empty()) {
            auto made = make_job_folder(cfg_.local_root, cfg_.job, cfg_.uid, cfg_.gid);
            std::string n = made ? *made : made.error().message();
            if (!n.empty()) note_ += (note_.empty() ? "" : "; ") + ("local_dir: " + n);
        }
        learn_restart_count();
        int sv[2], feed[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0 ||
            ::pipe2(feed, O_CLOEXEC) != 0) {
            logger()->error("job {}: socketpair/pipe: {}", cfg_.job, strerror(errno));
            return 1;
        }
        sigset_t handled;
        sigemptyset(&handled);
        for (int s : {SIGTERM, SIGINT, SIGCHLD}) sigaddset(&handled, s);
        ::sigprocmask(SIG_BLOCK, &handled, nullptr);
        // Slurm's warning signals reach every process of the step; the user's half takes
        // its own copy.
        ::signal(SIGUSR1, SIG_IGN);
        ::signal(SIGUSR2, SIG_IGN);
        pid_t parent = ::getpid();
        user_half_ = ::fork();
        if (user_half_ < 0) {
            logger()->error("job {}: fork: {}", cfg_.job, strerror(errno));
            return 1;
        }
        if (user_half_ == 0) {
            ::close(sv[0]);
            ::close(feed[1]);
            ::_exit(run_user_half(sv[1], feed[0], parent));
        }
        ::close(sv[1]);
        ::close(feed[0]);
        sock_ = UniqueFd(sv[0]);
        user_feed_ = UniqueFd(feed[1]);
        forward_tasks(known_);  // the lines read while learning the run
        return serve(handled);
    }

private:
    // In the forked child: becomes the user for good, then is the agent proper.
    int run_user_half(int sock, int feed, pid_t parent) {
        if (auto r = privilege::become_user(who_, 0); !r) {
            std::fprintf(stderr, "ckpt-agent: %s\n", r.error().message().c_str());
            return 1;
        }
        // The identity change cleared it; the half must not outlive the privileged one.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) return 1;
        ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGUSR1, SIG_DFL);
        ::signal(SIGUSR2, SIG_DFL);
        AgentConfig c = cfg_;
        c.task_fd = feed;
        c.channel_fd = sock;
        c.restart_count = restart_count_;
        c.folder_note = note_;
        return run_agent(c);
    }

    // The run this step belongs to: SLURM_RESTART_COUNT in its tasks' environment, once they
    // exec'd (slurmstepd does not give it to plugins before). A stale copy of the job keeps
    // its own, older count, which is what fences it. Read here, as root: the restored
    // tree's launcher is no process of the user's to read.
    void learn_restart_count() {
        restart_count_ = cfg_.restart_count;
        std::string stepd = exe_of(::getppid());
        for (int i = 0; i < 300; ++i) {
            feed_.poll(tasks_);
            known_ += feed_.raw();
            bool ready = tasks_.size() >= cfg_.local_tasks;
            for (const Task& t : tasks_) {
                auto launched = launched_by(t.pid, agent_exe_);
                std::string exe = launched ? exe_of(*launched) : "";
                if (exe.empty() || exe == stepd) ready = false;
            }
            if (ready) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        // Not the restored tree's environment: that is the earlier run's.
        for (const Task& t : tasks_) {
            auto launched = launched_by(t.pid, agent_exe_);
            if (!launched) continue;
            auto env = read_file(fmt::format("/proc/{}/environ", *launched));
            if (!env) continue;
            for (auto var : split(*env, '\0'))
                if (var.starts_with("SLURM_RESTART_COUNT="))
                    if (auto n = parse_uint(var.substr(20)); n)
                        restart_count_ = std::max<uint32_t>(restart_count_, static_cast<uint32_t>(*n));
        }
    }

    void forward_tasks(const std::string& lines) {
        if (!user_feed_ || lines.empty()) return;
        if (auto w = write_all(user_feed_.get(), lines.data(), lines.size()); !w)
            logger()->warn("passing tasks on: {}", w.error().message());
    }

    int serve(const sigset_t& handled) {
        UniqueFd sigfd(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
        for (;;) {
            pollfd fds[3] = {{sigfd.get(), POLLIN, 0}, {sock_.get(), POLLIN, 0}, {feed_.fd(), POLLIN, 0}};
            if (::poll(fds, feed_.fd() >= 0 ? 3 : 2, -1) < 0 && errno != EINTR) break;
            if (fds[0].revents) {
                signalfd_siginfo si;
                while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
                    int sig = static_cast<int>(si.ssi_signo);
                    if (sig == SIGCHLD) {
                        if (auto st = reap_user_half()) return *st;
                    } else {
                        ::kill(user_half_, sig);
                    }
                }
            }
            if (feed_.fd() >= 0 && fds[2].revents) {
                bool open = feed_.poll(tasks_);
                forward_tasks(feed_.raw());
                if (!open) user_feed_.reset();  // no more tasks: the user's half sees EOF
            }
            if (fds[1].revents & POLLIN) {
                UniqueFd passed;
                auto msg = receive_message(sock_.get(), &passed);
                if (!msg) break;
                std::string answer = handle(*msg, std::move(passed));
                if (!answer.empty() && !send_message(sock_.get(), answer)) break;
            } else if (fds[1].revents & (POLLHUP | POLLERR)) {
                break;
            }
        }
        // The user's half closed the channel: it is exiting.
        ::kill(user_half_, SIGTERM);
        int status = 0;
        while (::waitpid(user_half_, &status, 0) < 0 && errno == EINTR) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }

    std::optional<int> reap_user_half() {
        int status = 0;
        if (::waitpid(user_half_, &status, WNOHANG) != user_half_) return std::nullopt;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }

    std::string handle(const std::string& msg, UniqueFd passed) {
        std::string_view m = msg;
        if (m == "log") {
            if (passed) {
                ::dup2(passed.get(), 1);
                ::dup2(passed.get(), 2);
            }
            return "";  // no answer
        }
        if (m.starts_with("dump ")) return dump(m.substr(5));
        if (m.starts_with("aside ")) {
            if (cfg_.site_root.empty() || !same_folder(cfg_.root, cfg_.site_root))
                return fmt::format("error {} is not the site's checkpoint root", cfg_.root);
            // Moved, and made anew: the user may not make it in this root.
            auto r = move_job_folder_aside(cfg_.site_root, cfg_.job, cfg_.uid, std::string(m.substr(6)));
            auto made = r ? make_job_folder(cfg_.site_root, cfg_.job, cfg_.uid, cfg_.gid)
                          : Result<std::string>(std::move(r).error());
            return made ? "ok" : "error " + made.error().message();
        }
        return "error unknown request";
    }

    // "SEQ ID ID ...": every listed member is a local task of this step, dumped into the
    // folder its set and id name, all at once. Then "rank PARKED" lines: the node's parked
    // MPI ranks; a task whose process is one of them is dumped without its lower half (only
    // numbers are taken from the lines, and only for the task's own process).
    std::string dump(std::string_view request) {
        auto lines = split(request, '\n');
        auto words = split(lines[0], ' ');
        std::map<pid_t, mpi::ParkedRank> parked;
        std::optional<uint64_t> parent, tracked;
        for (size_t l = 1; l < lines.size(); ++l) {
            if (lines[l].empty()) continue;
            if (lines[l].starts_with("parent ") || lines[l].starts_with("tracked ")) {
                const bool is_parent = lines[l].starts_with("parent ");
                auto n = parse_uint(lines[l].substr(is_parent ? 7 : 8));
                if (!n) return "error bad dump request: " + std::string(lines[l]);
                (is_parent ? parent : tracked) = *n;
                continue;
            }
            auto p = lines[l].starts_with("rank ") ? mpi::decode_parked(lines[l].substr(5))
                                                   : Result<mpi::ParkedRank>(error("'{}'", lines[l]));
            if (!p) return "error bad dump request: " + p.error().message();
            parked[p->pid] = std::move(*p);
        }
        auto seq = words.empty() ? Result<uint64_t>(error("no set")) : parse_uint(words[0]);
        if (!seq) return "error bad dump request";
        if (parent && (*parent >= *seq || !incremental_sets(cfg_))) return "error bad dump request: parent set";
        if (tracked && (*tracked >= *seq || !incremental_sets(cfg_))) return "error bad dump request: tracked set";
        // With local_dir= the images go to the node's own folder first (the admin's path).
        std::string job_dir =
            fmt::format("{}/{}", cfg_.local_root.empty() ? cfg_.root : cfg_.local_root, cfg_.job);
        std::string answer = fmt::format("dumped {}\n", *seq);
        std::map<int32_t, int> rank_of;
        std::vector<std::pair<int32_t, DumpTarget>> jobs;
        for (size_t i = 1; i < words.size(); ++i) {
            auto id = parse_int(words[i]);
            auto task = std::find_if(tasks_.begin(), tasks_.end(),
                                     [&](const Task& t) { return id && t.global_id == *id; });
            std::string failure;
            if (!id || task == tasks_.end()) failure = fmt::format("no local task {}", words[i]);
            else if (task->exited()) failure = fmt::format("task {} (pid {}) has exited", *id, task->pid);
            std::optional<pid_t> root;
            if (failure.empty()) {
                auto r = tree_root(task->pid, agent_exe_, engine_exe_);
                if (r) root = *r;
                else failure = r.error().message();
            }
            auto rank = failure.empty() ? parked.find(*root) : parked.end();
            if (failure.empty() && rank == parked.end() && maps_ckpt_mpi(*root))
                failure = fmt::format("task {} is an MPI rank that is not parked (not in MPI yet, finishing, or "
                                      "launched through another process of the task)", *id);
            if (!failure.empty()) {
                answer += fmt::format("{} {}\n", words[i], failure);
                continue;
            }
            std::vector<std::string> extra;
            if (rank != parked.end()) {
                extra = mpi::dump_exclusion_args(rank->second);
                rank_of[static_cast<int32_t>(*id)] = rank->second.rank;
            }
            if (std::string leaked = launcher_sockets_in(*root); !leaked.empty())
                extra.insert(extra.end(), {"--exclude-fds", leaked});
            if (incremental_sets(cfg_)) {
                // The member's images in the parent set, when it has them (a plain folder: the
                // engine checks it again, as the user, and records its name relative to the
                // job folder); otherwise this member is saved whole.
                // A full set names the set whose dumps left the trackers, all saved whole
                // (--max-chain 0): the engine recognises a tracker only by what a dump recorded.
                extra.push_back("--track-mem");
                const std::optional<uint64_t> from = parent ? parent : tracked;
                const std::string prev = from ? fmt::format("{}/member-{}", set::set_folder_name(*from), *id) : "";
                if (!prev.empty() && folder_in_job(job_dir, prev)) {
                    extra.insert(extra.end(), {"--prev-images-dir", job_dir + "/" + prev});
                    if (!parent) extra.insert(extra.end(), {"--max-chain", "0"});
                }
            }
            jobs.push_back({static_cast<int32_t>(*id),
                            {*root, fmt::format("{}/{}/member-{}", job_dir, set::set_folder_name(*seq), *id), extra}});
        }
        std::vector<DumpTarget> targets;
        for (auto& j : jobs) targets.push_back(j.second);
        auto results = dump_all(targets);
        // A dump that could not leave a tracker (a process the tracker refuses, such as one
        // under a seccomp filter: the engine said why in this log) is made again whole.
        std::vector<size_t> again;
        std::vector<DumpTarget> whole;
        for (size_t i = 0; i < targets.size(); ++i) {
            auto& extra = targets[i].extra_args;
            auto track = std::find(extra.begin(), extra.end(), "--track-mem");
            if (!results[i] || track == extra.end()) continue;
            // Whole, no tracker left; an earlier set's trackers still named, so recognised.
            extra.erase(track);
            auto chain = std::find(extra.begin(), extra.end(), "--max-chain");
            if (chain != extra.end()) extra.erase(chain, chain + 2);
            if (std::find(extra.begin(), extra.end(), "--prev-images-dir") != extra.end())
                extra.insert(extra.end(), {"--max-chain", "0"});
            std::fprintf(stderr, "ckpt-agent: set %llu member %d: the incremental dump failed; dumping it whole\n",
                         static_cast<unsigned long long>(*seq), jobs[i].first);
            again.push_back(i);
            whole.push_back(targets[i]);
        }
        auto retried = dump_all(whole);
        for (size_t k = 0; k < again.size(); ++k) results[again[k]] = retried[k];
        for (size_t i = 0; i < jobs.size(); ++i) {
            auto r = rank_of.find(jobs[i].first);
            answer += fmt::format("{} {}\n", jobs[i].first,
                                  results[i]              ? results[i]->message()
                                  : r != rank_of.end() ? fmt::format("ok rank {}", r->second)
                                                          : std::string("ok"));
        }
        return answer;
    }

    // Whether a process of the tree below `root` maps ckpt's libmpi (an MPI rank).
    bool maps_ckpt_mpi(pid_t root) const {
        if (mpi_dir_.empty()) return false;
        std::vector<pid_t> todo{root};
        while (!todo.empty()) {
            pid_t p = todo.back();
            todo.pop_back();
            auto maps = read_file(fmt::format("/proc/{}/maps", p));
            if (maps && maps->find(mpi_dir_ + "/") != std::string::npos) return true;
            for (pid_t c : children_of(p)) todo.push_back(c);
        }
        return false;
    }

    // Sockets slurmstepd leaked into the task (its mpi/pmix plugin's listener reaches every
    // task of a pmix step without close-on-exec): the launch's, not the program's, which
    // never knew them; the next launch has its own. Left out of the dump: "N,N" or "".
    std::string launcher_sockets_in(pid_t root) const {
        auto links = [](pid_t pid) {
            std::map<int, std::string> out;
            std::string dir = fmt::format("/proc/{}/fd", pid);
            if (DIR* d = ::opendir(dir.c_str())) {
                while (dirent* e = ::readdir(d)) {
                    char target[128];
                    ssize_t n = ::readlinkat(::dirfd(d), e->d_name, target, sizeof target - 1);
                    auto fd = parse_int(e->d_name);
                    if (n > 0 && fd) out[static_cast<int>(*fd)] = std::string(target, static_cast<size_t>(n));
                }
                ::closedir(d);
            }
            return out;
        };
        std::set<std::string> launcher;
        for (auto& [fd, target] : links(launcher_))
            if (target.starts_with("socket:")) launcher.insert(target);
        std::string list;
        for (auto& [fd, target] : links(root))
            if (launcher.count(target)) list += (list.empty() ? "" : ",") + std::to_string(fd);
        return list;
    }

    // Runs `ckpt-engine dump` for every target at once, each as the job's user with only
    // the capabilities a dump needs, and waits for all.
    struct DumpTarget {
        pid_t root;
        std::string dir;
        std::vector<std::string> extra_args;  // an MPI rank's exclusions
    };
    std::vector<std::optional<Error>> dump_all(const std::vector<DumpTarget>& targets) {
        std::vector<pid_t> children;
        std::vector<std::optional<Error>> out(targets.size());
        privilege::CapSet caps = dump_capabilities();
        pid_t parent = ::getpid();
        for (size_t i = 0; i < targets.size(); ++i) {
            std::string pid = std::to_string(targets[i].root);
            pid_t c = ::fork();
            if (c == 0) {
                if (auto r = privilege::become_user(who_, caps); !r) {
                    std::fprintf(stderr, "ckpt-agent: dump of %s: %s\n", pid.c_str(), r.error().message().c_str());
                    ::_exit(126);
                }
                // The engine must not outlive the agent (slurmstepd SIGKILLs the agent when
                // the step's last task exits); its ptrace hold ends with it.
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (::getppid() != parent) ::_exit(126);
                sigset_t none;
                sigemptyset(&none);
                ::sigprocmask(SIG_SETMASK, &none, nullptr);
                // --file-locks: a job's locks (HDF5 takes one on every file it opens) are
                // its own and come back with it.
                std::vector<const char*> argv = {cfg_.engine.c_str(), "dump", "-t", pid.c_str(), "-D",
                                                 targets[i].dir.c_str(), "--leave-running",
                                                 "--external-stdio", "--file-locks"};
                for (const auto& a : targets[i].extra_args) argv.push_back(a.c_str());
                const std::string compress = fmt::format("--compress={}", cfg_.compress);
                if (cfg_.compress) argv.push_back(compress.c_str());
                if (!cfg_.save_files_under.empty()) {
                    argv.push_back("--save-files-under");
                    argv.push_back(cfg_.save_files_under.c_str());
                }
                argv.push_back(nullptr);
                ::execv(argv[0], const_cast<char* const*>(argv.data()));
                std::fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                ::_exit(127);
            }
            children.push_back(c);
            if (c < 0) out[i] = sys_error("fork");
        }
        for (size_t i = 0; i < children.size(); ++i) {
            if (children[i] < 0) continue;
            int status = 0;
            while (::waitpid(children[i], &status, 0) < 0 && errno == EINTR) {
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                out[i] = error("ckpt-engine dump -t {} failed ({}; its messages are in this log)",
                               targets[i].root,
                               WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status))
                                                 : fmt::format("signal {}", WTERMSIG(status)));
        }
        return out;
    }

    AgentConfig cfg_;
    TaskFeed feed_;
    std::vector<Task> tasks_;
    std::string known_;  // task lines read before the user's half existed
    std::string agent_exe_, engine_exe_;
    privilege::Identity who_;
    std::string note_;
    uint32_t restart_count_ = 0;
    pid_t launcher_ = -1;
    std::string mpi_dir_;  // ckpt's libmpi folder, resolved
    pid_t user_half_ = -1;
    UniqueFd sock_, user_feed_;
};

}  // namespace

int run_agent_privileged(AgentConfig cfg) {
    ::signal(SIGPIPE, SIG_IGN);
    PrivilegedHalf half(std::move(cfg));
    return half.run();
}

Result<std::string> PrivilegedChannel::ask(const std::string& request, int pass_fd) {
    if (fd_ < 0) return error("no privileged half");
    CKPT_TRY(send_message(fd_, request, pass_fd));
    return receive_message(fd_);
}

Result<void> PrivilegedChannel::send_log(int log_fd) {
    if (fd_ < 0) return ok();
    return send_message(fd_, "log", log_fd);
}

Result<std::map<int32_t, PrivilegedChannel::Dumped>> PrivilegedChannel::dump(
    uint64_t seq, const std::vector<int32_t>& members, const std::vector<mpi::ParkedRank>& parked, uint64_t parent,
    uint64_t tracked) {
    std::string req = fmt::format("dump {}", seq);
    for (int32_t m : members) req += fmt::format(" {}", m);
    if (parent) req += fmt::format("\nparent {}", parent);
    if (tracked) req += fmt::format("\ntracked {}", tracked);
    for (const auto& p : parked) req += fmt::format("\nrank {}", mpi::encode_parked(p));
    std::string answer = CKPT_TRY(ask(req));
    if (answer.starts_with("error ")) return error("{}", answer.substr(6));
    auto lines = split(answer, '\n');
    if (lines.empty() || lines[0] != fmt::format("dumped {}", seq))
        return error("unexpected answer to a dump: {}", lines.empty() ? "" : std::string(lines[0]));
    std::map<int32_t, Dumped> out;
    for (size_t i = 1; i < lines.size(); ++i) {
        if (lines[i].empty()) continue;
        size_t sp = lines[i].find(' ');
        auto id = parse_int(lines[i].substr(0, sp));
        std::string_view rest = sp == std::string_view::npos ? "" : lines[i].substr(sp + 1);
        if (!id) return error("unexpected answer to a dump: {}", lines[i]);
        Dumped& d = out[static_cast<int32_t>(*id)];
        if (rest.starts_with("ok rank ")) {
            auto rank = parse_int(rest.substr(8));
            if (!rank || *rank < 0) return error("unexpected answer to a dump: {}", lines[i]);
            d.mpi_rank = static_cast<int>(*rank);
        } else if (rest != "ok") {
            d.failure = std::string(rest);
        }
    }
    for (int32_t m : members)
        if (!out.count(m)) out[m].failure = "no answer for this member";
    return out;
}

Result<void> PrivilegedChannel::move_aside(const std::string& to) {
    std::string answer = CKPT_TRY(ask("aside " + to));
    if (answer == "ok") return ok();
    return error("{}", answer.starts_with("error ") ? answer.substr(6) : answer);
}

}  // namespace ckpt::slurm::agent
