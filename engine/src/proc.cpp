#include "proc.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"

namespace ckpt::engine {

std::string proc_path(pid_t pid, const char* what) { return "/proc/" + std::to_string(pid) + "/" + what; }
std::string proc_task_path(pid_t pid, pid_t tid, const char* what) {
    return "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/" + what;
}

Result<std::vector<ProcMapping>> read_maps(pid_t pid) {
    std::string text = CKPT_TRY(read_file(proc_path(pid, "maps")));
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
            return error_code(EINVAL, "pid {}: cannot parse maps line '{}'", pid, line);
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

Result<ProcStat> read_stat(pid_t pid, pid_t tid) {
    std::string text = CKPT_TRY(read_file(tid ? proc_task_path(pid, tid, "stat") : proc_path(pid, "stat")));
    ProcStat s;
    // comm may contain spaces and parentheses: it ends at the last ')'.
    size_t open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open)
        return error_code(EINVAL, "pid {}: malformed stat", pid);
    s.pid = static_cast<pid_t>(std::atoi(text.c_str()));
    s.comm = text.substr(open + 1, close - open - 1);
    auto f = split(std::string_view(text).substr(close + 2), ' ');
    // f[0] is field 3 (state) of proc(5).
    auto field = [&](size_t n) -> uint64_t {
        size_t i = n - 3;
        if (i >= f.size()) return 0;
        auto v = parse_int(trim(f[i]));
        return v.ok() ? static_cast<uint64_t>(v.value()) : 0;
    };
    if (f.size() < 50) return error_code(EINVAL, "pid {}: short stat ({} fields)", pid, f.size() + 2);
    s.state = f[0].empty() ? '?' : f[0][0];
    s.ppid = static_cast<pid_t>(field(4));
    s.pgid = static_cast<pid_t>(field(5));
    s.sid = static_cast<pid_t>(field(6));
    s.nice = static_cast<int64_t>(field(19));
    s.start_code = field(26);
    s.end_code = field(27);
    s.start_stack = field(28);
    s.exit_signal = static_cast<int>(field(38));
    s.rt_priority = static_cast<uint32_t>(field(40));
    s.policy = static_cast<uint32_t>(field(41));
    s.start_data = field(45);
    s.end_data = field(46);
    s.start_brk = field(47);
    s.arg_start = field(48);
    s.arg_end = field(49);
    s.env_start = field(50);
    s.env_end = field(51);
    s.exit_code = static_cast<int>(field(52));
    return s;
}

Result<ProcStatus> read_status(pid_t pid, pid_t tid) {
    std::string text = CKPT_TRY(read_file(tid ? proc_task_path(pid, tid, "status") : proc_path(pid, "status")));
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
        auto hex = [&] { return parse_uint(val, 16).ok() ? parse_uint(val, 16).value() : 0; };
        if (key == "Uid" || key == "Gid") {
            auto w = words();
            uint32_t* dst = key == "Uid" ? s.uid : s.gid;
            for (size_t i = 0; i < 4 && i < w.size(); ++i) dst[i] = static_cast<uint32_t>(parse_uint(w[i]).value());
        } else if (key == "Groups") {
            for (auto g : words()) s.groups.push_back(static_cast<uint32_t>(parse_uint(g).value()));
        } else if (key == "CapInh") {
            s.cap_inh = hex();
        } else if (key == "CapPrm") {
            s.cap_prm = hex();
        } else if (key == "CapEff") {
            s.cap_eff = hex();
        } else if (key == "CapBnd") {
            s.cap_bnd = hex();
        } else if (key == "CapAmb") {
            s.cap_amb = hex();
        } else if (key == "ShdPnd") {
            s.shd_pnd = hex();
        } else if (key == "SigPnd") {
            s.sig_pnd = hex();
        } else if (key == "SigBlk") {
            s.sig_blk = hex();
        } else if (key == "SigIgn") {
            s.sig_ign = hex();
        } else if (key == "SigCgt") {
            s.sig_cgt = hex();
        } else if (key == "NoNewPrivs") {
            s.no_new_privs = val == "1";
        } else if (key == "Seccomp") {
            s.seccomp_mode = static_cast<int>(parse_int(val).ok() ? parse_int(val).value() : 0);
        } else if (key == "Umask") {
            s.umask = static_cast<uint32_t>(parse_uint(val, 8).ok() ? parse_uint(val, 8).value() : 022);
        } else if (key == "Tgid") {
            s.tgid = static_cast<pid_t>(parse_int(val).ok() ? parse_int(val).value() : 0);
        } else if (key == "NSpid" || key == "NSpgid" || key == "NSsid") {
            auto& dst = key == "NSpid" ? s.nspid : key == "NSpgid" ? s.nspgid : s.nssid;
            for (auto p : words()) {
                auto v = parse_int(p);
                if (!v) return error_code(EINVAL, "pid {}: malformed status line '{}'", pid, line);
                dst.push_back(static_cast<pid_t>(v.value()));
            }
        }
    }
    return s;
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

Result<std::vector<pid_t>> read_children(pid_t pid) {
    std::vector<pid_t> out;
    for (pid_t tid : CKPT_TRY(read_tasks(pid))) {
        auto text = read_file(proc_task_path(pid, tid, "children"));
        if (!text) continue;  // the thread exited meanwhile
        for (auto w : split(trim(*text), ' '))
            if (!w.empty()) out.push_back(static_cast<pid_t>(parse_int(w).value()));
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

Result<std::vector<Limit>> read_limits(pid_t pid) {
    std::string text = CKPT_TRY(read_file(proc_path(pid, "limits")));
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
            if (w.size() < 2) return error_code(EINVAL, "pid {}: malformed limits line '{}'", pid, line);
            auto val = [](std::string_view s) -> uint64_t {
                return s == "unlimited" ? RLIM_INFINITY : parse_uint(s).ok() ? parse_uint(s).value() : 0;
            };
            out.push_back({r, val(w[0]), val(w[1])});
        }
    }
    return out;
}

}  // namespace ckpt::engine
