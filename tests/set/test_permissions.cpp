// A job's folder belongs to the job's user (mode 0700); readers other than that user and
// root are refused with a message that names both. Needs root (to make files of another
// user); skipped otherwise.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "set_test_util.h"

using namespace ckpt;
using namespace ckpt::set;
using namespace ckpt::set::testing;

namespace {

constexpr uid_t kJobUser = 65534;    // nobody: the job's owner in these tests
constexpr uid_t kOtherUser = 54321;  // an unprivileged uid with no name

class Permissions : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root to create another user's files";
        // The checkpoint root: everyone may make their job's folder (like a site root of mode
        // 1777; a root-owned 0755 one has the folder made by the agent's privileged half).
        ::chmod(root_.path().c_str(), 01777);
        JobInfo job = sample_job(kJob);
        job.user = "nobody";
        job.uid = kJobUser;
        job.gid = kJobUser;
        // Root may not write a user's store: the writer is the user.
        auto as_root = JobStore::open_writer(root_.path(), job, 0);
        ASSERT_FALSE(as_root.ok());
        EXPECT_EQ(as_root.error().code(), EPERM);
        // A store written as the user (the agent's unprivileged half).
        int rc = as_user(kJobUser, [&] {
            JobInfo mine = job;
            auto st = JobStore::open_writer(root_.path(), mine, 0);
            if (!st.ok() || !st->save_batch_script("#!/bin/sh\n").ok()) return 1;
            write_committed_set(*st, 2);
            return ::testing::Test::HasFailure() ? 2 : 0;
        });
        ASSERT_EQ(rc, 0);
    }
    std::string job_dir() const { return root_.path() + "/" + std::to_string(kJob); }

    // Runs fn in a child with effective uid `uid`; returns fn's exit code.
    template <typename Fn>
    int as_user(uid_t uid, Fn fn) {
        pid_t pid = ::fork();
        if (pid == 0) {
            if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(99);
            ::_exit(fn());
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
    }

    static constexpr uint64_t kJob = 31337;
    TempRoot root_;
};

TEST(CheckReader, OwnerAndRootOnly) {
    EXPECT_TRUE(check_reader(1, "/r/1", 1000, 1000).ok());
    EXPECT_TRUE(check_reader(1, "/r/1", 1000, 0).ok());
    auto e = check_reader(1, "/r/1", 1000, 1001);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), EACCES);
    EXPECT_NE(e.error().message().find("job 1: the checkpoints in /r/1 belong to"),
              std::string::npos)
        << e.error().message();
    EXPECT_NE(e.error().message().find("uid 1001"), std::string::npos);
}

TEST_F(Permissions, EverythingBelongsToTheJobsUser) {
    struct stat sb;
    ASSERT_EQ(::stat(job_dir().c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, kJobUser);
    EXPECT_EQ(sb.st_mode & 07777, 0700u);
    for (const auto& e : std::filesystem::recursive_directory_iterator(job_dir())) {
        ASSERT_EQ(::lstat(e.path().c_str(), &sb), 0);
        EXPECT_EQ(sb.st_uid, kJobUser) << e.path();
        EXPECT_EQ(sb.st_mode & 077, 0u) << e.path() << " is open to group or others";
    }
}

TEST_F(Permissions, TheJobsUserMayReadAndVerify) {
    int rc = as_user(kJobUser, [&] {
        auto st = JobStore::open(root_.path(), kJob);
        if (!st) return 1;
        return st->newest_verified().ok() ? 0 : 2;
    });
    EXPECT_EQ(rc, 0);
}

TEST_F(Permissions, AnotherUserIsRefusedClearly) {
    int rc = as_user(kOtherUser, [&] {
        auto st = JobStore::open(root_.path(), kJob);
        if (st.ok()) return 1;
        const std::string& m = st.error().message();
        if (st.error().code() != EACCES) return 2;
        if (m.find("job 31337") == std::string::npos ||
            m.find("nobody (uid 65534)") == std::string::npos ||
            m.find("uid 54321") == std::string::npos)
            return 3;
        return 0;
    });
    EXPECT_EQ(rc, 0);
    // Also through the command a user runs.
    rc =
        as_user(kOtherUser, [&] { return JobStore::open_folder(root_.path(), kJob).ok() ? 1 : 0; });
    EXPECT_EQ(rc, 0);
}

TEST_F(Permissions, AWriterRefusesAFolderOfAnotherUser) {
    JobInfo job = sample_job(kJob);  // says the job is root's, but the folder is nobody's
    auto st = JobStore::open_writer(root_.path(), job, 1);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), EACCES);
    EXPECT_NE(st.error().message().find("belongs to uid 65534"), std::string::npos)
        << st.error().message();
}

}  // namespace
