// ckpt-job end to end on a real store: output, exit codes (0 ok, 1 failure, 2 usage) and
// one-line errors that name the job, the set and the file.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "set_test_util.h"

using namespace ckpt;
using namespace ckpt::set;
using namespace ckpt::set::testing;

namespace {

struct Outcome {
    int code = -1;
    std::string out, err;
};

std::string slurp(int fd) {
    std::string s;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
    return s;
}

// Runs ckpt-job with args and extra environment (NAME=VALUE), optionally as another uid.
Outcome ckpt_job(std::vector<std::string> args, std::vector<std::string> env = {},
                 uid_t as_uid = 0) {
    int out[2], err[2];
    if (::pipe(out) != 0 || ::pipe(err) != 0) return {};
    // Opened here and exec'd through the fd: another uid may not reach the build folder (a
    // clone in a private folder), only the program itself.
    int bin = ::open(CKPT_JOB_BIN, O_RDONLY | O_CLOEXEC);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out[1], 1);
        ::dup2(err[1], 2);
        ::close(out[0]);
        ::close(err[0]);
        ::unsetenv("SLURM_JOB_ID");
        ::unsetenv("CKPT_ROOT");
        ::unsetenv("CKPT_LOG");
        for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
        if (as_uid && (::setgid(as_uid) != 0 || ::setuid(as_uid) != 0)) ::_exit(97);
        std::vector<char*> argv{const_cast<char*>("ckpt-job")};
        for (std::string& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::fexecve(bin, argv.data(), environ);
        ::_exit(127);
    }
    if (bin >= 0) ::close(bin);
    ::close(out[1]);
    ::close(err[1]);
    Outcome r;
    r.out = slurp(out[0]);
    r.err = slurp(err[0]);
    ::close(out[0]);
    ::close(err[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

bool has(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

int count_lines(const std::string& s) {
    return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

bool valid_json(const std::string& text) {
    std::string path = "/tmp/ckpt-job-json-" + std::to_string(::getpid());
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    int rc = std::system(
        ("/usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' " + path).c_str());
    ::unlink(path.c_str());
    return rc == 0;
}

class CkptJob : public ::testing::Test {
protected:
    void SetUp() override {
        auto st = JobStore::open_writer(root_.path(), sample_job(kJob), 0);
        ASSERT_TRUE(st.ok()) << st.error().message();
        write_committed_set(*st, 2, 1);
        write_committed_set(*st, 2, 2);
        write_committed_set(*st, 3, 3);
        auto f = st->begin_set({Trigger::Preempt, 0, 1, 1, {}});
        ASSERT_TRUE(st->fail_set(*f, "node lost").ok());
    }
    std::vector<std::string> with_root(std::vector<std::string> a) {
        a.push_back("--root");
        a.push_back(root_.path());
        return a;
    }
    std::string job_dir() const { return root_.path() + "/" + std::to_string(kJob); }

    static constexpr uint64_t kJob = 1234;
    TempRoot root_;
};

TEST(CkptJobUsage, HelpAndUsageErrors) {
    Outcome r = ckpt_job({"--help"});
    EXPECT_EQ(r.code, 0);
    for (const char* c : {"list", "show", "verify", "rm", "repair"})
        EXPECT_TRUE(has(r.out, c)) << c;
    EXPECT_EQ(ckpt_job({"help"}).code, 0);
    EXPECT_EQ(ckpt_job({}).code, 2);
    EXPECT_EQ(ckpt_job({"frobnicate"}).code, 2);
    EXPECT_EQ(ckpt_job({"show", "--root", "/nonexistent"}).code, 2);  // no JOBID, no SLURM_JOB_ID
    EXPECT_EQ(ckpt_job({"show", "12x"}).code, 2);
    EXPECT_EQ(ckpt_job({"list", "1", "--bogus"}).code, 2);
    EXPECT_EQ(ckpt_job({"verify", "1", "--json"}).code, 2);
    EXPECT_EQ(ckpt_job({"rm", "1", "--keep", "0"}).code, 2);
    EXPECT_EQ(ckpt_job({"rm", "1", "--keep", "1", "--set", "2"}).code, 2);
    EXPECT_EQ(ckpt_job({"rm", "1", "--set"}).code, 2);
}

TEST_F(CkptJob, ListMarksTheCurrentSet) {
    Outcome r = ckpt_job(with_root({"list", std::to_string(kJob)}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    EXPECT_TRUE(has(r.out, "* 3      committed")) << r.out;
    EXPECT_TRUE(has(r.out, "  4      failed")) << r.out;
    // JOBID from $SLURM_JOB_ID, root from $CKPT_ROOT.
    Outcome env =
        ckpt_job({"list"}, {"SLURM_JOB_ID=" + std::to_string(kJob), "CKPT_ROOT=" + root_.path()});
    EXPECT_EQ(env.code, 0) << env.err;
    EXPECT_EQ(env.out, r.out);
    Outcome json = ckpt_job(with_root({"list", std::to_string(kJob), "--json"}));
    ASSERT_EQ(json.code, 0);
    EXPECT_TRUE(valid_json(json.out)) << json.out;
    EXPECT_TRUE(has(json.out, "\"current_set\": 3")) << json.out;
    EXPECT_TRUE(has(json.out, "\"failure\": \"node lost\"")) << json.out;
    // Without a job: the jobs under the root.
    Outcome jobs = ckpt_job(with_root({"list"}));
    EXPECT_EQ(jobs.code, 0);
    EXPECT_TRUE(has(jobs.out, "1234")) << jobs.out;
    Outcome jobs_json = ckpt_job(with_root({"list", "--json"}));
    EXPECT_TRUE(valid_json(jobs_json.out)) << jobs_json.out;
}

TEST_F(CkptJob, ShowOneSet) {
    Outcome r = ckpt_job(with_root({"show", std::to_string(kJob)}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "set 3 (current)")) << r.out;
    EXPECT_TRUE(has(r.out, "lattice-qcd")) << r.out;
    EXPECT_TRUE(has(r.out, "set-000003/member-2")) << r.out;
    Outcome one = ckpt_job(with_root({"show", std::to_string(kJob), "--set", "1", "--json"}));
    ASSERT_EQ(one.code, 0) << one.err;
    EXPECT_TRUE(valid_json(one.out)) << one.out;
    EXPECT_TRUE(has(one.out, "\"seq\": 1")) << one.out;
    EXPECT_TRUE(has(one.out, "\"image_dir\": \"set-000001/member-1\"")) << one.out;
    Outcome missing = ckpt_job(with_root({"show", std::to_string(kJob), "--set", "99"}));
    EXPECT_EQ(missing.code, 1);
    EXPECT_TRUE(has(missing.err, "job 1234: no set 99")) << missing.err;
}

TEST_F(CkptJob, VerifyIsQuietWhenGoodAndNamesTheBadFile) {
    Outcome ok = ckpt_job(with_root({"verify", std::to_string(kJob)}));
    EXPECT_EQ(ok.code, 0) << ok.err;
    EXPECT_TRUE(ok.out.empty() && ok.err.empty());
    std::string victim = job_dir() + "/set-000002/member-1/core-1.img";
    flip_byte(victim, 17);
    Outcome bad = ckpt_job(with_root({"verify", std::to_string(kJob)}));
    EXPECT_EQ(bad.code, 1);
    EXPECT_EQ(count_lines(bad.err), 1) << bad.err;
    EXPECT_TRUE(has(bad.err, "job 1234 set 2")) << bad.err;
    EXPECT_TRUE(has(bad.err, victim)) << bad.err;
    EXPECT_TRUE(has(bad.err, "checksum mismatch")) << bad.err;
    EXPECT_EQ(ckpt_job(with_root({"verify", std::to_string(kJob), "--set", "3"})).code, 0);
    Outcome failed = ckpt_job(with_root({"verify", std::to_string(kJob), "--set", "4"}));
    EXPECT_EQ(failed.code, 1);
    EXPECT_TRUE(has(failed.err, "state failed: node lost")) << failed.err;
}

TEST_F(CkptJob, GarbageIndexThenRepair) {
    int fd = ::open((job_dir() + "/index.h5").c_str(), O_WRONLY | O_TRUNC);
    ASSERT_EQ(::write(fd, "garbage", 7), 7);
    ::close(fd);
    Outcome bad = ckpt_job(with_root({"list", std::to_string(kJob)}));
    EXPECT_EQ(bad.code, 1);
    EXPECT_EQ(count_lines(bad.err), 1) << bad.err;
    EXPECT_TRUE(has(bad.err, "job 1234") && has(bad.err, "index.h5") &&
                has(bad.err, "ckpt-job repair 1234"))
        << bad.err;
    Outcome rep = ckpt_job(with_root({"repair", std::to_string(kJob)}));
    EXPECT_EQ(rep.code, 0) << rep.err;
    EXPECT_TRUE(rep.out.empty() && rep.err.empty()) << rep.out << rep.err;  // quiet without -v
    Outcome rep_v = ckpt_job(with_root({"-v", "repair", std::to_string(kJob)}));
    EXPECT_EQ(rep_v.code, 0);
    Outcome after = ckpt_job(with_root({"list", std::to_string(kJob)}));
    EXPECT_EQ(after.code, 0) << after.err;
    EXPECT_TRUE(has(after.out, "* 3      committed")) << after.out;
}

TEST_F(CkptJob, RemoveSetsAndTheJob) {
    Outcome keep = ckpt_job(with_root({"rm", std::to_string(kJob), "--keep", "1"}));
    EXPECT_EQ(keep.code, 0) << keep.err;
    EXPECT_FALSE(std::filesystem::exists(job_dir() + "/set-000001"));
    EXPECT_FALSE(std::filesystem::exists(job_dir() + "/set-000002"));
    EXPECT_TRUE(std::filesystem::exists(job_dir() + "/set-000003"));
    Outcome one = ckpt_job(with_root({"rm", std::to_string(kJob), "--set", "4"}));
    EXPECT_EQ(one.code, 0) << one.err;
    Outcome gone = ckpt_job(with_root({"rm", std::to_string(kJob), "--set", "4"}));
    EXPECT_EQ(gone.code, 1);
    EXPECT_TRUE(has(gone.err, "job 1234: no set 4")) << gone.err;
    Outcome all = ckpt_job(with_root({"rm", std::to_string(kJob)}));
    EXPECT_EQ(all.code, 0) << all.err;
    EXPECT_FALSE(std::filesystem::exists(job_dir()));
    Outcome missing = ckpt_job(with_root({"list", std::to_string(kJob)}));
    EXPECT_EQ(missing.code, 1);
    EXPECT_TRUE(has(missing.err, "job 1234: no checkpoints")) << missing.err;
}

TEST_F(CkptJob, AnotherUsersJobIsRefused) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
    ::chmod(root_.path().c_str(), 0755);
    Outcome r = ckpt_job(with_root({"list", std::to_string(kJob)}), {}, 54321);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_TRUE(has(r.err, "job 1234: the checkpoints in") && has(r.err, "belong to root (uid 0)"))
        << r.err;
    EXPECT_EQ(ckpt_job(with_root({"rm", std::to_string(kJob)}), {}, 54321).code, 1);
    EXPECT_TRUE(std::filesystem::exists(job_dir() + "/index.h5"));
    // and such jobs are left out of the listing of jobs
    Outcome jobs = ckpt_job(with_root({"list"}), {}, 54321);
    EXPECT_EQ(jobs.code, 0) << jobs.err;
    EXPECT_FALSE(has(jobs.out, "1234")) << jobs.out;
}

}  // namespace
