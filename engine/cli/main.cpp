// ckpt-engine: checkpoint and restore Linux process trees (CRIU's verbs and flags).
// Exit codes: 0 success, 1 failure (one line on stderr says what failed), 2 usage.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <google/protobuf/util/json_util.h>

#include "ckpt/base/log.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/engine.h"
#include "ckpt/engine/kernel_features.h"
#include "ckpt/image/image_file.h"
#include "ckpt/image/image_names.h"
#include "core.pb.h"
#include "files.pb.h"
#include "inventory.pb.h"
#include "ipc.pb.h"
#include "mm.pb.h"

namespace {

constexpr int kExitOk = 0, kExitFail = 1, kExitUsage = 2;

const char kUsage[] =
    "usage: ckpt-engine [-v...] [-o LOG] <command> [options]\n"
    "\n"
    "Checkpoint and restore Linux process trees.\n"
    "\n"
    "commands:\n"
    "  dump -t PID -D DIR    save the process tree rooted at PID into DIR\n"
    "      --stream FD|PATH    instead of -D: write the images as one stream to the inherited fd FD,\n"
    "                          the socket, FIFO or file PATH (page data read from the tree as it goes)\n"
    "      -R, --leave-running keep the tree running after the dump (default: kill it)\n"
    "      --snapshot          with --leave-running: frozen only while its state is recorded, pages\n"
    "                          copied copy-on-write while it runs (experimental; default: frozen\n"
    "                          until every page is copied, which --no-snapshot also asks for)\n"
    "      -j, --shell-job     the tree's controlling terminal belongs to the restoring shell\n"
    "      --stats             print how long the tree was frozen and what was written (JSON)\n"
    "      --external-stdio    fds 0-2 belong to the launcher: bind them to the restorer's at restore\n"
    "      --save-files-under DIR  save files open under DIR whole (restored as unlinked copies)\n"
    "      --exclude-fds N,...       leave these fds out (e.g. an MPI rank's lower half)\n"
    "      --exclude-threads TID,... leave these threads out\n"
    "      --exclude-memory S-E,...  leave out the mappings inside these [start, end) ranges (hex)\n"
    "      --external-fd N:KEY       record the root's fd N as external resource KEY (see --inherit-fd)\n"
    "      --action-script FILE      run /bin/sh -c FILE with CRTOOLS_SCRIPT_ACTION=pre-dump before the\n"
    "                                tree is frozen and =post-dump once the images are written, the tree\n"
    "                                still frozen (e.g. to snapshot its files); a failure fails the dump\n"
    "      --track-mem         with --leave-running: leave a write tracker in each process, so that\n"
    "                          a later dump --prev-images-dir saves only the pages written since\n"
    "      --prev-images-dir DIR  incremental: DIR (a folder beside -D, or A/NAME for -D B/NAME with A\n"
    "                          beside B; dumped with --track-mem) holds the pages not written\n"
    "                          since; restore reads them from there\n"
    "      --max-chain N       with --prev-images-dir: a process whose chain of parent dumps would\n"
    "                          be longer than N (0-64, default 64) is saved whole (0: a full dump\n"
    "                          of a tree that --track-mem left trackers in)\n"
    "      --compress[=LEVEL]  store page data zstd-compressed, 64 MiB block by block, on several\n"
    "                          threads (LEVEL 1-19, default 1); also into a --stream, and\n"
    "                          after a --snapshot's copy, as the tree runs\n"
    "  restore -D DIR        restore a tree with its original pids; waits for its root and\n"
    "                        exits with the root's status (128+N if killed by signal N)\n"
    "      --stream FD|PATH    instead of -D: read the images from one stream (dump --stream)\n"
    "      -d, --detach, --restore-detached  return once the tree runs\n"
    "      --pidfile FILE      write the root's pid to FILE\n"
    "      -j, --shell-job     attach the tree to this terminal\n"
    "      --inherit-fd fd[N]:KEY  bind the external resource KEY (e.g. pipe:[1234]) to fd N\n"
    "      --skip-file-checks  restore even if files changed since the dump\n"
    "      --restore-as UID:GID  run as root for a user: the whole restore runs as that user\n"
    "                          (only CAP_CHECKPOINT_RESTORE kept until the tree exists), and\n"
    "                          images that are not exactly the user are refused; needs --new-pidns\n"
    "      --new-pidns         restore in a new pid namespace under a minimal init, so the\n"
    "                          processes keep their pids even where those are taken here\n"
    "  show DIR [--json]     decode every image in DIR\n"
    "  stream send --images-dir DIR --to HOST:PORT\n"
    "                        push an images folder as one stream over TCP\n"
    "  stream recv --listen HOST:PORT [--images-dir DIR] [--port-file FILE]\n"
    "                        take one stream over TCP: into DIR (verified; its inventory written\n"
    "                        last), else to stdout as it came; with port 0, the port chosen is\n"
    "                        written to FILE\n"
    "  check                 probe the kernel features the engine needs; exit 1 if a required one is missing\n"
    "  help                  show this text\n"
    "\n"
    "options for every command:\n"
    "  -v, -vv, -vvv         log info, debug, trace to stderr (or set CKPT_LOG=level[,component=level])\n"
    "  -vN                   CRIU's levels: -v0 nothing, -v1 errors, -v2 warnings (the default),\n"
    "                        -v3 info, -v4 debug, -v5 trace\n"
    "  -o, --log-file LOG    write the log to the file LOG instead of stderr (the final error\n"
    "                        is printed on stderr too)\n"
    "  -h, --help            show this text\n"
    "\n"
    "CRIU's options, for dump and restore (-t/--tree, -D/--images-dir, -R, -j, -d, --pidfile\n"
    "are above):\n"
    "  --link-remap          dump: a file whose name was removed while the tree holds it open,\n"
    "                        maps it MAP_SHARED or watches it (inotify) but which has another\n"
    "                        link is kept through a hidden hard link made in the folder of its\n"
    "                        old name (.ckpt-link-remap.DEV-INO-N), restored through it and\n"
    "                        removed by the restore that succeeds (without it such a file fails\n"
    "                        the dump); restore: accepted (the images say what to do)\n"
    "  --manage-cgroups=ignore  accepted: the tree stays in the cgroups it is restored in;\n"
    "                        other modes are refused (cgroups are not managed)\n"
    "  --file-locks          dump: save flock, POSIX and OFD locks held through the tree's fds\n"
    "                        (without it a held lock fails the dump); restore takes them again\n"
    "  --ext-unix-sk         dump, restore: a datagram AF_UNIX socket connected to a name outside\n"
    "                        the tree is connected to it again\n"
    "  --tcp-established     dump and restore established TCP connections (TCP_REPAIR, needs\n"
    "                        CAP_NET_ADMIN); without it such a connection fails the dump\n"
    "  --timeout SEC         dump: how long each thread may take to stop (default 10): one that\n"
    "                        does not (a vfork parent before its child's exec, a thread stuck in\n"
    "                        uninterruptible I/O) fails the dump by name, the tree left running\n"
    "  --with-cpu-affinity   restore: every thread gets the CPU affinity it had (all of those\n"
    "                        CPUs, or the restore fails); without it, the restorer's CPUs\n";

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "ckpt-engine: %s\n(see ckpt-engine --help)\n", msg.c_str());
    return kExitUsage;
}

int cmd_check(const std::vector<std::string_view>& args) {
    if (!args.empty()) return usage_error("check takes no arguments");
    auto probes = ckpt::engine::probe_kernel_features();
    bool missing_required = false;
    for (const auto& p : probes) {
        const char* state = p.available ? "ok" : (p.required ? "MISSING" : "missing");
        std::printf("%-20s %-8s %-9s %s (%s)\n", p.name.c_str(), state, p.required ? "required" : "optional",
                    p.purpose.c_str(), p.detail.c_str());
        if (!p.available && p.required) missing_required = true;
    }
    if (missing_required) {
        std::fprintf(stderr, "ckpt-engine: check: a required kernel feature is missing; dump and restore cannot work here\n");
        return kExitFail;
    }
    return kExitOk;
}

bool g_log_file = false;  // -o: the log is in a file, which should end with the error too

int fail(const ckpt::Error& e) {
    std::fprintf(stderr, "ckpt-engine: %s\n", e.message().c_str());
    if (g_log_file) ckpt::log::get("engine")->error("{}", e.message());
    return kExitFail;
}

// Options of the form --name VALUE or --name=VALUE, and -X VALUE or -XVALUE (getopt's forms,
// which CRIU users type: -t1234).
bool take_value(const std::vector<std::string_view>& args, size_t& i, std::string_view name, std::string* out) {
    std::string_view a = args[i];
    if (a == name) {
        if (i + 1 >= args.size()) return false;
        *out = std::string(args[++i]);
        return true;
    }
    if (name.size() == 2 && a.size() > 2 && a.substr(0, 2) == name) {
        *out = std::string(a.substr(2));
        return true;
    }
    if (a.size() > name.size() && a.substr(0, name.size()) == name && a[name.size()] == '=') {
        *out = std::string(a.substr(name.size() + 1));
        return true;
    }
    return false;
}

// CRIU's options a CRIU command line brings along: accepted where the engine already does what
// they ask, else refused by name (never "unknown option", and never accepted while the engine
// would not do it). Returns false when `a` is none of them; *exit_code is then untouched.
bool criu_option(std::string_view a, int* exit_code) {
    auto refuse = [&](std::string_view why) {
        std::fprintf(stderr, "ckpt-engine: %.*s is not supported yet (%.*s)\n", static_cast<int>(a.size()), a.data(),
                     static_cast<int>(why.size()), why.data());
        *exit_code = kExitFail;
        return true;
    };
    auto is = [&](std::string_view name) {  // --name or --name=VALUE
        return a == name || (a.size() > name.size() && a.substr(0, name.size()) == name && a[name.size()] == '=');
    };
    // --ext-unix-sk alone is taken (dump, restore); CRIU's --ext-unix-sk=INODE form is not.
    if (a.starts_with("--ext-unix-sk=")) return refuse("sockets come with a later release");
    // Restore takes every lock the images hold (dump saves them only when asked).
    if (a == "--file-locks") return true;
    // Dump takes it before this; a restore has no hook to run it at yet.
    if (is("--action-script")) return refuse("action scripts run at dump only (pre-dump, post-dump)");
    // Dump takes it before this; a restore follows what the images recorded.
    if (a == "--link-remap") return true;
    if (is("--manage-cgroups")) {
        // "ignore" is what the engine does: restored processes stay in the restorer's cgroups.
        if (a == "--manage-cgroups=ignore") return true;
        return refuse("cgroups are not managed; only --manage-cgroups=ignore is accepted");
    }
    return false;
}

int cmd_dump(const std::vector<std::string_view>& args) {
    ckpt::engine::DumpOptions o;
    bool stats = false;
    std::string v;
    for (size_t i = 0; i < args.size(); ++i) {
        if (take_value(args, i, "-t", &v) || take_value(args, i, "--tree", &v)) {
            auto pid = ckpt::parse_int(v);
            if (!pid || *pid <= 0) return usage_error("dump: bad pid '" + v + "'");
            o.root = static_cast<pid_t>(*pid);
        } else if (take_value(args, i, "-D", &v) || take_value(args, i, "--images-dir", &v)) {
            o.image_dir = v;
        } else if (take_value(args, i, "--stream", &v)) {
            o.stream = v;
        } else if (args[i] == "--leave-running" || args[i] == "-R") {
            o.leave_running = true;
        } else if (args[i] == "--snapshot") {
            o.snapshot = true;
        } else if (args[i] == "--no-snapshot") {
            o.snapshot = false;
        } else if (args[i] == "--shell-job" || args[i] == "-j") {
            o.shell_job = true;
        } else if (args[i] == "--stats") {
            stats = true;
        } else if (args[i] == "--external-stdio") {
            o.external_stdio = true;
        } else if (take_value(args, i, "--save-files-under", &v)) {
            o.save_files_under.push_back(v);
        } else if (take_value(args, i, "--exclude-fds", &v)) {
            for (auto item : ckpt::split(v, ',')) {
                auto n = ckpt::parse_int(item);
                if (!n || *n < 0) return usage_error("dump: --exclude-fds wants N[,N...]");
                o.exclude_fds.insert(static_cast<int>(*n));
            }
        } else if (take_value(args, i, "--exclude-threads", &v)) {
            for (auto item : ckpt::split(v, ',')) {
                auto n = ckpt::parse_int(item);
                if (!n || *n <= 0) return usage_error("dump: --exclude-threads wants TID[,TID...]");
                o.exclude_threads.insert(static_cast<pid_t>(*n));
            }
        } else if (take_value(args, i, "--exclude-memory", &v)) {
            for (auto item : ckpt::split(v, ',')) {
                size_t dash = item.find('-');
                auto a = dash == std::string_view::npos ? ckpt::parse_uint("") : ckpt::parse_uint(item.substr(0, dash), 16);
                auto b = dash == std::string_view::npos ? ckpt::parse_uint("") : ckpt::parse_uint(item.substr(dash + 1), 16);
                if (!a || !b || *a >= *b) return usage_error("dump: --exclude-memory wants START-END[,...] (hex)");
                o.exclude_memory.emplace_back(*a, *b);
            }
        } else if (take_value(args, i, "--external-fd", &v)) {
            // N:KEY
            size_t colon = v.find(':');
            auto n = colon == std::string::npos ? ckpt::parse_int("") : ckpt::parse_int(std::string_view(v).substr(0, colon));
            if (!n || *n < 0 || colon + 1 >= v.size()) return usage_error("dump: --external-fd wants N:KEY");
            o.external_fds[static_cast<int>(*n)] = v.substr(colon + 1);
        } else if (take_value(args, i, "--action-script", &v)) {
            o.action_scripts.push_back(v);
        } else if (args[i] == "--file-locks") {
            o.file_locks = true;
        } else if (args[i] == "--ext-unix-sk") {
            o.ext_unix_sk = true;
        } else if (args[i] == "--tcp-established") {
            o.tcp_established = true;
        } else if (take_value(args, i, "--timeout", &v)) {
            auto n = ckpt::parse_uint(v);
            if (!n || *n < 1 || *n > 86400) return usage_error("dump: --timeout takes seconds from 1 to 86400, not '" + v + "'");
            o.freeze_timeout_ms = static_cast<int>(*n * 1000);
        } else if (args[i] == "--link-remap") {
            o.link_remap = true;
        } else if (args[i] == "--track-mem") {
            o.track_mem = true;
        } else if (take_value(args, i, "--prev-images-dir", &v)) {
            o.prev_images_dir = v;
        } else if (take_value(args, i, "--max-chain", &v)) {
            auto n = ckpt::parse_uint(v);
            if (!n || *n > 64) return usage_error("dump: --max-chain takes a number from 0 to 64, not '" + v + "'");
            o.max_chain = static_cast<uint32_t>(*n);
        } else if (args[i] == "--compress") {
            o.compress = ckpt::engine::kDefaultCompressLevel;
        } else if (args[i].starts_with("--compress=")) {
            auto n = ckpt::parse_uint(args[i].substr(11));
            if (!n || *n < 1 || *n > static_cast<uint64_t>(ckpt::engine::kMaxCompressLevel))
                return usage_error("dump: --compress=LEVEL takes a zstd level from 1 to " +
                                   std::to_string(ckpt::engine::kMaxCompressLevel) + ", not '" +
                                   std::string(args[i].substr(11)) + "'");
            o.compress = static_cast<int>(*n);
        } else if (int rc = kExitOk; criu_option(args[i], &rc)) {
            if (rc != kExitOk) return rc;
        } else {
            return usage_error("dump: unknown option '" + std::string(args[i]) + "'");
        }
    }
    if (!o.root) return usage_error("dump: -t PID is required");
    if (o.image_dir.empty() == o.stream.empty()) return usage_error("dump: -D DIR or --stream FD|PATH is required (one)");
    if (o.snapshot && !o.leave_running) return usage_error("dump: --snapshot needs --leave-running");
    if (o.snapshot && !o.action_scripts.empty())
        return usage_error("dump: --snapshot and --action-script do not go together (post-dump runs with the tree "
                           "frozen, the pages written)");
    if (o.track_mem && !o.leave_running) return usage_error("dump: --track-mem needs --leave-running");
    if (o.track_mem && o.snapshot)
        return usage_error("dump: --track-mem and --snapshot do not go together (the snapshot's write-protection "
                           "and the tracker's would be the same)");
    if (o.max_chain != 64 && o.prev_images_dir.empty()) return usage_error("dump: --max-chain needs --prev-images-dir");
    if (!o.prev_images_dir.empty() && o.snapshot)
        return usage_error("dump: --prev-images-dir and --snapshot do not go together");
    auto r = ckpt::engine::dump(o);
    if (!r) return fail(std::move(r).error().context("dump"));
    if (stats)
        std::printf("{\"frozen_ms\": %.3f, \"dump_ms\": %.3f, \"pages_bytes\": %llu, \"stored_bytes\": %llu, "
                    "\"processes\": %llu, \"threads\": %llu, \"snapshot\": %s, \"snapshot_faults\": %llu}\n",
                    r->frozen_ns / 1e6, r->total_ns / 1e6, static_cast<unsigned long long>(r->pages_bytes),
                    static_cast<unsigned long long>(r->stored_bytes),
                    static_cast<unsigned long long>(r->processes), static_cast<unsigned long long>(r->threads),
                    r->snapshot ? "true" : "false", static_cast<unsigned long long>(r->snapshot_faults));
    return kExitOk;
}

int cmd_restore(const std::vector<std::string_view>& args) {
    ckpt::engine::RestoreOptions o;
    std::string v;
    for (size_t i = 0; i < args.size(); ++i) {
        if (take_value(args, i, "-D", &v) || take_value(args, i, "--images-dir", &v)) {
            o.image_dir = v;
        } else if (take_value(args, i, "--stream", &v)) {
            o.stream = v;
        } else if (take_value(args, i, "--pidfile", &v)) {
            o.pidfile = v;
        } else if (take_value(args, i, "--inherit-fd", &v)) {
            // fd[N]:KEY
            size_t close = v.find("]:");
            if (v.rfind("fd[", 0) != 0 || close == std::string::npos) return usage_error("restore: --inherit-fd wants fd[N]:KEY");
            auto n = ckpt::parse_int(std::string_view(v).substr(3, close - 3));
            if (!n || *n < 0) return usage_error("restore: --inherit-fd wants fd[N]:KEY");
            o.inherit_fds[v.substr(close + 2)] = static_cast<int>(*n);
        } else if (args[i] == "--detach" || args[i] == "-d" || args[i] == "--restore-detached") {
            o.detach = true;
        } else if (args[i] == "--shell-job" || args[i] == "-j") {
            o.shell_job = true;
        } else if (args[i] == "--new-pidns") {
            o.new_pidns = true;
        } else if (args[i] == "--ext-unix-sk") {
            o.ext_unix_sk = true;
        } else if (take_value(args, i, "--restore-as", &v)) {
            // UID:GID
            size_t colon = v.find(':');
            auto uid = ckpt::parse_int(std::string_view(v).substr(0, colon));
            auto gid = colon == std::string::npos ? uid : ckpt::parse_int(std::string_view(v).substr(colon + 1));
            if (!uid || !gid || *uid < 0 || *gid < 0) return usage_error("restore: --restore-as wants UID:GID");
            o.restore_as_uid = *uid;
            o.restore_as_gid = *gid;
        } else if (args[i] == "--skip-file-checks") {
            o.skip_file_checks = true;
        } else if (args[i] == "--tcp-established") {
            o.tcp_established = true;
        } else if (args[i] == "--with-cpu-affinity") {
            o.with_cpu_affinity = true;
        } else if (int rc = kExitOk; criu_option(args[i], &rc)) {
            if (rc != kExitOk) return rc;
        } else {
            return usage_error("restore: unknown option '" + std::string(args[i]) + "'");
        }
    }
    if (o.image_dir.empty() == o.stream.empty()) return usage_error("restore: -D DIR or --stream FD|PATH is required (one)");
    if (o.restore_as_uid >= 0 && !o.new_pidns)
        return usage_error("restore: --restore-as needs --new-pidns (a chosen pid in this pid namespace is a "
                           "privilege the user does not have)");
    auto tree = ckpt::engine::restore(o);
    if (!tree) return fail(std::move(tree).error().context("restore"));
    if (o.detach) return kExitOk;
    return ckpt::engine::wait_restored(*tree);
}

// Copies in to out until in ends.
ckpt::Result<void> relay(int in, int out) {
    std::vector<char> buf(1u << 20);
    for (;;) {
        ssize_t n = read(in, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return ckpt::sys_error("read the connection");
        if (n == 0) return ckpt::ok();
        CKPT_TRY_CTX(ckpt::write_all(out, buf.data(), static_cast<size_t>(n)), "stdout");
    }
}

int cmd_stream(const std::vector<std::string_view>& args) {
    if (args.empty() || (args[0] != "send" && args[0] != "recv")) return usage_error("stream: send or recv");
    const bool send = args[0] == "send";
    std::string dir, to, listen, port_file, v;
    for (size_t i = 1; i < args.size(); ++i) {
        if (take_value(args, i, "-D", &v) || take_value(args, i, "--images-dir", &v)) dir = v;
        else if (send && take_value(args, i, "--to", &v)) to = v;
        else if (!send && take_value(args, i, "--listen", &v)) listen = v;
        else if (!send && take_value(args, i, "--port-file", &v)) port_file = v;
        else return usage_error("stream: unknown option '" + std::string(args[i]) + "'");
    }
    if (send) {
        if (dir.empty() || to.empty()) return usage_error("stream send: --images-dir DIR and --to HOST:PORT are required");
        auto conn = ckpt::engine::tcp_connect(to);
        if (!conn) return fail(std::move(conn).error().context("stream send"));
        if (auto r = ckpt::engine::stream_send(dir, conn->get()); !r) return fail(std::move(r).error().context("stream send"));
        return kExitOk;
    }
    if (listen.empty()) return usage_error("stream recv: --listen HOST:PORT is required");
    auto conn = ckpt::engine::tcp_accept(listen, port_file);
    if (!conn) return fail(std::move(conn).error().context("stream recv"));
    auto r = dir.empty() ? relay(conn->get(), STDOUT_FILENO) : ckpt::engine::stream_recv(conn->get(), dir);
    if (!r) return fail(std::move(r).error().context("stream recv"));
    return kExitOk;
}

template <typename Msg>
int show_one(const std::string& path, ckpt::image::Kind kind, bool json, bool* first) {
    Msg m;
    auto r = ckpt::image::read_image(path, kind, &m);
    if (!r) return fail(r.error());
    std::string out;
    if (json) {
        google::protobuf::util::JsonPrintOptions po;
        po.preserve_proto_field_names = true;
        (void)google::protobuf::util::MessageToJsonString(m, &out, po);
        std::printf("%s\"%s\": %s", *first ? "" : ",\n", path.substr(path.rfind('/') + 1).c_str(), out.c_str());
    } else {
        std::printf("== %s (%s)\n%s\n", path.c_str(), ckpt::image::kind_name(kind), m.DebugString().c_str());
    }
    *first = false;
    return kExitOk;
}

int cmd_show(const std::vector<std::string_view>& args) {
    std::string dir;
    bool json = false;
    for (auto a : args) {
        if (a == "--json") json = true;
        else if (dir.empty()) dir = std::string(a);
        else return usage_error("show: unexpected argument '" + std::string(a) + "'");
    }
    if (dir.empty()) return usage_error("show: DIR is required");
    DIR* d = opendir(dir.c_str());
    if (!d) return fail(ckpt::sys_error("image directory {}", dir));
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) names.emplace_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    bool first = true;
    if (json) std::printf("{\"schema\": 1,\n\"images\": {\n");
    using K = ckpt::image::Kind;
    for (const auto& n : names) {
        std::string p = dir + "/" + n;
        int rc = kExitOk;
        auto kind = ckpt::image::names::kind_of(n);
        if (!kind) continue;  // page data, saved files
        switch (*kind) {
            case K::Inventory: rc = show_one<ckpt::image::Inventory>(p, *kind, json, &first); break;
            case K::Files: rc = show_one<ckpt::image::FileTable>(p, *kind, json, &first); break;
            case K::Core: rc = show_one<ckpt::image::TaskCore>(p, *kind, json, &first); break;
            case K::Mm: rc = show_one<ckpt::image::MmCore>(p, *kind, json, &first); break;
            case K::PageMap: rc = show_one<ckpt::image::PageMap>(p, *kind, json, &first); break;
            case K::Fds: rc = show_one<ckpt::image::FdTable>(p, *kind, json, &first); break;
            case K::Ipc: rc = show_one<ckpt::image::IpcNamespace>(p, *kind, json, &first); break;
            case K::SetManifest: break;  // not in an image folder
        }
        if (rc != kExitOk) return rc;
    }
    if (json) std::printf("\n}}\n");
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    int verbosity = 0;
    std::string log_file;
    std::vector<std::string_view> all(argv + 1, argv + argc), rest;
    for (size_t i = 0; i < all.size(); ++i) {
        std::string_view a = all[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return kExitOk;
        }
        if (a.size() >= 2 && a[0] == '-' && a.find_first_not_of('v', 1) == std::string_view::npos) {
            verbosity += static_cast<int>(a.size() - 1);
            continue;
        }
        if (a.size() > 2 && a.substr(0, 2) == "-v" && a.find_first_not_of("0123456789", 2) == std::string_view::npos) {
            // CRIU's -vN sets the level (2 is its default, warnings) rather than adding to it.
            auto n = ckpt::parse_int(a.substr(2));
            if (!n || *n > 9) return usage_error("bad verbosity '" + std::string(a) + "' (-v0 to -v5)");
            verbosity = static_cast<int>(*n) - 2;
            continue;
        }
        if (a == "--verbose") {
            ++verbosity;
            continue;
        }
        if (take_value(all, i, "-o", &log_file) || take_value(all, i, "--log-file", &log_file)) continue;
        if (a == "-o" || a == "--log-file") return usage_error(std::string(a) + " wants a file name");
        rest.push_back(a);
    }
    if (!log_file.empty()) {
        if (auto r = ckpt::log::log_to_file(log_file); !r) return fail(r.error());
        g_log_file = true;
    }
    ckpt::log::configure(verbosity);
    if (rest.empty()) return usage_error("no command given");
    std::string_view cmd = rest.front();
    std::vector<std::string_view> args(rest.begin() + 1, rest.end());
    if (cmd == "help") {
        std::fputs(kUsage, stdout);
        return kExitOk;
    }
    if (cmd == "check") return cmd_check(args);
    if (cmd == "dump") return cmd_dump(args);
    if (cmd == "restore") return cmd_restore(args);
    if (cmd == "show") return cmd_show(args);
    if (cmd == "stream") return cmd_stream(args);
    return usage_error("unknown command '" + std::string(cmd) + "'");
}
