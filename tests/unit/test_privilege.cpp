// become_user: the identity really changes, only the kept capabilities remain (and survive
// exec as ambient ones), and the process is no longer dumpable. Runs each case in a child.
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "ckpt/base/privilege.h"

namespace {

using namespace ckpt::privilege;

// Runs body in a forked child; the child's exit code is body's (0: the checks held).
int in_child(const std::function<int()>& body) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(body());
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

Identity nobody() {
    auto id = user_identity(65534, 65534);
    EXPECT_TRUE(id) << id.error().message();
    return id ? *id : Identity{65534, 65534, {65534}};
}

TEST(Privilege, BecomeUserDropsEveryCapability) {
    if (!is_root()) GTEST_SKIP() << "needs root";
    Identity who = nobody();
    EXPECT_EQ(in_child([&] {
                  if (!become_user(who)) return 1;
                  if (::getuid() != who.uid || ::geteuid() != who.uid || ::getegid() != who.gid) return 2;
                  if (::setuid(0) == 0) return 3;  // no way back
                  if (::prctl(PR_GET_DUMPABLE) != 0) return 4;
                  return verify_identity(who, 0) ? 0 : 5;
              }),
              0);
}

TEST(Privilege, BecomeUserKeepsOnlyTheNamedCapabilities) {
    if (!is_root()) GTEST_SKIP() << "needs root";
    Identity who = nobody();
    CapSet keep = cap_bit(CAP_CHECKPOINT_RESTORE);
    EXPECT_EQ(in_child([&] {
                  if (!become_user(who, keep)) return 1;
                  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_CHECKPOINT_RESTORE, 0, 0) != 1)
                      return 2;
                  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_SYS_ADMIN, 0, 0) != 0) return 3;
                  if (verify_identity(who, 0)) return 4;  // the check sees the kept capability
                  return verify_identity(who, keep) ? 0 : 5;
              }),
              0);
}

TEST(Privilege, VerifyIdentityRefusesRoot) {
    if (!is_root()) GTEST_SKIP() << "needs root";
    Identity who = nobody();
    auto r = verify_identity(who, 0);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("identity change failed"), std::string::npos) << r.error().message();
}

TEST(Privilege, RootIsNeverTheUser) {
    EXPECT_FALSE(become_user(Identity{0, 0, {}}));
}

}  // namespace
