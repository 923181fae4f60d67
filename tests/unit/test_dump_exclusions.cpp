// A dump can leave out listed memory ranges, threads and fds (what the MPI split rank
// needs: the lower half is not the application's), and record a named fd as external (the
// channel a parked rank waits on). Checked on a real process's images.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "ckpt/engine/engine.h"
#include "ckpt/image/image_file.h"
#include "core.pb.h"
#include "files.pb.h"
#include "mm.pb.h"

using namespace ckpt;

namespace {

struct Shared {
    uint64_t region;   // the mapping to leave out
    pid_t extra_tid;   // the thread to leave out
    int extra_fd;      // the fd to leave out
    int kept_fd;
    int named_fd;      // recorded as an external resource under a name of the caller's
    volatile int ready;
};

void* idle(void* arg) {
    auto* s = static_cast<Shared*>(arg);
    s->extra_tid = static_cast<pid_t>(syscall(SYS_gettid));
    for (;;) pause();
}

}  // namespace

TEST(DumpExclusions, LeftOutMemoryThreadsAndFds) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (ptrace of the dumped process)";
    auto* s = static_cast<Shared*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(s, MAP_FAILED);
    pid_t child = fork();
    if (child == 0) {
        void* r = mmap(nullptr, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        static_cast<char*>(r)[0] = 1;
        s->region = reinterpret_cast<uint64_t>(r);
        s->extra_fd = open("/dev/null", O_RDONLY);
        s->kept_fd = open("/dev/zero", O_RDONLY);
        s->named_fd = open("/dev/urandom", O_RDONLY);
        pthread_t t;
        pthread_create(&t, nullptr, idle, s);
        while (!s->extra_tid) usleep(1000);
        s->ready = 1;
        for (;;) pause();
    }
    // Killed however the test ends.
    struct Reaper {
        pid_t pid;
        ~Reaper() {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    } reaper{child};
    while (!s->ready) usleep(1000);

    char tmpl[] = "/tmp/ckpt-exclusions-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    engine::DumpOptions o;
    o.root = child;
    o.image_dir = dir;
    o.leave_running = true;
    o.exclude_memory = {{s->region, s->region + 8 * 4096}};
    o.exclude_threads = {s->extra_tid};
    o.exclude_fds = {s->extra_fd};
    o.external_fds = {{s->named_fd, "mpi-control"}};
    auto r = engine::dump(o);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(kill(child, 0), 0) << "the process must keep running";

    std::string suffix = "-" + std::to_string(child) + ".img";
    image::MmCore mm;
    ASSERT_TRUE(image::read_image(dir + "/mm" + suffix, image::Kind::Mm, &mm).ok());
    bool region_seen = false;
    for (const auto& v : mm.vmas()) region_seen |= v.start() == s->region;
    EXPECT_FALSE(region_seen);
    EXPECT_GT(mm.vmas_size(), 5);

    image::TaskCore core;
    ASSERT_TRUE(image::read_image(dir + "/core" + suffix, image::Kind::Core, &core).ok());
    ASSERT_EQ(core.threads_size(), 1);
    EXPECT_EQ(core.threads(0).tid(), child);

    image::FdTable fds;
    ASSERT_TRUE(image::read_image(dir + "/fds" + suffix, image::Kind::Fds, &fds).ok());
    bool extra_seen = false, kept_seen = false, named_seen = false;
    for (const auto& f : fds.fds()) {
        extra_seen |= f.fd() == s->extra_fd;
        kept_seen |= f.fd() == s->kept_fd && f.kind() != image::Fd::EXTERNAL;
        named_seen |= f.fd() == s->named_fd && f.kind() == image::Fd::EXTERNAL && f.external_key() == "mpi-control";
    }
    EXPECT_FALSE(extra_seen);
    EXPECT_TRUE(kept_seen);
    EXPECT_TRUE(named_seen);

    std::system(("rm -rf " + dir).c_str());
}
