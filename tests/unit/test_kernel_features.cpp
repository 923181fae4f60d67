// The probes must agree with what the kernel really does, checked here independently.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <map>

#include "ckpt/engine/kernel_features.h"

using namespace ckpt;

TEST(KernelFeatures, ProbesAgreeWithDirectChecks) {
    auto probes = engine::probe_kernel_features();
    std::map<std::string, engine::FeatureProbe> by_name;
    for (auto& p : probes) by_name[p.name] = p;
    ASSERT_TRUE(by_name.count("pidfd_getfd"));
    ASSERT_TRUE(by_name.count("clone3_set_tid"));

    // pidfd_open on ourselves works iff the kernel has pidfds; pidfd_getfd came one release later.
    int pidfd = static_cast<int>(syscall(434, getpid(), 0));
    if (pidfd >= 0) {
        int fd = static_cast<int>(syscall(438, pidfd, 0, 0));
        EXPECT_EQ(by_name["pidfd_getfd"].available, fd >= 0) << by_name["pidfd_getfd"].detail;
        if (fd >= 0) close(fd);
        close(pidfd);
    } else {
        EXPECT_FALSE(by_name["pidfd_getfd"].available);
    }
    // CONFIG_CHECKPOINT_RESTORE is what exposes ns_last_pid.
    EXPECT_EQ(by_name["checkpoint_restore"].available, access("/proc/sys/kernel/ns_last_pid", F_OK) == 0 &&
                                                           geteuid() == 0);
    for (auto& p : probes) {
        EXPECT_FALSE(p.detail.empty()) << p.name;
        EXPECT_FALSE(p.purpose.empty()) << p.name;
    }
}
