// Reading /proc/PID: the parts of a process the kernel reports there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/base/fd.h"
#include "ckpt/base/result.h"

namespace ckpt::engine {

struct ProcMapping {
    uint64_t start = 0, end = 0;
    bool read = false, write = false, exec = false, shared = false;
    uint64_t offset = 0;
    uint32_t dev_major = 0, dev_minor = 0;
    uint64_t inode = 0;
    std::string path;  // may be empty, "[heap]", "[stack]", "[vdso]", "/x (deleted)"
};

struct ProcStat {
    pid_t pid = 0, ppid = 0, pgid = 0, sid = 0;
    char state = '?';
    std::string comm;
    int exit_signal = 0;
    int exit_code = 0;  // wait status, for a zombie
    uint64_t start_code = 0, end_code = 0, start_data = 0, end_data = 0, start_brk = 0, start_stack = 0;
    uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
    int64_t nice = 0;
    uint32_t policy = 0, rt_priority = 0;
};

struct ProcStatus {
    uint32_t uid[4]{}, gid[4]{};  // real, effective, saved, fs
    std::vector<uint32_t> groups;
    uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0, cap_amb = 0;
    uint64_t shd_pnd = 0;  // signals pending for the whole process
    uint64_t sig_pnd = 0;  // signals pending for this thread
    uint64_t sig_blk = 0, sig_ign = 0, sig_cgt = 0;
    bool no_new_privs = false;
    int seccomp_mode = 0;
    uint32_t umask = 022;
    pid_t tgid = 0;
    pid_t tracer = 0;  // TracerPid: the process tracing it, 0 for none
    // One number per pid namespace level, from the one /proc was mounted in down to the
    // task's own (the innermost, last). A pgid or sid of 0 at a level: its leader is not
    // visible there.
    std::vector<pid_t> nspid, nspgid, nssid;
};

std::string proc_path(pid_t pid, const char* what);
std::string proc_task_path(pid_t pid, pid_t tid, const char* what);

Result<std::vector<ProcMapping>> read_maps(pid_t pid);
Result<ProcStat> read_stat(pid_t pid, pid_t tid = 0);
Result<ProcStatus> read_status(pid_t pid, pid_t tid = 0);
Result<std::vector<pid_t>> read_tasks(pid_t pid);
// The numeric entries of a /proc folder (task/, fd/), sorted.
Result<std::vector<int>> read_numbered_dir(const std::string& dir);
// Children of every thread of pid.
Result<std::vector<pid_t>> read_children(pid_t pid);
// Why clone3(set_tid=pid) said EEXIST: a process or thread has that pid, or (no /proc entry)
// it is still the id of a process group or session with members, e.g. an unreaped orphan.
Error pid_in_use_error(pid_t pid, std::string_view what);
// Target of a /proc symlink (exe, cwd, root, fd/N).
Result<std::string> read_link(const std::string& path);
// The inode of /proc/PID/ns/<ns> ("pid", "pid_for_children"...): which namespace it is.
// ENOENT for pid_for_children after an unshare(CLONE_NEWPID) before any child.
Result<ino_t> read_ns_inode(pid_t pid, const char* ns);

// Soft and hard limit of every resource, from /proc/PID/limits (prlimit on another
// user's process needs CAP_SYS_RESOURCE, which root lacks on some machines).
struct Limit {
    uint32_t resource;
    uint64_t cur, max;
};
Result<std::vector<Limit>> read_limits(pid_t pid);

// What the engine reads from /proc/PID/fdinfo/N (the rest is read by each fd kind).
struct FdInfo {
    uint64_t pos = 0;
    uint32_t flags = 0;
};

// The parsers behind read_*: the text of the /proc file in, its fields out. A malformed
// line is an error naming the line and field (never a crash: the tree may be frozen);
// read_* add which file it was.
Result<std::vector<ProcMapping>> parse_maps(std::string_view text);
Result<ProcStat> parse_stat(std::string_view text);
Result<ProcStatus> parse_status(std::string_view text);
Result<std::vector<pid_t>> parse_children(std::string_view text);
Result<std::vector<Limit>> parse_limits(std::string_view text);
Result<FdInfo> parse_fdinfo(std::string_view text);

// Reads the file at path and parses it with one of the parsers above; an error names the file.
template <typename Parse>
auto read_parsed(const std::string& path, Parse parse) -> decltype(parse(std::string_view{})) {
    std::string text = CKPT_TRY(read_file(path));
    return parse(text).context("{}", path);
}

}  // namespace ckpt::engine
