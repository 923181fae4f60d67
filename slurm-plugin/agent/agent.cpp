#include "agent.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/fs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/set/store.h"
#include "ckpt/slurm/coordination.h"
#include "ckpt/slurm/interval.h"
#include "drain.h"
#include "job_record.h"
#include "local_tasks.h"
#include "privileged.h"
#include "relay.h"

namespace ckpt::slurm::agent {

namespace {

using set::JobStore;
using set::Trigger;

auto logger() { return log::get("slurm"); }

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_warned = 0;
void on_stop(int) { g_stop = 1; }
// SIGUSR1/SIGUSR2: Slurm's warning before the end (sbatch --signal=SIG@SECS reaches every
// process of the job's steps, the agents included) or scancel --signal: take a set now.
void on_warning(int) { g_warned = 1; }

uint64_t now_s() { return static_cast<uint64_t>(::time(nullptr)); }

Result<void> fsync_tree(const std::string& dir) {
    UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) return sys_error("open {}", dir);
    DIR* it = ::fdopendir(::dup(d.get()));
    if (!it) return sys_error("opendir {}", dir);
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(it)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        struct stat st;
        if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            subdirs.push_back(dir + "/" + name);
        } else if (S_ISREG(st.st_mode)) {
            UniqueFd f(::openat(d.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!f || ::fsync(f.get()) != 0) {
                ::closedir(it);
                return sys_error("fsync {}/{}", dir, name);
            }
        }
    }
    ::closedir(it);
    for (const auto& s : subdirs) CKPT_TRY(fsync_tree(s));
    if (::fsync(d.get()) != 0) return sys_error("fsync {}", dir);
    return ok();
}

Result<void> write_rank_marker(const std::string& member_dir, int rank) {
    std::string path = member_dir + "/" + kMpiRankMarker;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return sys_error("create {}", path);
    std::string text = fmt::format("rank {}\n", rank);
    return write_all(fd.get(), text.data(), text.size());
}

class Agent {
public:
    explicit Agent(const AgentConfig& cfg)
        : cfg_(cfg), feed_(cfg.task_fd), channel_(cfg.channel_fd), agent_exe_(exe_of(::getpid())) {
        engine_exe_ = cfg.engine;
        if (char* r = ::realpath(cfg.engine.c_str(), nullptr)) {
            engine_exe_ = r;
            ::free(r);
        }
        job_dir_ = fmt::format("{}/{}", cfg.root, cfg.job);
    }

    int run() {
        if (auto r = start(); !r) {
            (void)open_folders();  // so that the error reaches the job's agent log if it can
            logger()->error("job {} step {} node {}: {}", cfg_.job, step_name(cfg_.step),
                            cfg_.node_id, r.error().message());
            // Without the store the agent has nothing to do but must not take the job down.
            return 1;
        }
        if (!passive_.empty()) return wait_passively();
        next_due_ = cfg_.interval ? now_s() + cfg_.interval : 0;
        write_status("running");
        while (!g_stop) {
            feed_.poll(tasks_);
            if (all_tasks_exited()) {
                logger()->info("every local task exited");
                break;
            }
            if (relay_ && !relay_->has_lead()) learn_mpi_lead();
            if (lead()) lead_tick();
            node_tick();
            if (now_s() >= status_written_ + 5) write_status("running");
            std::this_thread::sleep_for(std::chrono::milliseconds(150));
        }
        if (lead() && pending_) {
            (void)store_->fail_set(pending_->seq, pending_->draining
                                                      ? "the step ended while the set was drained"
                                                      : "the step ended while the set was written");
            pending_.reset();
        }
        drain_stop_ = true;
        if (drain_.joinable()) drain_.join();
        resume_ranks();
        write_status(g_stop ? "stopped" : "finished");
        return 0;
    }

private:
    bool lead() const { return cfg_.node_id == 0; }
    bool local() const { return !cfg_.local_root.empty(); }
    std::string local_job_dir() const { return fmt::format("{}/{}", cfg_.local_root, cfg_.job); }

    // One srun step of a job is checkpointed at a time: its lead holds agents/steps.lock for
    // as long as it runs (the lock goes with the process, however it ends). The lead of a
    // step that starts while another one holds it leaves the store alone (claiming it would
    // settle the other step's set in flight) and its step runs without checkpoints. The
    // batch step takes no part: its agent never dumps while the script runs srun.
    Result<bool> take_steps_lock() {
        UniqueFd agents = CKPT_TRY(make_agents_folder(job_dir_));
        UniqueFd fd(::openat(agents.get(), kStepsLock,
                             O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) return sys_error("open {}/{}/{}", job_dir_, kAgentsDir, kStepsLock);
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno == EWOULDBLOCK) return false;
            return sys_error("flock {}/{}/{}", job_dir_, kAgentsDir, kStepsLock);
        }
        steps_lock_ = std::move(fd);
        return true;
    }

    // A step that is not checkpointed: its agents say so and wait for its tasks.
    int wait_passively() {
        logger()->warn("job {} step {}: not checkpointed: {}", cfg_.job, step_name(cfg_.step),
                       passive_);
        last_result_ = "not checkpointed: " + passive_;
        write_status("idle");
        while (!g_stop && !all_tasks_exited()) {
            feed_.poll(tasks_);
            if (now_s() >= status_written_ + 5) write_status("idle");
            std::this_thread::sleep_for(std::chrono::milliseconds(150));
        }
        write_status(g_stop ? "stopped" : "finished");
        return 0;
    }

    Result<void> open_folders() {
        if (agents_fd_) return ok();
        job_fd_ = CKPT_TRY(open_folder(job_dir_, cfg_.uid));
        agents_fd_ = CKPT_TRY(open_agents_dir(job_fd_.get(), job_dir_));
        if (open_log(agents_fd_.get(),
                     fmt::format("step-{}.node-{}.log", step_name(cfg_.step), cfg_.node_id)))
            if (auto r = channel_.send_log(STDERR_FILENO); !r)
                logger()->warn("the engines' messages will not reach this log: {}", r.error().message());
        return ok();
    }

    Result<void> start() {
        // Learnt by the privileged half from the tasks' environment (privileged.cpp).
        restart_count_ = cfg_.restart_count;
        if (lead() && cfg_.step != kBatchStep && !CKPT_TRY(take_steps_lock())) {
            passive_ = "another srun step of this job is checkpointed (one step at a time)";
            return open_folders();
        }
        if (lead()) {
            JobRecord rec = load_job_record(
                cfg_.job, cfg_.job_argv,
                {fmt::format("--checkpoint-interval={}s", cfg_.interval),
                 fmt::format("--checkpoint-keep={}", cfg_.keep)});
            set::JobInfo info{cfg_.job,    cfg_.user,          cfg_.uid, cfg_.gid, rec.name,
                              rec.cluster, rec.submit_options, "",       "",       cfg_.incarnation,
                              {}};
            store_ = CKPT_TRY(JobStore::open_writer(
                cfg_.root, info, restart_count_,
                [this](const std::string& from, const std::string& to) { return move_aside(from, to); }));
            if (cfg_.step == kBatchStep) save_submission(*store_, rec.script, cfg_.environment_fd);
        }
        // Other nodes wait for the lead to create the job folder.
        for (int i = 0; i < 300 && ::access(job_dir_.c_str(), F_OK) != 0 && !g_stop; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        CKPT_TRY(open_folders());
        if (local())
            local_fd_ = CKPT_TRY_CTX(open_local_job_folder(cfg_.local_root, cfg_.job, cfg_.uid),
                                     "local_dir");
        if (!cfg_.folder_note.empty()) logger()->warn("job {}: {}", cfg_.job, cfg_.folder_note);
        if (lead() && !store_->set_aside().empty())
            logger()->warn("job {}: the folder of an earlier job {} (same id, another incarnation) "
                           "was moved aside to {}; not restoring from it",
                           cfg_.job, cfg_.job, store_->set_aside());
        if (lead() && incremental_sets(cfg_)) {
            // The job's processes may still hold an earlier run's write trackers (a copy of
            // the job left running, an agent started again): this run's first sets name the
            // newest committed set of the step, whose dumps recorded them.
            for (const auto& s : store_->index().sets)
                if (s.state == set::SetState::Committed && s.step_id == cfg_.step) tracked_set_ = s.seq;
        }
        if (lead()) {
            // A request left by an earlier run names a set that run began; this run starts
            // with its own requests only.
            ::unlinkat(agents_fd_.get(), request_name(cfg_.step).c_str(), 0);
            // So is a final-set request of an earlier run's relay that no agent took.
            if (cfg_.step == kBatchStep) ::unlinkat(job_fd_.get(), kPreemptRequest, 0);
        } else if (auto old = read_file_at(agents_fd_.get(), request_name(cfg_.step)); old) {
            if (auto req = decode_request(*old); req && req->restart_count == restart_count_)
                handled_seq_ = req->seq;  // of this run, before this agent started: skip
        }
        if (cfg_.step != kBatchStep && !cfg_.mpi_control.empty()) CKPT_TRY_CTX(start_mpi(), "MPI ranks");
        logger()->info("job {} step {} node {} of {} ({}): agent of run {} started, interval {} s",
                       cfg_.job, step_name(cfg_.step), cfg_.node_id, cfg_.nodes, cfg_.node_name,
                       restart_count_, cfg_.interval);
        return ok();
    }

    bool all_tasks_exited() const {
        if (tasks_.size() < cfg_.local_tasks) return false;
        for (const Task& t : tasks_)
            if (t.pidfd && !t.exited()) return false;
        return true;
    }

    // An earlier job's folder of this id is renamed by the user where the user may write
    // the checkpoint root, else by the privileged half (a root-owned root).
    Result<void> move_aside(const std::string& from, const std::string& to) {
        std::string a = fmt::format("{}/{}", cfg_.root, from), b = fmt::format("{}/{}", cfg_.root, to);
        if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_NOREPLACE) == 0) return ok();
        if (errno != EACCES && errno != EPERM) return sys_error("rename {} to {}", a, b);
        return channel_.move_aside(to);
    }

    std::optional<Trigger> due() {
        if (g_warned) {
            g_warned = 0;
            logger()->info("signalled by Slurm (--signal or scancel --signal): final checkpoint");
            return Trigger::Preempt;
        }
        if (::unlinkat(job_fd_.get(), kPreemptRequest, 0) == 0) {
            logger()->info("Slurm warned the batch script (--signal=B:...): final checkpoint");
            return Trigger::Preempt;
        }
        if (::unlinkat(job_fd_.get(), kCheckpointRequest, 0) == 0) {
            logger()->info("checkpoint requested by the job's user");
            return Trigger::Manual;
        }
        if (next_due_ && now_s() >= next_due_) return Trigger::Interval;
        return std::nullopt;
    }

    void lead_tick() {
        if (pending_) {
            collect();
            return;
        }
        if (cfg_.step == kBatchStep && runs_srun()) {
            // The srun client holds sockets; the steps it started checkpoint their tasks (and
            // take the user's requests, which this agent must leave to them).
            if (next_due_ && now_s() >= next_due_) {
                next_due_ = now_s() + cfg_.interval;
                logger()->info(
                    "set skipped: the batch script runs srun steps, which "
                    "checkpoint themselves");
            }
            return;
        }
        auto trigger = due();
        if (!trigger) return;
        if (*trigger == Trigger::Interval) next_due_ = now_s() + cfg_.interval;
        if (tasks_.size() < cfg_.local_tasks) {
            logger()->info("set skipped: {} of {} local tasks started", tasks_.size(),
                           cfg_.local_tasks);
            return;
        }
        auto r = begin(*trigger);
        if (!r) {
            last_result_ = r.error().message();
            logger()->error("{}", last_result_);
            write_status("running");
        }
    }

    bool runs_srun() const {
        for (const Task& t : tasks_) {
            auto root = tree_root(t.pid, agent_exe_, engine_exe_);
            if (root && tree_has(*root, "srun")) return true;
        }
        return false;
    }

    Result<void> begin(Trigger trigger) {
        set::SetOptions o{trigger, cfg_.step, cfg_.nodes, cfg_.tasks_total, cfg_.step_command, 0};
        // Incremental: an interval set after a set this agent committed (its dumps left the
        // trackers; same run, same nodes), unless the chain since the last full set is long
        // enough. A failed set or a new run (restart, requeue) starts again with a full one.
        if (incremental_sets(cfg_) && trigger == Trigger::Interval && chain_parent_ &&
            chain_length_ + 1 < cfg_.full_every)
            o.parent = chain_parent_;
        uint64_t seq = CKPT_TRY(store_->begin_set(o));
        pending_ = Pending{seq, now_s(), trigger, {}, false, 0, {}, o.parent, std::chrono::steady_clock::now(), {}};
        chain_parent_ = 0;  // until this set commits
        for (uint32_t m = 0; m < cfg_.tasks_total; ++m)
            if (auto d = store_->make_member_dir(seq, static_cast<int32_t>(m)); !d) {
                (void)store_->fail_set(seq, d.error().message());
                pending_.reset();
                return std::move(d).error();
            }
        if (auto q = quiesce_ranks(); !q) {
            std::string why = fmt::format("set {} failed: {}", seq, q.error().message());
            (void)store_->fail_set(seq, q.error().message());
            pending_.reset();
            return error("{}", why);
        }
        SetRequest req{seq, trigger, restart_count_, o.parent, o.parent ? o.parent : tracked_set_};
        CKPT_TRY(write_file_at(agents_fd_.get(), request_name(cfg_.step), encode(req)));
        if (o.parent) logger()->info("set {} begun ({}, incremental on set {})", seq, set::to_string(trigger), o.parent);
        else logger()->info("set {} begun ({})", seq, set::to_string(trigger));
        return ok();
    }

    // The lead: reads the nodes' reports; commits when all are in, fails on a failed node
    // or after the timeout.
    void collect() {
        Pending& p = *pending_;
        if (p.draining) {
            collect_drained();
            return;
        }
        for (uint32_t n = 0; n < cfg_.nodes; ++n) {
            if (p.reports.count(n)) continue;
            auto text = read_file_at(agents_fd_.get(), report_name(cfg_.step, p.seq, n));
            if (!text) continue;
            auto rep = decode_report(*text);
            if (!rep) {
                finish(error("node {}: {}", n, rep.error().message()));
                return;
            }
            if (!rep->failure.empty()) {
                finish(error("node {} ({}): {}", n, rep->node, rep->failure));
                return;
            }
            p.reports[n] = std::move(*rep);
        }
        if (p.reports.size() == cfg_.nodes) {
            // Every image is written: the job goes on while the set commits.
            p.cost = busy_so_far(p);
            resume_ranks();
            if (!local()) finish(commit());
            else if (auto r = commit_local(); !r) finish(std::move(r));
        } else if (now_s() > p.started + cfg_.set_timeout) {
            finish(error("{} of {} nodes reported within {} s", p.reports.size(), cfg_.nodes,
                         cfg_.set_timeout));
        }
    }

    Result<void> add_members() {
        Pending& p = *pending_;
        for (auto& [n, rep] : p.reports)
            for (auto& m : rep.members)
                CKPT_TRY(store_->add_member(p.seq, {m.member_id, rep.node, m.image_dir, m.files}));
        return ok();
    }

    // Two-level storage: every node's members are in its local folder: the set commits at
    // the local level, the job goes on, and every node drains its members to the job's
    // folder (node_tick); the set commits there once all did (collect_drained).
    Result<void> commit_local() {
        Pending& p = *pending_;
        CKPT_TRY(add_members());
        CKPT_TRY(store_->commit_local(p.seq));
        CKPT_TRY(write_file_at(agents_fd_.get(), drain_name(cfg_.step),
                               encode(SetRequest{p.seq, p.trigger, restart_count_})));
        p.draining = true;
        p.drain_started = now_s();
        for (uint32_t n = 0; n < cfg_.nodes; ++n)
            ::unlinkat(agents_fd_.get(), report_name(cfg_.step, p.seq, n).c_str(), 0);
        last_result_ = fmt::format("set {} committed locally, draining", p.seq);
        logger()->info("{} in {} s", last_result_, now_s() - p.started);
        resume_ranks();
        write_status("running");
        return ok();
    }

    void collect_drained() {
        Pending& p = *pending_;
        for (uint32_t n = 0; n < cfg_.nodes; ++n) {
            if (p.drained.count(n)) continue;
            auto text = read_file_at(agents_fd_.get(), drained_name(cfg_.step, p.seq, n));
            if (!text) continue;
            auto rep = decode_report(*text);
            if (!rep) return finish(error("node {}: drain: {}", n, rep.error().message()));
            if (!rep->failure.empty()) return finish(error("node {} ({}): drain: {}", n, rep->node, rep->failure));
            p.drained.insert(n);
        }
        if (p.drained.size() == cfg_.nodes)
            finish(commit());
        else if (now_s() > p.drain_started + kDrainTimeout)
            finish(error("{} of {} nodes drained within {} s", p.drained.size(), cfg_.nodes, kDrainTimeout));
    }

    Result<void> commit() {
        Pending& p = *pending_;
        if (!p.draining) CKPT_TRY(add_members());
        CKPT_TRY(store_->commit_set(p.seq));
        auto kept = store_->keep_newest(cfg_.keep);
        if (!kept) logger()->warn("keep_newest: {}", kept.error().message());
        return ok();
    }

    void finish(Result<void> r) {
        uint64_t seq = pending_->seq;
        pace_next_set(*pending_);
        if (r) {
            last_result_ = fmt::format("set {} committed", seq);
            last_set_ = seq;
            chain_length_ = pending_->parent ? chain_length_ + 1 : 0;
            chain_parent_ = incremental_sets(cfg_) ? seq : 0;
            tracked_set_ = chain_parent_;
            last_time_ = now_s();
            logger()->info("{} in {} s", last_result_, now_s() - pending_->started);
        } else {
            last_result_ = fmt::format("set {} failed: {}", seq, r.error().message());
            logger()->error("{}", last_result_);
            if (auto f = store_->fail_set(seq, r.error().message()); !f)
                logger()->error("{}", f.error().message());
        }
        for (uint32_t n = 0; n < cfg_.nodes; ++n) {
            ::unlinkat(agents_fd_.get(), report_name(cfg_.step, seq, n).c_str(), 0);
            ::unlinkat(agents_fd_.get(), drained_name(cfg_.step, seq, n).c_str(), 0);
        }
        pending_.reset();
        resume_ranks();
        write_status("running");
    }

    // MPI (docs/mpi.md, "Under Slurm"): every node's agent relays its ranks' control
    // channels; the lead's also runs the step's coordinator and says, in the job's folder,
    // where the nodes reach it and with which token.
    Result<void> start_mpi() {
        relay_ = CKPT_TRY(mpi::Relay::start(cfg_.mpi_control));
        if (!lead()) return ok();
        unsigned char b[8];
        if (::getrandom(b, sizeof b, 0) != sizeof b) return sys_error("getrandom");
        std::string name = fmt::format("@ckpt-mpi-coord-{}-{}-", cfg_.job, step_name(cfg_.step));
        for (unsigned char c : b) name += fmt::format("{:02x}", c);
        coordinator_ = CKPT_TRY(mpi::Coordinator::listen(name, static_cast<int>(cfg_.tasks_total), true));
        mpi::LeadAddress lead = CKPT_TRY(relay_->serve_as_lead(name));
        return write_file_at(agents_fd_.get(), mpi_lead_name(cfg_.step),
                             seal(fmt::format("ckpt-mpi-lead 1\nrun {}\nhost {}\nport {}\ntoken {}\n",
                                              restart_count_, lead.host, lead.port, lead.token)));
    }

    // A node: where the lead's relay is, once the lead wrote it for this run.
    void learn_mpi_lead() {
        auto text = read_file_at(agents_fd_.get(), mpi_lead_name(cfg_.step));
        if (!text) return;
        auto body = unseal(*text, "MPI lead");
        if (!body) return;
        Fields f = parse_fields(*body);
        auto run = uint_field(f, "run", "MPI lead");
        auto port = uint_field(f, "port", "MPI lead");
        if (field(f, "ckpt-mpi-lead") != "1" || !run || *run != restart_count_ || !port || *port > 65535) return;
        relay_->set_lead({field(f, "host").value_or(""), static_cast<uint16_t>(*port), field(f, "token").value_or("")});
        logger()->info("MPI ranks relayed to the lead at {}:{}", field(f, "host").value_or(""), *port);
    }

    // The lead, as a set begins: an MPI step's ranks are quiesced before any node dumps.
    // A step none of whose tasks reached the coordinator is dumped as plain processes (each
    // node refuses a task that maps ckpt's libmpi without being parked).
    Result<void> quiesce_ranks() {
        if (!coordinator_) return ok();
        (void)coordinator_->accept_ranks(std::chrono::milliseconds(0));
        int connected = coordinator_->connected_ranks();
        if (connected == 0) return ok();
        if (connected < static_cast<int>(cfg_.tasks_total))
            return error("{} of {} MPI ranks reached the coordinator (the others have not finished MPI_Init)",
                         connected, cfg_.tasks_total);
        mpi::QuiesceTimes t;
        CKPT_TRY(coordinator_->quiesce(std::chrono::seconds(60), &t));
        ranks_parked_ = true;
        logger()->info("{} MPI ranks quiesced in {} ms", connected,
                       std::chrono::duration_cast<std::chrono::milliseconds>(t.to_parked).count());
        return ok();
    }

    void resume_ranks() {
        if (!ranks_parked_) return;
        ranks_parked_ = false;
        if (auto r = coordinator_->resume(); !r) logger()->error("MPI ranks not resumed: {}", r.error().message());
    }


    // Every node, with local_dir: drains the set the lead committed locally, in the
    // background (the dumps of the next set wait: the lead begins none before this set is
    // committed at the shared level or failed).
    void drain_tick() {
        if (drain_.joinable() && drain_done_) drain_.join();
        if (drain_.joinable()) return;
        auto text = read_file_at(agents_fd_.get(), drain_name(cfg_.step));
        if (!text) return;
        auto req = decode_request(*text);
        if (!req || req->restart_count != restart_count_ || req->seq <= drained_seq_) return;
        uint64_t seq = drained_seq_ = req->seq;
        auto it = local_members_.find(seq);
        if (it == local_members_.end()) {
            write_drained(seq, fmt::format("node {} holds no local copy of set {}", cfg_.node_name, seq));
            return;
        }
        std::vector<NodeReport::Member> members = std::move(it->second);
        local_members_.clear();
        drain_done_ = false;
        drain_stop_ = false;
        drain_ = std::thread([this, seq, members = std::move(members)] {
            // FOR TESTS ONLY (drain_hold=, the admin's path): held while the file exists, so
            // that a test can kill a node mid-drain.
            while (!cfg_.drain_hold.empty() && ::access(cfg_.drain_hold.c_str(), F_OK) == 0 && !drain_stop_)
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            auto started = std::chrono::steady_clock::now();
            auto r = drain_stop_ ? Result<void>(error("the agent is stopping"))
                                 : drain_members(local_fd_.get(), job_fd_.get(), seq, members);
            if (r) {
                logger()->info("set {}: {} local members drained in {} ms", seq, members.size(),
                               std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - started)
                                   .count());
                // Drained: older local copies go. Not before: while this set may still fail,
                // the next set's dumps name the set before it (its members are the parents,
                // or hold the trackers' record), and read its images here.
                prune_local_sets(local_fd_.get(), local_job_dir(), seq);
            }
            write_drained(seq, r ? "" : r.error().message());
            drain_done_ = true;
        });
    }

    void write_drained(uint64_t seq, const std::string& failure) {
        if (!failure.empty()) logger()->error("set {}: drain: {}", seq, failure);
        NodeReport rep{seq, cfg_.node_id, cfg_.node_name, failure, {}};
        if (auto w = write_file_at(agents_fd_.get(), drained_name(cfg_.step, seq, cfg_.node_id), encode(rep)); !w)
            logger()->error("set {}: {}", seq, w.error().message());
    }

    // Every node: answers a new request of this run with its members.
    void node_tick() {
        if (local()) drain_tick();
        auto text = read_file_at(agents_fd_.get(), request_name(cfg_.step));
        if (!text) return;
        auto req = decode_request(*text);
        if (!req || req->restart_count != restart_count_ || req->seq <= handled_seq_) return;
        handled_seq_ = req->seq;
        write_status("dumping");
        NodeReport rep = dump_members(req->seq, req->parent, req->tracked);
        if (!rep.failure.empty()) logger()->error("set {}: {}", req->seq, rep.failure);
        if (auto w = write_file_at(agents_fd_.get(), report_name(cfg_.step, req->seq, cfg_.node_id),
                                   encode(rep));
            !w)
            logger()->error("set {}: {}", req->seq, w.error().message());
        write_status("running");
    }

    // The privileged half runs the engines (privileged.cpp); this half checks and scans
    // what they wrote, as the user.
    NodeReport dump_members(uint64_t seq, uint64_t parent, uint64_t tracked) {
        NodeReport rep{seq, cfg_.node_id, cfg_.node_name, "", {}};
        std::vector<int32_t> ids;
        // Parked MPI ranks: the privileged half, which sees the tasks' trees whole, matches
        // them to the tasks they are.
        std::vector<mpi::ParkedRank> parked;
        if (relay_)
            for (auto& [pid, p] : relay_->parked()) parked.push_back(p);
        for (const Task& t : tasks_) {
            if (t.exited()) {
                rep.failure = fmt::format("task {} (pid {}) has exited", t.global_id, t.pid);
                return rep;
            }
            ids.push_back(t.global_id);
            rep.members.push_back(
                {t.global_id, fmt::format("{}/member-{}", set::set_folder_name(seq), t.global_id), {}});
        }
        if (local())
            if (auto made = make_local_set(local_fd_.get(), local_job_dir(), seq, ids); !made) {
                rep.failure = made.error().message();
                return rep;
            }
        auto started = std::chrono::steady_clock::now();
        auto results = channel_.dump(seq, ids, parked, parent, tracked);
        if (!results) {
            rep.failure = results.error().message();
            return rep;
        }
        for (auto& m : rep.members) {
            const auto& result = (*results)[m.member_id];
            if (!result.failure.empty()) {
                rep.failure = result.failure;
                return rep;
            }
            std::string dir = (local() ? local_job_dir() : job_dir_) + "/" + m.image_dir;
            // A restart gives a rank's image a new control channel and launch environment.
            if (result.mpi_rank >= 0)
                if (auto w = write_rank_marker(dir, result.mpi_rank); !w) {
                    rep.failure = w.error().message();
                    return rep;
                }
            auto r = fsync_tree(dir);
            auto files = r ? set::scan_member_files(dir)
                           : Result<std::vector<set::FileRecord>>(std::move(r).error());
            if (!files) {
                rep.failure = files.error().message();
                return rep;
            }
            m.files = std::move(*files);
        }
        if (local()) local_members_[seq] = rep.members;
        logger()->info("set {}: {} local members dumped in {} ms", seq, ids.size(),
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count());
        return rep;
    }

    void write_status(const std::string& state) {
        if (!agents_fd_) return;
        std::string s = fmt::format(
            "ckpt-agent-status 1\nnode {}\nnode_id {}\nstate {}\nlead {}\npid {}\nrun {}\n"
            "interval {}\ntasks {}\nupdated {}\n",
            cfg_.node_name, cfg_.node_id, state, lead() ? 1 : 0, ::getpid(), restart_count_,
            cfg_.interval, tasks_.size(), now_s());
        if (lead()) {
            s += fmt::format("next_due {}\nlast_set {}\nlast_time {}\n", next_due_, last_set_,
                             last_time_);
            if (!last_result_.empty()) s += fmt::format("last_result {}\n", last_result_);
        }
        status_written_ = now_s();
        if (auto w = write_file_at(agents_fd_.get(), status_name(cfg_.step, cfg_.node_id), seal(s));
            !w)
            logger()->warn("status: {}", w.error().message());
    }

    struct Pending {
        uint64_t seq;
        uint64_t started;
        Trigger trigger;
        std::map<uint32_t, NodeReport> reports;
        bool draining;  // committed at the local level, the nodes drain it
        uint64_t drain_started;
        std::set<uint32_t> drained;
        uint64_t parent;  // incremental on this set; 0: full
        std::chrono::steady_clock::time_point began;
        // How long the set kept the job busy: from its beginning until every node dumped
        // (MPI ranks parked, or processes frozen or copied; a drain runs beside the job).
        std::optional<std::chrono::milliseconds> cost;
    };

    static std::chrono::milliseconds busy_so_far(const Pending& p) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - p.began);
    }

    // max_overhead=: the next interval set waits long enough after this one that checkpoints
    // take at most that share of the job's time, whatever the interval asked.
    void pace_next_set(const Pending& p) {
        auto cost = p.cost.value_or(busy_so_far(p));
        uint64_t pause_ms = overhead_pause_ms(static_cast<uint64_t>(cost.count()), cfg_.max_overhead);
        uint64_t earliest = now_s() + (pause_ms + 999) / 1000;
        if (!next_due_ || earliest <= next_due_) return;
        logger()->info("set {} kept the job busy {} ms: the next set in {} s, not {} s (max_overhead={}%)", p.seq,
                       cost.count(), earliest - now_s(), next_due_ > now_s() ? next_due_ - now_s() : 0,
                       cfg_.max_overhead);
        next_due_ = earliest;
    }
    // The newest set this agent committed whose dumps left write trackers (0: none; the next
    // set is full), and how many incremental sets lead to it from the last full one.
    uint64_t chain_parent_ = 0;
    // The newest set this agent committed with write trackers (kept across failed sets: a
    // failed dump moves a tracker but keeps its inode, which this set recorded).
    uint64_t tracked_set_ = 0;
    uint32_t chain_length_ = 0;
    static constexpr uint64_t kDrainTimeout = 3600;  // seconds the lead waits for every drain

    const AgentConfig& cfg_;
    TaskFeed feed_;
    PrivilegedChannel channel_;
    std::vector<Task> tasks_;
    std::string agent_exe_, engine_exe_;
    std::string job_dir_;
    UniqueFd job_fd_, agents_fd_;
    UniqueFd steps_lock_;  // held by the lead of the checkpointed srun step
    std::string passive_;  // why this step is not checkpointed (empty: it is)
    std::optional<JobStore> store_;
    std::optional<Pending> pending_;
    std::unique_ptr<mpi::Relay> relay_;          // an MPI step's, every node
    std::optional<mpi::Coordinator> coordinator_;  // an MPI step's, the lead
    bool ranks_parked_ = false;
    uint64_t handled_seq_ = 0;
    // Two-level storage (local_dir=): the node's local job folder, the members it dumped
    // there (what the drain copies and checks), and the drain in the background.
    UniqueFd local_fd_;
    std::map<uint64_t, std::vector<NodeReport::Member>> local_members_;
    uint64_t drained_seq_ = 0;
    std::thread drain_;
    std::atomic<bool> drain_done_{true}, drain_stop_{false};
    uint32_t restart_count_ = 0;
    uint64_t status_written_ = 0;
    uint64_t next_due_ = 0;
    uint64_t last_set_ = 0, last_time_ = 0;
    std::string last_result_;
};

}  // namespace

Result<UniqueFd> open_agents_dir(int job_fd, const std::string& job_dir) {
    if (::mkdirat(job_fd, kAgentsDir, 0700) != 0 && errno != EEXIST)
        return sys_error("mkdir {}/{}", job_dir, kAgentsDir);
    return open_folder(job_dir + "/" + kAgentsDir, ::geteuid());
}

Result<UniqueFd> make_agents_folder(const std::string& job_dir) {
    if (::mkdir(job_dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir {}", job_dir);
    UniqueFd job_fd = CKPT_TRY(open_folder(job_dir, ::geteuid()));
    return open_agents_dir(job_fd.get(), job_dir);
}

bool open_log(int agents_fd, const std::string& name) {
    UniqueFd fd(::openat(agents_fd, name.c_str(),
                         O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    ::dup2(fd.get(), 1);
    ::dup2(fd.get(), 2);
    return true;
}

int record_step_done(const std::string& root, uint64_t job, uint32_t step,
                     const std::string& step_command) {
    std::string dir = fmt::format("{}/{}", root, job);
    auto r = [&]() -> Result<void> {
        // The step may end before the lead agent created the job's folder: the record must
        // exist anyway, for a set taken later in the job.
        UniqueFd agents = CKPT_TRY(make_agents_folder(dir));
        timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
        return write_file_at(agents.get(), step_done_name(step),
                             seal(fmt::format("ckpt-step-done 1\ntime_ns {}\ncommand {}\n", ns,
                                              step_command)));
    }();
    if (!r) {
        std::printf("error job %llu step %s: %s\n", static_cast<unsigned long long>(job),
                    step_name(step).c_str(), r.error().message().c_str());
        return 1;
    }
    return 0;
}

int run_agent(const AgentConfig& cfg) {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    sa.sa_handler = on_warning;
    ::sigaction(SIGUSR1, &sa, nullptr);
    ::sigaction(SIGUSR2, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    Agent a(cfg);
    return a.run();
}

}  // namespace ckpt::slurm::agent
