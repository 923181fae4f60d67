#include "proc.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"

namespace ckpt::engine {

std::string proc_path(pid_t pid, const char* what) { return "/proc/" + std::to_string(pid) + "/" + what; }
std::string proc_task_path(pid_t pid, pid_t tid, const char* what) {
    return "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/" + what;
}

Result<std::vector<ProcMapping>> parse_maps(std::string_view text) {
    std::vector<ProcMapping> out;
    for (auto line : split(text, '\n')) {
        if (line.empty()) continue;
        ProcMapping m;
        char perms[5] = {};
        unsigned long long start, end, off, ino;
        unsigned maj, min;
        int consumed = 0;
        std::string l(line);
        if (sscanf(l.c_str(), "%llx-%llx %4s %llx %x:%x %llu %n", &start, &end, perms, &off, &maj, &min, &ino,
                   &consumed) < 7)
            return error_code(EINVAL, "cannot parse maps line '{}'", line);
        m.start = start;
        m.end = end;
        m.read = perms[0] == 'r';
        m.write = perms[1] == 'w';
        m.exec = perms[2] == 'x';
        m.shared = perms[3] == 's';
        m.offset = off;
        m.dev_major = maj;
        m.dev_minor = min;
        m.inode = ino;
        if (consumed > 0 && static_cast<size_t>(consumed) < l.size()) m.path = l.substr(consumed);
        out.push_back(std::move(m));
    }
    return out;
}

Result<std::vector<ProcMapping>> read_maps(pid_t pid) {
    return read_parsed(proc_path(pid, "maps"), parse_maps);
}

Result<ProcStat> parse_stat(std::string_view text) {
    ProcStat s;
    // comm may contain spaces and parentheses: it ends at the last ')'.
    size_t open = text.find('('), close = text.rfind(')');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open || close + 2 > text.size())
        return error_code(EINVAL, "malformed stat (no '(comm)')");
    s.pid = static_cast<pid_t>(CKPT_TRY_CTX(parse_int(trim(text.substr(0, open))), "stat field 1 (pid)"));
    s.comm = std::string(text.substr(open + 1, close - open - 1));
    auto f = split(trim(text.substr(close + 2)), ' ');
    if (f.size() < 50) return error_code(EINVAL, "short stat ({} fields)", f.size() + 2);
    // f[0] is field 3 (state) of proc(5). Only the fields read below are checked: a field the
    // engine does not use must not make a dump fail.
    std::optional<Error> bad;
    auto field = [&](size_t n) -> int64_t {
        auto v = parse_int(f[n - 3]);
        if (v) return *v;
        if (!bad) bad = std::move(v).error().context("stat field {}", n);
        return 0;
    };
    s.state = f[0].empty() ? '?' : f[0][0];
    s.ppid = static_cast<pid_t>(field(4));
    s.pgid = static_cast<pid_t>(field(5));
    s.sid = static_cast<pid_t>(field(6));
    s.nice = field(19);
    s.start_code = static_cast<uint64_t>(field(26));
    s.end_code = static_cast<uint64_t>(field(27));
    s.start_stack = static_cast<uint64_t>(field(28));
    s.exit_signal = static_cast<int>(field(38));
    s.rt_priority = static_cast<uint32_t>(field(40));
    s.policy = static_cast<uint32_t>(field(41));
    s.start_data = static_cast<uint64_t>(field(45));
    s.end_data = static_cast<uint64_t>(field(46));
    s.start_brk = static_cast<uint64_t>(field(47));
    s.arg_start = static_cast<uint64_t>(field(48));
    s.arg_end = static_cast<uint64_t>(field(49));
    s.env_start = static_cast<uint64_t>(field(50));
    s.env_end = static_cast<uint64_t>(field(51));
    s.exit_code = static_cast<int>(field(52));
    if (bad) return std::move(*bad);
    return s;
}

Result<ProcStat> read_stat(pid_t pid, pid_t tid) {
    return read_parsed(tid ? proc_task_path(pid, tid, "stat") : proc_path(pid, "stat"), parse_stat);
}

Result<ProcStatus> parse_status(std::string_view text) {
    ProcStatus s;
    for (auto line : split(text, '\n')) {
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        auto key = line.substr(0, colon);
        auto val = trim(line.substr(colon + 1));
        auto words = [&] {
            std::vector<std::string_view> w;
            for (auto x : split(val, '\t'))
                for (auto y : split(x, ' '))
                    if (!y.empty()) w.push_back(y);
            return w;
        };
        // Every number names its line when it does not parse.
        auto num = [&](std::string_view v, int base = 10) -> Result<uint64_t> {
            return parse_uint(v, base).context("status line '{}'", line);
        };
        auto snum = [&](std::string_view v) -> Result<int64_t> {
            return parse_int(v).context("status line '{}'", line);
        };
        uint64_t* mask = key == "CapInh" ? &s.cap_inh : key == "CapPrm" ? &s.cap_prm : key == "CapEff" ? &s.cap_eff
                       : key == "CapBnd" ? &s.cap_bnd : key == "CapAmb" ? &s.cap_amb : key == "ShdPnd" ? &s.shd_pnd
                       : key == "SigPnd" ? &s.sig_pnd : key == "SigBlk" ? &s.sig_blk : key == "SigIgn" ? &s.sig_ign
                       : key == "SigCgt" ? &s.sig_cgt : nullptr;
        if (mask) {
            *mask = CKPT_TRY(num(val, 16));
        } else if (key == "Uid" || key == "Gid") {
            auto w = words();
            if (w.size() < 4) return error_code(EINVAL, "status line '{}': 4 ids expected", line);
            uint32_t* dst = key == "Uid" ? s.uid : s.gid;
            for (size_t i = 0; i < 4; ++i) dst[i] = static_cast<uint32_t>(CKPT_TRY(num(w[i])));
        } else if (key == "Groups") {
            for (auto g : words()) s.groups.push_back(static_cast<uint32_t>(CKPT_TRY(num(g))));
        } else if (key == "NoNewPrivs") {
            s.no_new_privs = val == "1";
        } else if (key == "Seccomp") {
            s.seccomp_mode = static_cast<int>(CKPT_TRY(snum(val)));
        } else if (key == "Umask") {
            s.umask = static_cast<uint32_t>(CKPT_TRY(num(val, 8)));
        } else if (key == "TracerPid") {
            s.tracer = static_cast<pid_t>(CKPT_TRY(snum(val)));
        } else if (key == "Tgid") {
            s.tgid = static_cast<pid_t>(CKPT_TRY(snum(val)));
        } else if (key == "NSpid" || key == "NSpgid" || key == "NSsid") {
            auto& dst = key == "NSpid" ? s.nspid : key == "NSpgid" ? s.nspgid : s.nssid;
            for (auto p : words()) dst.push_back(static_cast<pid_t>(CKPT_TRY(snum(p))));
        }
    }
    return s;
}

Result<ProcStatus> read_status(pid_t pid, pid_t tid) {
    return read_parsed(tid ? proc_task_path(pid, tid, "status") : proc_path(pid, "status"), parse_status);
}

Result<std::vector<int>> read_numbered_dir(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) return sys_error("opendir {}", dir);
    std::vector<int> out;
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') out.push_back(std::atoi(e->d_name));
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

Result<std::vector<pid_t>> read_tasks(pid_t pid) {
    std::vector<pid_t> out = CKPT_TRY(read_numbered_dir(proc_path(pid, "task")));
    // The thread group leader first.
    auto it = std::find(out.begin(), out.end(), pid);
    if (it != out.end()) std::rotate(out.begin(), it, it + 1);
    return out;
}

Result<std::vector<pid_t>> parse_children(std::string_view text) {
    std::vector<pid_t> out;
    for (auto w : split(trim(text), ' '))
        if (!w.empty()) out.push_back(static_cast<pid_t>(CKPT_TRY_CTX(parse_int(w), "children list '{}'", trim(text))));
    return out;
}

Error pid_in_use_error(pid_t pid, std::string_view what) {
    if (access(proc_path(pid, "").c_str(), F_OK) == 0) return error_code(EEXIST, "{}pid {} is in use", what, pid);
    return error_code(EEXIST,
                      "{}pid {} is in use as the id of a process group or session that still has members "
                      "(a zombie not yet reaped?)",
                      what, pid);
}

Result<std::vector<pid_t>> read_children(pid_t pid) {
    std::vector<pid_t> out;
    for (pid_t tid : CKPT_TRY(read_tasks(pid))) {
        std::string path = proc_task_path(pid, tid, "children");
        auto text = read_file(path);
        if (!text) continue;  // the thread exited meanwhile
        for (pid_t c : CKPT_TRY_CTX(parse_children(*text), "{}", path)) out.push_back(c);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Result<std::string> read_link(const std::string& path) {
    char buf[4096];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    if (n < 0) return sys_error("readlink {}", path);
    return std::string(buf, static_cast<size_t>(n));
}

Result<ino_t> read_ns_inode(pid_t pid, const char* ns) {
    std::string path = proc_path(pid, "ns/") + ns;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return sys_error("stat {}", path);
    return st.st_ino;
}

Result<std::vector<Limit>> parse_limits(std::string_view text) {
    // Rows in the kernel's fixed order, which is the RLIMIT_* numbering.
    static const char* names[] = {"Max cpu time",       "Max file size",       "Max data size",
                                  "Max stack size",     "Max core file size",  "Max resident set",
                                  "Max processes",      "Max open files",      "Max locked memory",
                                  "Max address space",  "Max file locks",      "Max pending signals",
                                  "Max msgqueue size",  "Max nice priority",   "Max realtime priority",
                                  "Max realtime timeout"};
    std::vector<Limit> out;
    for (auto line : split(text, '\n')) {
        for (uint32_t r = 0; r < std::size(names); ++r) {
            if (!starts_with(line, names[r])) continue;
            auto rest = line.substr(std::strlen(names[r]));
            std::vector<std::string_view> w;
            for (auto x : split(rest, ' '))
                if (!x.empty()) w.push_back(x);
            if (w.size() < 2) return error_code(EINVAL, "malformed limits line '{}'", line);
            auto val = [&](std::string_view s) -> Result<uint64_t> {
                if (s == "unlimited") return uint64_t{RLIM_INFINITY};
                return parse_uint(s).context("limits line '{}'", line);
            };
            out.push_back({r, CKPT_TRY(val(w[0])), CKPT_TRY(val(w[1]))});
        }
    }
    return out;
}

Result<std::vector<Limit>> read_limits(pid_t pid) {
    return read_parsed(proc_path(pid, "limits"), parse_limits);
}

Result<FdInfo> parse_fdinfo(std::string_view text) {
    FdInfo info;
    for (auto line : split(text, '\n')) {
        if (starts_with(line, "pos:"))
            info.pos = CKPT_TRY_CTX(parse_uint(trim(line.substr(4))), "fdinfo line '{}'", line);
        else if (starts_with(line, "flags:"))
            info.flags = static_cast<uint32_t>(CKPT_TRY_CTX(parse_uint(trim(line.substr(6)), 8), "fdinfo line '{}'", line));
    }
    return info;
}

}  // namespace ckpt::engine
