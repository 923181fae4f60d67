// index.h5 as users' own tools see it: read by h5py (python3-h5py) and h5dump, without
// any ckpt code. The Python side prints JSON; here it is compared with what was written.
#include <sys/wait.h>

#include <cstdio>

#include "set_test_util.h"

using namespace ckpt;
using namespace ckpt::set;
using namespace ckpt::set::testing;

namespace {

// Runs a shell command; returns its exit status and stdout.
std::pair<int, std::string> run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return {-1, out};
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

bool contains(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

class ForeignReaders : public ::testing::Test {
protected:
    void SetUp() override {
        JobInfo job = sample_job(kJob);
        job.name = "climate \"run\" 7";
        auto st = JobStore::open_writer(root_.path(), job, 1);
        ASSERT_TRUE(st.ok()) << st.error().message();
        ASSERT_TRUE(st->save_batch_script("#!/bin/sh\nsrun ./model\n").ok());
        write_committed_set(*st, 3, 1);
        write_committed_set(*st, 2, 2);
        auto failed = st->begin_set({Trigger::Preempt, 7, 4, 4, {}});
        ASSERT_TRUE(st->fail_set(*failed, "node3 lost").ok());
        auto r = JobStore::open(root_.path(), kJob);
        ASSERT_TRUE(r.ok());
        index_ = r->index();
        path_ = root_.path() + "/" + std::to_string(kJob) + "/index.h5";
    }
    static constexpr uint64_t kJob = 9001;
    TempRoot root_;
    Index index_;
    std::string path_;
};

TEST_F(ForeignReaders, H5pyReadsEveryField) {
    auto [rc, out] = run(fmt::format("/usr/bin/python3 {} {}", CKPT_READ_INDEX_PY, path_));
    ASSERT_EQ(rc, 0) << out;
    // Job attributes.
    EXPECT_TRUE(contains(out, "\"job_id\": 9001")) << out;
    EXPECT_TRUE(contains(out, R"("job_name": "climate \"run\" 7")")) << out;
    EXPECT_TRUE(contains(out, "\"cluster\": \"testcluster\"")) << out;
    EXPECT_TRUE(contains(out, "\"submit_options\": \"--checkpoint-interval=30m --requeue -N2\""))
        << out;
    EXPECT_TRUE(contains(out, "\"batch_script\": \"job-script\"")) << out;
    EXPECT_TRUE(contains(out, fmt::format("\"format_version\": {}", kIndexFormatVersion))) << out;
    EXPECT_TRUE(contains(out, "\"restart_count\": 1")) << out;
    EXPECT_TRUE(contains(out, "\"current_set\": 2")) << out;
    // Each set, with the exact numbers the library recorded.
    for (const SetRecord& s : index_.sets) {
        std::string group = fmt::format("\"group\": \"{:06}\"", s.seq);
        size_t at = out.find(group);
        ASSERT_NE(at, std::string::npos) << group << "\n" << out;
        size_t begin = out.rfind('\n', at) + 1;
        std::string part = out.substr(begin, out.find('\n', at) - begin);
        EXPECT_TRUE(contains(part, fmt::format("\"bytes\": {}", s.bytes()))) << part;
        EXPECT_TRUE(contains(part, fmt::format("\"file_bytes\": {}", s.bytes()))) << part;
        EXPECT_TRUE(contains(part, fmt::format("\"state\": \"{}\"", to_string(s.state)))) << part;
        EXPECT_TRUE(contains(part, fmt::format("\"trigger\": \"{}\"", to_string(s.trigger))))
            << part;
        EXPECT_TRUE(contains(part, fmt::format("\"start_time_ns\": {}", s.start_ns))) << part;
        EXPECT_TRUE(contains(part, fmt::format("\"parent_set\": {}", s.parent))) << part;
        EXPECT_TRUE(contains(part, fmt::format("\"member_count\": {}", s.expected_members)))
            << part;
        for (const MemberRecord& m : s.members) {
            EXPECT_TRUE(contains(part, fmt::format("\"checksum\": {}", m.checksum))) << part;
            EXPECT_TRUE(contains(part, fmt::format("\"image_dir\": \"{}\"", m.image_dir))) << part;
        }
    }
    EXPECT_TRUE(contains(out, "\"failure\": \"node3 lost\"")) << out;
    EXPECT_TRUE(
        contains(out, "\"files\": [\"core-1.img\", \"inventory.img\", \"pages/pages-1.img\"]"))
        << out;
}

TEST_F(ForeignReaders, H5dumpReadsIt) {
    auto [rc, out] = run("h5dump " + path_ + " 2>&1");
    ASSERT_EQ(rc, 0) << out;
    EXPECT_TRUE(contains(out, "GROUP \"/sets/000001\"") || contains(out, "GROUP \"000001\""))
        << out;
    EXPECT_TRUE(contains(out, "DATASET \"members\"")) << out;
    EXPECT_TRUE(contains(out, "H5T_COMPOUND")) << out;
    EXPECT_TRUE(contains(out, "\"node1\"")) << out;
    EXPECT_TRUE(contains(out, "\"committed\"")) << out;
    auto [rc2, attr] = run("h5dump -a /sets/000003/failure " + path_ + " 2>&1");
    ASSERT_EQ(rc2, 0) << attr;
    EXPECT_TRUE(contains(attr, "\"node3 lost\"")) << attr;
}

}  // namespace
