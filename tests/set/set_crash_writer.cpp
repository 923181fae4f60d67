// The victim of the fault-injection test: an agent-like writer that checkpoints forever
// (begin, write and fsync members, report, commit, retention), to be SIGKILLed at a
// random instant. Reports its progress on stdout, one line per event, so the test can aim
// its kill at any phase however loaded the machine is:
//   ready | begin SEQ | member SEQ | commit SEQ | failed SEQ | kept
//
//   set_crash_writer ROOT JOBID RESTART_COUNT SEED
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/set/store.h"

using namespace ckpt;
using namespace ckpt::set;

namespace {

Result<void> write_image(const std::string& path, size_t n, std::mt19937& rng) {
    std::string data(n, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    auto fd = CKPT_TRY(open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    CKPT_TRY_CTX(write_all(fd.get(), data.data(), data.size()), "{}", path);
    if (::fsync(fd.get()) != 0) return sys_error("fsync {}", path);
    return ok();
}

void report(const std::string& event) {
    std::string line = event + "\n";
    if (::write(1, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(3);
}

Result<void> one_set(JobStore& st, std::mt19937& rng) {
    uint32_t members = 1 + rng() % 3;
    uint64_t seq = CKPT_TRY(st.begin_set({Trigger::Interval, 0, members, members, {}}));
    report(fmt::format("begin {}", seq));
    for (uint32_t m = 0; m < members; ++m) {
        std::string dir = CKPT_TRY(st.make_member_dir(seq, static_cast<int32_t>(m)));
        CKPT_TRY(write_image(dir + "/inventory.img", 64 + rng() % 512, rng));
        CKPT_TRY(write_image(dir + "/pages.img", 4096 * (1 + rng() % 16), rng));
        CKPT_TRY(st.add_member(seq, static_cast<int32_t>(m), "node" + std::to_string(m), dir));
        report(fmt::format("member {}", seq));
    }
    if (rng() % 8 == 0) {
        CKPT_TRY(st.fail_set(seq, "a member failed (simulated)"));
        report(fmt::format("failed {}", seq));
        return ok();
    }
    CKPT_TRY(st.commit_set(seq));
    report(fmt::format("commit {}", seq));
    CKPT_TRY(st.keep_newest(2));
    report("kept");
    return ok();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: set_crash_writer ROOT JOBID RESTART_COUNT SEED\n");
        return 2;
    }
    JobInfo job;
    job.jobid = *parse_uint(argv[2]);
    job.uid = ::geteuid();
    job.gid = ::getegid();
    job.user = "tester";
    job.name = "crash";
    std::mt19937 rng(static_cast<uint32_t>(*parse_uint(argv[4])));
    auto st = JobStore::open_writer(argv[1], job, static_cast<uint32_t>(*parse_uint(argv[3])));
    if (!st) {
        std::fprintf(stderr, "set_crash_writer: %s\n", st.error().message().c_str());
        return 1;
    }
    report("ready");
    for (;;) {
        if (auto r = one_set(*st, rng); !r) {
            std::fprintf(stderr, "set_crash_writer: %s\n", r.error().message().c_str());
            return 1;
        }
    }
}
