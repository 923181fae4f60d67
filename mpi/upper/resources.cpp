// The lower half's threads, fds and memory. Two sources: the shim's records (threads it
// started, fds and mappings made by calls between objects of the lower half) and the
// difference of /proc/self/{fd,maps} across loading the lower half and MPI_Init (its
// libraries, what its libc makes internally). Mappings the lower libc makes later (its malloc
// after MPI_Init) are not seen yet: see docs/mpi.md.
#include "resources.h"

#include <dirent.h>
#include <signal.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "ckpt/mpi/lower_half.h"

namespace ckpt::mpi {
namespace {

using Range = std::pair<uint64_t, uint64_t>;

struct Snapshot {
    std::set<int> fds;
    std::vector<Range> maps;  // sorted
};

// Allocated once, never freed: the lists live as long as the process.
Snapshot* g_before = nullptr;
// fd -> (st_dev, st_ino) when MPI_Init ended: a number the lower half gave up since may be
// another's now.
std::map<int, std::pair<uint64_t, uint64_t>>* g_init_fds = nullptr;
std::vector<Range>* g_init_maps = nullptr;

size_t (*g_shim_threads)(pid_t*, size_t) = nullptr;
size_t (*g_shim_fds)(int*, size_t) = nullptr;
size_t (*g_shim_mappings)(uint64_t*, size_t) = nullptr;
uint64_t (*g_shim_signals)() = nullptr;

std::set<int> open_fds() {
    std::set<int> fds;
    DIR* d = opendir("/proc/self/fd");
    if (!d)
        return fds;
    int self = dirfd(d);
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        int fd = std::atoi(e->d_name);
        if (fd != self)
            fds.insert(fd);
    }
    closedir(d);
    return fds;
}

// Calls fn(start, end, perms, line) for each line of /proc/self/maps.
template <class Fn>
void for_each_mapping(Fn&& fn) {
    FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        uint64_t a = 0, b = 0;
        char perms[8] = {};
        if (std::sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s", &a, &b, perms) == 3)
            fn(a, b, perms, line);
    }
    std::fclose(f);
}

// Mappings of the process, except the main heap and stacks (which only grow, and are the
// application's).
std::vector<Range> mappings() {
    std::vector<Range> out;
    for_each_mapping([&](uint64_t a, uint64_t b, const char*, const char* line) {
        if (!std::strstr(line, "[heap]") && !std::strstr(line, "[stack") && !std::strstr(line, "[vvar]") &&
            !std::strstr(line, "[vdso]") && !std::strstr(line, "[vsyscall]"))
            out.emplace_back(a, b);
    });
    std::sort(out.begin(), out.end());
    return out;
}

// The parts of `after` not covered by `before` (both sorted).
std::vector<Range> subtract(const std::vector<Range>& after, const std::vector<Range>& before) {
    std::vector<Range> out;
    for (auto [a, b] : after) {
        uint64_t cur = a;
        for (auto [c, d] : before) {
            if (d <= cur || c >= b)
                continue;
            if (c > cur)
                out.emplace_back(cur, c);
            cur = std::max(cur, d);
            if (cur >= b)
                break;
        }
        if (cur < b)
            out.emplace_back(cur, b);
    }
    return out;
}

std::vector<Range> merged(std::vector<Range> v) {
    std::sort(v.begin(), v.end());
    std::vector<Range> out;
    for (auto r : v) {
        if (!out.empty() && r.first <= out.back().second)
            out.back().second = std::max(out.back().second, r.second);
        else
            out.push_back(r);
    }
    return out;
}

bool fd_open(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0;
}

// The parts of `a` that are also in `b` (both sorted and merged).
std::vector<Range> intersect(const std::vector<Range>& a, const std::vector<Range>& b) {
    std::vector<Range> out;
    for (auto [s, e] : a)
        for (auto [c, d] : b) {
            uint64_t lo = std::max(s, c), hi = std::min(e, d);
            if (lo < hi)
                out.emplace_back(lo, hi);
        }
    return out;
}

template <class T>
size_t fill(const std::vector<T>& v, T* out, size_t max) {
    for (size_t i = 0; i < v.size() && i < max; ++i)
        out[i] = v[i];
    return v.size();
}

}  // namespace

void resources_before_lower() {
    g_before = new Snapshot{open_fds(), mappings()};
}

void resources_attach_shim(void* shim) {
    g_shim_threads = reinterpret_cast<decltype(g_shim_threads)>(dlsym(shim, "ckpt_shim_threads"));
    g_shim_fds = reinterpret_cast<decltype(g_shim_fds)>(dlsym(shim, "ckpt_shim_fds"));
    g_shim_mappings = reinterpret_cast<decltype(g_shim_mappings)>(dlsym(shim, "ckpt_shim_mappings"));
    g_shim_signals = reinterpret_cast<decltype(g_shim_signals)>(dlsym(shim, "ckpt_shim_signals"));
}

void resources_after_init() {
    if (!g_before)
        return;
    g_init_fds = new std::map<int, std::pair<uint64_t, uint64_t>>();
    for (int fd : open_fds()) {
        struct stat st {};
        if (!g_before->fds.count(fd) && fstat(fd, &st) == 0)
            (*g_init_fds)[fd] = {st.st_dev, st.st_ino};
    }
    g_init_maps = new std::vector<Range>(subtract(mappings(), g_before->maps));
}

std::vector<std::pair<uint64_t, uint64_t>> lower_memory_to_leave_out() {
    std::vector<ckpt_mpi_range> lower(ckpt_mpi_lower_memory(nullptr, 0));
    lower.resize(std::min(lower.size(), ckpt_mpi_lower_memory(lower.data(), lower.size())));
    std::vector<Range> out;
    for_each_mapping([&](uint64_t a, uint64_t b, const char* perms, const char* line) {
        // Shared segments and files of this launch (Open MPI's and PMIx's shared memory, in
        // /dev/shm or the session folder) do not exist where the rank comes back.
        bool launch_only = perms[3] == 's' || std::strstr(line, " (deleted)") || std::strstr(line, " /dev/shm/");
        if (!launch_only)
            return;
        for (const ckpt_mpi_range& r : lower)
            if (a >= r.start && b <= r.end) {
                out.emplace_back(a, b);
                return;
            }
    });
    return out;
}

}  // namespace ckpt::mpi

using namespace ckpt::mpi;

extern "C" __attribute__((visibility("default"))) size_t ckpt_mpi_lower_threads(pid_t* out, size_t max) {
    if (!g_shim_threads)
        return 0;
    std::vector<pid_t> tids(g_shim_threads(nullptr, 0));
    tids.resize(std::min(tids.size(), g_shim_threads(tids.data(), tids.size())));
    // Thread ids as this process's pid namespace numbers them (what gettid() gave the shim);
    // /proc may be another namespace's (a restored rank's is its restorer's), so the live
    // ones are read from the innermost NSpid of each task.
    std::set<pid_t> live;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            char path[300];
            std::snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
            FILE* f = std::fopen(path, "re");
            if (!f)
                continue;
            char line[512];
            while (std::fgets(line, sizeof line, f))
                if (std::strncmp(line, "NSpid:", 6) == 0) {
                    const char* last = std::strrchr(line, '\t');
                    live.insert(static_cast<pid_t>(std::atoi(last ? last + 1 : line + 6)));
                    break;
                }
            std::fclose(f);
        }
        closedir(d);
    }
    std::vector<pid_t> alive;
    for (pid_t t : tids)
        if (t > 0 && live.count(t))
            alive.push_back(t);
    return fill(alive, out, max);
}

extern "C" __attribute__((visibility("default"))) size_t ckpt_mpi_lower_fds(int* out, size_t max) {
    if (!g_shim_fds)
        return 0;
    std::vector<int> shim(g_shim_fds(nullptr, 0));
    shim.resize(std::min(shim.size(), g_shim_fds(shim.data(), shim.size())));
    std::set<int> all(shim.begin(), shim.end());
    if (g_init_fds)
        for (const auto& [fd, id] : *g_init_fds) {
            struct stat st {};
            if (fstat(fd, &st) == 0 && st.st_dev == id.first && st.st_ino == id.second)
                all.insert(fd);
        }
    std::vector<int> v;
    for (int fd : all)
        if (fd > STDERR_FILENO && fd_open(fd))
            v.push_back(fd);
    return fill(v, out, max);
}

extern "C" __attribute__((visibility("default"))) size_t ckpt_mpi_lower_memory(ckpt_mpi_range* out, size_t max) {
    std::vector<Range> all;
    if (g_init_maps)
        all = *g_init_maps;
    if (g_shim_mappings) {
        std::vector<uint64_t> pairs(2 * g_shim_mappings(nullptr, 0));
        size_t n = std::min(pairs.size() / 2, g_shim_mappings(pairs.data(), pairs.size() / 2));
        for (size_t i = 0; i < n; ++i)
            all.emplace_back(pairs[2 * i], pairs[2 * i + 1]);
    }
    // Only what is still mapped.
    std::vector<Range> m = intersect(merged(std::move(all)), merged(mappings()));
    std::vector<ckpt_mpi_range> v;
    for (auto [a, b] : m)
        v.push_back({a, b});
    return fill(v, out, max);
}

extern "C" __attribute__((visibility("default"))) size_t ckpt_mpi_lower_signals(int* out, size_t max) {
    if (!g_shim_signals)
        return 0;
    std::vector<ckpt_mpi_range> ranges(ckpt_mpi_lower_memory(nullptr, 0));
    ranges.resize(std::min(ranges.size(), ckpt_mpi_lower_memory(ranges.data(), ranges.size())));
    uint64_t bits = g_shim_signals();
    std::vector<int> v;
    for (int sig = 1; sig <= 64; ++sig) {
        struct sigaction sa {};
        if (!(bits & (uint64_t{1} << (sig - 1))) || sigaction(sig, nullptr, &sa) != 0)
            continue;
        auto handler = (sa.sa_flags & SA_SIGINFO) ? reinterpret_cast<uint64_t>(sa.sa_sigaction)
                                                  : reinterpret_cast<uint64_t>(sa.sa_handler);
        for (const ckpt_mpi_range& r : ranges)
            if (handler >= r.start && handler < r.end) {
                v.push_back(sig);
                break;
            }
    }
    return fill(v, out, max);
}
