// ckpt-job: a user's view of a job's checkpoints.
// Exit codes: 0 success, 1 failure (one line on stderr says what failed), 2 usage.
//
// Commands are rows of kCommands. checkpoint, restore and status talk to the job's agents
// through its checkpoint folder and to Slurm through sbatch (slurm-plugin/README.md).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/log.h"
#include "ckpt/base/privilege.h"
#include "ckpt/base/strings.h"
#include "ckpt/set/store.h"
#include "ckpt/slurm/coordination.h"
#include "ckpt/slurm/submit_options.h"

namespace {

using namespace ckpt;
using namespace ckpt::set;

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;
constexpr char kDefaultRoot[] = "/var/spool/ckpt";

const char kUsage[] =
    "usage: ckpt-job [-v...] <command> [JOBID] [options]\n"
    "\n"
    "Inspect and manage the checkpoints of Slurm jobs. JOBID defaults to $SLURM_JOB_ID.\n"
    "\n"
    "commands:\n"
    "  list [JOBID] [--json]         the job's checkpoint sets, the current one marked '*';\n"
    "                                without a job, every job of yours under the root\n"
    "  show JOBID [--set N] [--json] the job and one set with its members (default: current)\n"
    "  verify JOBID [--set N]        check every member file's size and checksum\n"
    "                                (and an incremental set's whole chain of parents)\n"
    "                                (default: every committed set)\n"
    "  rm JOBID [--set N | --keep N] remove one set, keep only the newest N committed sets,\n"
    "                                or (neither given) remove all of the job's checkpoints\n"
    "  repair JOBID                  rebuild the job's index.h5 from the set manifests\n"
    "  checkpoint JOBID [--wait]     ask the running job's agents for a checkpoint set now;\n"
    "                                --wait waits until it is committed and prints its number\n"
    "  restore JOBID [--set N]       submit the job again (its saved script and options) to\n"
    "                                resume from its newest committed set, or set N; works\n"
    "                                after the job ended, failed or was cancelled; prints the\n"
    "                                new job id\n"
    "  status JOBID                  interval, last set, next due and each node's agent\n"
    "  help                          show this text\n"
    "\n"
    "options for every command:\n"
    "  --root DIR            checkpoint root (default $CKPT_ROOT, else $CKPT_DIR inside a job,\n"
    "                        else /var/spool/ckpt)\n"
    "  -v, -vv, -vvv         log info, debug, trace to stderr (or set "
    "CKPT_LOG=level[,component=level])\n"
    "  -h, --help            show this text\n"
    "\n"
    "exit status: 0 success, 1 failure, 2 usage error\n";

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "ckpt-job: %s\n(see ckpt-job --help)\n", msg.c_str());
    return kExitUsage;
}

int failure(const Error& e) {
    std::fprintf(stderr, "ckpt-job: %s\n", e.message().c_str());
    return kExitFailure;
}

// Options a command accepts.
enum Accepts : unsigned { kJson = 1, kSet = 2, kKeep = 4, kOptionalJob = 8, kWait = 16 };

struct Args {
    std::string root;
    std::optional<uint64_t> jobid;
    std::optional<uint64_t> set;
    std::optional<uint32_t> keep;
    bool json = false;
    bool wait = false;
};

struct Command {
    const char* name;
    unsigned accepts;
    int (*run)(const Args&);
};

// --- output helpers ---

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20)
                    out += fmt::format("\\u{:04x}", c);
                else
                    out += c;
        }
    }
    return out + "\"";
}

std::string utc_time(uint64_t ns) {
    if (ns == 0) return "-";
    time_t t = static_cast<time_t>(ns / 1000000000ull);
    tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string duration(const SetRecord& s) {
    if (s.end_ns < s.start_ns || s.end_ns == 0) return "-";
    return fmt::format("{:.1f}s", static_cast<double>(s.end_ns - s.start_ns) / 1e9);
}

std::string human_bytes(uint64_t n) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, ++u;
    return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string set_json(const SetRecord& s, bool current, bool with_members) {
    std::string out = fmt::format(
        "{{\"seq\": {}, \"state\": {}, \"trigger\": {}, \"current\": {}, \"start_time_ns\": {}, "
        "\"end_time_ns\": {}, \"step_id\": {}, \"node_count\": {}, \"member_count\": {}, "
        "\"bytes\": {}, "
        "\"restart_count\": {}, \"folder\": {}, \"failure\": {}, \"levels\": {}, \"parent_set\": {}",
        s.seq, json_string(to_string(s.state)), json_string(to_string(s.trigger)),
        current ? "true" : "false", s.start_ns, s.end_ns, s.step_id, s.node_count,
        s.expected_members, s.bytes(), s.restart_count, json_string(s.folder()),
        json_string(s.failure), json_string(s.levels()), s.parent);
    if (with_members) {
        out += ", \"members\": [";
        for (size_t i = 0; i < s.members.size(); ++i) {
            const MemberRecord& m = s.members[i];
            out += fmt::format(
                "{}{{\"member_id\": {}, \"node\": {}, \"image_dir\": {}, \"bytes\": {}, "
                "\"checksum\": \"{:016x}\", "
                "\"dump_time_ns\": {}, \"state\": {}, \"files\": {}}}",
                i ? ", " : "", m.member_id, json_string(m.node), json_string(m.image_dir), m.bytes,
                m.checksum, m.dump_ns, json_string(to_string(m.state)), m.files.size());
        }
        out += "]";
    }
    return out + "}";
}

std::string job_json(const Index& idx) {
    const JobInfo& j = idx.job;
    return fmt::format(
        "{{\"job_id\": {}, \"user\": {}, \"uid\": {}, \"gid\": {}, \"name\": {}, \"cluster\": {}, "
        "\"submit_options\": {}, \"batch_script\": {}, \"environment\": {}, \"incarnation\": {}, "
        "\"restart_count\": {}, \"format_version\": {}}}",
        j.jobid, json_string(j.user), j.uid, j.gid, json_string(j.name), json_string(j.cluster),
        json_string(j.submit_options), json_string(j.batch_script), json_string(j.environment),
        json_string(j.incarnation), idx.restart_count, idx.format_version);
}

void print_set_table(const Index& idx) {
    const SetRecord* cur = idx.newest_committed();
    std::printf("  %-6s %-10s %-10s %-20s %-9s %5s %7s %10s\n", "SEQ", "STATE", "TRIGGER",
                "STARTED", "DURATION", "NODES", "MEMBERS", "BYTES");
    for (const SetRecord& s : idx.sets) {
        std::printf("%c %-6llu %-10s %-10s %-20s %-9s %5u %7u %10s\n", &s == cur ? '*' : ' ',
                    static_cast<unsigned long long>(s.seq), std::string(to_string(s.state)).c_str(),
                    std::string(to_string(s.trigger)).c_str(), utc_time(s.start_ns).c_str(),
                    duration(s).c_str(), s.node_count, s.expected_members,
                    human_bytes(s.bytes()).c_str());
    }
}

// --- commands ---

// Root reads no user's checkpoints as root (docs/security.md): run by root, ckpt-job first
// becomes the owner of the job's folder (its owner as the kernel says, not as its index
// does). A folder of root's own stays root's.
Result<void> become_folder_owner(const std::string& root, uint64_t job) {
    if (!privilege::is_root()) return ok();
    std::string dir = fmt::format("{}/{}", root, job);
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid == 0) return ok();
    auto who = privilege::user_identity(st.st_uid, st.st_gid);
    privilege::Identity nameless{st.st_uid, st.st_gid, {st.st_gid}};
    return privilege::become_user(who ? *who : nameless, 0).context("job {}: becoming the owner of {}", job, dir);
}

// One job's line (or JSON object) of `list`; "" for a job the caller may not see.
std::string list_entry(const Args& a, uint64_t id) {
    auto st = JobStore::open(a.root, id);
    if (!st) {
        if (st.error().code() == EACCES || a.json) return "";  // another user's job
        return fmt::format("{:<10} ({})\n", id, st.error().message());
    }
    const Index& idx = st->index();
    const SetRecord* cur = idx.newest_committed();
    if (a.json)
        return fmt::format("{{\"job\": {}, \"sets\": {}, \"current_set\": {}}}", job_json(idx),
                           idx.sets.size(), cur ? std::to_string(cur->seq) : "null");
    return fmt::format("{:<10} {:<12} {:<20} {:>5} {:>8}\n", id, idx.job.user, idx.job.name,
                       idx.sets.size(), cur ? std::to_string(cur->seq) : "-");
}

// list_entry as the job folder's owner, in a child: root lists every user's jobs without
// reading any of them as root.
std::string list_entry_as_owner(const Args& a, uint64_t id) {
    if (!privilege::is_root()) return list_entry(a, id);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return "";
    std::fflush(stdout);
    pid_t child = ::fork();
    if (child == 0) {
        ::close(p[0]);
        std::string out;
        if (auto r = become_folder_owner(a.root, id); r) out = list_entry(a, id);
        (void)write_all(p[1], out.data(), out.size());
        ::_exit(0);
    }
    ::close(p[1]);
    std::string out = read_to_end(p[0]);
    ::close(p[0]);
    if (child > 0) ::waitpid(child, nullptr, 0);
    return out;
}

int list_jobs(const Args& a) {
    std::vector<uint64_t> jobs;
    DIR* d = ::opendir(a.root.c_str());
    if (!d) return failure(sys_error("list {}", a.root));
    while (dirent* e = ::readdir(d))
        if (auto id = parse_uint(e->d_name); id) jobs.push_back(*id);
    ::closedir(d);
    std::sort(jobs.begin(), jobs.end());
    std::string json = "[";
    if (!a.json)
        std::printf("%-10s %-12s %-20s %5s %8s\n", "JOBID", "USER", "NAME", "SETS", "CURRENT");
    for (uint64_t id : jobs) {
        std::string entry = list_entry_as_owner(a, id);
        if (entry.empty()) continue;
        if (a.json)
            json += (json.size() > 1 ? ", " : "") + entry;
        else
            std::fputs(entry.c_str(), stdout);
    }
    if (a.json) std::printf("%s]\n", json.c_str());
    return kExitOk;
}

int cmd_list(const Args& a) {
    if (!a.jobid) return list_jobs(a);
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    const Index& idx = st->index();
    if (a.json) {
        const SetRecord* cur = idx.newest_committed();
        std::string sets;
        for (const SetRecord& s : idx.sets)
            sets += (sets.empty() ? "" : ", ") + set_json(s, &s == cur, false);
        std::printf("{\"job\": %s, \"current_set\": %s, \"sets\": [%s]}\n", job_json(idx).c_str(),
                    cur ? std::to_string(cur->seq).c_str() : "null", sets.c_str());
        return kExitOk;
    }
    std::printf("job %llu of %s (%s), run %u, %zu sets\n",
                static_cast<unsigned long long>(idx.job.jobid), idx.job.user.c_str(),
                idx.job.name.c_str(), idx.restart_count, idx.sets.size());
    if (!idx.sets.empty()) print_set_table(idx);
    return kExitOk;
}

int cmd_show(const Args& a) {
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    const Index& idx = st->index();
    const SetRecord* cur = idx.newest_committed();
    const SetRecord* s =
        a.set ? idx.find(*a.set) : (cur ? cur : (idx.sets.empty() ? nullptr : &idx.sets.back()));
    if (a.set && !s) return failure(error_code(ENOENT, "job {}: no set {}", *a.jobid, *a.set));
    if (a.json) {
        std::printf("{\"job\": %s, \"set\": %s}\n", job_json(idx).c_str(),
                    s ? set_json(*s, s == cur, true).c_str() : "null");
        return kExitOk;
    }
    const JobInfo& j = idx.job;
    auto or_dash = [](const std::string& v) { return v.empty() ? "-" : v.c_str(); };
    std::printf(
        "job %llu\n  user: %s (uid %u)\n  name: %s\n  cluster: %s\n  submit options: %s\n"
        "  batch script: %s\n  environment: %s\n  incarnation: %s\n  run: %u\n  folder: %s\n",
        static_cast<unsigned long long>(j.jobid), or_dash(j.user), j.uid, or_dash(j.name),
        or_dash(j.cluster), or_dash(j.submit_options),
        j.batch_script.empty() ? "-" : (st->dir() + "/" + j.batch_script).c_str(),
        j.environment.empty() ? "-" : (st->dir() + "/" + j.environment).c_str(),
        or_dash(j.incarnation), idx.restart_count, st->dir().c_str());
    if (!s) {
        std::printf("no checkpoint sets\n");
        return kExitOk;
    }
    std::printf(
        "set %llu%s\n  state: %s%s%s\n  trigger: %s\n  started: %s\n  ended: %s\n  step: %u\n"
        "  nodes: %u\n  members: %zu of %u\n  bytes: %llu (%s)\n  written by run: %u\n  levels: %s\n"
        "  incremental on: %s\n  folder: %s/%s\n",
        static_cast<unsigned long long>(s->seq), s == cur ? " (current)" : "",
        std::string(to_string(s->state)).c_str(), s->failure.empty() ? "" : ": ",
        s->failure.c_str(), std::string(to_string(s->trigger)).c_str(),
        utc_time(s->start_ns).c_str(), utc_time(s->end_ns).c_str(), s->step_id, s->node_count,
        s->members.size(), s->expected_members, static_cast<unsigned long long>(s->bytes()),
        human_bytes(s->bytes()).c_str(), s->restart_count, or_dash(s->levels()),
        s->parent ? fmt::format("set {}", s->parent).c_str() : "- (full)", st->dir().c_str(),
        s->folder().c_str());
    // An MPI step's members are its ranks (each holds the marker the restart looks for).
    auto is_rank = [](const MemberRecord& m) {
        return std::any_of(m.files.begin(), m.files.end(),
                           [](const FileRecord& f) { return f.name == slurm::kMpiRankMarker; });
    };
    bool ranks = !s->members.empty() && std::all_of(s->members.begin(), s->members.end(), is_rank);
    if (!s->members.empty())
        std::printf("  %-8s %-16s %-28s %10s %-16s %s\n", ranks ? "RANK" : "MEMBER", "NODE", "IMAGES", "BYTES",
                    "CHECKSUM", "STATE");
    for (const MemberRecord& m : s->members)
        std::printf("  %-8d %-16s %-28s %10s %016llx %s\n", m.member_id, m.node.c_str(),
                    m.image_dir.c_str(), human_bytes(m.bytes).c_str(),
                    static_cast<unsigned long long>(m.checksum),
                    std::string(to_string(m.state)).c_str());
    return kExitOk;
}

int cmd_verify(const Args& a) {
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    if (a.set) {
        auto v = st->verify_set(*a.set);
        return v ? kExitOk : failure(v.error());
    }
    int rc = kExitOk, committed = 0;
    for (const SetRecord& s : st->index().sets) {
        if (s.state != SetState::Committed) continue;
        ++committed;
        if (auto v = st->verify_set(s.seq); !v)
            rc = failure(v.error());
        else
            log::get("set")->info("job {} set {}: verified", *a.jobid, s.seq);
    }
    if (committed == 0)
        return failure(error_code(ENOENT, "job {}: no committed set to verify", *a.jobid));
    return rc;
}

int cmd_rm(const Args& a) {
    if (a.set && a.keep) return usage_error("rm: give --set or --keep, not both");
    if (a.keep && *a.keep == 0)
        return usage_error("rm: --keep must be at least 1 (rm JOBID removes everything)");
    if (!a.set && !a.keep) {
        auto st = JobStore::open_folder(a.root, *a.jobid);
        if (!st) return failure(st.error());
        auto r = st->remove_job();
        return r ? kExitOk : failure(r.error());
    }
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    if (a.set) {
        auto r = st->remove_set(*a.set);
        return r ? kExitOk : failure(r.error());
    }
    auto r = st->keep_newest(*a.keep);
    if (!r) return failure(r.error());
    for (const std::string& line : r->lines) log::get("set")->info("job {} {}", *a.jobid, line);
    return kExitOk;
}

int cmd_repair(const Args& a) {
    auto st = JobStore::open_folder(a.root, *a.jobid);
    if (!st) return failure(st.error());
    auto r = st->repair();
    if (!r) return failure(r.error());
    for (const std::string& line : r->lines) log::get("set")->info("job {} {}", *a.jobid, line);
    return kExitOk;
}

// --- commands that reach the running job ---

// Asks the lead agent for a set now: a request file in the job's folder, which only the
// job's user (and root) can write. The agent takes it within a fraction of a second.
int cmd_checkpoint(const Args& a) {
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    uint64_t before = st->index().max_seq();
    std::string path = st->dir() + "/" + slurm::kCheckpointRequest;
    {
        auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (!fd) return failure(fd.error());
    }
    if (!a.wait) {
        log::get("slurm")->info("job {}: checkpoint requested", *a.jobid);
        return kExitOk;
    }
    const int timeout_s = 300;
    for (int i = 0; i < timeout_s * 5; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        auto s = slurm::set_ended_after(*st, before);
        if (!s) continue;
        if (s->state == SetState::Failed)
            return failure(error("job {} set {} failed: {}", *a.jobid, s->seq, s->failure));
        std::printf("%llu\n", static_cast<unsigned long long>(s->seq));
        return kExitOk;
    }
    bool taken = ::access(path.c_str(), F_OK) != 0;
    return failure(error_code(
        ETIMEDOUT, "job {}: no new set committed within {} s ({})", *a.jobid, timeout_s,
        taken ? "the agent took the request" : "no agent took the request: is the job running?"));
}

// Submits the saved batch script again with --checkpoint-restore: the new job's tasks are
// restored from the set instead of started (the batch step's, or each srun step's).
int cmd_restore(const Args& a) {
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    const Index& idx = st->index();
    if (idx.job.batch_script.empty())
        return failure(
            error_code(ENOENT, "job {}: no saved batch script in {}", *a.jobid, st->dir()));
    if (auto script = st->read_saved_file(idx.job.batch_script); !script)
        return failure(script.error());
    uint64_t seq = 0;
    if (a.set) {
        auto v = st->verify_set(*a.set);
        if (!v) return failure(v.error());
        seq = *a.set;
    } else {
        auto n = st->newest_verified();
        if (!n) return failure(n.error());
        seq = *n;
    }
    std::string restore_from = fmt::format("{}:{}", *a.jobid, seq);
    std::vector<std::string> options, script_args;
    bool after = false;
    for (std::string& w : slurm::split_submit_words(idx.job.submit_options)) {
        if (!after && w == "--")
            after = true;
        else
            (after ? script_args : options).push_back(std::move(w));
    }
    // The plugin's options of the job (its interval and keep), and where to restore from.
    std::vector<std::pair<std::string, std::string>> plugin_options = {
        {"checkpoint-restore", restore_from}, {"checkpoint-dir", a.root}};
    for (const std::string& o : options)
        if (o.starts_with("--checkpoint-") && o.find('=') != std::string::npos)
            plugin_options.emplace_back(o.substr(2, o.find('=') - 2), o.substr(o.find('=') + 1));
    // The job's own environment, not the caller's: sbatch reads it from a memory file on
    // fd 3 (--export-file), and --export=ALL makes it the new job's whole environment. sbatch
    // then drops the options below from what the batch step gets: the file carries them too.
    UniqueFd environment;
    if (!idx.job.environment.empty()) {
        auto env = st->read_saved_file(idx.job.environment);
        if (!env) return failure(env.error());
        for (const auto& [option, value] : plugin_options)
            env->append(slurm::option_variable(option)).append("=").append(value).push_back('\0');
        auto file = memory_file("ckpt-job-environment", *env);
        if (!file) return failure(file.error());
        environment = std::move(*file);
    }
    std::vector<std::string> argv = {"sbatch", "--parsable", "--open-mode=append"};
    for (const auto& [option, value] : plugin_options)
        argv.push_back(fmt::format("--{}={}", option, value));
    if (environment) argv.insert(argv.end(), {"--export-file=3", "--export=ALL"});
    for (const std::string& o : options)
        if (!o.starts_with("--checkpoint-")) argv.push_back(o);
    argv.push_back(st->dir() + "/" + idx.job.batch_script);
    argv.insert(argv.end(), script_args.begin(), script_args.end());
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return failure(sys_error("pipe"));
    pid_t pid = ::fork();
    if (pid < 0) return failure(sys_error("fork"));
    if (pid == 0) {
        std::pair<int, int> moves[] = {{out[1], 1}, {environment.get(), 3}};
        if (!place_fds_for_exec(std::span(moves, environment ? 2 : 1))) {
            std::fprintf(stderr, "ckpt-job: fds for sbatch: %s\n", strerror(errno));
            ::_exit(127);
        }
        std::vector<char*> args;
        for (auto& s : argv) args.push_back(s.data());
        args.push_back(nullptr);
        ::execvp("sbatch", args.data());
        std::fprintf(stderr, "ckpt-job: exec sbatch: %s\n", strerror(errno));
        ::_exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[256];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::string id(trim(text.substr(0, text.find(';'))));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !parse_uint(id))
        return failure(error("job {}: sbatch failed (status {:#x}){}", *a.jobid, status,
                             text.empty() ? "" : ": " + text));
    log::get("slurm")->info("job {}: resubmitted as job {} to restore set {}", *a.jobid, id, seq);
    std::printf("%s\n", id.c_str());
    return kExitOk;
}

int cmd_status(const Args& a) {
    auto st = JobStore::open(a.root, *a.jobid);
    if (!st) return failure(st.error());
    const Index& idx = st->index();
    const SetRecord* cur = idx.newest_committed();
    uint64_t now = static_cast<uint64_t>(::time(nullptr));
    std::printf("job %llu of %s (%s), run %u\n", static_cast<unsigned long long>(*a.jobid),
                idx.job.user.c_str(), idx.job.name.c_str(), idx.restart_count);
    if (cur)
        std::printf("last set: %llu (%s, %s, step %s)\n", static_cast<unsigned long long>(cur->seq),
                    std::string(to_string(cur->trigger)).c_str(), utc_time(cur->end_ns).c_str(),
                    slurm::step_name(cur->step_id).c_str());
    else
        std::printf("last set: none committed\n");
    std::vector<std::string> names;
    std::string agents = st->dir() + "/" + slurm::kAgentsDir;
    if (DIR* d = ::opendir(agents.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::string_view(e->d_name).ends_with(".status")) names.push_back(e->d_name);
        ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    auto dir = slurm::open_folder(agents, std::nullopt);
    for (const std::string& name : names) {
        auto text = dir ? slurm::read_file_at(dir->get(), name) : Result<std::string>(dir.error());
        auto body = text ? slurm::unseal(*text, name) : Result<std::string>(text.error());
        if (!body) {
            std::printf("%s: %s\n", name.c_str(), body.error().message().c_str());
            continue;
        }
        slurm::Fields f = slurm::parse_fields(*body);
        auto num = [&](const char* k) {
            auto v = slurm::uint_field(f, k, name);
            return v ? *v : 0;
        };
        std::string step = name.substr(5, name.find(".node-") - 5);
        std::printf(
            "step %s node %s (%s): agent %s, pid %llu, run %llu, %llu tasks, updated %llus ago\n",
            step.c_str(), slurm::field(f, "node_id").value_or("?").c_str(),
            slurm::field(f, "node").value_or("?").c_str(),
            slurm::field(f, "state").value_or("?").c_str(),
            static_cast<unsigned long long>(num("pid")),
            static_cast<unsigned long long>(num("run")),
            static_cast<unsigned long long>(num("tasks")),
            static_cast<unsigned long long>(now - std::min(now, num("updated"))));
        if (num("lead")) {
            uint64_t due = num("next_due");
            std::printf("  interval: %s\n  next due: %s\n",
                        num("interval") ? fmt::format("{} s", num("interval")).c_str()
                                        : "none (on request only)",
                        due ? fmt::format("in {} s", due > now ? due - now : 0).c_str() : "-");
            if (auto r = slurm::field(f, "last_result"))
                std::printf("  last result: %s\n", r->c_str());
        }
    }
    if (names.empty()) std::printf("no agent has reported (is the job running?)\n");
    return kExitOk;
}

const Command kCommands[] = {
    {"checkpoint", kWait, cmd_checkpoint},
    {"restore", kSet, cmd_restore},
    {"status", 0, cmd_status},
    {"list", kJson | kOptionalJob, cmd_list},
    {"show", kJson | kSet, cmd_show},
    {"verify", kSet, cmd_verify},
    {"rm", kSet | kKeep, cmd_rm},
    {"repair", 0, cmd_repair},
};

// Parses a command's arguments; returns a usage message on error.
std::optional<std::string> parse_args(const Command& c, const std::vector<std::string_view>& in,
                                      Args& a) {
    auto value = [&](size_t& i) -> std::optional<std::string_view> {
        if (i + 1 >= in.size()) return std::nullopt;
        return in[++i];
    };
    for (size_t i = 0; i < in.size(); ++i) {
        std::string_view s = in[i];
        if (s == "--root") {
            auto v = value(i);
            if (!v) return "--root needs a folder";
            a.root = *v;
        } else if (s == "--wait" && (c.accepts & kWait)) {
            a.wait = true;
        } else if (s == "--json" && (c.accepts & kJson)) {
            a.json = true;
        } else if ((s == "--set" && (c.accepts & kSet)) || (s == "--keep" && (c.accepts & kKeep))) {
            auto v = value(i);
            auto n = v ? parse_uint(*v) : Result<uint64_t>(error("missing"));
            if (!n || *n > UINT32_MAX) return fmt::format("{} needs a number", s);
            if (s == "--set")
                a.set = *n;
            else
                a.keep = static_cast<uint32_t>(*n);
        } else if (s.starts_with("-")) {
            return fmt::format("{}: unknown option '{}'", c.name, s);
        } else if (!a.jobid) {
            auto n = parse_uint(s);
            if (!n) return fmt::format("'{}' is not a job id", s);
            a.jobid = *n;
        } else {
            return fmt::format("{}: unexpected argument '{}'", c.name, s);
        }
    }
    if (!a.jobid) {
        if (const char* env = std::getenv("SLURM_JOB_ID"); env && *env) {
            auto n = parse_uint(env);
            if (!n) return fmt::format("SLURM_JOB_ID='{}' is not a job id", env);
            a.jobid = *n;
        } else if (!(c.accepts & kOptionalJob)) {
            return fmt::format("{}: no JOBID given and SLURM_JOB_ID is not set", c.name);
        }
    }
    if (a.root.empty()) {
        const char* env = std::getenv("CKPT_ROOT");
        if (!env || !*env) env = std::getenv("CKPT_DIR");  // set by the plugin in a job
        a.root = env && *env ? env : kDefaultRoot;
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    int verbosity = 0;
    std::vector<std::string_view> rest;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return kExitOk;
        }
        if (a.size() >= 2 && a[0] == '-' && a.find_first_not_of('v', 1) == std::string_view::npos) {
            verbosity += static_cast<int>(a.size() - 1);
            continue;
        }
        rest.push_back(a);
    }
    ckpt::log::configure(verbosity);
    if (rest.empty()) return usage_error("no command given");
    if (rest.front() == "help") {
        std::fputs(kUsage, stdout);
        return kExitOk;
    }
    for (const Command& c : kCommands) {
        if (rest.front() != c.name) continue;
        Args args;
        if (auto bad = parse_args(c, {rest.begin() + 1, rest.end()}, args))
            return usage_error(*bad);
        if (args.jobid)
            if (auto r = become_folder_owner(args.root, *args.jobid); !r) return failure(r.error());
        return c.run(args);
    }
    return usage_error("unknown command '" + std::string(rest.front()) + "'");
}
