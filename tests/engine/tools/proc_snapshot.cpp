// proc_snapshot [--raw DIR] ROOT_PID: prints what a process tree holds in memory and in its
// fds, as text lines that run_engine_test.py --compare compares before the dump and after
// the restore (tests/engine/README.md, "Comparison").
//
// Every thread of the tree is stopped first (PTRACE_SEIZE + PTRACE_INTERRUPT, pass after pass
// until no new thread or child appears: no signal is sent, a group stop stays a group stop),
// so that the snapshot is one consistent moment; then, per process (by pid):
//   proc PID state S threads N
//   map PID START-END PERMS OFFSET DEV INODE PATH       (/proc/PID/maps, one per mapping)
//   mem PID START-END HASH                              (contents, see below)
//   tls PID TID PAGE HASH                               (the page below its thread pointer)
//   rseq PID TID ADDRESS SIZE SIGNATURE                 (PTRACE_GET_RSEQ_CONFIGURATION)
//   fd PID FD TARGET                                    (readlink /proc/PID/fd/FD)
//   fdinfo PID FD KEY VALUE                             (/proc/PID/fdinfo/FD, one per line)
// and every thread is let go (PTRACE_DETACH) as it was.
//
// Contents are read through /proc/PID/mem (the tracer may read PROT_NONE pages too) and
// hashed with XXH3 per mapping, page by page, with a marker per page that could not be read
// (guard pages, VM_IO mappings): where those pages are is part of the hash. A page of a
// private anonymous mapping that /proc/PID/pagemap says is neither present nor swapped reads
// as zeros and is hashed as zeros without being read, so the snapshot does not fault in
// pages the dump would then see as touched. File and shared mappings are read whole (their
// contents are the file's, whatever is mapped).
#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPresent = 1ULL << 63, kSwapped = 1ULL << 62, kGuard = 1ULL << 58;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "proc_snapshot: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(2);
}

std::vector<int> list_numbers(const std::string& dir) {
    std::vector<int> out;
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        char* end = nullptr;
        long v = std::strtol(e->d_name, &end, 10);
        if (end != e->d_name && *end == 0) out.push_back(static_cast<int>(v));
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

char proc_state(int pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    size_t paren = stat.rfind(')');
    return paren == std::string::npos || paren + 2 >= stat.size() ? '?' : stat[paren + 2];
}

// Every pid of the tree at root (children of every thread, recursively), in pid order.
std::set<int> tree(int root) {
    std::set<int> pids;
    std::vector<int> todo{root};
    while (!todo.empty()) {
        int pid = todo.back();
        todo.pop_back();
        if (!pids.insert(pid).second) continue;
        for (int tid : list_numbers("/proc/" + std::to_string(pid) + "/task")) {
            std::istringstream children(read_text("/proc/" + std::to_string(pid) + "/task/" +
                                                  std::to_string(tid) + "/children"));
            for (int c; children >> c;) todo.push_back(c);
        }
    }
    return pids;
}

std::set<int> seized;

// Registered rseq areas, per process: the kernel writes cpu_id_start, cpu_id, node_id and
// mm_cid of each on every return to user space (the CPU the thread runs on), so those four
// fields are hashed as zeros; rseq_cs and flags are compared (the registration itself is
// printed as an `rseq` line).
struct Rseq {
    int tid;
    uint64_t addr, size, sig;
};
std::map<int, std::vector<Rseq>> rseqs;

// --raw DIR: every mapping's pages as hashed are also written to DIR/PID-START (to find what
// differs by hand: cmp -l before/PID-START after/PID-START).
std::string raw_dir;

// Per thread: its thread pointer (fs_base). The page below it holds the static TLS (errno
// among it) and is hashed apart, as a `tls` line.
struct Thread {
    int tid;
    uint64_t fs_base;
};
std::map<int, std::vector<Thread>> threads;

struct RseqConfig {  // struct ptrace_rseq_configuration
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size, signature, flags, pad;
};
constexpr int kGetRseqConfiguration = 0x420f;  // PTRACE_GET_RSEQ_CONFIGURATION

// Stops every thread of the tree; pass after pass until the tree holds still.
void freeze(int root) {
    for (bool grew = true; grew;) {
        grew = false;
        for (int pid : tree(root)) {
            if (proc_state(pid) == 'Z') continue;  // a zombie holds no memory and no fd
            for (int tid : list_numbers("/proc/" + std::to_string(pid) + "/task")) {
                if (seized.count(tid)) continue;
                if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
                    if (errno == ESRCH || errno == EPERM)
                        continue;  // exited meanwhile, or a zombie thread
                    die("PTRACE_SEIZE " + std::to_string(tid));
                }
                seized.insert(tid);
                grew = true;
                if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) die("PTRACE_INTERRUPT");
                int st;
                if (waitpid(tid, &st, __WALL) != tid) die("waitpid " + std::to_string(tid));
                user_regs_struct regs{};
                if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) die("PTRACE_GETREGS");
                threads[pid].push_back({tid, regs.fs_base});
                RseqConfig conf{};
                if (ptrace(static_cast<__ptrace_request>(kGetRseqConfiguration), tid, sizeof conf,
                           &conf) == sizeof conf &&
                    conf.rseq_abi_pointer)
                    rseqs[pid].push_back(
                        {tid, conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature});
            }
        }
    }
}

void thaw() {
    for (int tid : seized) ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
}

bool private_anonymous(const std::string& perms, const std::string& path) {
    if (perms.size() < 4 || perms[3] != 'p') return false;
    return path.empty() || path == "[heap]" || path.rfind("[stack", 0) == 0 ||
           path.rfind("[anon:", 0) == 0;
}

// Zeros the fields of rseq areas the kernel keeps writing, where they fall in the page at addr.
void mask_rseq(int pid, uint64_t addr, std::vector<char>& page) {
    static const std::pair<uint64_t, uint64_t> fields[] = {
        {0, 4}, {4, 4}, {24, 4}, {28, 4}};  // offset, size
    for (const Rseq& r : rseqs[pid])
        for (auto [off, len] : fields) {
            if (off + len > r.size) continue;
            for (uint64_t b = r.addr + off; b < r.addr + off + len; ++b)
                if (b >= addr && b < addr + kPage) page[b - addr] = 0;
        }
}

bool tls_page(int pid, uint64_t addr) {
    for (const Thread& t : threads[pid])
        if (t.fs_base >= kPage && addr == ((t.fs_base - 1) & ~(kPage - 1))) return true;
    return false;
}

std::string hex(uint64_t h) {
    char out[17];
    std::snprintf(out, sizeof out, "%016" PRIx64, h);
    return out;
}

// Hash of the mapping's pages but the TLS pages (tls_page), whose hashes go to tls_hashes.
std::string hash_mapping(int pid, int mem_fd, int pagemap_fd, uint64_t start, uint64_t end,
                         bool anon, std::map<uint64_t, std::string>& tls_hashes) {
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    static const std::vector<char> zeros(kPage, 0);
    static const char unreadable[] = "\xff<unreadable page>";
    static const char guard[] = "\xff<guard page>";
    std::vector<uint64_t> entries;
    std::vector<char> buf(kPage);
    int raw = -1;
    if (!raw_dir.empty()) {
        char name[64];
        std::snprintf(name, sizeof name, "/%d-%" PRIx64, pid, start);
        raw = open((raw_dir + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    constexpr uint64_t kBatch = 512;
    for (uint64_t at = start; at < end; at += kBatch * kPage) {
        uint64_t n = std::min(kBatch, (end - at) / kPage);
        entries.assign(n, 0);
        ssize_t got = pread(pagemap_fd, entries.data(), n * 8, static_cast<off_t>(at / kPage * 8));
        if (got != static_cast<ssize_t>(n * 8)) entries.assign(n, kPresent);  // read them all
        for (uint64_t i = 0; i < n; ++i) {
            uint64_t addr = at + i * kPage;
            if (tls_page(pid, addr)) {
                if (pread(mem_fd, buf.data(), kPage, static_cast<off_t>(addr)) ==
                    static_cast<ssize_t>(kPage)) {
                    mask_rseq(pid, addr, buf);
                    tls_hashes[addr] = hex(XXH3_64bits(buf.data(), kPage));
                    if (raw >= 0 &&
                        pwrite(raw, buf.data(), kPage, static_cast<off_t>(addr - start)) < 0)
                        die("--raw");
                } else {
                    tls_hashes[addr] = "unreadable";
                }
                XXH3_64bits_update(st, "<tls page>", 10);
            } else if (entries[i] & kGuard) {
                XXH3_64bits_update(st, guard, sizeof guard);
            } else if (anon && !(entries[i] & (kPresent | kSwapped))) {
                XXH3_64bits_update(st, zeros.data(), kPage);
            } else if (pread(mem_fd, buf.data(), kPage, static_cast<off_t>(addr)) ==
                       static_cast<ssize_t>(kPage)) {
                mask_rseq(pid, addr, buf);
                XXH3_64bits_update(st, buf.data(), kPage);
                if (raw >= 0 &&
                    pwrite(raw, buf.data(), kPage, static_cast<off_t>(addr - start)) < 0)
                    die("--raw");
            } else {
                XXH3_64bits_update(st, unreadable, sizeof unreadable);
            }
        }
    }
    if (raw >= 0) close(raw);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return hex(h);
}

// Starts of the mappings made with MAP_DROPPABLE (VmFlags "dp" in smaps): the kernel may
// drop their pages at any time and a restore brings them back empty, so their content is not
// compared (only that they are there).
std::set<uint64_t> droppable_mappings(const std::string& dir) {
    std::set<uint64_t> out;
    std::istringstream smaps(read_text(dir + "/smaps"));
    uint64_t start = 0;
    for (std::string line; std::getline(smaps, line);) {
        const std::string first = line.substr(0, line.find(' '));
        if (first.find('-') != std::string::npos && first.find(':') == std::string::npos)  // "start-end perms ..."
            start = std::strtoull(line.c_str(), nullptr, 16);
        else if (line.rfind("VmFlags:", 0) == 0 && (" " + line.substr(8) + " ").find(" dp ") != std::string::npos)
            out.insert(start);
    }
    return out;
}

void snapshot_process(int pid) {
    std::string dir = "/proc/" + std::to_string(pid);
    char state = proc_state(pid);
    std::printf("proc %d state %c threads %zu\n", pid, state, list_numbers(dir + "/task").size());
    if (state == 'Z') return;
    std::map<uint64_t, std::string> tls_hashes;
    for (const Rseq& r : rseqs[pid])
        std::printf("rseq %d %d %" PRIx64 " %" PRIu64 " %" PRIx64 "\n", pid, r.tid, r.addr, r.size,
                    r.sig);
    int mem_fd = open((dir + "/mem").c_str(), O_RDONLY);
    int pagemap_fd = open((dir + "/pagemap").c_str(), O_RDONLY);
    if (mem_fd < 0 || pagemap_fd < 0) die("open " + dir + "/mem");
    const std::set<uint64_t> droppable = droppable_mappings(dir);
    std::istringstream maps(read_text(dir + "/maps"));
    for (std::string line; std::getline(maps, line);) {
        std::istringstream in(line);
        std::string range, perms, offset, dev, inode, path;
        in >> range >> perms >> offset >> dev >> inode;
        std::getline(in >> std::ws, path);
        std::printf("map %d %s %s %s %s %s %s\n", pid, range.c_str(), perms.c_str(), offset.c_str(),
                    dev.c_str(), inode.c_str(), path.c_str());
        uint64_t start = std::strtoull(range.c_str(), nullptr, 16);
        uint64_t end = std::strtoull(range.c_str() + range.find('-') + 1, nullptr, 16);
        if (droppable.count(start)) {
            std::printf("mem %d %s droppable\n", pid, range.c_str());
            continue;
        }
        std::printf("mem %d %s %s\n", pid, range.c_str(),
                    hash_mapping(pid, mem_fd, pagemap_fd, start, end,
                                 private_anonymous(perms, path), tls_hashes)
                        .c_str());
    }
    close(mem_fd);
    close(pagemap_fd);
    for (const Thread& t : threads[pid]) {
        uint64_t page = (t.fs_base - 1) & ~(kPage - 1);
        if (t.fs_base >= kPage && tls_hashes.count(page))
            std::printf("tls %d %d %" PRIx64 " %s\n", pid, t.tid, page, tls_hashes[page].c_str());
    }
    for (int fd : list_numbers(dir + "/fd")) {
        char target[4096];
        ssize_t n =
            readlink((dir + "/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
        if (n < 0) continue;  // closed meanwhile: cannot be, the tree is stopped
        target[n] = 0;
        std::printf("fd %d %d %s\n", pid, fd, target);
        std::istringstream info(read_text(dir + "/fdinfo/" + std::to_string(fd)));
        for (std::string line; std::getline(info, line);) {
            size_t colon = line.find(':');
            std::string key = line.substr(0, colon),
                        value = colon == std::string::npos ? "" : line.substr(colon + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            std::printf("fdinfo %d %d %s %s\n", pid, fd, key.c_str(), value.c_str());
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "--raw") {
        raw_dir = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc != 2) {
        std::fprintf(stderr, "usage: proc_snapshot [--raw DIR] ROOT_PID\n");
        return 2;
    }
    int root = std::atoi(argv[1]);
    freeze(root);
    for (int pid : tree(root)) snapshot_process(pid);
    std::fflush(stdout);
    thaw();
    return 0;
}
