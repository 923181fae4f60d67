// Batched injected system calls (syscall_batch.h) against a real traced child: the calls
// take effect in order with one ptrace round trip per batch, a failed call ends the batch
// and is named (its place, name, number, arguments, errno), the calls after it are not run,
// and the thread goes on performing injected calls afterwards.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "ckpt/arch/arch.h"
#include "ptrace_ctl.h"
#include "remote_scratch.h"
#include "syscall_batch.h"

using namespace ckpt;
using namespace ckpt::engine;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kCodeOffsetBatch = 64;
constexpr uint64_t kScratchSize = 16 * kPage;
constexpr uint64_t kReserve = 16 * kPage;

// A child holding a code page (trap code, batch code), scratch memory and a reserved
// PROT_NONE region (all made before the fork, at the same addresses as here), seized and
// stopped; killed at the end.
struct Child {
    pid_t pid = -1;
    uint64_t code = 0, scratch = 0, region = 0;
    Child() {
        void* c = mmap(nullptr, kPage + kScratchSize, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        void* r = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED || r == MAP_FAILED) return;
        auto trap = arch::syscall_trap_code();
        auto batch = arch::syscall_batch_code();
        std::memcpy(c, trap.data(), trap.size());
        std::memcpy(static_cast<char*>(c) + kCodeOffsetBatch, batch.data(), batch.size());
        code = reinterpret_cast<uint64_t>(c);
        scratch = code + kPage;
        region = reinterpret_cast<uint64_t>(r);
        pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        munmap(c, kPage + kScratchSize);
        munmap(r, kReserve);
    }
    ~Child() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, __WALL);
        }
    }
    // start address -> "rwxp" of the child's mappings.
    std::map<uint64_t, std::pair<uint64_t, std::string>> maps() const {
        std::map<uint64_t, std::pair<uint64_t, std::string>> out;
        std::ifstream f("/proc/" + std::to_string(pid) + "/maps");
        std::string line;
        while (std::getline(f, line)) {
            std::istringstream in(line);
            std::string range, perms;
            in >> range >> perms;
            auto dash = range.find('-');
            out[std::stoull(range.substr(0, dash), nullptr, 16)] = {std::stoull(range.substr(dash + 1), nullptr, 16),
                                                                     perms};
        }
        return out;
    }
};

struct Attached {
    Child child;
    RemoteThread rt;
    RemoteScratch scratch;
    Attached() {
        EXPECT_GT(child.pid, 0);
        auto stop = seize_and_stop(child.pid, 10000);
        EXPECT_TRUE(stop.ok()) << (stop.ok() ? "" : stop.error().message());
        auto t = RemoteThread::attach(child.pid, child.code);
        EXPECT_TRUE(t.ok());
        if (t.ok()) rt = std::move(*t);
        scratch = RemoteScratch(child.pid, child.scratch, kScratchSize);
    }
    SyscallBatch batch() { return SyscallBatch(rt, scratch, child.code + kCodeOffsetBatch); }
};

}  // namespace

TEST(SyscallBatch, RunsCallsInOrderInOneRoundTrip) {
    Attached a;
    const uint64_t r = a.child.region;
    auto b = a.batch();
    b.add("munmap", SYS_munmap, {r + 8 * kPage, 8 * kPage});
    b.add("mmap", SYS_mmap, {r, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                             static_cast<uint64_t>(-1), 0},
          "first", r);
    b.add("mprotect", SYS_mprotect, {r, 4 * kPage, PROT_READ});
    b.add("madvise", SYS_madvise, {r, 4 * kPage, MADV_DONTDUMP});
    const uint64_t runs = a.rt.injected_runs();
    auto done = b.flush();
    ASSERT_TRUE(done.ok()) << done.error().message();
    EXPECT_EQ(a.rt.injected_runs(), runs + 1);
    EXPECT_EQ(b.pending(), 0u);
    auto m = a.child.maps();
    ASSERT_TRUE(m.count(r));
    EXPECT_EQ(m[r].first, r + 4 * kPage);
    EXPECT_EQ(m[r].second, "r--p");
    ASSERT_TRUE(m.count(r + 4 * kPage));  // the rest of the reserve, up to the unmapped half
    EXPECT_EQ(m[r + 4 * kPage].first, r + 8 * kPage);
    EXPECT_EQ(m[r + 4 * kPage].second, "---p");
    // The thread performs single injected calls afterwards, with its registers as before.
    auto p = a.rt.syscall(SYS_getpid);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, a.child.pid);
}

TEST(SyscallBatch, FailedCallIsNamedAndEndsTheBatch) {
    Attached a;
    const uint64_t r = a.child.region;
    ASSERT_TRUE(a.rt.syscall_ok("munmap", SYS_munmap, {r + 8 * kPage, 8 * kPage}).ok());
    auto b = a.batch();
    b.add("mmap", SYS_mmap, {r, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                             static_cast<uint64_t>(-1), 0});
    b.add("mprotect", SYS_mprotect, {r + 8 * kPage, kPage, PROT_READ}, "pid 7: mapping here");  // unmapped
    b.add("mprotect", SYS_mprotect, {r + 2 * kPage, kPage, PROT_READ | PROT_WRITE});
    auto done = b.flush();
    ASSERT_FALSE(done.ok());
    EXPECT_EQ(done.error().code(), ENOMEM);
    const std::string& msg = done.error().message();
    const std::string want = "pid 7: mapping here: tid " + std::to_string(a.child.pid) +
                             ": mprotect (batched call 2 of 3: syscall " + std::to_string(SYS_mprotect) + "(";
    EXPECT_EQ(msg.rfind(want, 0), 0u) << msg;
    EXPECT_NE(msg.find(fmt::format("{:#x}", r + 8 * kPage)), std::string::npos) << msg;
    EXPECT_EQ(b.pending(), 0u);
    auto m = a.child.maps();
    ASSERT_TRUE(m.count(r));
    EXPECT_EQ(m[r].second, "rw-p");                  // the call before it ran
    ASSERT_TRUE(m.count(r + kPage));
    EXPECT_EQ(m[r + kPage].first, r + 8 * kPage);    // the call after it did not:
    EXPECT_EQ(m[r + kPage].second, "---p");          // the reserve is still whole
    auto p = a.rt.syscall(SYS_getpid);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, a.child.pid);
}

TEST(SyscallBatch, UnexpectedResultIsAnError) {
    Attached a;
    auto b = a.batch();
    b.add("getpid", SYS_getpid, {}, "", static_cast<uint64_t>(a.child.pid) + 1);
    auto done = b.flush();
    ASSERT_FALSE(done.ok());
    EXPECT_NE(done.error().message().find("getpid returned"), std::string::npos) << done.error().message();
}

TEST(SyscallBatch, LongBatchesRunInPieces) {
    Attached a;
    const uint64_t r = a.child.region;
    auto b = a.batch();
    const size_t n = 2 * SyscallBatch::kMaxPerRun + 5;
    for (size_t i = 0; i < n; ++i)
        b.add("mprotect", SYS_mprotect, {r + (i % 16) * kPage, kPage, (i % 2) ? uint64_t{PROT_READ} : uint64_t{PROT_NONE}});
    const uint64_t runs = a.rt.injected_runs(), calls = a.rt.injected_calls();
    auto done = b.flush();
    ASSERT_TRUE(done.ok()) << done.error().message();
    EXPECT_EQ(a.rt.injected_runs(), runs + 3);
    EXPECT_EQ(a.rt.injected_calls(), calls + n);
    // The last call on each page decides.
    auto m = a.child.maps();
    for (uint64_t page = 0; page < 16; ++page) {
        size_t last = 0;
        for (size_t i = 0; i < n; ++i)
            if (i % 16 == page) last = i;
        auto it = m.upper_bound(r + page * kPage);
        ASSERT_NE(it, m.begin());
        --it;
        EXPECT_EQ(it->second.second, (last % 2) ? "r--p" : "---p") << "page " << page;
    }
}
