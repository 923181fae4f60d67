#include "ckpt/engine/kernel_features.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"

namespace ckpt::engine {
namespace {

using Probe = std::function<std::string(bool* ok)>;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// A child that sleeps until killed, to probe cross-process features on.
struct ProbeChild {
    pid_t pid = -1;
    ProbeChild() {
        pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
    }
    ~ProbeChild() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, __WALL);
        }
    }
};

std::string probe_ptrace_seize(bool* ok) {
    ProbeChild c;
    if (c.pid < 0) return errno_text("fork");
    if (ptrace(PTRACE_SEIZE, c.pid, 0, 0) != 0) return errno_text("PTRACE_SEIZE");
    if (ptrace(PTRACE_INTERRUPT, c.pid, 0, 0) != 0) return errno_text("PTRACE_INTERRUPT");
    int status;
    if (waitpid(c.pid, &status, __WALL) != c.pid) return errno_text("waitpid");
    if (!WIFSTOPPED(status) || (status >> 16) != PTRACE_EVENT_STOP) return "child did not enter a ptrace event stop";
    *ok = true;
    return "seize + interrupt";
}

std::string probe_pidfd_getfd(bool* ok) {
    ProbeChild c;
    UniqueFd pidfd(sys_pidfd_open(c.pid, 0));
    if (!pidfd) return errno_text("pidfd_open");
    UniqueFd fd(sys_pidfd_getfd(pidfd.get(), 0, 0));
    if (!fd) return errno_text("pidfd_getfd");
    *ok = true;
    return "pidfd_open + pidfd_getfd";
}

std::string probe_process_vm(bool* ok) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return errno_text("pipe");
    UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    static volatile uint64_t value = 0;
    value = 0;
    pid_t pid = fork();
    if (pid == 0) {
        value = 0x5eed;
        char b = 1;
        (void)!write(pipefd[1], &b, 1);
        for (;;) pause();
    }
    wr.reset();
    char b;
    (void)!read(rd.get(), &b, 1);
    uint64_t got = 0;
    iovec local{&got, sizeof got}, remote{const_cast<uint64_t*>(&value), sizeof value};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    int saved = errno;
    uint64_t put = 0x1234;
    iovec wlocal{&put, sizeof put};
    ssize_t m = n == sizeof got ? process_vm_writev(pid, &wlocal, 1, &remote, 1, 0) : -1;
    int saved_w = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    errno = saved;
    if (n != sizeof got) return errno_text("process_vm_readv");
    if (got != 0x5eed) return "process_vm_readv read the wrong value";
    errno = saved_w;
    if (m != sizeof put) return errno_text("process_vm_writev");
    *ok = true;
    return "process_vm_readv + process_vm_writev";
}

std::string probe_clone3_set_tid(bool* ok) {
    // Pick a free pid above the last one handed out and ask for it.
    auto last = read_file("/proc/sys/kernel/ns_last_pid");
    auto maxp = read_file("/proc/sys/kernel/pid_max");
    if (!last || !maxp) return "cannot read /proc/sys/kernel/ns_last_pid or pid_max";
    auto base = parse_int(trim(*last)), pid_max = parse_int(trim(*maxp));
    // The pid picked below lies in [300, pid_max).
    if (!base || !pid_max || *pid_max <= 300)
        return "cannot parse /proc/sys/kernel/ns_last_pid '" + std::string(trim(*last)) + "' or pid_max '" +
               std::string(trim(*maxp)) + "'";
    for (int attempt = 0; attempt < 64; ++attempt) {
        pid_t want = static_cast<pid_t>(300 + (*base + 1000 + attempt * 37) % (*pid_max - 300));
        if (access(("/proc/" + std::to_string(want)).c_str(), F_OK) == 0) continue;
        long pid = sys_fork_with_pid(want);
        if (pid == 0) _exit(0);
        if (pid < 0) {
            if (errno == EEXIST) continue;
            return errno_text("clone3(set_tid)");
        }
        waitpid(static_cast<pid_t>(pid), nullptr, 0);
        if (pid != want) return "clone3 ignored set_tid";
        *ok = true;
        return "child created with a chosen pid";
    }
    return "no free pid found to try";
}

std::string probe_map_files(bool* ok) {
    void* p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno_text("mmap");
    char path[128];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", reinterpret_cast<unsigned long>(p),
             reinterpret_cast<unsigned long>(p) + 4096);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    munmap(p, 4096);
    if (fd < 0) return errno_text("open /proc/self/map_files");
    close(fd);
    *ok = true;
    return "readable";
}

std::string probe_prctl_mm_map(bool* ok) {
    unsigned int size = 0;
    if (prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0) != 0) return errno_text("prctl(PR_SET_MM_MAP_SIZE)");
    *ok = true;
    return "struct prctl_mm_map of " + std::to_string(size) + " bytes";
}

std::string probe_rseq_config(bool* ok) {
    ProbeChild c;
    if (ptrace(PTRACE_SEIZE, c.pid, 0, 0) != 0) return errno_text("PTRACE_SEIZE");
    ptrace(PTRACE_INTERRUPT, c.pid, 0, 0);
    waitpid(c.pid, nullptr, __WALL);
    struct {
        uint64_t rseq_abi_pointer;
        uint32_t rseq_abi_size, signature, flags, pad;
    } conf{};
    long r = ptrace(static_cast<__ptrace_request>(kPtraceGetRseqConfiguration), c.pid, sizeof conf, &conf);
    if (r <= 0) return errno_text("PTRACE_GET_RSEQ_CONFIGURATION");
    *ok = true;
    return conf.rseq_abi_pointer ? "rseq registered by libc" : "available (no rseq registered)";
}

std::string probe_userfaultfd(bool* ok) {
    UniqueFd fd(static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
    if (!fd) return errno_text("userfaultfd");
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = 0;
    if (ioctl(fd.get(), UFFDIO_API, &api) != 0) return errno_text("UFFDIO_API");
    std::string detail = "api ok";
    constexpr uint64_t kWpAsync = 1ull << 15;  // UFFD_FEATURE_WP_ASYNC (6.7)
    if (api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) detail += ", write-protect";
    if (api.features & kWpAsync) detail += ", async write-protect";
    *ok = true;
    return detail;
}

std::string probe_tcp_repair(bool* ok) {
    UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) return errno_text("socket");
    int on = 1;
    if (setsockopt(s.get(), SOL_TCP, TCP_REPAIR, &on, sizeof on) != 0) return errno_text("setsockopt(TCP_REPAIR)");
    *ok = true;
    return "TCP_REPAIR accepted";
}

std::string probe_pagemap_scan(bool* ok) {
    UniqueFd fd(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!fd) return errno_text("open /proc/self/pagemap");
    size_t len = 4 * 4096;
    void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return errno_text("mmap");
    static_cast<char*>(mem)[0] = 1;
    PageRegion regions[4];
    PmScanArg arg{};
    arg.size = sizeof arg;
    arg.start = reinterpret_cast<uint64_t>(mem);
    arg.end = arg.start + len;
    arg.vec = reinterpret_cast<uint64_t>(regions);
    arg.vec_len = 4;
    arg.category_mask = kPageIsPresent;
    arg.return_mask = kPageIsPresent;
    long n = ioctl(fd.get(), kPagemapScan, &arg);
    int saved = errno;
    munmap(mem, len);
    errno = saved;
    if (n < 0) return errno_text("ioctl(PAGEMAP_SCAN)");
    if (n != 1) return "PAGEMAP_SCAN found " + std::to_string(n) + " regions, expected 1";
    *ok = true;
    return "present pages found";
}

std::string probe_checkpoint_restore(bool* ok) {
    if (access("/proc/sys/kernel/ns_last_pid", W_OK) != 0) return errno_text("/proc/sys/kernel/ns_last_pid");
    *ok = true;
    return "CONFIG_CHECKPOINT_RESTORE";
}

}  // namespace

std::vector<FeatureProbe> probe_kernel_features() {
    struct Entry {
        const char* name;
        const char* purpose;
        bool required;
        Probe probe;
    };
    const Entry entries[] = {
        {"checkpoint_restore", "kernel built with CONFIG_CHECKPOINT_RESTORE", true, probe_checkpoint_restore},
        {"ptrace_seize", "freeze process trees without signals", true, probe_ptrace_seize},
        {"pidfd_getfd", "take copies of a process's file descriptors", true, probe_pidfd_getfd},
        {"process_vm_readv", "read and write another process's memory", true, probe_process_vm},
        {"clone3_set_tid", "restore processes with their original pids", true, probe_clone3_set_tid},
        {"map_files", "identify shared and deleted mappings (/proc/PID/map_files)", true, probe_map_files},
        {"prctl_mm_map", "restore mm fields and the exe link (PR_SET_MM_MAP)", true, probe_prctl_mm_map},
        {"rseq_config", "save rseq registrations (PTRACE_GET_RSEQ_CONFIGURATION)", true, probe_rseq_config},
        {"userfaultfd", "lazy restore and copy-on-write snapshots", false, probe_userfaultfd},
        {"tcp_repair", "checkpoint established TCP connections", false, probe_tcp_repair},
        {"pagemap_scan", "incremental dumps (PAGEMAP_SCAN ioctl)", false, probe_pagemap_scan},
    };
    std::vector<FeatureProbe> out;
    for (const auto& e : entries) {
        FeatureProbe p{e.name, e.purpose, e.required, false, {}};
        p.detail = e.probe(&p.available);
        out.push_back(std::move(p));
    }
    return out;
}

}  // namespace ckpt::engine
