// Seccomp filters: read with ptrace, installed again from inside the process.
#include <algorithm>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "proc.h"
#include "restore_task.h"
#include "task_state.h"

namespace ckpt::engine {
namespace {

constexpr int kPtraceGetSeccompMetadata = 0x420d;

// "Seccomp:" and "Seccomp_filters:" of a status file (filters -1 on kernels before 5.9,
// which do not show them).
struct SeccompStatus {
    int mode = -1;
    int filters = -1;
};

Result<SeccompStatus> seccomp_status(const std::string& path) {
    std::string text = CKPT_TRY(read_file(path));
    SeccompStatus out;
    for (std::string_view line : split(text, '\n')) {
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view key = line.substr(0, colon);
        if (key != "Seccomp" && key != "Seccomp_filters") continue;
        auto n = parse_uint(trim(line.substr(colon + 1)));
        if (!n) return error("{}: unreadable {} field", path, key);
        (key == "Seccomp" ? out.mode : out.filters) = static_cast<int>(*n);
    }
    if (out.mode < 0) return error("{}: no Seccomp field", path);
    return out;
}

// The filters of one thread, oldest first (the order they are installed again).
Result<std::vector<image::SeccompFilter>> read_filters(pid_t tid) {
    std::vector<image::SeccompFilter> newest_first;
    for (unsigned long index = 0;; ++index) {
        long n = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, nullptr);
        if (n < 0) {
            if (errno == ENOENT) break;
            return sys_error("ptrace(SECCOMP_GET_FILTER) tid {} filter {}", tid, index);
        }
        std::vector<sock_filter> prog(static_cast<size_t>(n));
        if (ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, prog.data()) != n)
            return sys_error("ptrace(SECCOMP_GET_FILTER) tid {} filter {}", tid, index);
        struct {
            uint64_t filter_off, flags;
        } meta{index, 0};
        if (ptrace(static_cast<__ptrace_request>(kPtraceGetSeccompMetadata), tid, sizeof meta, &meta) < 0)
            meta.flags = 0;
        image::SeccompFilter f;
        f.set_bpf(prog.data(), prog.size() * sizeof(sock_filter));
        f.set_flags(static_cast<uint32_t>(meta.flags));
        newest_first.push_back(std::move(f));
    }
    return std::vector<image::SeccompFilter>(newest_first.rbegin(), newest_first.rend());
}

bool same_filters(const std::vector<image::SeccompFilter>& a, const std::vector<image::SeccompFilter>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
        return x.bpf() == y.bpf() && x.flags() == y.flags();
    });
}

}  // namespace

// The process's filters, which every thread must have alike: a restore installs them once,
// synchronised to every thread (SECCOMP_FILTER_FLAG_TSYNC).
Result<void> dump_seccomp(const FrozenProcess& p, image::TaskCore* core) {
    const pid_t pid = p.pid;
    auto filters_of = [&](pid_t tid, int mode) -> Result<std::vector<image::SeccompFilter>> {
        if (mode == 0) return std::vector<image::SeccompFilter>{};
        if (mode != 2) return error("pid {} tid {}: seccomp mode {} cannot be restored", pid, tid, mode);
        return read_filters(tid);
    };
    const auto filters = CKPT_TRY(filters_of(pid, p.status.seccomp_mode));
    for (size_t i = 1; i < p.threads.size() && i < p.thread_seccomp_modes.size(); ++i) {
        const auto theirs = CKPT_TRY(filters_of(p.threads[i], p.thread_seccomp_modes[i]));
        if (!same_filters(theirs, filters))
            return error_code(ENOTSUP,
                              "pid {}: thread {} has seccomp filters of its own ({}, its process {}): only filters "
                              "every thread shares (installed before the threads were made, or with "
                              "SECCOMP_FILTER_FLAG_TSYNC) are supported",
                              pid, p.threads[i], theirs.size(), filters.size());
    }
    for (const auto& f : filters) *core->add_seccomp() = f;
    return ok();
}

Result<void> restore_seccomp(RestoreTask& t) {
    if (t.core.seccomp_size() == 0) return ok();
    RemoteThread& rt = *t.leader;
    bool threads = t.core.threads_size() > 1;
    for (const auto& f : t.core.seccomp()) {
        size_t insns = f.bpf().size() / sizeof(sock_filter);
        if (f.bpf().size() % sizeof(sock_filter) || insns == 0 || insns > BPF_MAXINSNS)
            return error_code(EINVAL, "pid {}: malformed seccomp filter in image", t.pid);
        auto s = t.scratch.scope();
        uint64_t bpf_at = CKPT_TRY(s.put(f.bpf().data(), f.bpf().size()));
        struct {
            uint16_t len;
            uint16_t pad[3];
            uint64_t filter;
        } prog{static_cast<uint16_t>(insns), {}, bpf_at};
        uint64_t prog_at = CKPT_TRY(s.put(prog));
        uint64_t flags = f.flags() | (threads ? SECCOMP_FILTER_FLAG_TSYNC : 0);
        CKPT_TRY_CTX(rt.syscall_ok("seccomp(SET_MODE_FILTER)", SYS_seccomp, {SECCOMP_SET_MODE_FILTER, flags, prog_at}),
                     "pid {}", t.pid);
    }
    return ok();
}

Result<int> own_seccomp_filters() {
    SeccompStatus st = CKPT_TRY(seccomp_status("/proc/thread-self/status"));
    if (st.mode == 1) return error("the restorer runs in strict seccomp mode");
    return st.filters < 0 ? 0 : st.filters;
}

Result<void> verify_thread_seccomp(pid_t pid, pid_t tid, pid_t host_tgid, pid_t host_tid, const image::TaskCore& core,
                                   int own_filters) {
    SeccompStatus st = CKPT_TRY_CTX(seccomp_status(proc_task_path(host_tgid, host_tid, "status")), "pid {} tid {}",
                                    pid, tid);
    int filters = own_filters + core.seccomp_size();
    int mode = filters > 0 ? 2 : 0;
    if (st.mode != mode || (st.filters >= 0 && st.filters != filters))
        return error_code(EPERM, "pid {} tid {}: Seccomp is mode {} with {} filters after the restore, expected mode {} with {}",
                          pid, tid, st.mode, st.filters, mode, filters);
    return ok();
}

}  // namespace ckpt::engine
